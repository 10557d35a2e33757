"""``steadyq demo`` end to end, on the compressed clock: both outcomes, real processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steadyq.brokers import open_queue, store_for
from steadyq.cli import app
from steadyq.telemetry.store import PENDING, PROCESSING, RUNNING, TIMED_OUT

pytestmark = pytest.mark.slow


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["demo", "--quick", *args])
    return result.exit_code, result.stdout + result.stderr


def test_demo_reenacts_the_incident_and_the_fix_passes(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    code, out = run("--dir", str(folder))
    assert code == 0, out
    assert "verdict: PASSED" in out
    report = json.loads((folder / "reports" / "report.json").read_text())
    assert report["verdict"] == "PASSED"
    assert len(report["checkpoints"]) == 2
    assert (folder / "reports" / "report.html").stat().st_size > 0
    assert "## Before / after" in (folder / "reports" / "report.md").read_text()

    # the legacy execution was killed by the task timeout: the baseline shows it timed out
    base = report["baseline"]["figures"]["values"]
    assert base["executions.timed_out"] >= 1 and base["executions.succeeded"] == 0
    # after the fix: executions succeed, poison is rejected at the gate
    last = report["checkpoints"][-1]["figures"]["cumulative"]["values"]
    assert last["executions.succeeded"] >= 2 and last["executions.timed_out"] == 0
    assert last["messages.rejected"] >= 1 and last["messages.succeeded"] >= 5
    assert_clean(folder)
    # the watch can judge the same window again from what was recorded
    url = f"sqlite:///{folder / 'steadyq.db'}"
    again = CliRunner().invoke(
        app,
        ["watch", str(folder / "plan.toml"), "--replay", "--url", url,
         "--report-dir", str(tmp_path / "again")],
    )  # fmt: skip
    assert again.exit_code in (0, 2), again.stdout + again.stderr


def test_demo_with_a_hanging_handler_fails_early(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    code, out = run("--dir", str(folder), "--fault", "hang")
    assert code == 1, out
    assert "verdict: FAILED" in out
    report = json.loads((folder / "reports" / "report.json").read_text())
    assert report["verdict"] == "FAILED"
    assert len(report["checkpoints"]) == 1, "a critical breach ends the watch early"
    breached = [
        c["name"]
        for c in report["checkpoints"][0]["criteria"]
        if c["status"] == "fail" and "No handler call hung" in c["name"]
    ]
    assert breached
    assert_clean(folder)


def assert_clean(folder: Path) -> None:
    """The demo leaves nothing half done: every message settled, every request decided,
    every execution ended (a killed one reads as timed out, as the watch counts it)."""
    with open_queue(f"sqlite:///{folder / 'steadyq.db'}") as queue:
        store = store_for(queue)
        stats = queue.stats()
        assert (stats.ready, stats.in_flight, stats.delayed) == (0, 0, 0)
        open_requests = [
            r.request_id for r in store.requests() if r.status in (PENDING, PROCESSING)
        ]
        assert open_requests == []
        statuses = {e.status for e in store.executions()}
        assert RUNNING not in statuses and TIMED_OUT in statuses  # the legacy one


def test_demo_refuses_an_unknown_fault(tmp_path: Path) -> None:
    code, out = run("--dir", str(tmp_path / "d"), "--fault", "flood")
    assert code == 3 and "expected one of none, hang" in out


def test_the_demo_keeps_its_videos_only_where_one_renders_within_a_third_of_the_deadline() -> None:
    from steadyq.demo import Timings, _fit_to_host

    said: list[str] = []
    roomy = Timings(deadline_s=600.0)
    assert _fit_to_host(roomy, said.append) is roomy and said == []
    tight = _fit_to_host(Timings(deadline_s=0.003), said.append)  # no video renders in 1 ms
    assert tight.video is False and tight.deadline_s == 0.003
    [line] = said
    assert "text only" in line and "0.003 s deadline" in line
