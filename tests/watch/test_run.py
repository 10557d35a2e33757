from __future__ import annotations

import io
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from rich.console import Console
from typer.testing import CliRunner

from steadyq.brokers.sqlite import SqliteQueue
from steadyq.cli import app
from steadyq.durations import rfc3339
from steadyq.errors import ConfigError
from steadyq.telemetry.events import Event
from steadyq.telemetry.store_sqlite import SqliteStore
from steadyq.watch.judge import Verdict
from steadyq.watch.plan import Plan, parse_plan
from steadyq.watch.run import Watch, WatchState, run_watch
from tests.conftest import FakeClock

T0 = 1_800_000_000.0  # the watch window opens here
HOUR = 3600.0
DAY = 24 * HOUR


def execution(
    eid: str, start: float, duration: float, status: str, *, startup: float = 3.0
) -> list[Event]:
    return [
        Event("execution.started", start, execution_id=eid, data={"max_runtime_s": 1800}),
        Event("execution.ready", start + startup, execution_id=eid, duration_ms=startup * 1000),
        Event(
            "execution.finished",
            start + duration,
            severity="INFO" if status == "succeeded" else "ERROR",
            execution_id=eid,
            data={"status": status},
        ),
    ]


def incident_events(*, hang_at: float | None = None, error: str | None = None) -> list[Event]:
    """The day before the fix (18 executions, 10 timed out, 5 failed) and the day after it.

    ``hang_at``: an execution in the window that runs into its 1800 s timeout.
    ``error``: an error log line in the window that the baseline never had.
    """
    events: list[Event] = []
    for i in range(18):
        start = T0 - DAY + i * 4000
        eid = f"before-{i}"
        if i < 10:
            events += execution(eid, start, 1800, "timed_out")
        elif i < 15:
            events += execution(eid, start, 400, "failed")
        else:
            events += execution(eid, start, 200, "succeeded")
        events.append(
            Event(
                "message.failed",
                start + 60,
                severity="ERROR",
                message=f"request_id test-smoke-{i:03d} is not a UUID",
                execution_id=eid,
                request_id=f"test-smoke-{i % 3:03d}",
                reason="handler_error",
            )
        )
    for i in range(48):  # one execution every 30 minutes, a minute or two long
        start = T0 + 60 + i * 1800
        eid = f"after-{i}"
        events += execution(eid, start, 60 + i, "succeeded")
        events.append(
            Event(
                "message.succeeded",
                start + 20,
                execution_id=eid,
                message_id=f"ok-{i}",
                request_id=f"00000000-0000-4000-8000-{i:012d}",
                attempt=1,
                duration_ms=900,
            )
        )
        if i % 4 == 0:
            events.append(
                Event(
                    "message.rejected",
                    start + 5,
                    severity="WARNING",
                    execution_id=eid,
                    message_id=f"poison-{i}",
                    reason="request_id_invalid",
                    attempt=1,
                    duration_ms=1.5,
                )
            )
    if hang_at is not None:
        events += execution("hung", hang_at, 1800, "timed_out")
    if error is not None:
        events.append(Event("log", T0 + 5 * HOUR, severity="ERROR", message=error))
    return events


def plan_text(**extra: str) -> str:
    head = "\n".join(f"{k} = {v}" for k, v in extra.items() if not k.startswith("_"))
    return f"""\
name = "uuid-fix"
start = "{rfc3339(T0)}"
window = "24h"
checkpoint_every = "4h"
purpose = "prove the <fix> works"
{head}

[baseline]
start = "{rfc3339(T0 - DAY)}"
end = "{rfc3339(T0)}"

[[criteria]]
name = "no execution timed out"
measure = "executions.timed_out"
max = 0
critical = true

[[criteria]]
name = "under 10 minutes"
measure = "executions.duration_s.max"
max = 600

[[criteria]]
name = "valid requests processed"
measure = "messages.succeeded"
min = 1

[[criteria]]
name = "rejections never retried"
measure = "messages.rejected.redelivered"
max = 0

[[criteria]]
name = "no new error pattern"
measure = "errors.new_patterns"
max = 0

[[criteria]]
name = "oldest unacked under 15 minutes"
measure = "queue.oldest_unacked_age_s"
max = 900
scope = "checkpoint"
no_data = "pass"

[[criteria]]
name = "rate against baseline"
measure = "executions.success_rate"
min_vs_baseline = "-5%"
dry_run = true

[[risks]]
name = "DLQ filling up"
probability = "low"
impact = "medium"
mitigation = "dlq replay"
measure = "messages.dead_lettered"
max = 10
{extra.get("_alerts", "")}
"""


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'steadyq.db'}"


