"""A stream of poison is pulled in growing batches, within the queue's rejection budget
(``PullReach``); requests a bigger pull brings beyond the runner's room wait for it
(``LeaseKeeper.take``), unclaimed, and each runs once."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from steadyq import Worker, WorkerOptions
from steadyq.brokers import open_queue, store_for
from steadyq.brokers.base import Queue
from steadyq.brokers.memory import MemoryQueue
from steadyq.telemetry import events as ev
from steadyq.telemetry.store import EventFilter
from steadyq.worker.loop import PullReach


class CountedPulls:
    """A queue as the worker sees it, noting how many messages each pull asked for."""

    def __init__(self, queue: Queue, budget_s: float) -> None:
        self._queue = queue
        self.rejection_budget_s = budget_s
        self.asked: list[int] = []
        self.got: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._queue, name)

    def pull(self, max_messages: int, lease_s: float) -> Any:
        got = self._queue.pull(max_messages, lease_s)
        self.asked.append(max_messages)
        self.got.append(len(got))
        return got


def poison(i: int) -> bytes:
    return json.dumps({"request_id": f"not-a-uuid-{i}", "topic": "x"}).encode()


def valid() -> bytes:
    return json.dumps({"request_id": str(uuid.uuid4()), "topic": "fractions"}).encode()


@pytest.fixture(params=["memory", "sqlite"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Queue:
    if request.param == "memory":
        return MemoryQueue()
    return open_queue(f"sqlite:///{tmp_path}/p.db")


def drain(queue: Queue, budget_s: float, **kw: Any) -> tuple[Worker, CountedPulls]:
    counted = CountedPulls(queue, budget_s)
    opts = {
        "handler": "tests.worker_handlers:by_topic",
        "runner": "inline",
        "drain": True,
        "idle_poll_s": 0.01,
        "batch_size": 32,
        **kw,
    }
    worker = Worker(counted, store_for(queue), WorkerOptions(**opts))  # type: ignore[arg-type]
    worker.result = worker.run()  # type: ignore[attr-defined]
    return worker, counted


def test_a_stream_of_poison_is_pulled_in_batches_that_double_up_to_the_batch_size(
    queue: Queue,
) -> None:
    queue.publish_batch([(poison(i), None) for i in range(200)])
    worker, pulls = drain(queue, budget_s=60.0)
    assert worker.counts["rejected"] == 200
    assert queue.stats().dead_lettered == 200
    # the inline runner has timed no call, so its room stays one call: before, every
    # pull asked for one message, 200 pulls and 200 commits for this stream
    assert pulls.asked[:6] == [1, 2, 4, 8, 16, 32], pulls.asked
    assert max(pulls.asked) == 32
    assert len(pulls.asked) < 20, pulls.asked


def test_the_batches_grow_no_further_than_the_budget_lets_them(queue: Queue) -> None:
    queue.publish_batch([(poison(i), None) for i in range(60)])
    worker, pulls = drain(queue, budget_s=0.0)  # every commit takes longer than this
    assert worker.counts["rejected"] == 60
    # the first pull grows once (no commit timed yet); each commit then halves it back
    assert max(pulls.asked) <= 2, pulls.asked
    assert len(pulls.asked) >= 30


@pytest.mark.parametrize("runner", ["inline", "process"])
def test_requests_a_bigger_pull_brings_wait_for_room_and_each_runs_once(
    tmp_path: Path, runner: str
) -> None:
    queue = open_queue(f"sqlite:///{tmp_path}/p.db")
    bodies = [(poison(i), None) for i in range(40)] + [(valid(), None) for _ in range(40)]
    queue.publish_batch(bodies)
    worker, pulls = drain(queue, budget_s=60.0, runner=runner, concurrency=1, prefetch=1)
    assert (worker.counts["rejected"], worker.counts["succeeded"]) == (40, 40)
    assert worker.counts["duplicate"] == 0
    # the poison grew the pulls to the batch size: the pull that met the valid
    # requests brought more of them than the runner had room for (one call)
    assert max(pulls.asked) == 32, pulls.asked
    store = store_for(queue)
    succeeded = store.events(EventFilter(kinds=(ev.MESSAGE_SUCCEEDED,)))
    assert len({e.request_id for e in succeeded}) == len(succeeded) == 40
    assert len(store.requests(status="completed")) == 40
    with queue.db.reading() as conn:  # type: ignore[attr-defined]
        # a request that waited held no claim of its own: none is left behind
        assert conn.execute("SELECT COUNT(*) FROM request_claims").fetchone() == (0,)
    assert queue.stats().ready == 0 and queue.stats().in_flight == 0


def test_pull_reach_rules() -> None:
    reach = PullReach(100, budget_s=0.010)
    assert reach.ask(1) == 1
    reach.pulled(asked=1, got=1, requests=0, took_s=None)  # nothing timed: grow
    assert reach.ask(1) == 2
    reach.pulled(asked=2, got=2, requests=0, took_s=0.004)  # within half the budget
    assert reach.ask(1) == 4
    reach.pulled(asked=4, got=4, requests=0, took_s=0.007)  # between: stays
    assert reach.ask(1) == 4
    reach.pulled(asked=4, got=3, requests=0, took_s=0.001)  # a short pull: no growth
    assert reach.ask(1) == 4
    reach.pulled(asked=4, got=4, requests=0, took_s=0.020)  # over the budget: halves
    assert reach.ask(1) == 2
    assert reach.ask(50) == 50  # the runner's room when it is larger
    reach.pulled(asked=2, got=2, requests=1, took_s=0.001)  # a request to run: ends it
    assert reach.ask(1) == 1
    for _ in range(10):
        reach.pulled(asked=reach.ask(1), got=reach.ask(1), requests=0, took_s=None)
    assert reach.ask(1) == 100
