"""The cloudrun:// live source against local gRPC servers speaking Google's own types."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from steadyq.brokers import open_store
from steadyq.cli import app
from steadyq.errors import BackendError, ConfigError
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.logs import cloud_logging_line
from steadyq.telemetry.store_sqlite import SqliteStore
from steadyq.watch.plan import load_plan
from steadyq.watch.run import Watch
from steadyq.watch.sources.base import SourceUnavailable
from steadyq.watch.sources.gcloud import EntryConverter
from tests.conftest import FakeClock

try:
    import grpc
    from google.cloud import logging_v2, run_v2  # noqa: F401
except ImportError as missing:  # pragma: no cover - the test extra installs them
    reason = f"the cloudrun:// tests need steadyq[gcp] and grpcio: {missing}"
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"required under CI: {reason}") from missing
    pytest.skip(reason, allow_module_level=True)

from google.api_core import exceptions as api
from google.api_core.retry import Retry, if_exception_type
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from google.cloud.logging_v2.types import LogEntry
from google.protobuf import struct_pb2

from steadyq.watch.sources.cloudrun import CloudRunSource, parse_source_url
from tests.watch.gcp_servers import FakeGoogle, google_servers

T0 = 1_800_000_000.0
PROJECT, REGION, JOB = "proj", "europe-west1", "worker"
URL = f"cloudrun://{PROJECT}/{REGION}/{JOB}"
PARENT = f"projects/{PROJECT}/locations/{REGION}/jobs/{JOB}"
PATTERN = "Invalid request_id format: '(?P<request_id>[^']*)'"


def _ts(at: float) -> dict[str, int]:
    return {"seconds": int(at), "nanos": round((at % 1) * 1e9)}


def execution(
    name: str, start: float, seconds: float | None, state: str = "", msg: str = ""
) -> Any:
    conditions = []
    if state:
        conditions.append(
            run_v2.Condition(
                type_="Completed",
                state=run_v2.Condition.State[state],
                message=msg,
                execution_reason=run_v2.Condition.ExecutionReason.NON_ZERO_EXIT_CODE
                if state == "CONDITION_FAILED"
                else None,
            )
        )
    ex = run_v2.Execution(
        name=f"{PARENT}/executions/{name}",
        job=JOB,
        create_time=_ts(start - 5),
        start_time=_ts(start),
        task_count=1,
        template={"timeout": {"seconds": 1800}, "max_retries": 0},
        conditions=conditions,
    )
    if seconds is not None:
        ex.completion_time = _ts(start + seconds)
    return ex


def entry(
    i: int,
    at: float,
    text: str | None = None,
    payload: dict[str, Any] | None = None,
    severity: str | None = None,
    stream: str = "stderr",
    execution: str = "worker-a",
) -> Any:
    e = LogEntry(
        insert_id=f"id{i:08d}",
        log_name=f"projects/{PROJECT}/logs/run.googleapis.com%2F{stream}",
        timestamp=_ts(at),
        labels={
            "run.googleapis.com/execution_name": execution,
            "run.googleapis.com/task_attempt": "0",
        },
    )
    if severity:
        e.severity = severity
    if payload is not None:
        struct = struct_pb2.Struct()
        struct.update(payload)
        LogEntry.pb(e).json_payload.CopyFrom(struct)
    else:
        e.text_payload = text or ""
    return e


def steadyq_line(i: int, event: Event) -> Any:
    """What Cloud Run makes of a steadyq worker's JSON line."""
    record = json.loads(cloud_logging_line(event))
    labels = record.pop("logging.googleapis.com/labels")
    severity = record.pop("severity")
    record.pop("timestamp")
    e = entry(i, event.timestamp, payload=record, severity=severity, stream="stdout")
    e.labels.update(labels)
    return e


@pytest.fixture
def fake() -> FakeGoogle:
    return FakeGoogle()


@pytest.fixture
def endpoint(fake: FakeGoogle) -> Iterator[str]:
    with google_servers(fake) as address:
        yield address


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = open_store(f"sqlite:///{tmp_path / 'live.db'}")
    assert isinstance(s, SqliteStore)
    yield s
    s.close()