def open_store(url: str, clock: Callable[[], float]) -> tuple[SqliteQueue, SqliteStore]:
    queue = SqliteQueue.from_url(url, clock=clock)
    return queue, queue.colocated_store


class Killed(BaseException):
    """Stands for kill -9: nothing in the watch may catch it."""


def fake_sleep(clock: FakeClock, *, kill_after: float | None = None) -> Callable[[float], None]:
    def sleep(seconds: float) -> None:
        assert seconds > 0
        clock.advance(seconds)
        if kill_after is not None and clock.now >= kill_after:
            raise Killed

    return sleep


# -- replay --------------------------------------------------------------------------------


def test_replay_of_a_24h_plan_passes_in_well_under_a_second(tmp_path: Path, db_url: str) -> None:
    clock = FakeClock(T0 + DAY + 10)
    queue, store = open_store(db_url, clock)
    store.write(incident_events())
    plan = parse_plan(plan_text())
    slept: list[float] = []
    result = run_watch(
        plan, store, queue, tmp_path / "reports", clock=clock, sleep=slept.append, replay=True
    )
    assert slept == []  # a replay never waits
    assert result.verdict is Verdict.PASSED, result.reason
    assert result.exit_code == 0
    assert (result.checkpoints_taken, result.checkpoints_planned) == (6, 6)
    doc = json.loads((tmp_path / "reports" / "report.json").read_text())
    assert [cp["index"] for cp in doc["checkpoints"]] == [1, 2, 3, 4, 5, 6]
    intervals = [
        cp["figures"]["interval"]["values"]["executions.total"] for cp in doc["checkpoints"]
    ]
    assert sum(intervals) == 48
    last = doc["checkpoints"][-1]["figures"]["cumulative"]["values"]
    assert last["executions.succeeded"] == 48 and last["messages.rejected"] == 12
    assert doc["baseline"]["figures"]["values"]["executions.timed_out"] == 10
    # a replay cannot know the queue's past states: it samples none of them
    assert [cp["queue"] for cp in doc["checkpoints"]] == [None] * 6
    assert all("replayed" in cp["queue_note"] for cp in doc["checkpoints"])
    queue.close()


def test_replay_with_a_timeout_fails_early(tmp_path: Path, db_url: str) -> None:
    clock = FakeClock(T0 + DAY + 10)
    queue, store = open_store(db_url, clock)
    store.write(incident_events(hang_at=T0 + 9 * HOUR))
    result = run_watch(parse_plan(plan_text()), store, queue, tmp_path, clock=clock, replay=True)
    assert result.verdict is Verdict.FAILED and result.exit_code == 1
    assert result.ended_early and result.checkpoints_taken == 3  # 9h+30m ends in [8h, 12h)
    assert "no execution timed out" in result.reason
    doc = result.report
    assert [row["status"] for row in doc["schedule"]][3:] == ["skipped"] * 3
    assert doc["alerts"][0]["kind"] == "critical_breach"
    queue.close()


def test_replay_of_a_window_not_over_is_refused(tmp_path: Path, db_url: str) -> None:
    clock = FakeClock(T0 + 5 * HOUR)
    queue, store = open_store(db_url, clock)
    with pytest.raises(ConfigError, match="needs a window that is over"):
        run_watch(parse_plan(plan_text()), store, queue, tmp_path, clock=clock, replay=True)
    queue.close()


