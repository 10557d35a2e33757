"""What a newcomer trips on in the first hour with the ``steadyq`` command (issue 10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steadyq.cli import app

runner = CliRunner()
REPO = Path(__file__).resolve().parent.parent


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    for key in list(os.environ):
        if key.startswith("STEADYQ_"):
            monkeypatch.delenv(key)
    return f"sqlite:///{tmp_path}/q.db"


def launcher(tmp_path: Path) -> list[str]:
    """The console script's equivalent: a script outside the user's folder, so the
    current folder is not on ``sys.path`` unless steadyq puts it there."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "steadyq"
    script.write_text("from steadyq.cli import main\nmain()\n")
    return [sys.executable, str(script)]


def run_cli(tmp_path: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEADYQ_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run(
        [*launcher(tmp_path), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_a_handler_in_the_current_folder_is_found_by_the_handler_processes(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    (project / "mypkg").mkdir(parents=True)
    (project / "mypkg" / "__init__.py").write_text("")
    (project / "mypkg" / "jobs.py").write_text(
        textwrap.dedent(
            """
            import os

            def handle(request, ctx):
                return {"pid": os.getpid()}
            """
        )
    )
    body = json.dumps({"request_id": str(uuid.uuid4()), "topic": "fractions"})
    (project / "r.jsonl").write_text(body + "\n")
    done = run_cli(tmp_path, project, "publish", "r.jsonl")
    assert done.returncode == 0, done.stderr
    done = run_cli(
        tmp_path,
        project,
        "worker",
        "--handler",
        "mypkg.jobs:handle",
        "--drain",
        "--concurrency",
        "1",
        "--schema",
        "steadyq.content:ContentRequest",
        "--log-format",
        "json",
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    by_kind = {x["logging.googleapis.com/labels"]["kind"]: x for x in lines}
    worker_pid = by_kind["execution.started"]["data"]["pid"]
    assert by_kind["message.succeeded"]["data"]["result"]["pid"] != worker_pid, "in a child"
    assert "succeeded 1" in done.stderr


def test_a_handler_without_a_colon_is_told_what_is_missing(url: str) -> None:
    code, _, err = invoke("worker", "--url", url, "--handler", "mypkg.jobs", "--drain")
    text = " ".join(err.split())
    assert code == 4 and "no colon and function name" in text and "'mypkg.jobs:handle'" in text


def test_a_budget_shorter_than_a_deadline_is_refused_at_start(url: str) -> None:
    code, _, err = invoke(
        "worker", "--url", url, "--max-runtime", "5m", "--deadline", "10m", "--drain"
    )
    text = " ".join(err.split())
    assert code == 2 and "--max-runtime 5m is not longer than --deadline 10m" in text
    assert not Path(url.removeprefix("sqlite:///")).exists(), "refused before opening anything"


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_handler_processes_started_fresh_see_the_current_folder_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    from steadyq.cli import _import_from_here
    from steadyq.runner import Call, ProcessRunner

    pkg = tmp_path / f"herepkg_{method}"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("def handle(request, ctx):\n    return {'ok': 1}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    _import_from_here()
    runner_ = ProcessRunner(
        f"herepkg_{method}:handle",
        concurrency=1,
        execution_id="x",
        emit=lambda event: None,
        start_method=method,
    )
    runner_.start()
    try:
        runner_.submit(Call(1, {}, 1, "m", None, {}, 30.0))
        outcomes = []
        for _ in range(600):
            outcomes += runner_.poll(0.1)
            if outcomes:
                break
    finally:
        runner_.close()
    assert [(o.status, o.result) for o in outcomes] == [("ok", {"ok": 1})]
