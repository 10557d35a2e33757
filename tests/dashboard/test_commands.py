"""The two commands: ``steadyq dashboard`` and ``steadyq worker --metrics-port``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from steadyq.cli import app
from tests.dashboard.conftest import REPO, TOKEN, body, client_for


def test_the_worker_serves_metrics_while_it_runs(view: Any, db_url: str) -> None:
    view.queue.publish(body())
    result = CliRunner().invoke(
        app,
        ["worker", "--url", db_url, "--drain", "--runner", "inline", "--log-format", "none",
         "--handler", "tests.worker_handlers:by_topic", "--metrics-port", "0"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "metrics on http://127.0.0.1:" in result.output


def test_a_taken_metrics_port_is_a_readable_error(view: Any, db_url: str) -> None:
    from steadyq.dashboard.app import free_port_socket

    taken = free_port_socket("127.0.0.1", 0)
    try:
        result = CliRunner().invoke(
            app,
            ["worker", "--url", db_url, "--drain", "--runner", "inline",
             "--handler", "tests.worker_handlers:by_topic",
             "--metrics-port", str(taken.getsockname()[1])],
        )  # fmt: skip
    finally:
        taken.close()
    assert result.exit_code == 2
    assert "cannot serve metrics" in result.output and "Traceback" not in result.output


def test_an_empty_token_file_is_refused(tmp_path: Path) -> None:
    empty = tmp_path / "token"
    empty.write_text("\n")
    result = CliRunner().invoke(app, ["dashboard", "--token-file", str(empty)])
    assert result.exit_code == 2 and "is empty" in result.output


def test_the_core_runs_without_the_dashboard_extra(tmp_path: Path) -> None:
    hide = (
        "import sys\n"
        "for n in ('starlette', 'uvicorn', 'prometheus_client'):\n"
        "    sys.modules[n] = None\n"
    )
    (tmp_path / "sitecustomize.py").write_text(hide)
    env = {"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"}
    run = [sys.executable, "-m", "steadyq.cli"]
    (tmp_path / "r.jsonl").write_text('{"request_id": "not-a-uuid"}\n')
    # publish makes the database; queue stats only looks, and creates none
    for command in (["publish", "r.jsonl"], ["queue", "stats"]):
        done = subprocess.run(
            [*run, *command], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
    dash = subprocess.run(
        [*run, "dashboard"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert dash.returncode == 2
    assert "needs its extra" in dash.stderr and "Traceback" not in dash.stderr


def test_an_unreachable_store_is_said_on_the_page(view: Any) -> None:
    client = client_for(view, TOKEN)
    view.db.close()
    response = client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 503
    assert "the store is unreachable" in response.text
