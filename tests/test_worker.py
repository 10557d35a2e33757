from __future__ import annotations

import io
import json
import random
import uuid
from pathlib import Path

import pytest

from steadyq import RetryPolicy, Worker, WorkerOptions
from steadyq.brokers import open_queue, store_for
from steadyq.brokers.base import Queue
from steadyq.brokers.memory import MemoryQueue
from steadyq.telemetry import events as ev
from steadyq.telemetry.logs import LABELS_KEY, JsonLinesSink
from steadyq.telemetry.store import EventFilter
from tests.conftest import FakeClock

HANDLER = "tests.worker_handlers:by_topic"
FAST_RETRY = RetryPolicy(0.0, 0.0, 3)


def request(topic: str = "fractions", request_id: str | None = None, **extra: object) -> bytes:
    return json.dumps(
        {"request_id": request_id or str(uuid.uuid4()), "topic": topic, **extra}
    ).encode()


def options(**kw: object) -> WorkerOptions:
    base: dict[str, object] = {
        "handler": HANDLER,
        "runner": "inline",
        "drain": True,
        "retry": FAST_RETRY,
        "idle_poll_s": 0.01,
    }
    base.update(kw)
    return WorkerOptions(**base)  # type: ignore[arg-type]


@pytest.fixture(params=["memory", "sqlite"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Queue:
    if request.param == "memory":
        return MemoryQueue()
    return open_queue(f"sqlite:///{tmp_path}/w.db")


def kinds(queue: Queue, kind: str) -> list[ev.Event]:
    return store_for(queue).events(EventFilter(kinds=(kind,)))


def drain(queue: Queue, **kw: object) -> Worker:
    worker = Worker(queue, store_for(queue), options(**kw))
    worker.result = worker.run()  # type: ignore[attr-defined]
    return worker


def test_poison_is_dead_lettered_at_once_and_never_retried(queue: Queue) -> None:
    mid = queue.publish(request(request_id="test-smoke-001"), {"source": "smoke"})
    w = drain(queue)
    assert w.counts["rejected"] == 1
    letter = queue.dlq_get(mid)
    assert (letter.reason, letter.attempts, dict(letter.attributes)) == (
        "request_id_invalid",
        1,
        {"source": "smoke"},
    )
    [rejected] = kinds(queue, ev.MESSAGE_REJECTED)
    assert rejected.reason == "request_id_invalid" and rejected.duration_ms is not None
    [log] = kinds(queue, ev.LOG)
    assert log.severity == "WARNING"
    assert log.message == 'Invalid request_id format: "test-smoke-001"'
    assert queue.stats().ready == 0 and queue.stats().delayed == 0


def test_success_acks_and_a_redelivered_request_is_a_duplicate(queue: Queue) -> None:
    rid = str(uuid.uuid4())
    queue.publish(request(request_id=rid))
    drain(queue)
    queue.publish(request(request_id=rid.upper()))
    w = drain(queue)
    assert w.counts == {"received": 1, "duplicate": 1}
    assert len(kinds(queue, ev.MESSAGE_SUCCEEDED)) == 1
    [dup] = kinds(queue, ev.MESSAGE_DUPLICATE)
    assert dup.request_id == rid
    assert store_for(queue).completed([rid]) == {rid}


def test_same_request_twice_in_one_batch_runs_once(
    queue: Queue, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("STEADYQ_TEST_CALLS", str(calls))
    rid = str(uuid.uuid4())
    queue.publish_batch([(request(request_id=rid), None)] * 3)
    w = drain(queue)
    assert len(calls.read_text().splitlines()) == 1
    assert (w.counts["succeeded"], w.counts["duplicate"]) == (1, 2)


def test_transient_failure_is_retried_then_succeeds(queue: Queue) -> None:
    queue.publish(request("flaky"))
    w = drain(queue)
    assert (w.counts["failed"], w.counts["retried"], w.counts["succeeded"]) == (1, 1, 1)
    [failed] = kinds(queue, ev.MESSAGE_FAILED)
    assert failed.attempt == 1 and "ConnectionError" in failed.message
    [ok] = kinds(queue, ev.MESSAGE_SUCCEEDED)
    assert ok.attempt == 2


def test_exhausted_attempts_go_to_the_dlq_with_the_last_error(queue: Queue) -> None:
    mid = queue.publish(request("broken"))
    w = drain(queue)
    assert w.counts["failed"] == 3 and w.counts["dead_lettered"] == 1
    letter = queue.dlq_get(mid)
    assert letter.reason == "max_attempts_exceeded" and letter.attempts == 3
    assert "ValueError: always broken" in letter.detail
    assert len(kinds(queue, ev.MESSAGE_DEAD_LETTERED)) == 1
    errors = store_for(queue).events(EventFilter(kinds=(ev.LOG,), min_severity="ERROR"))
    assert len(errors) == 3


def test_permanent_error_dead_letters_at_once(queue: Queue) -> None:
    mid = queue.publish(request("permanent"))
    w = drain(queue)
    assert w.counts == {"received": 1, "dead_lettered": 1}
    letter = queue.dlq_get(mid)
    assert (letter.reason, letter.attempts) == ("topic_refused", 1)


def test_retry_delay_keeps_message_for_the_next_execution(queue: Queue) -> None:
    queue.publish(request("flaky"))
    w = drain(queue, retry=RetryPolicy(60, 120, 3))
    assert w.counts["retried"] == 1
    assert queue.stats().delayed == 1
    assert w.result.status == "succeeded"  # type: ignore[attr-defined]


def test_handler_warnings_are_stored_with_labels(queue: Queue) -> None:
    rid = str(uuid.uuid4())
    queue.publish(request("warn", request_id=rid))
    drain(queue)
    [log] = kinds(queue, ev.LOG)
    assert (log.severity, log.message, log.request_id) == ("WARNING", "careful with warn", rid)


def test_deliveries_whose_workers_died_do_not_count_as_handler_runs(
    clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("STEADYQ_TEST_CALLS", str(calls))
    queue = MemoryQueue(clock=clock)
    queue.publish(request("fractions"))
    for _ in range(3):  # three workers died holding it, before its handler ran
        queue.pull(1, 5)
        clock.advance(6)
    w = Worker(queue, store_for(queue), options(), clock=clock)
    w.run()
    assert len(calls.read_text().splitlines()) == 1, "it ran: it had never run"
    assert w.counts["succeeded"] == 1


def test_delivery_past_max_deliveries_is_dead_lettered_without_running(
    clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("STEADYQ_TEST_CALLS", str(calls))
    queue = MemoryQueue(clock=clock)
    mid = queue.publish(request("fractions"))
    [d] = queue.pull(1, 5)
    queue.nack(d, 0, error="ValueError: the one run that reported")  # not counted: no ran=True
    for _ in range(9):  # then nine workers died holding it
        queue.pull(1, 5)
        clock.advance(6)
    w = Worker(queue, store_for(queue), options(), clock=clock)  # 3 attempts: 10 deliveries
    w.run()
    assert not calls.exists()
    letter = queue.dlq_get(mid)
    assert letter.reason == "max_deliveries_exceeded" and letter.attempts == 11
    assert "delivered 11 times" in letter.detail and "the one run that reported" in letter.detail


def test_handler_runs_are_counted_apart_from_deliveries(clock: FakeClock) -> None:
    queue = MemoryQueue(clock=clock)
    mid = queue.publish(request("broken"))
    opts = options(retry=RetryPolicy(10, 10, 2))
    Worker(queue, store_for(queue), opts, clock=clock).run()  # run 1 fails: retried in 10 s
    clock.advance(11)
    [d] = queue.pull(1, 5)  # a worker died holding it: a delivery, not a run
    assert (d.attempt, d.runs) == (2, 1)
    clock.advance(6)
    Worker(queue, store_for(queue), opts, clock=clock).run()  # run 2 fails: given up
    letter = queue.dlq_get(mid)
    assert letter.reason == "max_attempts_exceeded"
    assert letter.detail.startswith("gave up after 2 runs (3 deliveries); last error: ValueError")


def test_execution_is_recorded(queue: Queue) -> None:
    queue.publish_batch([(request(), None), (b"junk", None)])
    w = drain(queue)
    [record] = store_for(queue).executions()
    assert record.execution_id == w.execution_id
    assert record.status == "succeeded"
    assert record.ready_at is not None and record.startup_s is not None
    assert record.finished_at is not None and record.duration_s is not None
    assert record.data["counts"] == {"received": 2, "succeeded": 1, "rejected": 1}
    order = [e.kind for e in store_for(queue).events(EventFilter(execution_id=w.execution_id))]
    assert order[:2] == [ev.EXECUTION_STARTED, ev.EXECUTION_READY]
    assert order[-1] == ev.EXECUTION_FINISHED


def test_max_runtime_stops_pulling_when_a_new_deadline_would_not_fit(queue: Queue) -> None:
    queue.publish(request())
    w = drain(queue, max_runtime_s=10, deadline_s=30, drain=False)
    assert w.counts["received"] == 0
    assert w.result.detail == "time budget reached"  # type: ignore[attr-defined]
    assert queue.stats().ready == 1


def test_unloadable_handler_fails_the_execution(queue: Queue) -> None:
    w = drain(queue, handler="no.such.module:fn")
    assert int(w.result.exit_code) == 4  # type: ignore[attr-defined]
    [record] = store_for(queue).executions()
    assert record.status == "failed"


def test_second_stop_request_nacks_in_flight_work(tmp_path: Path) -> None:
    queue = open_queue(f"sqlite:///{tmp_path}/s.db")
    queue.publish(request("hang"))
    worker = Worker(
        queue,
        store_for(queue),
        options(runner="process", concurrency=1, deadline_s=60, drain=False),
    )
    original = worker._accept

    def accept_then_stop(deliveries, runner):  # type: ignore[no-untyped-def]
        original(deliveries, runner)
        worker.request_stop("test")
        worker.request_stop("test")

    worker._accept = accept_then_stop  # type: ignore[method-assign]
    result = worker.run()
    assert (result.status, int(result.exit_code)) == ("interrupted", 5)
    stats = queue.stats()
    assert stats.ready == 1, "the abandoned message is deliverable again at once"


def test_process_runner_enforces_the_deadline_and_keeps_going(tmp_path: Path) -> None:
    queue = open_queue(f"sqlite:///{tmp_path}/p.db")
    hang = queue.publish(request("hang"))
    queue.publish_batch([(request(), None) for _ in range(10)])
    w = drain(queue, runner="process", concurrency=2, deadline_s=0.5, retry=RetryPolicy(0, 0, 2))
    assert w.counts["succeeded"] == 10
    assert w.counts["timed_out"] == 2
    assert queue.dlq_get(hang).reason == "max_attempts_exceeded"
    timed = kinds(queue, ev.MESSAGE_TIMED_OUT)
    assert len(timed) == 2 and all(e.reason == "deadline_exceeded" for e in timed)


def test_process_runner_survives_a_dying_child(tmp_path: Path) -> None:
    queue = open_queue(f"sqlite:///{tmp_path}/d.db")
    dying = queue.publish(request("exit"))
    queue.publish_batch([(request(), None) for _ in range(5)])
    w = drain(queue, runner="process", concurrency=1, retry=RetryPolicy(0, 0, 2))
    assert w.counts["succeeded"] == 5 and w.counts["failed"] == 2
    letter = queue.dlq_get(dying)
    assert "exited with code 3" in letter.detail


def test_events_print_as_cloud_logging_lines(queue: Queue) -> None:
    buffer = io.StringIO()
    queue.publish(request(request_id="invalid-uuid-test-1762216900"))
    Worker(queue, store_for(queue), options(), sink=JsonLinesSink(buffer)).run()
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert {"severity", "message", "timestamp", LABELS_KEY} <= set(lines[0])
    warning = [x for x in lines if x["severity"] == "WARNING" and x[LABELS_KEY]["kind"] == "log"]
    assert warning[0]["message"].startswith("Invalid request_id format")
    assert lines[-1][LABELS_KEY]["kind"] == ev.EXECUTION_FINISHED


def test_retry_policy_bounds() -> None:
    policy = RetryPolicy(10, 600, 5)
    rng = random.Random(1)
    for attempt in range(1, 12):
        delays = [policy.delay_s(attempt, rng) for _ in range(200)]
        assert min(delays) >= 10
        assert max(delays) <= min(600, 10 * 2**attempt)
    assert max(policy.delay_s(9, rng) for _ in range(500)) > 300, "the span is jittered fully"
    assert policy.exhausted(5) and not policy.exhausted(4)
    with pytest.raises(ValueError):
        RetryPolicy(10, 5, 1)


def test_a_pass_writes_its_events_in_the_settle_transaction(queue: Queue) -> None:
    """received and succeeded of a pass reach the store with the ack, in one call."""
    from steadyq.brokers.base import Settlement, SettleResult

    calls: list[tuple[int, int]] = []
    real_settle = queue.settle

    def settle(settlements: list[Settlement], *, events: tuple[ev.Event, ...] = ()) -> SettleResult:
        calls.append((len(settlements), len(events)))
        return real_settle(settlements, events=events)

    queue.settle = settle  # type: ignore[method-assign]
    rids = [str(uuid.uuid4()) for _ in range(3)]
    for rid in rids:
        queue.publish(request(request_id=rid))
    w = drain(queue)
    assert w.counts == {"received": 3, "succeeded": 3}
    assert sum(n for n, _ in calls) == 3 and sum(e for _, e in calls) == 3
    assert {r.request_id: r.status for r in store_for(queue).requests()} == dict.fromkeys(
        rids, "completed"
    )
    assert len(kinds(queue, ev.MESSAGE_RECEIVED)) == 3


# -- a store of its own: outcomes recorded on the committer thread --------------------


class _WatchedStore:
    """A SQLite store that notes which messages' outcomes it recorded (and on which
    thread), and can fail or dawdle on demand."""

    def __init__(self, path: Path, *, failures: int = 0, delay_s: float = 0.0) -> None:
        from steadyq.brokers import open_store

        self.inner = open_store(f"sqlite:///{path}")
        self.failures = failures
        self.delay_s = delay_s
        self.recorded: set[str] = set()
        self.threads: set[str] = set()

    def write(self, events: list[ev.Event]) -> None:
        import threading
        import time

        from steadyq.errors import BackendUnavailable

        outcomes = {e.message_id for e in events if e.kind == ev.MESSAGE_SUCCEEDED}
        if outcomes:
            self.threads.add(threading.current_thread().name)
            if self.failures:
                self.failures -= 1
                raise BackendUnavailable("store is down (on purpose)")
            time.sleep(self.delay_s)
        self.inner.write(events)
        self.recorded |= {m for m in outcomes if m is not None}

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def _watch_acks(queue: MemoryQueue, store: _WatchedStore) -> list[str]:
    """Message ids as they are acked; fails the test if one is acked unrecorded."""
    from steadyq.brokers.base import Settlement, SettleResult

    acked: list[str] = []
    real_settle = queue.settle

    def settle(settlements: list[Settlement], *, events: tuple[ev.Event, ...] = ()) -> SettleResult:
        for s in settlements:
            if s.action == "ack":
                assert s.delivery.message_id in store.recorded, "acked before it was recorded"
                acked.append(s.delivery.message_id)
        return real_settle(settlements, events=events)

    queue.settle = settle  # type: ignore[method-assign]
    return acked


def test_a_separate_store_records_outcomes_beside_the_loop_before_each_ack(
    tmp_path: Path,
) -> None:
    queue = MemoryQueue()
    store = _WatchedStore(tmp_path / "store.db")
    ids = queue.publish_batch([(request(), None) for _ in range(300)])
    acked = _watch_acks(queue, store)
    result = Worker(queue, store, options(batch_size=50)).run()  # type: ignore[arg-type]
    assert result.counts == {"received": 300, "succeeded": 300}
    assert sorted(acked) == sorted(ids)
    assert store.threads and all(t.startswith("steadyq-commit") for t in store.threads)
    assert len(store.events(EventFilter(kinds=(ev.MESSAGE_SUCCEEDED,)))) == 300
    assert queue.pull(10, 30) == []


def test_a_background_commit_that_fails_is_retried_and_nothing_is_lost(tmp_path: Path) -> None:
    queue = MemoryQueue()
    store = _WatchedStore(tmp_path / "store.db", failures=2)
    ids = queue.publish_batch([(request(), None) for _ in range(120)])
    acked = _watch_acks(queue, store)
    result = Worker(queue, store, options(batch_size=40)).run()  # type: ignore[arg-type]
    assert result.exit_code == 0 and result.counts["succeeded"] == 120
    assert sorted(acked) == sorted(ids)
    succeeded = store.events(EventFilter(kinds=(ev.MESSAGE_SUCCEEDED,)))
    assert sorted(e.message_id for e in succeeded) == sorted(ids), "each recorded exactly once"
    logs = store.events(EventFilter(kinds=(ev.LOG,)))
    assert any("unavailable" in e.message and "on purpose" in e.message for e in logs)
    assert queue.pull(10, 30) == []


def test_a_copy_waits_while_the_first_outcome_is_still_being_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("STEADYQ_TEST_CALLS", str(calls))
    queue = MemoryQueue()
    store = _WatchedStore(tmp_path / "store.db", delay_s=0.3)
    rid = str(uuid.uuid4())
    queue.publish_batch([(request(request_id=rid), None)] * 2)
    result = Worker(queue, store, options(batch_size=1)).run()  # type: ignore[arg-type]
    assert len(calls.read_text().splitlines()) == 1, "the copy never ran the handler"
    assert (result.counts["succeeded"], result.counts["duplicate"]) == (1, 1)
    assert store.completed([rid]) == {rid}


def test_a_handler_error_keeps_its_traceback_on_the_event_and_the_letter(
    clock: FakeClock,
) -> None:
    queue = MemoryQueue(clock=clock)
    mid = queue.publish(request("broken"))
    Worker(queue, store_for(queue), options(retry=RetryPolicy(0, 0, 1)), clock=clock).run()
    [failed] = kinds(queue, ev.MESSAGE_FAILED)
    trace = failed.data["traceback"]
    assert trace.startswith("Traceback (most recent call last):")
    assert "in by_topic" in trace and trace.endswith("ValueError: always broken")
    letter = queue.dlq_get(mid)
    assert letter.detail.startswith("gave up after 1 run; last error: ValueError: always broken")
    assert trace in letter.detail


class _TwoLaneQueue(MemoryQueue):
    """A memory queue whose settle may run on two threads (as Pub/Sub's may); a
    settle with a dead letter in it takes ``letter_s`` first."""

    settles_concurrently = True

    def __init__(self, letter_s: float = 0.0) -> None:
        import threading

        super().__init__()
        self._settle_lock = threading.Lock()
        self.letter_s = letter_s
        self.dead_lettered_at: dict[str, float] = {}
        self.letter_batches: list[list[str]] = []  # the dead letters of each settle

    def settle(self, settlements, *, events=()):  # type: ignore[no-untyped-def, override]
        import time

        if self.letter_s and any(s.action == "dead_letter" for s in settlements):
            time.sleep(self.letter_s)
        with self._settle_lock:
            result = super().settle(settlements, events=events)
        letters = [s.delivery.message_id for s in result.applied if s.action == "dead_letter"]
        if letters:
            self.letter_batches.append(letters)
        self.dead_lettered_at.update(dict.fromkeys(letters, time.monotonic()))
        return result


def test_a_rejection_is_dead_lettered_beside_a_slow_commit_of_other_outcomes(
    tmp_path: Path,
) -> None:
    import time

    queue = _TwoLaneQueue()
    store = _WatchedStore(tmp_path / "store.db", delay_s=1.5)  # successes take 1.5 s to store
    good = queue.publish(request())
    poison = queue.publish(b"not json")
    acked = _watch_acks(queue, store)
    t0 = time.monotonic()
    result = Worker(queue, store, options(batch_size=1)).run()  # type: ignore[arg-type]
    assert result.counts == {"received": 2, "succeeded": 1, "rejected": 1}
    assert acked == [good]
    # the poison's letter landed while the success's commit was still storing
    assert queue.dead_lettered_at[poison] - t0 < 1.0, queue.dead_lettered_at
    [rejected] = store.events(EventFilter(kinds=(ev.MESSAGE_REJECTED,)))
    [arrival] = [
        e for e in store.events(EventFilter(kinds=(ev.MESSAGE_RECEIVED,))) if e.message_id == poison
    ]
    assert arrival.timestamp <= rejected.timestamp
    assert queue.dlq_get(poison).reason == "payload_not_json"


def test_rejections_pulled_while_the_lane_is_busy_all_go_in_its_next_commit(
    tmp_path: Path,
) -> None:
    """A success, then four poisons, one a pull: the last three are pulled while the
    lane still settles the first and the committer still stores the success. The
    lane's next commit takes all three the moment it starts; none waits for the next
    ordinary commit, which waits for the slow one in flight."""
    import time

    queue = _TwoLaneQueue(letter_s=0.4)  # the lane is busy a while with each settle
    store = _WatchedStore(tmp_path / "store.db", delay_s=4.0)  # the success: 4 s to store
    queue.publish(request())
    poisons = [queue.publish(body) for body in (b"not json", b"[1, 2]", b"3", b"{")]
    t0 = time.monotonic()
    result = Worker(queue, store, options(batch_size=1)).run()  # type: ignore[arg-type]
    assert result.counts == {"received": 5, "succeeded": 1, "rejected": 4}
    took = {mid: at - t0 for mid, at in queue.dead_lettered_at.items()}
    # behind the ordinary commit they would have waited the success's 4 s
    assert all(took[mid] < 3.0 for mid in poisons), took
    # in two settles at most: the first poison's, and the rest together (a third
    # would be one that waited for the ordinary commit)
    assert len(queue.letter_batches) <= 2, queue.letter_batches
    assert [m for batch in queue.letter_batches for m in batch] == poisons
    assert queue.dlq_get(poisons[1]).reason == "payload_not_object"


def test_a_handler_error_text_utf8_cannot_hold_is_stored_not_a_poison(tmp_path: Path) -> None:
    """A lone surrogate in a handler's error and log line is stored as ``?``: the
    execution goes on, the message is retried and dead-lettered like any failure."""
    queue = open_queue(f"sqlite:///{tmp_path}/odd.db")
    mid = queue.publish(request("odd"))
    result = Worker(
        queue, store_for(queue), options(handler="tests.worker_handlers:odd_text")
    ).run()
    assert result.exit_code == 0, result.detail
    assert result.counts["dead_lettered"] == 1
    letter = queue.dlq_get(mid)
    assert letter.reason == "max_attempts_exceeded" and "bad byte in odd: ?" in letter.detail
    logs = [e.message for e in kinds(queue, ev.LOG) if "careful" in (e.message or "")]
    assert logs and all("careful: ?" in m for m in logs)
    queue.close()


def test_a_pull_whose_answer_was_lost_does_not_end_a_drain_early(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server leased a batch and committed, and the answer never came back (the
    connection died): those messages are invisible until their leases lapse, and a
    drain that ended at the next empty pull would leave them behind unrun."""
    from steadyq.errors import BackendUnavailable

    ids = [queue.publish(request()) for _ in range(30)]
    real_pull = queue.pull
    lost = []

    def pull(max_messages: int, lease_s: float) -> list:  # type: ignore[type-arg]
        got = real_pull(max_messages, lease_s)
        if not lost:
            lost.extend(got)
            raise BackendUnavailable("connection lost after the server committed the lease")
        return got

    monkeypatch.setattr(queue, "pull", pull)
    worker = drain(queue, lease_s=0.5, backend_outage_s=30.0)
    assert worker.result.exit_code == 0
    assert lost, "the first pull's batch was lost"
    succeeded = {e.message_id for e in kinds(queue, ev.MESSAGE_SUCCEEDED)}
    assert succeeded == set(ids), "the lost batch ran once its leases lapsed"
    assert queue.stats().in_flight == 0


def test_the_loop_runs_with_the_heap_it_started_with_frozen_and_gives_it_back(
    tmp_path: Path,
) -> None:
    import gc

    from tests import worker_handlers

    queue = open_queue(f"sqlite:///{tmp_path}/w.db")
    queue.publish_batch([(request(), None), (request(), None)])
    worker_handlers.FREEZE_COUNTS.clear()
    before = gc.get_freeze_count()
    w = drain(queue, handler="tests.worker_handlers:frozen_heap")
    assert w.counts["succeeded"] == 2
    # modules, classes and the clients' objects: out of the collector's way while it runs
    assert len(worker_handlers.FREEZE_COUNTS) == 2
    assert min(worker_handlers.FREEZE_COUNTS) > before + 1000
    assert gc.get_freeze_count() == before  # and back in the collector's care after
