"""``steadyq schema``: the request model a worker would validate with, as JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steadyq.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no steadyq.toml but the test's own
    for name in ("STEADYQ_WORKER_HANDLER", "STEADYQ_WORKER_SCHEMA"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def schema(*args: str) -> dict[str, object]:
    result = runner.invoke(app, ["schema", *args])
    assert result.exit_code == 0, result.output
    document: dict[str, object] = json.loads(result.stdout)
    return document


def test_the_default_is_a_request_id_and_anything_else() -> None:
    doc = schema()
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert doc["title"] == "Request" and doc["required"] == ["request_id"]
    assert doc["additionalProperties"] is True
    props = doc["properties"]
    assert isinstance(props, dict) and list(props) == ["request_id"]
    assert "8-4-4-4-12" in props["request_id"]["description"]


def test_a_handler_s_own_schema_is_printed() -> None:
    doc = schema("--handler", "steadyq.content:handle")
    assert doc["title"] == "ContentRequest" and doc["additionalProperties"] is False
    props = doc["properties"]
    assert isinstance(props, dict)
    assert list(props) == [
        "request_id",
        "topic",
        "student_id",
        "interests",
        "grade_level",
        "modalities",
    ]
    assert props["modalities"]["default"] == ["video"]
    assert props["modalities"]["items"]["enum"] == ["text", "video"]
    assert all(p.get("description") for p in props.values()), "every field is described"


def test_the_settings_file_counts_as_for_the_worker(_here: Path) -> None:
    (_here / "steadyq.toml").write_text(
        '[worker]\nhandler = "steadyq.content:handle"\nallow_unknown_fields = true\n'
    )
    doc = schema()
    assert doc["title"] == "ContentRequest"
    assert "additionalProperties" not in doc, "unknown fields are dropped, not refused"
    assert schema("--schema", "steadyq.gate:Request")["title"] == "Request", "--schema wins"


def test_unusable_models_and_handlers_exit_with_the_worker_s_codes() -> None:
    result = runner.invoke(app, ["schema", "--schema", "steadyq.config:load_settings"])
    assert result.exit_code == 2 and "not a pydantic model" in result.output
    result = runner.invoke(app, ["schema", "--schema", "steadyq.config:WorkerSettings"])
    assert result.exit_code == 2 and "has no request_id field" in result.output
    result = runner.invoke(app, ["schema", "--handler", "nope.jobs:handle"])
    assert result.exit_code == 4 and "cannot import handler module" in result.output