def test_replay_without_start_judges_the_window_that_ends_now(tmp_path: Path, db_url: str) -> None:
    clock = FakeClock(T0 + DAY)
    queue, store = open_store(db_url, clock)
    store.write(incident_events())
    text = plan_text().replace(f'start = "{rfc3339(T0)}"\nwindow', "window")
    result = run_watch(parse_plan(text), store, queue, tmp_path, clock=clock, replay=True)
    assert result.report["run"]["window_start"] == rfc3339(T0)
    assert result.verdict is Verdict.PASSED
    queue.close()


def test_nothing_measured_is_inconclusive_not_passed(tmp_path: Path, db_url: str) -> None:
    clock = FakeClock(T0 + DAY + 10)
    queue, store = open_store(db_url, clock)  # an empty store
    text = """\
name = "empty"
window = "24h"
checkpoint_every = "4h"
[[criteria]]
name = "longest run"
measure = "executions.duration_s.max"
max = 600
no_data = "pass"
"""
    result = run_watch(parse_plan(text), store, None, tmp_path, clock=clock, replay=True)
    assert result.verdict is Verdict.INCONCLUSIVE and result.exit_code == 2
    queue.close()


# -- live, kill, resume -------------------------------------------------------------------


def test_live_run_sleeps_to_each_checkpoint_and_samples_the_queue(
    tmp_path: Path, db_url: str
) -> None:
    clock = FakeClock(T0 - 10)
    queue, store = open_store(db_url, clock)
    store.write(incident_events())
    queue.publish(b'{"request_id": "x"}')
    out = io.StringIO()
    result = run_watch(
        parse_plan(plan_text()),
        store,
        queue,
        tmp_path / "r",
        clock=clock,
        sleep=fake_sleep(clock),
        out=Console(file=out, width=200),
        tick_s=900,
        handle_signals=False,
    )
    # the published message is never consumed: it ages past 15 minutes, a breach at
    # every checkpoint of a non-critical, per-checkpoint criterion; the watch goes on
    assert result.verdict is Verdict.FAILED and not result.ended_early
    assert result.checkpoints_taken == 6
    assert clock.now >= T0 + DAY
    doc = result.report
    assert all(cp["queue"] is not None for cp in doc["checkpoints"])
    assert doc["checkpoints"][0]["queue"]["queue.ready"] == 1
    ages = [cp["queue"]["queue.oldest_unacked_age_s"] for cp in doc["checkpoints"]]
    assert ages == sorted(ages) and ages[0] >= 4 * HOUR
    oldest = [cp["criteria"][5] for cp in doc["checkpoints"]]
    assert [c["observed"] for c in oldest] == ["fail"] * 6
    assert "oldest unacked under 15 minutes" in result.reason
    text = out.getvalue()
    assert "next checkpoint 1/6" in text and "checkpoint 6/6" in text
    assert "verdict: FAILED" in text
    queue.close()


