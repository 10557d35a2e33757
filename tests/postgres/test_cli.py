"""Every CLI command on PostgreSQL: the SQLite CLI tests run against a schema of their
own, and one session driven by ``STEADYQ_URL`` prints what the same session prints on
SQLite, field for field (ids and times aside)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import invoke, write_requests
from tests.test_cli import test_full_cycle as test_full_cycle
from tests.test_cli import test_replay_loop_guard_and_purge as test_replay_loop_guard_and_purge

__all__ = ["test_full_cycle", "test_replay_loop_guard_and_purge"]


@pytest.fixture
def url(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL the imported SQLite CLI tests pass with --url: a PostgreSQL schema."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STEADYQ_URL", raising=False)
    return pg_url


_VOLATILE = {
    "message_id",
    "request_id",
    "execution_id",
    "timestamp",
    "started_at",
    "ready_at",
    "finished_at",
    "completed_at",
    "created_at",
    "updated_at",
    "failed_at",
    "published_at",
    "dead_lettered_at",
    "duration_s",
    "startup_s",
    "duration_ms",
    "oldest_unacked_age_s",
    "host",
    "artifacts",
    "detail",
    "data",
    "message",
    "oldest",
    "newest",
}


def shape(value: Any) -> Any:
    """``value`` with what differs between two runs of one session blanked out."""
    if isinstance(value, dict):
        return {k: "…" if k in _VOLATILE else shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((shape(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def session(monkeypatch: pytest.MonkeyPatch, url: str, folder: Path) -> dict[str, Any]:
    """publish, worker --drain, every listing, dlq show/replay/purge; through STEADYQ_URL."""
    folder.mkdir()
    monkeypatch.chdir(folder)
    monkeypatch.setenv("STEADYQ_URL", url)
    seen: dict[str, Any] = {}
    code, out, err = invoke("publish", str(write_requests(folder / "r.jsonl")))
    assert code == 0, err
    seen["publish"] = out.split(" to ")[0]
    code, out, err = invoke(
        "worker", "--drain", "--runner", "inline", "--log-format", "none",
        "--handler", "tests.worker_handlers:by_topic",
    )  # fmt: skip
    assert code == 0, err
    for name, args in {
        "dlq ls": ["dlq", "ls", "--json"],
        "dlq stats": ["dlq", "stats", "--json"],
        "requests": ["requests", "--json"],
        "executions": ["executions", "--json"],
        "events": ["events", "--json"],
        "logs": ["logs", "--severity", "WARNING", "--json"],
        "queue stats": ["queue", "stats", "--json"],
    }.items():
        code, out, err = invoke(*args)
        assert code == 0, (name, err)
        seen[name] = shape(json.loads(out))
    code, out, _ = invoke("dlq", "ls")
    assert code == 0 and "request_id_invalid" in out
    first = json.loads(invoke("dlq", "ls", "--json")[1])[0]
    code, out, _ = invoke("dlq", "show", first["message_id"])
    assert code == 0 and first["reason"] in out
    seen["dlq show"] = first["reason"]
    code, out, _ = invoke("dlq", "replay", "--reason", "payload_not_json")
    seen["dlq replay"] = out.strip()
    code, out, _ = invoke("queue", "stats")
    assert code == 0 and "ready" in out
    seen["queue stats text"] = " ".join(out.split()[:12])
    code, out, _ = invoke("dlq", "purge", "--reason", "request_id_invalid")
    seen["dlq purge"] = out.strip()
    seen["after"] = shape(json.loads(invoke("queue", "stats", "--json")[1]))
    return seen


def test_the_same_session_prints_the_same_on_sqlite_and_postgresql(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_pg = session(monkeypatch, pg_url, tmp_path / "pg")
    on_sqlite = session(monkeypatch, f"sqlite:///{tmp_path}/lite.db", tmp_path / "lite")
    assert on_pg["queue stats"]["dead_lettered"] == 5
    assert on_pg["dlq purge"] == "purged 3 dead letters" or "purged 3" in on_pg["dlq purge"]
    for key in on_sqlite:
        assert on_pg[key] == on_sqlite[key], key


def test_readable_errors_for_postgresql_urls(pg_url: str) -> None:
    code, _, err = invoke(
        "worker", "--url", "postgresql://postgres@127.0.0.1:9/test?connect_timeout=2",
        "--handler", "steadyq.handlers:noop", "--drain",
    )  # fmt: skip
    assert code == 3 and "cannot connect to PostgreSQL" in err and "Traceback" not in err
    code, _, err = invoke("queue", "stats", "--url", pg_url)
    assert code == 3 and "no steadyq database" in err, "a look creates nothing"
    code, _, err = invoke("dlq", "ls", "--url", pg_url.replace("schema=", "schema=Bad"))
    assert code == 2 and "lowercase letters" in err
