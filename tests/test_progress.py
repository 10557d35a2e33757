"""The worker's output: a live status line on a terminal, JSON lines elsewhere."""

from __future__ import annotations

import io
import json
import uuid
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from steadyq._progress import StatusLine, TerminalProgress
from steadyq.brokers.base import QueueStats
from steadyq.cli import app
from steadyq.telemetry.events import LOG, MESSAGE_SUCCEEDED, Event
from steadyq.telemetry.logs import PRINTED_RESULT_BYTES, JsonLinesSink, cloud_logging_line


class Ticks:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_status_line_shows_counts_rate_what_is_left_and_an_eta() -> None:
    counts: Counter[str] = Counter()
    ticks = Ticks()
    line = StatusLine(counts, drain=True, clock=ticks)
    assert "—/s" in line.text().plain, "no rate before there is time to measure one"
    counts.update(received=30, succeeded=16, rejected=3, retried=2, dead_lettered=1)
    ticks.now += 2.0
    line.left = 40
    text = line.text().plain
    assert "received 30 · succeeded 16 · rejected 3 · retried 2 · dead-lettered 1" in text
    assert "10.0/s" in text  # 20 settled in 2 s
    assert "40 left in the queue · ETA 4.0s" in text
    line.drain = False
    assert "ETA" not in line.text().plain, "a worker that runs forever has no ETA"


def test_the_terminal_line_prints_log_records_at_the_chosen_level_above_it() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120, color_system=None)
    progress = TerminalProgress(
        console,
        drain=True,
        min_severity="INFO",
        queue_stats=lambda: QueueStats(5, 1, 0, 0, None),
        stats_every_s=0.01,
    )
    with progress:
        progress(Event(LOG, 1.0, severity="INFO", message="working on r1", request_id="r1"))
        progress(Event(LOG, 1.0, severity="DEBUG", message="too chatty", data={"logger": "h"}))
        progress(Event(LOG, 1.0, severity="NOTICE", message="backend available again"))
        progress(Event(MESSAGE_SUCCEEDED, 1.0, message_id="m"))
        for _ in range(500):
            if progress.status.left is not None:
                break
            progress._stop.wait(0.01)
    shown = buffer.getvalue()
    assert "INFO     working on r1" in shown and "request r1" not in shown
    assert "too chatty" not in shown and "message.succeeded" not in shown
    assert "NOTICE   backend available again" in shown, "the worker's own notice"
    assert progress.status.left == 6


def test_a_long_result_is_summarised_on_its_line_but_not_in_the_event() -> None:
    result = {"artifacts": {"video": "/a/v.mp4"}, "scenes": ["x" * 100] * 20}
    event = Event(MESSAGE_SUCCEEDED, 1.0, message_id="m", data={"result": result})
    line = json.loads(cloud_logging_line(event, brief=True))
    assert line["data"]["result"] == {"omitted": ["scenes"], "artifacts": {"video": "/a/v.mp4"}}
    assert len(cloud_logging_line(event, brief=True)) < PRINTED_RESULT_BYTES * 2
    assert event.data["result"] is result
    assert json.loads(cloud_logging_line(event))["data"]["result"] == result
    small = Event(MESSAGE_SUCCEEDED, 1.0, data={"result": {"pid": 7}})
    assert json.loads(cloud_logging_line(small, brief=True))["data"]["result"] == {"pid": 7}


def test_json_lines_skip_log_records_below_the_level() -> None:
    stream = io.StringIO()
    sink = JsonLinesSink(stream, min_severity="WARNING")
    sink(Event(LOG, 1.0, severity="INFO", message="quiet"))
    sink(Event(LOG, 1.0, severity="ERROR", message="loud"))
    sink(Event(MESSAGE_SUCCEEDED, 1.0))
    kinds = [json.loads(x)["message"] for x in stream.getvalue().splitlines()]
    assert kinds == ["loud", "message.succeeded"]


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STEADYQ_URL", raising=False)
    return f"sqlite:///{tmp_path}/p.db"


def _publish(url: str, tmp_path: Path, count: int) -> None:
    lines = [json.dumps({"request_id": str(uuid.uuid4()), "topic": "t"}) for _ in range(count)]
    (tmp_path / "r.jsonl").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(app, ["publish", str(tmp_path / "r.jsonl"), "--url", url])
    assert result.exit_code == 0, result.stderr


@pytest.mark.parametrize("runner_kind", ["inline", "process"])
def test_ctx_logger_info_is_shown_with_log_level_info_and_not_stored(
    url: str, tmp_path: Path, runner_kind: str
) -> None:
    _publish(url, tmp_path, 2)
    args = ["worker", "--url", url, "--drain", "--runner", runner_kind, "--concurrency", "1"]
    args += ["--handler", "tests.worker_handlers:chatty", "--log-format", "json"]
    quiet = CliRunner().invoke(app, args)
    assert quiet.exit_code == 0, quiet.stderr
    assert "chatty says" not in quiet.stdout, "INFO records are hidden by default"
    _publish(url, tmp_path, 2)
    loud = CliRunner().invoke(app, [*args, "--log-level", "info"])
    assert loud.exit_code == 0, loud.stderr
    said = [json.loads(x) for x in loud.stdout.splitlines() if "chatty says" in x]
    assert len(said) == 2 and {x["severity"] for x in said} == {"INFO"}
    stored = CliRunner().invoke(app, ["logs", "--url", url, "--severity", "DEBUG", "--json"])
    assert "chatty says" not in stored.stdout, "the store keeps WARNING and above"


def test_progress_output_has_no_json_lines(url: str, tmp_path: Path) -> None:
    _publish(url, tmp_path, 3)
    result = CliRunner().invoke(
        app,
        [
            "worker",
            "--url",
            url,
            "--drain",
            "--runner",
            "inline",
            "--log-format",
            "progress",
            "--handler",
            "steadyq.handlers:record",
        ],
    )
    assert result.exit_code == 0, result.stderr
    assert "{" not in result.stdout and "succeeded 3" in result.stderr


def test_a_bad_log_level_is_a_usage_error(url: str) -> None:
    result = CliRunner().invoke(app, ["worker", "--url", url, "--log-level", "chatty"])
    assert result.exit_code == 2 and "--log-level: must be one of" in result.stderr