def test_killed_watch_resumes_without_losing_or_repeating_a_checkpoint(
    tmp_path: Path, db_url: str
) -> None:
    clock = FakeClock(T0)
    queue, store = open_store(db_url, clock)
    store.write(incident_events())
    plan = parse_plan(plan_text())
    first = Watch(
        plan,
        store,
        queue,
        report_dir=tmp_path,
        clock=clock,
        tick_s=600,
        sleep=fake_sleep(clock, kill_after=T0 + 9 * HOUR),
    )
    with pytest.raises(Killed):
        first.run()
    run_id = first.state.run_id
    assert len(first.state.checkpoints) == 2
    partial = json.loads((tmp_path / "report.json").read_text())
    assert partial["verdict"] is None and partial["run"]["checkpoints_taken"] == 2
    assert [row["status"] for row in partial["schedule"]][2:] == ["pending"] * 4

    # a new process: new objects over the same database file
    queue.close()
    queue, store = open_store(db_url, clock)
    second = Watch(
        plan, store, queue, report_dir=tmp_path, clock=clock, tick_s=600, sleep=fake_sleep(clock)
    )
    result = second.run()
    assert second.resumed and result.run_id == run_id
    assert result.verdict is Verdict.PASSED
    stored = WatchState(store.db).load(run_id)
    assert [cp.index for cp in stored.checkpoints] == [0, 1, 2, 3, 4, 5]
    assert [cp.at for cp in stored.checkpoints] == plan.checkpoint_times(T0)
    # cumulative figures continue across the restart
    assert stored.checkpoints[-1].values()["executions.succeeded"] == 48
    # the same plan again makes a new run (a finished one is never resumed); its fixed
    # window is over, so every checkpoint is taken at once, late, without a queue sample
    clock.advance(HOUR)
    before = clock.now
    again = Watch(plan, store, queue, report_dir=tmp_path, clock=clock, sleep=fake_sleep(clock))
    result = again.run()
    assert result.run_id != run_id and not again.resumed
    assert result.checkpoints_taken == 6 and clock.now == before
    assert [cp.queue for cp in again.state.checkpoints] == [None] * 6
    queue.close()


def test_a_changed_plan_is_refused_while_its_run_is_unfinished(tmp_path: Path, db_url: str) -> None:
    clock = FakeClock(T0)
    queue, store = open_store(db_url, clock)
    plan = parse_plan(plan_text())
    watch = Watch(
        plan,
        store,
        queue,
        report_dir=tmp_path,
        clock=clock,
        tick_s=3600,
        sleep=fake_sleep(clock, kill_after=T0 + 5 * HOUR),
    )
    with pytest.raises(Killed):
        watch.run()
    changed = parse_plan(plan_text().replace("max = 600", "max = 300"))
    with pytest.raises(ConfigError, match=r"changed while its run .* is unfinished"):
        Watch(changed, store, queue, report_dir=tmp_path, clock=clock).run()
    # words only (purpose) do not change the run: it resumes
    reworded = parse_plan(plan_text().replace("prove the <fix> works", "prove it"))
    resumed = Watch(
        reworded,
        store,
        queue,
        report_dir=tmp_path,
        clock=clock,
        tick_s=3600,
        sleep=fake_sleep(clock, kill_after=T0 + 9 * HOUR),
    )
    with pytest.raises(Killed):
        resumed.run()
    assert resumed.resumed and len(resumed.state.checkpoints) == 2
    # --fresh abandons the old run and starts again from now
    fresh = Watch(
        changed,
        store,
        queue,
        report_dir=tmp_path,
        clock=clock,
        fresh=True,
        tick_s=3600,
        sleep=fake_sleep(clock, kill_after=clock.now + HOUR),
    )
    with pytest.raises(Killed):
        fresh.run()
    assert fresh.state.run_id != watch.state.run_id and not fresh.resumed
    assert WatchState(store.db).load(watch.state.run_id).status == "abandoned"
    queue.close()


