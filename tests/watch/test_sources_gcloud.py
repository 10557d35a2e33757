"""gcloud exports and Cloud Logging entries become steadyq's own events."""

from __future__ import annotations

import io
import json
import sqlite3
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from steadyq.brokers import open_store
from steadyq.cli import app
from steadyq.errors import ConfigError
from steadyq.samples import INCIDENT_POISON_IDS
from steadyq.telemetry import events as ev
from steadyq.telemetry.store_sqlite import SqliteStore
from steadyq.watch.sources.gcloud import (
    EntryConverter,
    Importer,
    execution_from_v1,
    infer_severity,
    iter_json,
    log_entry_for_line,
)

ROOT = Path(__file__).resolve().parents[2]
INCIDENT = ROOT / "examples" / "incident"
PATTERN = "Invalid request_id format: '(?P<request_id>[^']*)'"
runner = CliRunner()


def _store(tmp_path: Path, name: str = "s.db") -> SqliteStore:
    store = open_store(f"sqlite:///{tmp_path / name}")
    assert isinstance(store, SqliteStore)
    return store


def _count(path: Path, sql: str) -> Any:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchone()[0]


# -- streaming JSON --------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 7, 64, 1 << 20])
def test_iter_json_reads_arrays_lines_and_objects_across_chunk_boundaries(chunk: int) -> None:
    items = [{"a": i, "s": "x" * (i * 5), "nested": {"b": [1, 2, {"c": "]"}]}} for i in range(9)]
    array = json.dumps(items, indent=2)
    lines = "\n".join(json.dumps(x) for x in items) + "\n"
    assert list(iter_json(io.StringIO(array), chunk_chars=chunk)) == items
    assert list(iter_json(io.StringIO(lines), chunk_chars=chunk)) == items
    assert list(iter_json(io.StringIO(json.dumps(items[3])), chunk_chars=chunk)) == [items[3]]
    assert list(iter_json(io.StringIO("[]"), chunk_chars=chunk)) == []
    assert list(iter_json(io.StringIO(""), chunk_chars=chunk)) == []


@pytest.mark.parametrize("text", ['[{"a": 1}, {"b": ', '[{"a": 1}', "{nope}"])
def test_iter_json_refuses_text_that_is_not_json(text: str) -> None:
    with pytest.raises(ConfigError):
        list(iter_json(io.StringIO(text), chunk_chars=4))


# -- executions ------------------------------------------------------------------------


def _v1(status: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {
        "kind": "Execution",
        "metadata": {
            "name": "job-x7k2p",
            "creationTimestamp": "2026-11-30T10:00:00.500000Z",
            "labels": {"run.googleapis.com/job": "job"},
        },
        "spec": {"taskCount": 1, "template": {"spec": {"timeoutSeconds": "1800", **spec}}},
        "status": status,
    }


def _completed(state: str, message: str = "") -> dict[str, Any]:
    return {
        "startTime": "2026-11-30T10:00:09.500000Z",
        "completionTime": "2026-11-30T10:30:09.500000Z",
        "conditions": [
            {"type": "Started", "status": "True"},
            {"type": "Completed", "status": state, "message": message},
        ],
    }


@pytest.mark.parametrize(
    ("state", "message", "status"),
    [
        ("True", "", "succeeded"),
        (
            "False",
            "Task job-x7k2p-task0 failed with message: The configured timeout was reached.",
            "timed_out",
        ),
        (
            "False",
            "Task job-x7k2p-task0 failed with message: The container exited with an error.",
            "failed",
        ),
    ],
)
def test_an_execution_status_comes_from_its_completed_condition(
    state: str, message: str, status: str
) -> None:
    item = execution_from_v1(_v1(_completed(state, message), maxRetries=2))
    assert item is not None and item.status == status
    started, ready, *finished = item.events()
    assert started.kind == ev.EXECUTION_STARTED and started.execution_id == "job-x7k2p"
    assert started.data["max_runtime_s"] == 1800 * 3  # each of 1 + 2 attempts gets the timeout
    assert ready.duration_ms == pytest.approx(9000.0)  # creation to start
    assert finished[0].data["status"] == status
    assert finished[0].timestamp - started.timestamp == pytest.approx(1800.0)


def test_a_running_or_unstarted_execution_has_no_finish() -> None:
    running = execution_from_v1(
        _v1(
            {
                "startTime": "2026-11-30T10:00:09Z",
                "runningCount": 1,
                "conditions": [{"type": "Completed", "status": "Unknown"}],
            }
        )
    )
    assert running is not None and running.status == "running"
    assert [e.kind for e in running.events()] == [ev.EXECUTION_STARTED, ev.EXECUTION_READY]
    pending = execution_from_v1(_v1({}))
    assert pending is not None and pending.events() == []
    assert execution_from_v1({"metadata": {}}) is None


# -- log entries -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "log", "severity"),
    [
        ("ERROR worker Invalid request_id format: 'abc'", "stderr", "ERROR"),
        ("[WARN] slow storage", "stdout", "WARNING"),
        ('ts=1 level=error msg="boom"', "stdout", "ERROR"),
        ("Traceback (most recent call last):", "stderr", "ERROR"),
        ("ValueError: badly formed hexadecimal UUID string", "stdout", "ERROR"),
        ("something odd happened", "stderr", "WARNING"),
        ("something odd happened", "stdout", "DEFAULT"),
        ("Processing request 42", "varlog/system", "DEFAULT"),
    ],
)
def test_a_line_without_severity_gets_one_from_its_text(text: str, log: str, severity: str) -> None:
    assert infer_severity(text, f"projects/p/logs/run.googleapis.com%2F{log}") == severity


