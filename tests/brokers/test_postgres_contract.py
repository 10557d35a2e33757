"""The queue contract against the machine's PostgreSQL, one fresh schema per test.

Run twice: with the injected clock (leases and delays in fake time, as for SQLite),
and on the database's own clock (``clock_driven`` False, real waits of a few seconds),
which is how production runs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from steadyq.brokers import open_queue
from steadyq.brokers.base import Queue
from steadyq.brokers.postgres import PostgresQueue
from tests.brokers.contract import MakeQueue, QueueContract
from tests.conftest import FakeClock
from tests.postgres_db import postgres_url


class TestPostgresQueue(QueueContract):
    @pytest.fixture
    def make_queue(self) -> Iterator[MakeQueue]:
        opened: list[Queue] = []
        with postgres_url() as url:

            def make(clock: FakeClock) -> Queue:
                q = open_queue(url, clock=clock)
                assert isinstance(q, PostgresQueue) and q.clock is clock
                opened.append(q)
                return q

            yield make
            for q in opened:
                q.close()

    def test_messages_survive_reopening(self, clock: FakeClock) -> None:
        with postgres_url() as url:
            with open_queue(url, clock=clock) as q:
                q.publish(b"keep me")
                assert len(q.pull(1, 5)) == 1
            clock.advance(6)
            with open_queue(url, clock=clock) as q:
                [again] = q.pull(1, 5)
            assert (again.body, again.attempt) == (b"keep me", 2)