def source_for(store: SqliteStore, endpoint: str, **kw: Any) -> CloudRunSource:
    # the clients' own retry, made short: these servers answer in microseconds
    retry = Retry(
        initial=0.01,
        maximum=0.05,
        multiplier=2,
        predicate=if_exception_type(api.ServiceUnavailable, api.InternalServerError),
        timeout=0.3,
    )
    return CloudRunSource(
        URL,
        store,
        subscription=kw.pop("subscription", f"pubsub://{PROJECT}/requests"),
        converter=EntryConverter.compile([PATTERN]),
        credentials=AnonymousCredentials(),
        endpoint=endpoint,
        insecure=True,
        retry=retry,
        page_size=kw.pop("page_size", 50),
        **kw,
    )


def fill(fake: FakeGoogle, n_entries: int = 230) -> None:
    fake.executions += [
        execution(
            "worker-a",
            T0 + 10,
            1800,
            "CONDITION_FAILED",
            "Task worker-a-task0 failed with message: The configured timeout was reached.",
        ),
        execution("worker-b", T0 + 100, 200, "CONDITION_SUCCEEDED"),
        execution(
            "worker-c", T0 + 200, 300, "CONDITION_FAILED", "The container exited with an error."
        ),
        execution("worker-d", T0 + 3000, None),  # still running
        execution("worker-old", T0 - 90_000, 100, "CONDITION_SUCCEEDED"),  # before anything
    ]
    for i in range(n_entries):
        at = T0 + 20 + i * 10
        if i % 10 == 0:
            fake.add_entry(entry(i, at, f"ERROR worker Invalid request_id format: 'bad-{i % 3}'"))
        elif i % 10 == 1:
            fake.add_entry(entry(i, at, "plain stderr line without severity"))
        else:
            fake.add_entry(entry(i, at, f"INFO handled {i}", stream="stdout"))


def test_parse_source_url() -> None:
    assert parse_source_url("cloudrun://p/r/j") == ("p", "r", "j")
    for bad in ("cloudrun://p/r", "run://p/r/j", "cloudrun:///r/j", "cloudrun://p/r/j/x"):
        with pytest.raises(ConfigError):
            parse_source_url(bad)


def test_a_sync_pages_through_executions_and_entries(
    fake: FakeGoogle, endpoint: str, store: SqliteStore
) -> None:
    fill(fake)
    source = source_for(store, endpoint)
    until = T0 + 1500
    report = source.sync(until, earliest=T0)
    assert report.executions == 4  # worker-old ended before the earliest time asked for
    assert fake.calls["ListExecutions"] == 3  # pages of 2
    imported = [e for e in store.events() if e.kind in (ev.LOG, ev.MESSAGE_REJECTED)]
    expected = [i for i in range(230) if T0 + 20 + i * 10 < until and i % 10 in (0, 1)]
    assert len(imported) == len(expected)
    assert fake.calls["ListLogEntries"] >= 3  # 148 entries in pages of 50
    assert 'timestamp<"' in fake.filters[0] and f'job_name="{JOB}"' in fake.filters[0]
    statuses = {r.execution_id: r.status for r in store.executions()}
    assert statuses == {
        "worker-a": "timed_out",
        "worker-b": "succeeded",
        "worker-c": "failed",
        "worker-d": "running",
    }
    rejected = [e for e in imported if e.kind == ev.MESSAGE_REJECTED]
    assert {e.request_id for e in rejected} == {"bad-0", "bad-1", "bad-2"}
    stderr = [e for e in imported if e.kind == ev.LOG]
    assert stderr and all(e.severity == "WARNING" for e in stderr)

    # the next checkpoint brings only what is new (its lookback is deduplicated)
    fake.executions[3] = execution("worker-d", T0 + 3000, 100, "CONDITION_SUCCEEDED")
    later = source.sync(T0 + 5000, earliest=T0)
    assert later.executions == 1 and later.duplicates > 0
    total = [e for e in store.events() if e.kind in (ev.LOG, ev.MESSAGE_REJECTED)]
    assert len(total) == 2 * 23
    assert {r.execution_id: r.status for r in store.executions()}["worker-d"] == "succeeded"
    again = source.sync(T0 + 5000, earliest=T0)
    assert (again.executions, again.entries) == (0, 0)
    source.close()


