"""The one exit-code layer: the enums, the mapping from the error tree, the docs."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import steadyq
from steadyq import errors
from steadyq.cli import app
from steadyq.exit_codes import ExitCode, VerdictCode, code_for

ROOT = Path(__file__).parents[1]
PACKAGE = Path(steadyq.__file__).parent


def doc_table(text: str, heading: str) -> dict[int, str]:
    """``code -> name`` from the first ``| code | name | …`` table under ``heading``."""
    section = text.split(heading, 1)[1]
    rows = {}
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        match = re.match(r"\|\s*(\d+)\s*\|\s*`?([A-Z_]+)`?\s*\|", line)
        if match:
            rows[int(match[1])] = match[2]
    return rows


def test_the_documented_codes_are_the_enums() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    assert doc_table(doc, "### Exit codes of the commands") == {c.value: c.name for c in ExitCode}
    assert doc_table(doc, "### Exit codes of `watch PLAN` and `demo`") == {
        c.value: c.name for c in VerdictCode
    }


def test_the_other_pages_agree() -> None:
    worker = doc_table((ROOT / "docs" / "worker.md").read_text(), "## Exit codes")
    assert worker and all(ExitCode(code).name == name for code, name in worker.items())
    watch = (ROOT / "docs" / "watch.md").read_text()
    for verdict in ("PASSED", "FAILED", "INCONCLUSIVE"):
        code = VerdictCode[verdict].value
        assert re.search(rf"\| `{verdict}` \| {code} \|", watch), verdict


def test_the_workers_codes_are_the_commands() -> None:
    from steadyq.worker import ExitCode as WorkerExitCode

    for code in WorkerExitCode:
        assert ExitCode[code.name] == code


@pytest.mark.parametrize(
    ("error", "command", "verdict"),
    [
        (errors.HandlerLoadError("x"), 4, 3),
        (errors.ConfigError("x"), 2, 3),
        (errors.MissingExtra("pubsub://", "pubsub"), 2, 3),
        (errors.NotFound("x"), 2, 3),
        (errors.BackendUnavailable("x"), 3, 3),
        (errors.LeaseLost("x"), 3, 3),
        (errors.ReplayRefused("x"), 1, 3),
        (errors.AlreadyRunning("x"), 1, 3),
        (errors.SteadyqError("x"), 1, 3),
        (KeyboardInterrupt(), 130, 130),
        (FileNotFoundError(2, "No such file or directory", "x"), 2, 3),
        (ValueError("a bug"), 1, 3),
    ],
)
def test_one_mapping_from_the_error_tree(error: BaseException, command: int, verdict: int) -> None:
    assert code_for(error) == command
    assert code_for(error, verdict=True) == verdict


def test_a_missing_driver_names_its_extra() -> None:
    missing = errors.missing_extra(ModuleNotFoundError("no psycopg", name="psycopg"))
    assert isinstance(missing, errors.MissingExtra) and missing.extra == "postgres"
    assert "pip install 'steadyq[postgres]'" in str(missing)
    for module, extra in (
        ("google.cloud.run_v2", "gcp"),
        ("PIL", "content"),
        ("uvicorn", "dashboard"),
    ):
        found = errors.missing_extra(ModuleNotFoundError(name=module))
        assert found is not None and found.extra == extra, module
    assert errors.missing_extra(ModuleNotFoundError(name="mypkg")) is None, "a user's own import"


def test_a_missing_driver_behind_a_command_is_one_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import steadyq.cli

    def needs_a_driver(url: str, **_: object) -> None:
        import psycopg_missing_for_this_test  # type: ignore[import-not-found]  # noqa: F401

    def psycopg_missing(url: str, **_: object) -> None:
        raise ModuleNotFoundError("No module named 'psycopg'", name="psycopg")

    monkeypatch.setattr(steadyq.cli, "open_queue", psycopg_missing)
    result = CliRunner().invoke(app, ["queue", "stats", "--url", "postgresql://127.0.0.1/x"])
    assert result.exit_code == 2, result.output
    assert "pip install 'steadyq[postgres]'" in result.stderr
    assert "Traceback" not in result.output
    # a module of no extra is a bug: not dressed up as a missing extra
    monkeypatch.setattr(steadyq.cli, "open_queue", needs_a_driver)
    result = CliRunner().invoke(app, ["queue", "stats", "--url", f"sqlite:///{tmp_path}/x.db"])
    assert isinstance(result.exception, ModuleNotFoundError)


def test_the_demo_without_its_extra_cannot_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "steadyq.content", None)  # import raises ImportError
    result = CliRunner().invoke(app, ["demo", "--quick", "--dir", str(tmp_path / "d")])
    assert result.exit_code == VerdictCode.CANNOT_RUN, result.output
    assert "pip install 'steadyq[content]'" in result.stderr


def test_a_file_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/x.db"
    assert CliRunner().invoke(app, ["queue", "stats", "--url", url]).exit_code == 3
    CliRunner().invoke(app, ["publish", "-", "--url", url], input="")  # creates the file
    out = tmp_path / "no" / "such" / "dir" / "letters.jsonl"
    result = CliRunner().invoke(app, ["dlq", "export", "--url", url, "--out", str(out)])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert result.stderr.startswith("error: ") and "No such file or directory" in result.stderr


def _exits_with_a_literal(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Exit":
            args = node.args
            if args and isinstance(args[0], ast.Constant) and args[0].value not in (0, None):
                lines.append(node.lineno)
    return lines


def test_no_command_picks_its_own_codes() -> None:
    found = {
        str(path.relative_to(PACKAGE)): lines
        for path in PACKAGE.rglob("*.py")
        if path.name != "exit_codes.py"
        and (lines := _exits_with_a_literal(ast.parse(path.read_text())))
    }
    assert found == {}, "exit through steadyq.exit_codes"


def test_the_watch_library_does_not_import_its_commands() -> None:
    for path in (PACKAGE / "watch").rglob("*.py"):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for name in names:
                assert name not in ("steadyq.watch.cli", "steadyq.cli", "typer"), (path, name)
    judge = ast.parse((PACKAGE / "watch" / "judge.py").read_text())
    names = {
        getattr(node, "id", None) or getattr(node, "attr", None) or getattr(node, "name", None)
        for node in ast.walk(judge)
    }
    assert not [n for n in names if n and "exit" in n.lower()], "the judge keeps verdicts only"


def test_an_interrupted_import_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from steadyq.watch.sources import gcloud

    def interrupted(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(gcloud.Importer, "stream", interrupted)
    export = tmp_path / "executions.json"
    export.write_text("[]")
    url = f"sqlite:///{tmp_path}/x.db"
    result = CliRunner().invoke(app, ["import", "gcloud", str(export), "--url", url])
    assert result.exit_code == ExitCode.CANCELLED, result.output
    assert result.stderr == "error: interrupted\n"
