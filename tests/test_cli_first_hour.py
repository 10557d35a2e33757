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
RECORD = "steadyq.handlers:record"


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
        "worker", "--url", url, "--handler", RECORD, "--drain", "--max-runtime", "5m",
        "--deadline", "10m",
    )  # fmt: skip
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


# -- read-only commands -------------------------------------------------------------

LOOKING = (
    ("queue", "stats"),
    ("dlq", "ls"),
    ("dlq", "stats"),
    ("dlq", "export"),
    ("events",),
    ("logs",),
    ("executions",),
    ("requests",),
)


@pytest.mark.parametrize("command", LOOKING, ids=" ".join)
def test_looking_at_a_missing_database_creates_nothing(
    tmp_path: Path, command: tuple[str, ...]
) -> None:
    where = tmp_path / "no" / "such" / "dir" / "x.db"
    code, out, err = invoke(*command, "--url", f"sqlite:///{where}")
    assert code == 3 and out == ""
    assert f"no steadyq database at {where}" in " ".join(err.split())
    assert not (tmp_path / "no").exists()


def test_a_file_that_is_not_a_steadyq_database_is_named_as_such(tmp_path: Path) -> None:
    (tmp_path / "notes.db").write_text("just text\n")
    (tmp_path / "other.db").touch()
    for name in ("notes.db", "other.db"):
        code, _, err = invoke("events", "--url", f"sqlite:///{tmp_path / name}")
        assert code == 3 and "no steadyq database at" in err, err
    assert (tmp_path / "other.db").stat().st_size == 0, "an empty file stays empty"


PROBE = """
import json, os, sys
from typer.testing import CliRunner
from steadyq.cli import app

warm, url, commands = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
runner = CliRunner()
for args in commands:  # as root first, so every module imported lazily is loaded
    runner.invoke(app, [*args, "--json", "--url", warm])
if os.geteuid() == 0:
    os.setgid(65534)
    os.setuid(65534)  # nobody: the file and its folder are no longer writable
results = [runner.invoke(app, [*args, "--json", "--url", url]) for args in commands]
print(json.dumps([[r.exit_code, r.stdout, r.stderr] for r in results]))
"""


def test_a_database_the_user_may_only_read_can_be_inspected(tmp_path: Path) -> None:
    import shutil
    import tempfile

    from steadyq.brokers import open_queue

    if os.geteuid() == 0 and not hasattr(os, "setuid"):
        pytest.skip("root ignores file permissions and cannot drop them here")
    base = Path(tempfile.mkdtemp(prefix="steadyq-ro-", dir="/tmp" if os.geteuid() == 0 else None))
    try:
        base.chmod(0o755)
        folder = base / "ro"
        folder.mkdir()
        warm, db = base / "warm.db", folder / "x.db"
        for path in (warm, db):
            queue = open_queue(f"sqlite:///{path}")
            with queue:
                queue.publish(b'{"request_id": "not-a-uuid"}')
        db.chmod(0o444)
        folder.chmod(0o555)
        before = sorted(p.name for p in folder.iterdir())
        commands = [list(c) for c in LOOKING if c != ("dlq", "export")]
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                PROBE,
                f"sqlite:///{warm}",
                f"sqlite:///{db}",
                json.dumps(commands),
            ],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            cwd=base,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        results = json.loads(done.stdout)
        for args, (code, out, err) in zip(commands, results, strict=True):
            assert code == 0, (args, err)
            assert isinstance(json.loads(out), dict | list), args
        assert json.loads(results[0][1])["ready"] == 1
        assert sorted(p.name for p in folder.iterdir()) == before, "nothing was created"
    finally:
        for path in (base / "ro", base):
            if path.exists():
                path.chmod(0o755)
        shutil.rmtree(base)


# -- small things a user trips on -----------------------------------------------------


def test_version() -> None:
    from steadyq import __version__

    code, out, _ = invoke("--version")
    assert code == 0 and out.strip() == f"steadyq {__version__}"


@pytest.mark.parametrize("command", [("worker",), ("watch",), ("dlq", "ls"), ("dlq", "purge")])
def test_flags_are_shown_without_a_value(command: tuple[str, ...]) -> None:
    code, out, _ = invoke(*command, "--help")
    assert code == 0 and "--help" in out
    assert "<bool>" not in out and "BOOLEAN" not in out