def test_steadyq_lines_come_back_as_their_events(
    fake: FakeGoogle, endpoint: str, store: SqliteStore
) -> None:
    events = [
        Event(
            ev.EXECUTION_STARTED,
            T0 + 1,
            message="started",
            execution_id="w1",
            data={"max_runtime_s": 1800.0},
        ),
        Event(
            ev.MESSAGE_SUCCEEDED,
            T0 + 2,
            execution_id="w1",
            message_id="m1",
            request_id="r1",
            attempt=1,
            duration_ms=12.5,
            data={"result": {"artifacts": {}}},
        ),
        Event(ev.EXECUTION_FINISHED, T0 + 3, execution_id="w1", data={"status": "succeeded"}),
    ]
    for i, event in enumerate(events):
        fake.add_entry(steadyq_line(i, event))
    source = source_for(store, endpoint)
    source.sync(T0 + 10, earliest=T0)
    back = store.events()
    assert [(e.kind, e.execution_id, e.request_id, e.attempt, e.duration_ms) for e in back] == [
        (e.kind, e.execution_id, e.request_id, e.attempt, e.duration_ms) for e in events
    ]
    assert back[1].data == {"result": {"artifacts": {}}}
    assert [r.status for r in store.requests()] == ["completed"]
    source.close()


def test_a_page_that_errors_once_is_retried_by_the_client(
    fake: FakeGoogle, endpoint: str, store: SqliteStore
) -> None:
    fill(fake)
    fake.fail("ListLogEntries", grpc.StatusCode.UNAVAILABLE, on_page=50)
    fake.fail("ListExecutions", grpc.StatusCode.INTERNAL)
    source = source_for(store, endpoint)
    source.sync(T0 + 2400, earliest=T0)
    assert not fake.failures["ListLogEntries"] and not fake.failures["ListExecutions"]
    assert len([e for e in store.events() if e.kind == ev.MESSAGE_REJECTED]) == 23
    source.close()


def test_an_unavailable_service_is_a_transient_failure_and_nothing_is_half_counted(
    fake: FakeGoogle, endpoint: str, store: SqliteStore
) -> None:
    fill(fake)
    fake.fail("ListLogEntries", grpc.StatusCode.UNAVAILABLE, times=10_000, on_page=50)
    source = source_for(store, endpoint)
    with pytest.raises(SourceUnavailable, match="Cloud Logging"):
        source.sync(T0 + 2400, earliest=T0)
    fake.failures["ListLogEntries"].clear()
    source.sync(T0 + 2400, earliest=T0)  # the same sync again: complete, nothing twice
    assert len([e for e in store.events() if e.kind == ev.MESSAGE_REJECTED]) == 23
    fake.fail("ListTimeSeries", grpc.StatusCode.RESOURCE_EXHAUSTED)
    with pytest.raises(SourceUnavailable, match="ResourceExhausted"):
        source.queue_sample(T0 + 2400)
    source.close()


def test_a_permission_error_stops_with_a_clear_message(
    fake: FakeGoogle, endpoint: str, store: SqliteStore
) -> None:
    fake.fail("ListExecutions", grpc.StatusCode.PERMISSION_DENIED)
    source = source_for(store, endpoint)
    with pytest.raises(BackendError, match="permission denied") as caught:
        source.sync(T0 + 100, earliest=T0)
    assert not isinstance(caught.value, SourceUnavailable)
    source.close()


def test_the_backlog_comes_from_cloud_monitoring_at_the_checkpoint(
    fake: FakeGoogle, endpoint: str, store: SqliteStore
) -> None:
    undelivered = "pubsub.googleapis.com/subscription/num_undelivered_messages"
    oldest = "pubsub.googleapis.com/subscription/oldest_unacked_message_age"
    fake.series[(undelivered, "requests")] = [(T0 - 120, 40), (T0 - 60, 42), (T0 + 60, 99)]
    fake.series[(oldest, "requests")] = [(T0 - 60, 310)]
    source = source_for(store, endpoint)
    sample = source.queue_sample(T0)
    assert sample is not None
    assert sample["queue.ready"] == 42 and sample["queue.oldest_unacked_age_s"] == 310
    assert source.queue_sample(T0 - 5000) is None  # nothing in the ten minutes before
    assert source_for(store, endpoint, subscription=None).queue_sample(T0) is None
    source.close()