def _entry(text: str, stream: str = "stderr", **extra: Any) -> dict[str, Any]:
    entry = log_entry_for_line(
        text,
        insert_id=uuid.uuid4().hex[:24],
        execution="job-x7k2p",
        job="job",
        stream=stream,
        received="2026-11-30T10:03:26.485199470Z",
    )
    entry.update(extra)
    return entry


def test_rejection_patterns_make_rejected_messages() -> None:
    conv = EntryConverter.compile([PATTERN, r"refused (?P<request_id>\S+) as (?P<reason>\w+)"])
    rejected = conv.convert(_entry("ERROR worker Invalid request_id format: 'test-smoke-001'"))
    assert rejected is not None and rejected.kind == ev.MESSAGE_REJECTED
    assert rejected.request_id == rejected.message_id == "test-smoke-001"
    assert rejected.reason == "request_id_invalid" and rejected.execution_id == "job-x7k2p"
    assert rejected.severity == "ERROR"
    other = conv.convert(_entry("refused r-1 as schema_invalid"))
    assert other is not None and (other.request_id, other.reason) == ("r-1", "schema_invalid")
    structured = conv.convert(
        _entry(
            json.dumps(
                {
                    "severity": "WARNING",
                    "message": "Invalid request_id format: ''",
                    "request_id": "from-payload",
                }
            ),
            stream="stdout",
        )
    )
    assert structured is not None and structured.request_id == "from-payload"
    with pytest.raises(ConfigError):
        EntryConverter.compile(["(unclosed"])


def test_entries_below_warning_are_not_kept_and_stderr_lines_are_warnings() -> None:
    conv = EntryConverter()
    assert conv.convert(_entry("INFO pulling", stream="stdout")) is None
    assert conv.convert(_entry("plain stdout line", stream="stdout")) is None
    kept = conv.convert(_entry("disk almost full"))
    assert kept is not None and (kept.kind, kept.severity) == (ev.LOG, "WARNING")
    assert kept.attempt == 1  # task_attempt "0" is the first attempt
    assert conv.convert({"textPayload": "no time at all"}) is None


# -- importing -------------------------------------------------------------------------


def test_import_is_idempotent_and_a_later_state_replaces_an_earlier(tmp_path: Path) -> None:
    store = _store(tmp_path)
    importer = Importer(store, EntryConverter.compile([PATTERN]), batch=3)
    running = _v1(
        {
            "startTime": "2026-11-30T10:00:09Z",
            "conditions": [{"type": "Completed", "status": "Unknown"}],
        }
    )
    done = _v1(_completed("False", "The configured timeout was reached."))
    entries = [_entry(f"ERROR worker Invalid request_id format: 'bad-{i}'") for i in range(7)]
    export = json.dumps([running, *entries])
    first = importer.stream(io.StringIO(export))
    assert (first.executions_new, first.entries_new, first.rejections) == (1, 7, 7)
    again = importer.stream(io.StringIO(export))
    assert (again.executions_unchanged, again.entries_new, again.entries_duplicate) == (1, 0, 7)
    # still running just after its start (past its task timeout it would read timed_out)
    just_after = datetime(2026, 11, 30, 10, 0, 10, tzinfo=UTC).timestamp()
    [row] = store.executions(now=just_after)
    assert row.status == "running"
    later = importer.stream(io.StringIO(json.dumps([done])))
    assert later.executions_updated == 1
    [row] = store.executions()
    assert row.status == "timed_out" and row.finished_at is not None
    older = importer.stream(io.StringIO(json.dumps([running])))  # an older export, imported late
    assert older.executions_unchanged == 1 and store.executions()[0].status == "timed_out"
    kinds = [e.kind for e in store.events()]
    assert kinds.count(ev.EXECUTION_STARTED) == 1 and kinds.count(ev.EXECUTION_FINISHED) == 1
    assert kinds.count(ev.MESSAGE_REJECTED) == 7
    store.close()