def test_a_second_live_watch_of_the_plan_is_refused_and_a_dead_ones_is_taken_over(
    tmp_path: Path, db_url: str
) -> None:
    import socket
    import subprocess

    from steadyq.errors import AlreadyRunning

    clock = FakeClock(T0)
    queue, store = open_store(db_url, clock)
    store.write(incident_events())
    plan = parse_plan(plan_text())
    state = WatchState(store.db)
    first = Watch(plan, store, queue, report_dir=tmp_path, clock=clock, sleep=fake_sleep(clock))
    state.claim("uuid-fix", "live", first.owner)  # the first watch is running
    second = Watch(plan, store, queue, report_dir=tmp_path, clock=clock, sleep=fake_sleep(clock))
    with pytest.raises(AlreadyRunning, match=r"already being watched by process \d+ on "):
        second.run()
    assert WatchState(store.db).open_run("uuid-fix", "live") is None, "nothing was started"

    # its process died (same host): the next watch takes over at once
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}:dead"
    store.db.conn.execute("UPDATE watch_owners SET owner = ?", (dead,))
    assert second.run().verdict is Verdict.PASSED
    assert "uuid-fix" not in {
        r[0] for r in store.db.conn.execute("SELECT plan_name FROM watch_owners")
    }

    # another host: alive while it says so, taken over after OWNER_STALE_S of silence
    import steadyq.watch.state as state_module

    state.claim("uuid-fix", "live", "elsewhere:4242:x")
    with pytest.raises(AlreadyRunning, match="elsewhere"):
        state.claim("uuid-fix", "live", "here:1:y")
    store.db.conn.execute(
        "UPDATE watch_owners SET seen_at = ?", (time.time() - state_module.OWNER_STALE_S - 1,)
    )
    state.claim("uuid-fix", "live", "here:1:y")
    with pytest.raises(AlreadyRunning, match="took plan 'uuid-fix' over"):
        state.heartbeat("uuid-fix", "live", "elsewhere:4242:x")
    queue.close()


def test_stop_request_leaves_a_resumable_run(tmp_path: Path, db_url: str) -> None:
    clock = FakeClock(T0)
    queue, store = open_store(db_url, clock)
    plan = parse_plan(plan_text())
    watch: Watch

    def sleep(seconds: float) -> None:
        clock.advance(seconds)
        if clock.now > T0 + 5 * HOUR:
            watch.request_stop()

    watch = Watch(plan, store, queue, report_dir=tmp_path, clock=clock, sleep=sleep, tick_s=1800)
    result = watch.run()
    assert result.verdict is None and result.exit_code == 130
    assert result.checkpoints_taken == 1 and "resume" in result.reason
    assert WatchState(store.db).open_run("uuid-fix", "live") is not None
    queue.close()


