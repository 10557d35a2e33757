"""A request that completed is never run again: copies of it, a frozen worker, kills.

Deterministic reproductions of the races an outside fault test found. Every step is
sequenced by what the handlers and the store show (files, events), never by sleeping
for a guessed time, so a busy machine only makes the tests slower.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from steadyq import ExitCode, RetryPolicy, Worker, WorkerOptions
from steadyq.brokers import open_queue, store_for
from steadyq.brokers.base import Queue, Settlement, SettleResult
from steadyq.brokers.memory import MemoryQueue
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import COMPLETED, EventFilter
from steadyq.watch.measures import Snapshotter
from tests.test_reliability import Processes, body, log_lines, proc_state, url_for, wait_for

pytestmark = pytest.mark.slow

HANDLER = "tests.reliability_handlers:hold_until_released"


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    q = open_queue(url_for(tmp_path))
    yield q
    q.close()


def runs_of(tmp_path: Path) -> Counter[str]:
    """How many times the handler started, per request id."""
    return Counter(line[0] for line in log_lines(tmp_path / "runs.log"))


def kinds_for(q: Queue, request_id: str) -> Counter[str]:
    return Counter(e.kind for e in store_for(q).events(EventFilter(request_id=request_id)))


def options(**kw: object) -> WorkerOptions:
    base: dict[str, object] = {
        "handler": HANDLER,
        "runner": "inline",
        "deadline_s": 60.0,
        "lease_s": 5.0,
        "retry": RetryPolicy(0, 0.05, 3),
        "drain": True,
        "idle_poll_s": 0.05,
    }
    base.update(kw)
    return WorkerOptions(**base)  # type: ignore[arg-type]


class InThread(threading.Thread):
    """One execution on its own connection to the queue file, in a thread."""

    def __init__(self, url: str, opts: WorkerOptions) -> None:
        super().__init__(daemon=True)
        self.url, self.opts = url, opts
        self.result: object = None

    def run(self) -> None:
        with open_queue(self.url) as q:
            self.result = Worker(q, store_for(q), self.opts).run()


@pytest.mark.parametrize("first_fails", [False, True], ids=["first-succeeds", "first-fails"])
def test_a_copy_pulled_while_the_first_runs_elsewhere_waits_for_its_outcome(
    tmp_path: Path, queue: Queue, first_fails: bool
) -> None:
    attrs = {"dir": str(tmp_path)}
    request_id = str(uuid.uuid4())
    topic = "hold-fail" if first_fails else "hold"
    first = queue.publish(body(topic, request_id), attrs)
    url = url_for(tmp_path)

    a = InThread(url, options(retry=RetryPolicy(0, 0.05, 1)))  # a failure is final here
    a.start()
    wait_for(lambda: runs_of(tmp_path)[request_id] == 1, 60, "the first copy to start")
    # the second copy of the same request, taken by another execution meanwhile
    second = queue.publish(body("ok", request_id), attrs)
    b = InThread(url, options())
    b.start()
    wait_for(
        lambda: store_for(queue).events(
            EventFilter(kinds=[ev.MESSAGE_RECEIVED], message_id=second)
        ),
        60,
        "the other execution to receive the second copy",
    )
    (tmp_path / "release").touch()
    a.join(60)
    b.join(60)
    assert not a.is_alive() and not b.is_alive()

    kinds = kinds_for(queue, request_id)
    if first_fails:
        # the first copy failed: the waiting copy runs, and completes the request
        assert runs_of(tmp_path)[request_id] == 2
        assert kinds[ev.MESSAGE_SUCCEEDED] == 1 and kinds[ev.MESSAGE_DUPLICATE] == 0
    else:
        # it ran once; the second copy was acknowledged as a duplicate, never run
        assert runs_of(tmp_path)[request_id] == 1
        assert kinds[ev.MESSAGE_SUCCEEDED] == 1 and kinds[ev.MESSAGE_DUPLICATE] == 1
        dup = store_for(queue).events(EventFilter(kinds=[ev.MESSAGE_DUPLICATE]))
        assert [e.message_id for e in dup] == [second]
    assert first != second
    [row] = store_for(queue).requests(request_id=request_id)
    assert row.status == COMPLETED
    stats = queue.stats()
    assert (stats.ready, stats.in_flight, stats.delayed) == (0, 0, 0)


def test_copies_in_one_batch_run_once(tmp_path: Path, queue: Queue) -> None:
    attrs = {"dir": str(tmp_path)}
    request_id = str(uuid.uuid4())
    queue.publish_batch([(body("ok", request_id), attrs) for _ in range(5)])
    with open_queue(url_for(tmp_path)) as q:
        result = Worker(q, store_for(q), options(runner="process", concurrency=2)).run()
    assert result.exit_code == ExitCode.OK
    assert runs_of(tmp_path)[request_id] == 1
    kinds = kinds_for(queue, request_id)
    assert kinds[ev.MESSAGE_SUCCEEDED] == 1 and kinds[ev.MESSAGE_DUPLICATE] == 4


def test_a_frozen_worker_does_not_run_what_another_completed_meanwhile(
    tmp_path: Path, queue: Queue, procs: Processes
) -> None:
    """Worker A holds two calls: one running in its handler child, one queued behind it.
    A is frozen (SIGSTOP) past its leases; worker B takes both messages and completes
    them. When A resumes, its child must not start the queued call."""
    attrs = {"dir": str(tmp_path)}
    held, queued = str(uuid.uuid4()), str(uuid.uuid4())
    queue.publish(body("hold", held), attrs)
    queue.publish(body("ok", queued), attrs)
    url = url_for(tmp_path)
    a = procs.worker(
        url, "hold_until_released", "--concurrency", "1", "--lease", "2s",
        "--deadline", "60s", "--drain", name="worker-a",
    )  # fmt: skip
    wait_for(lambda: runs_of(tmp_path)[held] == 1, 60, "worker A to start the held call")
    wait_for(lambda: queue.stats().in_flight == 2, 60, "worker A to lease both messages")
    os.kill(a.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: (proc_state(a.pid) or ("?",))[0] == "T", 30, "worker A to stop")
        # A's leases lapse: both messages are deliverable again
        wait_for(lambda: queue.stats().ready == 2, 60, "worker A's leases to lapse")
        b = InThread(url, options())
        b.start()
        wait_for(lambda: runs_of(tmp_path)[held] == 2, 60, "worker B to start the held call")
        (tmp_path / "release").touch()
        b.join(60)
        assert not b.is_alive()
        assert runs_of(tmp_path)[queued] == 1
        assert store_for(queue).requests(request_id=queued)[0].status == COMPLETED
    finally:
        os.kill(a.pid, signal.SIGCONT)
    assert a.wait(60) == ExitCode.OK, procs.output("worker-a")
    # the call that was queued in A's child when it froze was never started there
    assert runs_of(tmp_path)[queued] == 1, procs.output("worker-a")
    assert kinds_for(queue, queued)[ev.MESSAGE_SUCCEEDED] == 1
    assert "Traceback" not in procs.output("worker-a")


class DiesOnSettle(MemoryQueue):
    """A queue whose worker dies (SystemExit) when it settles: after the outcome was
    recorded in a store of its own, before the queue heard of it."""

    dying = True

    def settle(
        self, settlements: Sequence[Settlement], *, events: Sequence[Event] = ()
    ) -> SettleResult:
        if self.dying:
            raise SystemExit("killed between the record and the ack")
        return super().settle(settlements, events=events)


@pytest.mark.parametrize("topic", ["poison", "ok"])
def test_an_outcome_is_recorded_once_when_the_worker_dies_before_the_ack(
    tmp_path: Path, topic: str
) -> None:
    queue = DiesOnSettle()
    store = open_queue(f"sqlite:///{tmp_path / 'store.db'}")
    telemetry = store_for(store)
    poison = b'{"request_id": "test-smoke-001", "topic": "x"}'
    mid = queue.publish(poison if topic == "poison" else body("ok"), {"dir": str(tmp_path)})
    opts = options(lease_s=0.3)
    with pytest.raises(SystemExit):
        Worker(queue, telemetry, opts).run()
    recorded = telemetry.events(EventFilter(message_id=mid))
    assert {e.kind for e in recorded} >= {ev.MESSAGE_RECEIVED}
    outcome_kind = ev.MESSAGE_REJECTED if topic == "poison" else ev.MESSAGE_SUCCEEDED
    assert [e.kind for e in recorded].count(outcome_kind) == 1, "recorded before the ack"

    queue.dying = False
    wait_for(lambda: queue.stats().ready == 1, 30, "the lease to lapse")
    result = Worker(queue, telemetry, opts).run()
    assert result.exit_code == ExitCode.OK
    kinds = Counter(e.kind for e in telemetry.events(EventFilter(message_id=mid)))
    assert kinds[outcome_kind] == 1, "the second delivery is settled as recorded"
    assert kinds[ev.MESSAGE_RECEIVED] == 2
    again = telemetry.events(EventFilter(kinds=[ev.MESSAGE_RECEIVED], message_id=mid))[-1]
    assert again.data["outcome_recorded"] == outcome_kind
    stats = queue.stats()
    assert (stats.ready, stats.in_flight, stats.delayed) == (0, 0, 0)
    if topic == "poison":
        assert stats.dead_lettered == 1
        assert runs_of(tmp_path)["test-smoke-001"] == 0
        _, figures = Snapshotter(telemetry, window_start=0).advance(time.time() + 1)
        assert figures.values["messages.rejected"] == 1
        assert figures.values["messages.rejected.redelivered"] == 0
    else:
        assert len(runs_of(tmp_path)) == 1 and sum(runs_of(tmp_path).values()) == 1
    store.close()