def test_import_command_reads_the_incident_and_the_plan_replays_to_its_before_column(
    tmp_path: Path,
) -> None:
    db = tmp_path / "incident.db"
    files = [str(INCIDENT / n) for n in ("executions.json", "logs.json", "subscription.json")]
    args = ["import", "gcloud", *files, "--url", f"sqlite:///{db}", "--rejection-pattern", PATTERN]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.stderr
    assert "36 new" in first.stdout
    events = _count(db, "SELECT count(*) FROM events")
    second = runner.invoke(app, [*args, "--json"])
    assert second.exit_code == 0
    total = json.loads(second.stdout)["total"]
    assert total["entries_new"] == 0 and total["executions_unchanged"] == 36
    assert _count(db, "SELECT count(*) FROM events") == events  # nothing changed

    result = runner.invoke(
        app,
        [
            "watch",
            str(INCIDENT / "plan.toml"),
            "--url",
            f"sqlite:///{db}",
            "--replay",
            "--report-dir",
            str(tmp_path / "reports"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr  # PASSED
    report = json.loads(result.stdout)
    before = report["baseline"]["figures"]["values"]
    assert before["executions.total"] == 18
    assert before["executions.timed_out"] == 10
    assert before["executions.failed"] == 5
    assert round(before["executions.success_rate"] * 100, 1) == 16.7
    assert before["messages.rejected.redelivered"] > 0  # the old worker retried its poison
    after = report["checkpoints"][-1]["figures"]["cumulative"]["values"]
    # the fixed day ran steadyq workers: their own events, not Cloud Run's, count
    assert after["executions.total"] == 18 and after["executions.succeeded"] == 18
    assert after["messages.rejected.redelivered"] == 0
    md = (tmp_path / "reports" / "report.md").read_text()
    assert "| Executions | 18 | 18 |" in md and "16.7 %" in md


def test_the_incident_plan_is_the_example_plan_with_a_start(tmp_path: Path) -> None:
    from steadyq.watch.plan import load_plan

    example = load_plan(ROOT / "examples" / "plans" / "uuid-fix-24h.toml")
    incident = load_plan(INCIDENT / "plan.toml")
    assert incident.start is not None and example.start is None
    assert incident.criteria == example.criteria and incident.baseline == example.baseline


def test_import_errors_are_one_readable_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"insertId": "a", "textPayload": "x"}, {"cut')
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = runner.invoke(app, ["import", "gcloud", str(bad), "--url", url])
    assert result.exit_code == 2 and "not JSON at character" in result.stderr
    assert "Traceback" not in result.stderr
    missing = runner.invoke(app, ["import", "gcloud", str(tmp_path / "nope.json"), "--url", url])
    assert missing.exit_code == 2 and "no such file" in missing.stderr
    regex = runner.invoke(
        app, ["import", "gcloud", str(bad), "--url", url, "--rejection-pattern", "(x"]
    )
    assert regex.exit_code == 2 and "not a regex" in regex.stderr
    assert runner.invoke(app, ["import", "gcloud", "--help"]).exit_code == 0


# -- a steadyq worker's own lines come back as the events they were --------------------


@pytest.mark.slow
def test_a_workers_stdout_wrapped_as_cloud_run_logs_imports_as_its_own_store(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'worker.db'}"
    topics = ["ok", "ok", "permanent", "warn", "broken", "ok"]
    lines = [json.dumps({"request_id": str(uuid.uuid4()), "topic": t}) for t in topics]
    lines += [json.dumps({"request_id": rid, "topic": "x"}) for rid in INCIDENT_POISON_IDS]
    lines += ["not json"]
    requests = tmp_path / "r.jsonl"
    requests.write_text("\n".join(lines) + "\n")
    assert runner.invoke(app, ["publish", str(requests), "--url", url]).exit_code == 0
    worked = runner.invoke(
        app,
        [
            "worker",
            "--url",
            url,
            "--drain",
            "--runner",
            "inline",
            "--max-attempts",
            "1",
            "--handler",
            "tests.worker_handlers:by_topic",
            "--log-format",
            "json",
        ],
    )
    assert worked.exit_code in (0, 1), worked.stderr
    out_lines = [line for line in worked.stdout.splitlines() if line.strip()]
    entries = [
        log_entry_for_line(
            line, insert_id=f"{i:024x}", execution="job-abcde", job="job", task_attempt=0
        )
        for i, line in enumerate(out_lines)
    ]
    entries.reverse()  # gcloud prints newest first
    export = tmp_path / "logs.json"
    export.write_text(json.dumps(entries))
    imported_url = f"sqlite:///{tmp_path / 'imported.db'}"
    result = runner.invoke(app, ["import", "gcloud", str(export), "--url", imported_url])
    assert result.exit_code == 0, result.stderr

    own, back = open_store(url), open_store(imported_url)
    [execution] = own.executions()
    assert [x.to_dict() for x in back.executions()] == [execution.to_dict()]

    def story(events: list[ev.Event]) -> list[tuple[Any, ...]]:
        # the worker prints message.received before its gate reads the body (the store
        # gets the request id and fields later): that event is compared without them
        return [
            (
                e.kind,
                e.severity,
                e.message,
                e.execution_id,
                e.message_id,
                None if e.kind == ev.MESSAGE_RECEIVED else e.request_id,
                e.attempt,
                e.reason,
                e.duration_ms is None,
                "" if e.kind == ev.MESSAGE_RECEIVED else json.dumps(e.data, sort_keys=True),
            )
            for e in events
            if e.execution_id == execution.execution_id
        ]

    mine = story(own.events())
    assert mine and story(back.events()) == mine
    # stdout carries microseconds (RFC 3339, as Cloud Logging does) and ms to 3 places
    pairs = zip(
        [e for e in own.events() if e.execution_id == execution.execution_id],
        [e for e in back.events() if e.execution_id == execution.execution_id],
        strict=True,
    )
    for a, b in pairs:
        assert abs(a.timestamp - b.timestamp) < 2e-6
        assert abs((a.duration_ms or 0.0) - (b.duration_ms or 0.0)) <= 0.0006
    kinds = {k for k, *_ in mine}
    assert {ev.MESSAGE_SUCCEEDED, ev.MESSAGE_REJECTED, ev.MESSAGE_DEAD_LETTERED} <= kinds

    def ledger(store: Any) -> list[tuple[Any, ...]]:
        return sorted(
            (
                r.request_id,
                r.status,
                r.execution_id,
                r.attempts,
                r.error,
                r.duration_s,
                r.completed_at,
                r.failed_at,
            )
            for r in store.requests()
        )

    def near(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(pytest.approx(v, abs=2e-6) if isinstance(v, float) else v for v in row)

    theirs = ledger(own)
    assert len(theirs) >= len(topics) and ledger(back) == [near(r) for r in theirs]

    # two overlapping exports, newest first, in either order: the same story once
    half = len(entries) // 2
    newer, older = tmp_path / "newer.json", tmp_path / "older.json"
    newer.write_text(json.dumps(entries[: half + 5]))
    older.write_text(json.dumps(entries[half - 5 :]))
    split_url = f"sqlite:///{tmp_path / 'split.db'}"
    split = runner.invoke(app, ["import", "gcloud", str(newer), str(older), "--url", split_url])
    assert split.exit_code == 0, split.stderr
    twice = open_store(split_url)
    assert ledger(twice) == [near(r) for r in theirs]
    assert story(twice.events()) == mine
    assert [x.to_dict() for x in twice.executions()] == [execution.to_dict()]
    twice.close()
    own.close()
    back.close()


@pytest.mark.parametrize(
    "command", [["import"], ["import", "gcloud"], ["watch"], ["watch", "run"], ["watch", "init"]]
)
def test_the_new_commands_have_help(command: list[str]) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.stdout


def test_the_incident_exports_are_what_make_exports_writes(tmp_path: Path) -> None:
    import runpy

    runpy.run_path(str(INCIDENT / "make_exports.py"), run_name="make")["main"](tmp_path)
    for name in ("executions.json", "logs.json", "subscription.json", "plan.toml"):
        assert (tmp_path / name).read_bytes() == (INCIDENT / name).read_bytes(), name
