from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steadyq.cli import app
from steadyq.samples import INCIDENT_POISON_IDS

runner = CliRunner()
CONTENT = ("--handler", "steadyq.content:handle")


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("STEADYQ_URL", raising=False)
    return f"sqlite:///{tmp_path}/cli.db"


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def write_requests(path: Path, valid: int = 3) -> Path:
    lines = [
        json.dumps({"request_id": str(uuid.uuid4()), "topic": "fractions"}) for _ in range(valid)
    ]
    lines += [json.dumps({"request_id": rid, "topic": "x"}) for rid in INCIDENT_POISON_IDS]
    lines += ["not json at all", "", "\x1b[31m[bold]markup[/bold]"]
    path.write_text("\n".join(lines) + "\n")
    return path


def publish_and_drain(url: str, tmp_path: Path) -> None:
    code, out, _ = invoke("publish", str(write_requests(tmp_path / "r.jsonl")), "--url", url)
    assert code == 0 and "published 8 messages" in out
    code, out, err = invoke("worker", "--url", url, "--drain", "--runner", "inline", *CONTENT)
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert any(x["message"].startswith("Invalid request_id format") for x in lines)
    assert "succeeded" in err


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["publish"],
        ["worker"],
        ["dlq"],
        ["dlq", "ls"],
        ["dlq", "show"],
        ["dlq", "stats"],
        ["dlq", "replay"],
        ["dlq", "purge"],
        ["dlq", "export"],
        ["executions"],
        ["requests"],
        ["events"],
        ["logs"],
        ["queue", "stats"],
        ["demo"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    code, out, _ = invoke(*command, "--help")
    assert code == 0 and "Usage" in out


def test_worker_help_says_inline_is_soft() -> None:
    _, out, _ = invoke("worker", "--help")
    assert "soft deadline only" in " ".join(out.replace("│", " ").split())


def test_full_cycle(url: str, tmp_path: Path) -> None:
    publish_and_drain(url, tmp_path)

    code, out, _ = invoke("dlq", "ls", "--url", url, "--json")
    letters = json.loads(out)
    assert code == 0 and len(letters) == 5
    keys = {
        "message_id",
        "request_id",
        "reason",
        "detail",
        "attempts",
        "payload",
        "attributes",
        "dead_lettered_at",
    }
    assert keys <= set(letters[0])
    assert sorted(x["reason"] for x in letters).count("request_id_invalid") == 3

    code, out, _ = invoke("dlq", "ls", "--url", url)
    assert code == 0 and "request_id_invalid" in out
    assert "\x1b" not in out, "terminal escapes from a payload are neutralised"

    code, out, _ = invoke("dlq", "stats", "--url", url, "--json")
    assert {g["reason"]: g["count"] for g in json.loads(out)} == {
        "request_id_invalid": 3,
        "payload_not_json": 2,
    }

    code, out, _ = invoke("dlq", "show", letters[0]["message_id"], "--url", url)
    assert code == 0 and letters[0]["reason"] in out

    code, out, _ = invoke("requests", "--url", url, "--json")
    rows = json.loads(out)
    # the poison ids are not request ids: only the three valid requests have a row
    assert code == 0 and [r["status"] for r in rows] == ["completed"] * 3
    done = rows
    assert all(r["fields"]["modalities"] == ["video"] for r in done)
    assert all(Path(r["fields"]["artifacts"]["video"]).is_file() for r in done)
    assert {"request_id", "status", "fields", "duration_s"} <= set(rows[0])
    code, out, _ = invoke("requests", "--url", url, "--status", "completed")
    assert code == 0 and out.count("completed") == 3
    code, out, _ = invoke("requests", "--url", url, "--status", "failed")
    assert code == 0 and "no requests" in out
    code, _, err = invoke("requests", "--url", url, "--status", "done")
    assert code == 2 and "one of pending, processing, completed, failed" in err.replace("\n", " ")

    code, out, _ = invoke("executions", "--url", url, "--json")
    [execution] = json.loads(out)
    assert {
        "execution_id",
        "status",
        "started_at",
        "ready_at",
        "finished_at",
        "duration_s",
        "startup_s",
    } <= set(execution)
    assert execution["status"] == "succeeded"

    code, out, _ = invoke(
        "events", "--url", url, "--kind", "message.rejected", "--since", "24h", "--json"
    )
    found = json.loads(out)
    assert len(found) == 5
    assert {
        "timestamp",
        "kind",
        "severity",
        "execution_id",
        "message_id",
        "request_id",
        "attempt",
        "reason",
        "duration_ms",
    } <= set(found[0])

    code, out, _ = invoke("logs", "--url", url, "--severity", "WARNING", "--since", "4h", "--json")
    assert len(json.loads(out)) == 5
    code, out, _ = invoke("logs", "--url", url, "--severity", "ERROR", "--json")
    assert json.loads(out) == []

    code, out, _ = invoke("queue", "stats", "--url", url, "--json")
    stats = json.loads(out)
    assert (stats["ready"], stats["in_flight"], stats["delayed"], stats["dead_lettered"]) == (
        0,
        0,
        0,
        5,
    )
    assert "oldest_unacked_age_s" in stats


def test_replay_loop_guard_and_purge(url: str, tmp_path: Path) -> None:
    publish_and_drain(url, tmp_path)
    code, out, _ = invoke(
        "dlq", "replay", "--url", url, "--reason", "payload_not_json", "--dry-run"
    )
    assert code == 0 and "would replay 2" in out
    for _ in range(3):
        code, out, _ = invoke("dlq", "replay", "--url", url, "--reason", "payload_not_json")
        assert code == 0 and "replayed 2" in out
        code, _, _ = invoke(
            "worker",
            "--url",
            url,
            "--drain",
            "--runner",
            "inline",
            "--log-format",
            "none",
            *CONTENT,
        )
        assert code == 0
    code, out, _ = invoke("dlq", "replay", "--url", url, "--reason", "payload_not_json", "--json")
    rows = json.loads(out)
    assert code == 1 and {r["outcome"] for r in rows} == {"refused"}
    code, out, _ = invoke(
        "dlq", "replay", "--url", url, "--reason", "payload_not_json", "--max-replays", "4"
    )
    assert code == 0 and "replayed 2" in out

    export = tmp_path / "dlq.jsonl"
    code, _, _ = invoke("dlq", "export", "--url", url, "--out", str(export))
    assert code == 0 and len(export.read_text().splitlines()) == 3

    code, _, err = invoke("dlq", "purge", "--url", url)
    assert code == 2 and "say what to purge" in err
    code, out, _ = invoke("dlq", "purge", "--url", url, "--older-than", "7d")
    assert code == 0 and "purged 0" in out
    code, out, _ = invoke("dlq", "purge", "--url", url, "--reason", "request_id_invalid")
    assert "purged 3" in out


def test_readable_errors_without_tracebacks(url: str, tmp_path: Path) -> None:
    code, _, err = invoke("publish", "missing.jsonl", "--url", url)
    assert code == 2 and "no such file" in err and "Traceback" not in err
    code, _, err = invoke("queue", "stats", "--url", "redis://localhost")
    assert code == 2 and "unknown queue URL" in err
    code, _, err = invoke("worker", "--url", url, "--handler", "nope:fn", "--drain")
    assert code == 4 and "cannot import handler module" in err
    code, _, err = invoke("worker", "--url", url, "--drain")
    assert code == 2 and "no handler: name one with --handler" in err
    code, _, err = invoke("dlq", "show", "404", "--url", url)
    assert code == 2 and "no dead letter" in err
    (tmp_path / "steadyq.toml").write_text("[worker]\ntypo = 1\n")
    code, _, err = invoke("queue", "stats")
    assert code == 2 and "steadyq.toml:2" in err and "unknown key" in err
    code, _, err = invoke("events", "--url", url, "--kind", "message.exploded")
    assert code == 2 and "unknown event kind" in err


def test_config_file_and_env_pick_the_url(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "steadyq.toml").write_text(f'url = "{url}"\n')
    invoke("publish", str(write_requests(tmp_path / "r.jsonl", valid=1)))
    code, out, _ = invoke("queue", "stats", "--json")
    assert code == 0 and json.loads(out)["ready"] == 6
    monkeypatch.setenv("STEADYQ_URL", f"sqlite:///{tmp_path}/other.db")
    code, _, err = invoke("queue", "stats", "--json")
    assert code == 3 and "no steadyq database at" in err
    assert not (tmp_path / "other.db").exists(), "a read-only command creates nothing"


def test_payload_preview_escapes_control_bytes() -> None:
    from steadyq.dlq import preview

    shown = preview(b"\x1b[31mred\xff\n\xe2\x80\xae")
    assert "\x1b" not in shown and "\n" not in shown and "\u202e" not in shown
    assert shown.startswith("\\x1b[31mred")
    assert preview("ok ü".encode()) == "ok ü"


def test_ledger_fields_print_on_one_line_with_file_names() -> None:
    from steadyq.cli import _fields_text

    fields = {"modalities": ["text", "video"], "artifacts": {"text": "/a/r/lesson.md"}, "n": 3}
    assert _fields_text(fields) == "modalities=text+video artifacts=lesson.md n=3"
    assert _fields_text(None) == "—"


def test_listings_say_when_more_match_than_shown(url: str, tmp_path: Path) -> None:
    publish_and_drain(url, tmp_path)  # 5 dead letters, 3 completed requests
    code, out, err = invoke("dlq", "ls", "--url", url, "--limit", "2", "--json")
    assert code == 0 and len(json.loads(out)) == 2  # stdout stays the listing
    assert "showing the first 2 dead letters" in err and "--limit" in err
    code, out, err = invoke("dlq", "ls", "--url", url, "--limit", "5", "--json")
    assert code == 0 and len(json.loads(out)) == 5 and "more match" not in err
    code, out, err = invoke("requests", "--url", url, "--limit", "1", "--json")
    assert code == 0 and len(json.loads(out)) == 1 and "showing the first 1 requests" in err
    code, out, err = invoke("events", "--url", url, "--limit", "3", "--json")
    shown = json.loads(out)
    assert code == 0 and len(shown) == 3 and "more match" in err
    newest = json.loads(invoke("events", "--url", url, "--limit", "1000", "--json")[1])
    assert shown == newest[-3:]  # the newest three, oldest first
    code, out, err = invoke("executions", "--url", url, "--limit", "1")
    assert code == 0 and "more match" not in err  # one execution: nothing hidden
