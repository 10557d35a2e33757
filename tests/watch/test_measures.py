"""The measures engine against stores whose events are known, figure by figure."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from steadyq._sqlite import SqliteDatabase
from steadyq.brokers.memory import MemoryQueue
from steadyq.errors import BackendError
from steadyq.gate import REASONS, REQUEST_ID_INVALID, SCHEMA_INVALID
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import EventStore
from steadyq.telemetry.store_memory import MemoryStore
from steadyq.telemetry.store_sqlite import SqliteStore
from steadyq.watch.measures import (
    MEASURES,
    QUEUE_MEASURES,
    Figures,
    Snapshotter,
    is_measure,
    sample_queue,
)
from steadyq.worker import Worker, WorkerOptions

T0 = 1_800_000_000.0
HOUR = 3600.0

ADDITIVE = [
    name
    for name, m in MEASURES.items()
    if m.kind == "count"
    and name not in ("executions.total", "errors.patterns")
    and name != "errors.new_patterns"
]


def sqlite_store(path: Path | str) -> SqliteStore:
    return SqliteStore(SqliteDatabase(path), owns_db=True)


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    return sqlite_store(tmp_path / "events.db")


def execution(
    eid: str,
    start: float,
    *,
    ready: float | None = None,
    finish: float | None = None,
    status: str = "succeeded",
    max_runtime_s: float | None = None,
) -> list[Event]:
    events = [
        Event(
            ev.EXECUTION_STARTED,
            T0 + start,
            execution_id=eid,
            data={"max_runtime_s": max_runtime_s, "host": "h"},
        )
    ]
    if ready is not None:
        events.append(
            Event(
                ev.EXECUTION_READY,
                T0 + ready,
                execution_id=eid,
                duration_ms=(ready - start) * 1000,
            )
        )
    if finish is not None:
        events.append(
            Event(
                ev.EXECUTION_FINISHED,
                T0 + finish,
                severity="INFO" if status == "succeeded" else "ERROR",
                message=f"execution {status}",
                execution_id=eid,
                data={"status": status, "exit_code": 0},
            )
        )
    return events


def rejected(
    at: float, reason: str, message_id: str, *, attempt: int = 1, ms: float = 1.0
) -> list[Event]:
    return [
        Event(
            ev.MESSAGE_REJECTED,
            T0 + at,
            severity="WARNING",
            message=f"bad input {message_id}",
            message_id=message_id,
            attempt=attempt,
            reason=reason,
            duration_ms=ms,
            execution_id="x",
        ),
        Event(
            ev.LOG,
            T0 + at,
            severity="WARNING",
            message=f"Invalid request_id format: {message_id}",
            message_id=message_id,
            reason=reason,
            execution_id="x",
        ),
    ]


def failed(at: float, request_id: str, eid: str, text: str = "ValueError: boom") -> Event:
    return Event(
        ev.MESSAGE_FAILED,
        T0 + at,
        severity="ERROR",
        message=text,
        request_id=request_id,
        execution_id=eid,
        reason="handler_error",
        attempt=1,
    )


def log(at: float, text: str, severity: str = "WARNING") -> Event:
    return Event(ev.LOG, T0 + at, severity=severity, message=text, execution_id="x")


def write(store: EventStore, events: Sequence[Event]) -> None:
    store.write(sorted(events, key=lambda e: e.timestamp))


def values(figures: Figures, *names: str) -> dict[str, Any]:
    return {n: figures.values[n] for n in names}


# -- the catalogue ---------------------------------------------------------------------


def test_catalogue_names_kinds_and_per_reason_measures() -> None:
    required = [
        "executions.total",
        "executions.succeeded",
        "executions.failed",
        "executions.timed_out",
        "executions.interrupted",
        "executions.running",
        "executions.success_rate",
        "executions.duration_s.avg",
        "executions.duration_s.min",
        "executions.duration_s.max",
        "executions.duration_s.p95",
        "executions.startup_s.avg",
        "executions.startup_s.max",
        "messages.received",
        "messages.succeeded",
        "messages.failed",
        "messages.timed_out",
        "messages.rejected",
        "messages.dead_lettered",
        "messages.duplicate",
        "messages.rejected.redelivered",
        "messages.rejection_latency_ms.p99",
        "requests.failed_in_multiple_executions",
        "logs.warnings",
        "errors.patterns",
        "errors.new_patterns",
        "queue.ready",
        "queue.in_flight",
        "queue.oldest_unacked_age_s",
        "dlq.size",
    ]
    for name in required:
        assert is_measure(name), name
    for reason in REASONS:
        assert is_measure(f"messages.rejected.{reason}")
    assert not is_measure("messages.rejected.nonsense")
    assert not is_measure("executions.totl")
    for name, measure in MEASURES.items():
        assert measure.name == name
        assert measure.kind in ("count", "ratio", "seconds", "ms", "gauge")
        assert measure.unit and measure.description


def test_empty_store_counts_zero_and_statistics_none(store: SqliteStore) -> None:
    snap = Snapshotter(store, window_start=T0, baseline=(T0 - HOUR, T0))
    interval, cumulative = snap.advance(T0 + HOUR)
    for figures in (interval, cumulative):
        assert set(figures.values) == set(MEASURES)
        for name, measure in MEASURES.items():
            value = figures.values[name]
            if name in QUEUE_MEASURES or measure.kind in ("ratio", "seconds", "ms"):
                assert value is None, name
            else:
                assert value == 0, name
    base = snap.baseline_figures()
    assert base is not None
    assert base.values["errors.new_patterns"] is None
    assert base.values["executions.total"] == 0
    json.dumps(cumulative.to_dict())  # JSON-ready


def test_new_patterns_without_baseline_is_no_data(store: SqliteStore) -> None:
    write(store, [log(10, "disk full on volume 3")])
    snap = Snapshotter(store, window_start=T0)
    assert snap.baseline_figures() is None
    _, cumulative = snap.advance(T0 + HOUR)
    assert cumulative.values["errors.patterns"] == 1
    assert cumulative.values["errors.new_patterns"] is None


# -- executions ------------------------------------------------------------------------


def test_executions_by_status_durations_and_startup(store: SqliteStore) -> None:
    write(
        store,
        [
            *execution("ok1", 0, ready=10, finish=100),
            *execution("ok2", 50, ready=55, finish=350),
            *execution("bad", 60, ready=62, finish=260, status="failed"),
            *execution("int", 70, ready=71, finish=170, status="interrupted"),
            *execution("tmo", 80, ready=90, finish=1880, status="timed_out"),
            # killed by the platform: started with a 600 s budget, never finished
            *execution("killed", 200, ready=230, max_runtime_s=600),
            # still inside its budget at the checkpoint
            *execution("live", 3000, ready=3004, max_runtime_s=1800),
        ],
    )
    snap = Snapshotter(store, window_start=T0)
    _, fig = snap.advance(T0 + HOUR)
    assert values(
        fig,
        "executions.total",
        "executions.succeeded",
        "executions.failed",
        "executions.interrupted",
        "executions.timed_out",
        "executions.running",
    ) == {
        "executions.total": 7,
        "executions.succeeded": 2,
        "executions.failed": 1,
        "executions.interrupted": 1,
        "executions.timed_out": 2,
        "executions.running": 1,
    }
    assert fig.values["executions.success_rate"] == pytest.approx(2 / 6)
    # durations: 100, 300, 200, 100, 1800, 600 (the killed one, at its deadline)
    assert fig.values["executions.duration_s.min"] == pytest.approx(100)
    assert fig.values["executions.duration_s.max"] == pytest.approx(1800)
    assert fig.values["executions.duration_s.avg"] == pytest.approx(3100 / 6)
    assert fig.values["executions.duration_s.p95"] == pytest.approx(1800)
    # startups: 10, 5, 2, 1, 10, 30, 4
    assert fig.values["executions.startup_s.max"] == pytest.approx(30)
    assert fig.values["executions.startup_s.avg"] == pytest.approx(62 / 7)
    statuses = [p[2] for p in fig.details["durations"]]
    assert sorted(statuses) == sorted(
        ["succeeded", "succeeded", "failed", "interrupted", "timed_out", "timed_out"]
    )


def test_p95_is_nearest_rank(store: SqliteStore) -> None:
    events: list[Event] = []
    for i in range(1, 21):  # durations 10, 20, ... 200 s
        events += execution(f"e{i}", i * 300, finish=i * 300 + i * 10)
    write(store, events)
    _, fig = Snapshotter(store, window_start=T0).advance(T0 + 8 * HOUR)
    assert fig.values["executions.duration_s.p95"] == pytest.approx(190)
    assert fig.values["executions.duration_s.max"] == pytest.approx(200)


def test_killed_execution_counts_once_at_its_deadline(store: SqliteStore) -> None:
    # budget 600 s: the deadline is at +700; a late finish event at +900 changes nothing
    write(
        store,
        execution("k", 100, ready=110, finish=900, status="failed", max_runtime_s=600),
    )
    snap = Snapshotter(store, window_start=T0)
    first, _ = snap.advance(T0 + 500)
    assert values(first, "executions.running", "executions.timed_out") == {
        "executions.running": 1,
        "executions.timed_out": 0,
    }
    second, _ = snap.advance(T0 + 800)
    assert values(second, "executions.running", "executions.timed_out", "executions.failed") == {
        "executions.running": 0,
        "executions.timed_out": 1,
        "executions.failed": 0,
    }
    assert second.values["executions.duration_s.max"] == pytest.approx(600)
    third, cumulative = snap.advance(T0 + 1000)
    assert third.values["executions.total"] == 0
    assert cumulative.values["executions.timed_out"] == 1
    assert cumulative.values["executions.total"] == 1


def test_default_budget_applies_when_the_execution_states_none(store: SqliteStore) -> None:
    write(store, execution("quiet", 0, ready=5))
    _, without = Snapshotter(store, window_start=T0).advance(T0 + HOUR)
    assert values(without, "executions.running", "executions.timed_out") == {
        "executions.running": 1,
        "executions.timed_out": 0,
    }
    _, with_budget = Snapshotter(store, window_start=T0, max_runtime_s=1800).advance(T0 + HOUR)
    assert values(with_budget, "executions.running", "executions.timed_out") == {
        "executions.running": 0,
        "executions.timed_out": 1,
    }


def test_execution_started_before_the_window_counts_when_it_ends(store: SqliteStore) -> None:
    write(
        store,
        [
            *execution("early", -300, ready=-290, finish=60),
            *execution("done-before", -900, finish=-600),
        ],
    )
    _, fig = Snapshotter(store, window_start=T0).advance(T0 + HOUR)
    assert fig.values["executions.total"] == 1
    assert fig.values["executions.duration_s.max"] == pytest.approx(360)


# -- messages ----------------------------------------------------------------------------


def test_rejections_per_reason_redelivered_and_latency(store: SqliteStore) -> None:
    events: list[Event] = []
    for i in range(98):
        events += rejected(i, REQUEST_ID_INVALID, f"m{i}", ms=1.0 + i / 100)
    events += rejected(200, SCHEMA_INVALID, "s1", ms=50.0)
    # a left-over from before the fix: attempts on it, but rejected once in the window
    events += rejected(300, SCHEMA_INVALID, "s2", attempt=2, ms=80.0)
    events += rejected(400, REQUEST_ID_INVALID, "m5", attempt=2, ms=2.0)  # rejected again
    events += rejected(500, REQUEST_ID_INVALID, "m5", attempt=3, ms=2.0)  # and again
    write(store, events)
    _, fig = Snapshotter(store, window_start=T0).advance(T0 + HOUR)
    assert fig.values["messages.rejected"] == 102
    assert fig.values[f"messages.rejected.{REQUEST_ID_INVALID}"] == 100
    assert fig.values[f"messages.rejected.{SCHEMA_INVALID}"] == 2
    assert fig.values["messages.rejected.payload_not_json"] == 0
    assert fig.values["messages.rejected.redelivered"] == 2
    assert fig.details["rejected_on_a_later_attempt"] == 3
    # 102 samples: rank 101 is 50 ms; the sketch answers within 1 %
    assert fig.values["messages.rejection_latency_ms.p99"] == pytest.approx(50.0, rel=0.01)
    assert fig.details["rejected_by_reason"] == {REQUEST_ID_INVALID: 100, SCHEMA_INVALID: 2}
    # a rejection writes a WARNING event and a WARNING log line
    assert fig.values["logs.warnings"] == 204


def test_redelivery_is_recognised_across_intervals(store: SqliteStore) -> None:
    write(
        store, [*rejected(10, REQUEST_ID_INVALID, "m1"), *rejected(2000, REQUEST_ID_INVALID, "m1")]
    )
    snap = Snapshotter(store, window_start=T0)
    first, _ = snap.advance(T0 + 1000)
    second, cumulative = snap.advance(T0 + HOUR)
    assert first.values["messages.rejected.redelivered"] == 0
    assert second.values["messages.rejected.redelivered"] == 1
    assert cumulative.values["messages.rejected.redelivered"] == 1


def test_message_outcome_counts(store: SqliteStore) -> None:
    write(
        store,
        [
            Event(ev.MESSAGE_RECEIVED, T0 + 1, message_id="a", attempt=1),
            Event(ev.MESSAGE_RECEIVED, T0 + 2, message_id="b", attempt=1),
            Event(ev.MESSAGE_RECEIVED, T0 + 3, message_id="c", attempt=1),
            Event(ev.MESSAGE_SUCCEEDED, T0 + 4, message_id="a", request_id="ra", duration_ms=5),
            Event(ev.MESSAGE_DUPLICATE, T0 + 5, message_id="b", request_id="ra"),
            Event(
                ev.MESSAGE_TIMED_OUT,
                T0 + 6,
                severity="ERROR",
                message="deadline exceeded after 600 s",
                request_id="rc",
                execution_id="e1",
                reason="deadline_exceeded",
            ),
            Event(
                ev.MESSAGE_DEAD_LETTERED,
                T0 + 7,
                severity="ERROR",
                message="gave up after 3 attempts",
                request_id="rc",
                execution_id="e1",
                reason="max_attempts_exceeded",
            ),
            Event(ev.LOG, T0 + 8, severity="NOTICE", message="queue available again"),
        ],
    )
    _, fig = Snapshotter(store, window_start=T0).advance(T0 + HOUR)
    assert values(
        fig,
        "messages.received",
        "messages.succeeded",
        "messages.duplicate",
        "messages.timed_out",
        "messages.dead_lettered",
        "messages.failed",
        "logs.warnings",
        "requests.failed_in_multiple_executions",
    ) == {
        "messages.received": 3,
        "messages.succeeded": 1,
        "messages.duplicate": 1,
        "messages.timed_out": 1,
        "messages.dead_lettered": 1,
        "messages.failed": 0,
        "logs.warnings": 2,
        "requests.failed_in_multiple_executions": 0,  # both failures in one execution
    }
    assert fig.details["dead_lettered_by_reason"] == {"max_attempts_exceeded": 1}
    assert fig.details["failures_by_reason"] == {"deadline_exceeded": 1}
    # everything that entered the DLQ: rejections plus dead letters
    assert fig.values["messages.to_dlq"] == (
        fig.values["messages.rejected"] + fig.values["messages.dead_lettered"]  # type: ignore[operator]
    )
    assert fig.values["messages.to_dlq"] >= 1  # type: ignore[operator]


def test_request_failing_in_two_executions(store: SqliteStore) -> None:
    write(
        store,
        [
            failed(10, "r1", "e1"),
            failed(20, "r2", "e1"),
            failed(30, "r2", "e1"),  # same execution twice: not repeated
            failed(2000, "r1", "e2"),  # second execution: repeated from here
            failed(2500, "r1", "e3"),  # third: still one request
        ],
    )
    snap = Snapshotter(store, window_start=T0)
    first, _ = snap.advance(T0 + 1000)
    second, cumulative = snap.advance(T0 + HOUR)
    assert first.values["requests.failed_in_multiple_executions"] == 0
    assert second.values["requests.failed_in_multiple_executions"] == 1
    assert cumulative.values["requests.failed_in_multiple_executions"] == 1
    assert cumulative.details["failed_requests"] == [{"request_id": "r1", "executions": 3}]
    assert cumulative.values["messages.failed"] == 5


# -- error patterns ----------------------------------------------------------------------


def test_new_pattern_against_the_baseline(store: SqliteStore) -> None:
    baseline = [log(-3000 + i, f"lease on message m{i} was lost after {i} s") for i in range(5)]
    window = [
        log(100, "lease on message m77 was lost after 12 s"),  # a baseline template
        log(200, "disk quota exceeded on volume 7 for tenant 42", "ERROR"),
        log(300, "disk quota exceeded on volume 9 for tenant 42", "ERROR"),
        log(400, "disk quota exceeded on volume 9 for tenant 42", "ERROR"),
        log(500, "debug chatter that is below warning", "INFO"),
        # the gate's own log line is measured by the rejection counts, not mined
        *rejected(600, REQUEST_ID_INVALID, "test-smoke-001"),
    ]
    write(store, baseline + window)
    snap = Snapshotter(store, window_start=T0, baseline=(T0 - HOUR, T0))
    base = snap.baseline_figures()
    assert base is not None
    assert base.values["errors.patterns"] == 1
    _, fig = snap.advance(T0 + HOUR)
    assert fig.values["errors.patterns"] == 2
    assert fig.values["errors.new_patterns"] == 1
    [new] = fig.details["new_patterns"]
    assert new["count"] == 3
    assert new["example"] == "disk quota exceeded on volume 7 for tenant 42"
    assert "disk quota exceeded on volume" in new["template"]
    assert "7" not in new["template"]


def test_failure_event_texts_are_mined(store: SqliteStore) -> None:
    write(
        store, [failed(10 + i, f"r{i}", "e1", f"KeyError: 'field_{i}' missing") for i in range(4)]
    )
    snap = Snapshotter(store, window_start=T0, baseline=(T0 - HOUR, T0))
    _, fig = snap.advance(T0 + HOUR)
    assert fig.values["errors.new_patterns"] == 1
    assert fig.details["new_patterns"][0]["count"] == 4


def test_a_new_error_behind_a_familiar_wrapper_is_still_new(store: SqliteStore) -> None:
    # the "Handler attempt N failed: ..." lines share a prefix and join one template;
    # the failure event's own text is what tells the new error apart
    baseline = [failed(-1000, "r0", "e0", "ValueError: bad uuid 'x'")]
    baseline.append(log(-1000, "Handler attempt 1 failed: ValueError: bad uuid 'x'", "ERROR"))
    window = [failed(100, "r1", "e1", "KeyError: missing field 'topic'")]
    window.append(log(100, "Handler attempt 1 failed: KeyError: missing field 'topic'", "ERROR"))
    write(store, baseline + window)
    snap = Snapshotter(store, window_start=T0, baseline=(T0 - HOUR, T0))
    _, fig = snap.advance(T0 + HOUR)
    assert fig.values["errors.new_patterns"] == 1
    assert fig.details["new_patterns"][0]["example"] == "KeyError: missing field 'topic'"


def test_an_unreadable_store_raises_backend_error(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "gone.db")
    snap = Snapshotter(store, window_start=T0)
    store.close()
    with pytest.raises(BackendError):
        snap.advance(T0 + 60)


def test_a_failed_read_can_be_retried_without_counting_twice(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(
        store,
        [
            *execution("k", 0, ready=5, max_runtime_s=600),
            *rejected(10, REQUEST_ID_INVALID, "m1"),
            failed(20, "r1", "e1"),
            failed(30, "r1", "e2"),
            log(40, "disk quota exceeded on volume 7", "ERROR"),
        ],
    )
    snap = Snapshotter(store, window_start=T0)
    reader = snap._reader
    real_texts = reader.texts
    calls = []

    def flaky(a: float, b: float) -> Any:
        calls.append(a)
        if len(calls) == 1:
            raise BackendError("database is locked")
        return real_texts(a, b)

    monkeypatch.setattr(reader, "texts", flaky)
    with pytest.raises(BackendError):
        snap.advance(T0 + HOUR)
    _, retried = snap.advance(T0 + HOUR)
    _, fresh = Snapshotter(store, window_start=T0).advance(T0 + HOUR)
    assert retried.to_dict() == fresh.to_dict()
    assert retried.values["requests.failed_in_multiple_executions"] == 1
    assert retried.values["executions.timed_out"] == 1


# -- merging -----------------------------------------------------------------------------


def test_advance_must_move_forward(store: SqliteStore) -> None:
    snap = Snapshotter(store, window_start=T0)
    snap.advance(T0 + 10)
    with pytest.raises(ValueError):
        snap.advance(T0 + 10)
    with pytest.raises(ValueError):
        Snapshotter(store, window_start=T0, baseline=(T0, T0 - 1))


TEMPLATES = (
    "lease on message {n} was lost",
    "could not extend lease: database is locked after {n} ms",
    "upstream returned status {n} for render",
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Event], list[float]]:
    span = 2 * HOUR
    offsets = st.integers(min_value=-600, max_value=int(span) + 600)
    events: list[Event] = []
    for i in range(draw(st.integers(0, 5))):
        start = draw(offsets)
        finish = draw(st.one_of(st.none(), st.integers(start, start + 3000)))
        events += execution(
            f"e{i}",
            start,
            ready=start + draw(st.integers(0, 60)),
            finish=finish,
            status=draw(st.sampled_from(["succeeded", "failed", "timed_out", "interrupted"])),
            max_runtime_s=draw(st.sampled_from([None, 900.0, 1800.0])),
        )
    for _ in range(draw(st.integers(0, 40))):
        at = draw(offsets)
        choice = draw(st.integers(0, 4))
        if choice == 0:
            events += rejected(
                at,
                draw(st.sampled_from(REASONS)),
                f"m{draw(st.integers(0, 6))}",
                attempt=draw(st.integers(1, 3)),
                ms=draw(st.floats(0.01, 500.0)),
            )
        elif choice == 1:
            events.append(failed(at, f"r{draw(st.integers(0, 4))}", f"e{draw(st.integers(0, 3))}"))
        elif choice == 2:
            text = draw(st.sampled_from(TEMPLATES)).format(n=draw(st.integers(0, 999)))
            events.append(log(at, text, draw(st.sampled_from(["INFO", "WARNING", "ERROR"]))))
        else:
            kind = draw(st.sampled_from([ev.MESSAGE_RECEIVED, ev.MESSAGE_SUCCEEDED]))
            events.append(Event(kind, T0 + at, message_id="m", attempt=1))
    cuts = sorted(set(draw(st.lists(st.integers(1, int(span) - 1), max_size=6))))
    return events, [T0 + c for c in cuts] + [T0 + span]


def _normalised(figures: Figures) -> dict[str, Any]:
    data = figures.to_dict()
    data.pop("start")
    return data


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(histories())
def test_cumulative_equals_the_merge_of_intervals(
    history: tuple[list[Event], list[float]],
) -> None:
    events, cuts = history
    store = SqliteStore(SqliteDatabase(":memory:"), owns_db=True)
    try:
        write(store, events)
        baseline = (T0 - 2 * HOUR, T0 - 600)
        stepwise = Snapshotter(store, window_start=T0, baseline=baseline, max_runtime_s=1200)
        intervals: list[Figures] = []
        cumulative: Figures | None = None
        for until in cuts:
            interval, cumulative = stepwise.advance(until)
            intervals.append(interval)
        assert cumulative is not None
        whole = Snapshotter(store, window_start=T0, baseline=baseline, max_runtime_s=1200)
        _, once = whole.advance(cuts[-1])
        assert _normalised(cumulative) == _normalised(once)
        for name in ADDITIVE:
            assert sum(int(f.values[name] or 0) for f in intervals) == once.values[name], name
        assert intervals[-1].values["executions.running"] == once.values["executions.running"]
        memory = MemoryStore()
        write(memory, events)
        _, through_the_api = Snapshotter(
            memory, window_start=T0, baseline=baseline, max_runtime_s=1200
        ).advance(cuts[-1])
        assert _normalised(through_the_api) == _normalised(once)
    finally:
        store.close()


# -- other stores, real workers, the queue -------------------------------------------------


def test_memory_store_gives_the_same_figures(tmp_path: Path) -> None:
    events = [
        *execution("ok", 0, ready=3, finish=400),
        *execution("killed", 100, ready=104, max_runtime_s=600),
        *rejected(10, REQUEST_ID_INVALID, "m1", ms=0.4),
        *rejected(20, REQUEST_ID_INVALID, "m1", attempt=2, ms=0.6),
        failed(30, "r1", "ok"),
        failed(900, "r1", "killed"),
        log(40, "disk quota exceeded on volume 7 for tenant 42", "ERROR"),
        log(-100, "lease on message 4 was lost"),
    ]
    figures = []
    for store in (MemoryStore(), sqlite_store(tmp_path / "s.db")):
        write(store, events)
        snap = Snapshotter(store, window_start=T0, baseline=(T0 - HOUR, T0))
        snap.advance(T0 + 600)
        _, cumulative = snap.advance(T0 + HOUR)
        figures.append(cumulative.to_dict())
    assert figures[0] == figures[1]
    assert figures[0]["values"]["executions.timed_out"] == 1
    assert figures[0]["values"]["requests.failed_in_multiple_executions"] == 1


def test_figures_of_a_real_worker_run(tmp_path: Path) -> None:
    clock_now = [T0]

    def clock() -> float:
        clock_now[0] += 0.01
        return clock_now[0]

    queue = MemoryQueue(clock=clock)
    store = queue.colocated_store
    assert store is not None
    good = '{{"request_id": "5f0c1f7e-2a7b-4c56-9a8e-1d2c3b4a5{:03d}", "topic": "fractions"}}'
    for i in range(5):
        queue.publish(good.format(i).encode())
    queue.publish(b'{"request_id": "test-smoke-001", "topic": "fractions"}')
    queue.publish(b"not json")
    options = WorkerOptions(
        handler="tests.worker_handlers:by_topic",
        runner="inline",
        drain=True,
        idle_poll_s=0.01,
        max_runtime_s=1800,
    )
    result = Worker(queue, store, options, clock=clock).run()
    assert result.status == "succeeded"
    snap = Snapshotter(store, window_start=T0, baseline=(T0 - HOUR, T0))
    _, fig = snap.advance(clock_now[0] + 1)
    assert values(
        fig,
        "executions.total",
        "executions.succeeded",
        "messages.received",
        "messages.succeeded",
        "messages.rejected",
        f"messages.rejected.{REQUEST_ID_INVALID}",
        "messages.rejected.payload_not_json",
        "errors.new_patterns",
    ) == {
        "executions.total": 1,
        "executions.succeeded": 1,
        "messages.received": 7,
        "messages.succeeded": 5,
        "messages.rejected": 2,
        f"messages.rejected.{REQUEST_ID_INVALID}": 1,
        "messages.rejected.payload_not_json": 1,
        "errors.new_patterns": 0,
    }
    assert fig.values["executions.startup_s.max"] is not None
    assert sample_queue(queue) == {
        "queue.ready": 0,
        "queue.in_flight": 0,
        "queue.delayed": 0,
        "queue.oldest_unacked_age_s": None,
        "dlq.size": 2,
    }
