"""Run the contract suite against every backend available here."""

from __future__ import annotations

from pathlib import Path

import pytest

from steadyq.brokers import open_queue
from steadyq.brokers.base import Queue
from steadyq.brokers.memory import MemoryQueue
from steadyq.brokers.sqlite import SqliteQueue
from tests.brokers.contract import MakeQueue, QueueContract
from tests.conftest import FakeClock


class TestMemoryQueue(QueueContract):
    @pytest.fixture
    def make_queue(self) -> MakeQueue:
        return lambda clock: MemoryQueue(clock=clock)


class TestSqliteQueue(QueueContract):
    @pytest.fixture
    def make_queue(self, tmp_path: Path) -> MakeQueue:
        opened: list[Queue] = []

        def make(clock: FakeClock) -> Queue:
            q = SqliteQueue.from_url(f"sqlite:///{tmp_path}/q.db", clock=clock)
            opened.append(q)
            return q

        return make

    def test_messages_survive_reopening(self, tmp_path: Path, clock: FakeClock) -> None:
        url = f"sqlite:///{tmp_path}/durable.db"
        with open_queue(url, clock=clock) as q:
            q.publish(b"keep me")
            assert len(q.pull(1, 5)) == 1
        clock.advance(6)
        with open_queue(url, clock=clock) as q:
            [again] = q.pull(1, 5)
        assert (again.body, again.attempt) == (b"keep me", 2)