# -- alerts ----------------------------------------------------------------------------------


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = json.loads(self.rfile.read(length))
        type(self).received.append({"body": body, "type": self.headers.get("Content-Type")})
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []
    handler = type("Handler", (_Collector,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def test_a_critical_breach_posts_to_the_webhook_and_runs_the_command(
    tmp_path: Path, db_url: str, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    sink = tmp_path / "alert.json"
    script = (
        "import json, os, sys; data = json.load(sys.stdin);"
        f" data['env_kind'] = os.environ['STEADYQ_ALERT_KIND'];"
        f" open({str(sink)!r}, 'w').write(json.dumps(data))"
    )
    alerts = (
        f"\n[alerts]\nwebhook = {json.dumps(url)}\n"
        f"notify_command = {json.dumps([sys.executable, '-c', script])}\ntimeout_s = 20\n"
    )
    clock = FakeClock(T0 + DAY + 10)
    queue, store = open_store(db_url, clock)
    store.write(incident_events(hang_at=T0 + HOUR))
    out = io.StringIO()
    result = run_watch(
        parse_plan(plan_text(_alerts=alerts)),
        store,
        queue,
        tmp_path / "r",
        clock=clock,
        replay=True,
        out=Console(file=out, width=200),
    )
    assert result.verdict is Verdict.FAILED and result.checkpoints_taken == 1
    assert len(received) == 1 and received[0]["type"] == "application/json"
    body = received[0]["body"]
    assert body["kind"] == "critical_breach" and body["verdict"] == "FAILED"
    assert body["checkpoint"] == 1 and body["criteria"][0]["name"] == "no execution timed out"
    from_command = json.loads(sink.read_text())
    assert from_command["env_kind"] == "critical_breach"
    assert from_command["run_id"] == result.run_id
    assert "ALERT" in out.getvalue()
    deliveries = result.report["alerts"][0]["deliveries"]
    assert sorted(d["channel"] for d in deliveries) == ["command", "webhook"]
    assert all(d["ok"] for d in deliveries)
    queue.close()


def test_failing_alert_channels_are_reported_not_fatal(tmp_path: Path, db_url: str) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    alerts = (
        f'\n[alerts]\nwebhook = "http://127.0.0.1:{port}/x"\n'
        f"notify_command = {json.dumps([sys.executable, '-c', 'raise SystemExit(7)'])}\n"
    )
    clock = FakeClock(T0 + DAY + 10)
    queue, store = open_store(db_url, clock)
    store.write(incident_events(hang_at=T0 + HOUR))
    result = run_watch(
        parse_plan(plan_text(_alerts=alerts)), store, queue, tmp_path, clock=clock, replay=True
    )
    assert result.verdict is Verdict.FAILED
    deliveries = {d["channel"]: d for d in result.report["alerts"][0]["deliveries"]}
    assert not deliveries["webhook"]["ok"] and "cannot POST" in deliveries["webhook"]["detail"]
    assert not deliveries["command"]["ok"] and "exited 7" in deliveries["command"]["detail"]
    queue.close()


def test_a_non_critical_failing_checkpoint_alerts_and_the_watch_goes_on(
    tmp_path: Path, db_url: str, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    clock = FakeClock(T0 + DAY + 10)
    queue, store = open_store(db_url, clock)
    store.write(incident_events(error="disk full on /dev/sda1"))
    alerts = f"\n[alerts]\nwebhook = {json.dumps(url)}\n"
    result = run_watch(
        parse_plan(plan_text(_alerts=alerts)), store, queue, tmp_path, clock=clock, replay=True
    )
    assert result.verdict is Verdict.FAILED and not result.ended_early
    assert result.checkpoints_taken == 6
    assert [a["body"]["kind"] for a in received] == ["checkpoint_failed"]
    assert received[0]["body"]["checkpoint"] == 2
    queue.close()


# -- the command -----------------------------------------------------------------------------


def test_cli_replay_json_and_exit_code(tmp_path: Path, db_url: str) -> None:
    # the CLI reads the real clock: a window that ended an hour ago
    now = time.time()
    queue, store = open_store(db_url, time.time)
    store.write(
        execution("e1", now - 20 * HOUR, 120, "succeeded")
        + execution("e2", now - 3 * HOUR, 90, "succeeded")
    )
    queue.close()
    plan = tmp_path / "plan.toml"
    plan.write_text(
        f'name = "cli"\nstart = "{rfc3339(now - 25 * HOUR)}"\nwindow = "24h"\n'
        'checkpoint_every = "6h"\n[[criteria]]\nname = "fast"\n'
        'measure = "executions.duration_s.max"\nmax = 600\n'
    )
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "watch",
            str(plan),
            "--url",
            db_url,
            "--replay",
            "--json",
            "--report-dir",
            str(tmp_path / "rep"),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["verdict"] == "PASSED" and len(doc["checkpoints"]) == 4
    assert (tmp_path / "rep" / "report.html").exists()


def test_cli_bad_plan_exits_3_with_file_and_line(tmp_path: Path, db_url: str) -> None:
    plan = tmp_path / "bad.toml"
    plan.write_text(
        'name = "x"\nwindow = "1h"\ncheckpoint_every = "4h"\n[[criteria]]\n'
        'name = "a"\nmeasure = "executions.timed_out"\nmaz = 0\n'
    )
    result = CliRunner().invoke(app, ["watch", str(plan), "--url", db_url])
    assert result.exit_code == 3
    assert f"{plan}:7: criteria[1] 'a'.maz: unknown key (did you mean 'max'?)" in result.output
    result = CliRunner().invoke(app, ["watch", str(tmp_path / "missing.toml"), "--url", db_url])
    assert result.exit_code == 3 and "no such plan file" in result.output


def test_state_of_a_memory_store_lives_in_memory(tmp_path: Path) -> None:
    from steadyq.brokers.memory import MemoryQueue

    clock = FakeClock(T0 + DAY + 10)
    queue = MemoryQueue(clock=clock)
    store = queue.colocated_store
    assert store is not None
    store.write(incident_events())
    plan: Plan = parse_plan(plan_text())
    result = run_watch(plan, store, queue, tmp_path, clock=clock, replay=True)
    assert result.verdict is Verdict.PASSED


def test_alerts_a_killed_watch_could_not_send_are_sent_on_restart(
    tmp_path: Path,
    db_url: str,
    webhook: tuple[str, list[dict[str, Any]]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import steadyq.watch.run as run_module

    url, received = webhook
    clock = FakeClock(T0)
    queue, store = open_store(db_url, clock)
    store.write(incident_events(hang_at=T0 + HOUR))
    plan = parse_plan(plan_text(_alerts=f"\n[alerts]\nwebhook = {json.dumps(url)}\n"))
    real_deliver = run_module.deliver

    def die(*args: Any) -> list[dict[str, Any]]:
        raise Killed  # killed between recording the breach and sending its alert

    monkeypatch.setattr(run_module, "deliver", die)
    first = Watch(
        plan, store, queue, report_dir=tmp_path, clock=clock, sleep=fake_sleep(clock), tick_s=3600
    )
    with pytest.raises(Killed):
        first.run()
    assert first.state.verdict is Verdict.FAILED and received == []
    monkeypatch.setattr(run_module, "deliver", real_deliver)
    # the next watch of the plan sends it first, then runs its own (new) run
    second = Watch(plan, store, queue, report_dir=tmp_path, clock=clock, sleep=fake_sleep(clock))
    second.run()
    runs = [a["body"]["run_id"] for a in received]
    assert runs == [first.state.run_id, second.state.run_id]
    assert [a["body"]["kind"] for a in received] == ["critical_breach"] * 2
    stored = WatchState(store.db).load(first.state.run_id).alerts
    assert stored[0]["deliveries"][0]["ok"] is True
    assert "/hook" not in json.dumps(json.loads((tmp_path / "report.json").read_text())["plan"])
    queue.close()


def test_live_view_on_a_terminal(tmp_path: Path, db_url: str) -> None:
    clock = FakeClock(T0 - 10)
    queue, store = open_store(db_url, clock)
    store.write(incident_events())
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=140)
    result = run_watch(
        parse_plan(plan_text()),
        store,
        queue,
        tmp_path,
        clock=clock,
        sleep=fake_sleep(clock),
        out=console,
        tick_s=1800,
        handle_signals=False,
    )
    assert result.verdict is Verdict.PASSED
    text = out.getvalue()
    assert "no execution timed out" in text and "verdict: " in text and "PASSED" in text


def test_an_idle_window_is_inconclusive(tmp_path: Path, db_url: str) -> None:
    clock = FakeClock(T0 + DAY + 10)
    queue, store = open_store(db_url, clock)
    text = """\
name = "idle"
window = "24h"
checkpoint_every = "4h"
[[criteria]]
name = "no execution timed out"
measure = "executions.timed_out"
max = 0
critical = true
[[criteria]]
name = "rejections never retried"
measure = "messages.rejected.redelivered"
max = 0
"""
    result = run_watch(parse_plan(text), store, None, tmp_path, clock=clock, replay=True)
    # every count is zero, so every criterion "passed": still no evidence
    assert {c["status"] for c in result.report["criteria"]} == {"pass"}
    assert result.verdict is Verdict.INCONCLUSIVE and "nothing ran" in result.reason
    queue.close()


def test_a_hanging_notify_command_is_cut_off() -> None:
    from steadyq.watch.run import run_notify_command

    started = time.monotonic()
    outcome = run_notify_command(
        [sys.executable, "-c", "import time; time.sleep(30)"], {"kind": "x"}, 0.3
    )
    assert not outcome["ok"] and "timed out" in outcome["detail"]
    assert time.monotonic() - started < 10
    missing = run_notify_command("/nonexistent/notify --flag", {"kind": "x"}, 1)
    assert not missing["ok"] and "cannot run" in missing["detail"]
