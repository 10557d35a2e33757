"""``steadyq pubsub setup`` and the queue commands on a ``pubsub://`` URL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steadyq.cli import app
from tests.brokers.conftest import PROJECT
from tests.pubsub_emulator import free_port

runner = CliRunner()


def setup_args(topic: str, sub: str, *extra: str) -> list[str]:
    return ["pubsub", "setup", "--project", PROJECT, "--topic", topic, "--subscription", sub,
            *extra]  # fmt: skip


def test_setup_is_idempotent_and_says_what_it_did(
    pubsub_host: str, unique: Callable[[str], str]
) -> None:
    topic, sub = unique("topic"), unique("sub")
    first = runner.invoke(app, setup_args(topic, sub, "--ack-deadline", "120"))
    assert first.exit_code == 0, first.output
    assert first.output.count("created") == 4
    assert (
        f"topics/{topic}-dlq" in first.output and f"subscriptions/{topic}-dlq-sub" in first.output
    )
    again = runner.invoke(app, setup_args(topic, sub))
    assert again.exit_code == 0, again.output
    assert again.output.count("exists") == 4 and "created" not in again.output

    from google.cloud import pubsub_v1

    client = pubsub_v1.SubscriberClient()
    made = client.get_subscription(subscription=client.subscription_path(PROJECT, sub))
    client.close()
    assert made.ack_deadline_seconds == 120
    assert made.dead_letter_policy.dead_letter_topic.endswith(f"/topics/{topic}-dlq")
    assert made.dead_letter_policy.max_delivery_attempts == 5
    assert made.retry_policy.minimum_backoff.seconds == 10
    assert made.retry_policy.maximum_backoff.seconds == 600


def test_setup_errors_are_readable(pubsub_host: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = runner.invoke(app, setup_args("topic-x", "sub-x", "--ack-deadline", "5"))
    assert bad.exit_code == 2 and "between 10 and 600" in bad.output
    named = runner.invoke(app, setup_args("x", "sub-x"))
    assert named.exit_code == 2 and "Invalid" in named.output
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    down = runner.invoke(app, setup_args("topic-x", "sub-x"))
    assert down.exit_code == 3, down.output
    assert "error:" in down.output and "Traceback" not in down.output
    assert runner.invoke(app, ["pubsub", "setup", "--help"]).exit_code == 0


def test_publish_worker_dlq_on_pubsub_urls(
    pubsub_host: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    topic, sub = unique("topic"), unique("sub")
    assert runner.invoke(app, setup_args(topic, sub)).exit_code == 0
    lines = [
        json.dumps({"request_id": str(uuid.uuid4()), "topic": "fractions"}),
        json.dumps({"request_id": "test-smoke-001", "topic": "fractions"}),
        "not json",
    ]
    (tmp_path / "requests.jsonl").write_text("\n".join(lines) + "\n")
    store = ["--store", f"sqlite:///{tmp_path}/store.db"]
    topic_url, sub_url = f"pubsub://{PROJECT}/{topic}", f"pubsub://{PROJECT}/{sub}"
    published = runner.invoke(
        app, ["publish", "--url", topic_url, *store, str(tmp_path / "requests.jsonl")]
    )
    assert published.exit_code == 0, published.output
    ran = runner.invoke(
        app,
        ["worker", "--url", sub_url, *store, "--drain", "--runner", "inline",
         "--handler", "steadyq.handlers:noop", "--log-format", "none"],
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    listed = runner.invoke(app, ["dlq", "ls", "--url", sub_url, *store, "--json"])
    assert listed.exit_code == 0, listed.output
    letters = json.loads(listed.stdout)
    assert sorted(x["reason"] for x in letters) == ["payload_not_json", "request_id_invalid"]
    stats = runner.invoke(app, ["queue", "stats", "--url", sub_url, *store, "--json"])
    assert stats.exit_code == 0 and "emulator" in stats.output
    purged = runner.invoke(
        app, ["dlq", "purge", "--url", sub_url, *store, "--reason", "payload_not_json"]
    )
    assert purged.exit_code == 0, purged.output
    left = json.loads(runner.invoke(app, ["dlq", "ls", "--url", sub_url, *store, "--json"]).stdout)
    assert [x["reason"] for x in left] == ["request_id_invalid"]
