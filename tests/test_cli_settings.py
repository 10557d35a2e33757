"""Every worker setting is a flag of ``steadyq worker`` that reaches WorkerOptions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from steadyq.cli import app
from steadyq.config import WORKER_SETTINGS
from tests.test_config import SAMPLES, option_value


class CapturingWorker:
    """Stands in for the Worker: keeps the options the command built, runs nothing."""

    seen: ClassVar[list[Any]] = []

    def __init__(self, queue: Any, store: Any, options: Any, sink: Any = None) -> None:
        self.seen.append(options)
        self.counts: Counter[str] = Counter()

    def run(self) -> Any:
        from steadyq.worker import ExecutionResult, ExitCode

        return ExecutionResult("e1", "succeeded", ExitCode.OK, Counter(), 0.0, 0.0, 0.0)


def test_every_setting_is_a_flag_that_reaches_the_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import steadyq.worker

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(steadyq.worker, "Worker", CapturingWorker)
    CapturingWorker.seen.clear()
    args = ["worker", "--url", f"sqlite:///{tmp_path}/s.db", "--log-format", "none"]
    for s in WORKER_SETTINGS:
        if s.type is bool:
            args.append(s.cli_flag)
        else:
            args += [s.cli_flag, SAMPLES[s.key][0]]
    result = CliRunner().invoke(app, args, env={"STEADYQ_URL": None})
    assert result.exit_code == 0, result.output
    [options] = CapturingWorker.seen
    for s in WORKER_SETTINGS:
        assert option_value(options, s.option) == SAMPLES[s.key][2], s.cli_flag


def test_a_flag_wins_over_the_variable_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import steadyq.worker

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(steadyq.worker, "Worker", CapturingWorker)
    CapturingWorker.seen.clear()
    (tmp_path / "steadyq.toml").write_text(
        '[worker]\nhandler = "steadyq.handlers:record"\nprefetch = 3\nlog_level = "ERROR"\n'
    )
    base = ["worker", "--url", f"sqlite:///{tmp_path}/s.db", "--log-format", "none"]
    env = {"STEADYQ_WORKER_PREFETCH": "5", "STEADYQ_URL": None}
    for extra in ([], ["--prefetch", "7", "--log-level", "debug", "--forever", "--drain"]):
        result = CliRunner().invoke(app, base + extra, env=env)
        assert result.exit_code == 0, result.output
    first, second = CapturingWorker.seen
    assert (first.prefetch, first.log_level, first.drain) == (5, 40, False)
    assert (second.prefetch, second.log_level, second.drain) == (7, 10, True)