def test_replaying_everything_must_be_asked_for(url: str) -> None:
    from steadyq.brokers import open_queue
    from steadyq.worker import Worker, WorkerOptions

    queue = open_queue(url)
    with queue:
        for _ in range(2):
            queue.publish(b"not json")
        Worker(
            queue, queue.colocated_store, WorkerOptions(handler=RECORD, runner="inline", drain=True)
        ).run()
    code, _, err = invoke("dlq", "replay", "--url", url)
    assert code == 2 and "say what to replay" in err and "--all" in err
    code, out, _ = invoke("dlq", "replay", "--url", url, "--all", "--dry-run")
    assert code == 0 and "would replay 2 dead letters" in out
    code, out, _ = invoke("dlq", "replay", "--url", url, "--all", "--max-replays", "1")
    assert code == 0 and "replayed 2" in out
    queue = open_queue(url)
    with queue:
        Worker(
            queue, queue.colocated_store, WorkerOptions(handler=RECORD, runner="inline", drain=True)
        ).run()
    code, out, _ = invoke("dlq", "replay", "--url", url, "--all", "--max-replays", "1")
    assert code == 1 and "already replayed 1+ times" in out, "the guard says its own figure"


def test_publishing_a_folder_says_it_is_a_folder(url: str, tmp_path: Path) -> None:
    code, _, err = invoke("publish", str(tmp_path), "--url", url)
    assert code == 2 and "is a folder" in err


def test_a_bad_fault_is_not_taken_for_a_verdict(tmp_path: Path) -> None:
    code, _, err = invoke("demo", "--fault", "bogus", "--dir", str(tmp_path / "d"))
    assert code == 3 and "--fault 'bogus'" in err
    assert code not in (0, 1, 2), "0, 1 and 2 are PASSED, FAILED and INCONCLUSIVE"


def test_a_mistyped_variable_is_named_with_the_right_one(url: str) -> None:
    _, _, err = invoke(
        "queue",
        "stats",
        "--url",
        url,
        env={
            "STEADYQ_WORKER_DEADLIN_S": "30",
            "STEADYQ_ALERT_KIND": "verdict",
            "STEADYQ_DASHBOARD_TOKEN": "secret",
        },
    )
    text = " ".join(err.split())
    assert "STEADYQ_DASHBOARD_TOKEN" not in text
    assert "STEADYQ_WORKER_DEADLIN_S is not a steadyq setting" in text
    assert "did you mean STEADYQ_WORKER_DEADLINE_S?" in text
    assert "STEADYQ_ALERT_KIND" not in text, "variables steadyq sets itself are known"


def test_a_bad_value_is_blamed_on_where_it_came_from(url: str, tmp_path: Path) -> None:
    (tmp_path / "steadyq.toml").write_text('[worker]\ndeadline_s = "10m"\n')
    code, _, err = invoke("worker", "--url", url, env={"STEADYQ_WORKER_DEADLINE_S": "soon"})
    text = " ".join(err.split())
    assert code == 2 and "STEADYQ_WORKER_DEADLINE_S='soon' (environment)" in text
    assert "steadyq.toml" not in text
    code, _, err = invoke("worker", "--url", url, "--deadline", "soon")
    assert code == 2 and "--deadline: not a duration" in " ".join(err.split())
    (tmp_path / "steadyq.toml").write_text('[worker]\ndeadline_s = "soon"\n')
    code, _, err = invoke("worker", "--url", url)
    assert code == 2 and "steadyq.toml:2: worker.deadline_s" in " ".join(err.split())


def test_tables_piped_keep_their_natural_width_and_cut_nothing(url: str, tmp_path: Path) -> None:
    from steadyq.brokers import open_queue
    from steadyq.worker import Worker, WorkerOptions

    long_id = "not-a-uuid-" + "x" * 150
    queue = open_queue(url)
    with queue:
        queue.publish(json.dumps({"request_id": long_id, "topic": "t"}).encode())
        Worker(
            queue, queue.colocated_store, WorkerOptions(handler=RECORD, runner="inline", drain=True)
        ).run()
    for command in (("logs",), ("events",), ("dlq", "ls"), ("executions",)):
        code, out, _ = invoke(*command, "--url", url)
        assert code == 0 and "…" not in out, command
        assert max(len(line) for line in out.splitlines()) > 80, command
    _, out, _ = invoke("logs", "--url", url)
    _, stored, _ = invoke("logs", "--url", url, "--json")
    [record] = json.loads(stored)
    assert len(record["message"]) > 120 and record["message"] in out, "the whole text"