PLAN = """
name = "live-cloudrun"
start = {start}
window = "2h"
checkpoint_every = "1h"
max_runtime_s = "30m"

[baseline]
start = {baseline}
end = {start}

[[criteria]]
name = "no execution timed out"
measure = "executions.timed_out"
max = 0

[[criteria]]
name = "oldest unacked under 15 minutes"
measure = "queue.oldest_unacked_age_s"
max = 900
scope = "checkpoint"
"""


def test_a_live_watch_waits_out_an_outage_and_takes_the_checkpoint_late(
    fake: FakeGoogle, endpoint: str, store: SqliteStore, tmp_path: Path
) -> None:
    from steadyq.durations import rfc3339

    start = T0 + 7200
    fill(fake)  # the baseline: executions and rejections between T0 and T0 + 2300
    fake.executions.append(execution("worker-e", start + 600, 120, "CONDITION_SUCCEEDED"))
    fake.series[("pubsub.googleapis.com/subscription/oldest_unacked_message_age", "requests")] = [
        (start + 3600 - 30, 12),
        (start + 7200 - 30, 20),
    ]
    plan_path = tmp_path / "plan.toml"
    plan_path.write_text(PLAN.format(start=rfc3339(start), baseline=rfc3339(T0)))
    clock = FakeClock(start)
    # Cloud Logging is down from the first checkpoint for 90 s (of the watch's clock)
    outage = (start + 3600, start + 3600 + 90)
    fake.outage = lambda method: (
        grpc.StatusCode.UNAVAILABLE
        if method == "ListLogEntries" and outage[0] <= clock.now < outage[1]
        else None
    )

    def sleep(seconds: float) -> None:
        clock.advance(seconds)

    source = source_for(store, endpoint)
    watch = Watch(
        load_plan(plan_path),
        store,
        None,
        report_dir=tmp_path / "r",
        clock=clock,
        sleep=sleep,
        source=source,
        backoff_s=(10.0, 40.0),
        tick_s=60.0,
    )
    result = watch.run()
    assert result.verdict is not None and result.verdict.value == "PASSED", result.reason
    first, second = watch.state.checkpoints
    assert first.source_note is not None and "taken late" in first.source_note
    assert first.taken_at >= outage[1]
    assert second.source_note is None
    report = (tmp_path / "r" / "report.md").read_text()
    assert "Source: taken late" in report and "the source was unavailable" in report
    baseline = watch.state.baseline
    # worker-a timed out; worker-d still "runs" an hour past its 30 min budget: killed
    assert baseline is not None and baseline["values"]["executions.timed_out"] == 2
    assert baseline["values"]["messages.rejected"] == 23
    assert first.values()["queue.oldest_unacked_age_s"] == 12
    assert second.values()["executions.succeeded"] == 1
    source.close()


def test_no_credentials_is_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    plan = tmp_path / "plan.toml"
    plan.write_text(
        'name = "x"\nwindow = "2h"\ncheckpoint_every = "1h"\n'
        '[[criteria]]\nname = "c"\nmeasure = "executions.timed_out"\nmax = 0\n'
    )
    result = CliRunner().invoke(
        app, ["watch", str(plan), "--url", f"sqlite:///{tmp_path / 'w.db'}", "--source", URL]
    )
    assert result.exit_code == 3
    assert "no Google Cloud credentials" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_watch_init_writes_the_incidents_plan_for_the_job(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "watch",
            "init",
            "--source",
            URL,
            "--subscription",
            f"pubsub://{PROJECT}/requests",
            "--start",
            "2026-11-04T12:00:00Z",
        ],
    )
    assert result.exit_code == 0, result.stderr
    path = tmp_path / "plan.toml"
    path.write_text(result.stdout)
    plan = load_plan(path)
    assert len(plan.criteria) == 7 and len(plan.risks) == 4
    assert plan.window == 86400 and plan.checkpoint_every == 14400
    assert plan.baseline is not None and plan.start is not None
    assert plan.start - plan.baseline.start == 86400 and plan.baseline.end == plan.start
    assert f"--source {URL}" in result.stdout and "pubsub://proj/requests" in result.stdout
    bad = CliRunner().invoke(app, ["watch", "init", "--source", "cloudrun://only-project"])
    assert bad.exit_code == 2 and "cloudrun://PROJECT/REGION/JOB" in bad.stderr
