"""Retention: dead letters expire (queues), telemetry is pruned (stores), and
``apply_retention`` / ``steadyq store prune`` put the two together."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from steadyq.brokers import open_queue, store_for
from steadyq.brokers.base import DLQ_RETENTION_S, Queue, expires_dead_letters
from steadyq.brokers.memory import MemoryQueue
from steadyq.brokers.sqlite import SqliteQueue
from steadyq.cli import app
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.retention import RetentionPolicy, apply_retention
from steadyq.telemetry.store import PruneCounts
from tests.conftest import FakeClock

DAY = 86400.0
T0 = 1_700_000_000.0  # 2023: older than any cut the CLI takes from the wall clock


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Queue]:
    clock = FakeClock(T0)
    if request.param == "postgres":
        from steadyq.brokers.postgres import PostgresQueue
        from tests.postgres_db import postgres_url

        with postgres_url() as url, PostgresQueue.from_url(url, clock=clock) as pq:
            yield pq
        return
    if request.param == "memory":
        q: Queue = MemoryQueue(clock=clock)
    else:
        q = SqliteQueue.from_url(f"sqlite:///{tmp_path}/q.db", clock=clock)
    with q:
        yield q


def dead_letter_one(q: Queue, body: bytes) -> str:
    mid = q.publish(body)
    [d] = q.pull(1, 30)
    q.dead_letter(d, "schema_invalid", "bad")
    return mid


def test_dead_letters_expire_by_age_and_zero_keeps_them(queue: Queue) -> None:
    clock: FakeClock = queue.clock  # type: ignore[attr-defined]
    old = dead_letter_one(queue, b"old")
    clock.advance(3 * DAY)
    new = dead_letter_one(queue, b"new")
    assert expires_dead_letters(queue)
    assert queue.dlq_expire(0, now=T0 + 100 * DAY) == 0, "0 keeps them forever"
    assert queue.dlq_expire(2 * DAY, now=T0 + 2 * DAY) == 0, "not older than 2 days yet"
    assert queue.dlq_expire(2 * DAY, now=T0 + 4 * DAY) == 1
    assert [d.message_id for d in queue.dlq_list()] == [new] and old != new
    clock.advance(DLQ_RETENTION_S + 1)
    assert queue.dlq_expire(DLQ_RETENTION_S) == 1, "the queue's clock by default"
    assert queue.dlq_list() == []
    with pytest.raises(ValueError):
        queue.dlq_expire(-1)


def test_a_queue_without_expiry_expires_nothing() -> None:
    from steadyq.brokers.pubsub import PubSubQueue
    from steadyq.telemetry.store_memory import MemoryStore

    q = PubSubQueue("p", "sub", store=MemoryStore())  # no connection is made
    assert not expires_dead_letters(q)
    assert q.dlq_expire(DAY) == 0


def _old_history(q: Queue) -> None:
    """A dead letter, an event and a completed request at T0 (the queue's clock)."""
    dead_letter_one(q, b"x")
    store_for(q).write([Event(ev.MESSAGE_SUCCEEDED, T0, request_id="r", message_id="1")])


def test_apply_retention_expires_letters_and_prunes_only_when_asked(queue: Queue) -> None:
    _old_history(queue)
    store = store_for(queue)
    kept = apply_retention(queue, store, RetentionPolicy(dlq_s=0), now=T0 + 30 * DAY)
    assert (kept.dead_letters, kept.telemetry) == (0, None)
    default = apply_retention(queue, store, RetentionPolicy(), now=T0 + 8 * DAY)
    assert (default.dead_letters, default.telemetry) == (1, None), "7 days: the letter"
    assert len(store.events()) == 1, "telemetry is kept unless the policy says"
    pruning = RetentionPolicy(telemetry_s=30 * DAY)
    assert apply_retention(queue, store, pruning, now=T0 + 29 * DAY).telemetry == PruneCounts()
    done = apply_retention(queue, store, pruning, now=T0 + 31 * DAY)
    assert done.telemetry == PruneCounts(events=1, requests=1)
    assert store.events() == [] and store.requests() == []


def test_a_policy_checks_its_figures_and_says_when_it_is_due() -> None:
    policy = RetentionPolicy(every_s=600)
    assert policy.dlq_s == DLQ_RETENTION_S == 7 * DAY
    assert policy.due(None, T0) and policy.due(T0, T0 + 600) and not policy.due(T0, T0 + 599)
    for bad in ({"dlq_s": -1}, {"telemetry_s": float("inf")}, {"every_s": 0}, {"dlq_s": "7d"}):
        with pytest.raises(ValueError):
            RetentionPolicy(**bad)  # type: ignore[arg-type]


def test_store_prune_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    with SqliteQueue.from_url(url, clock=FakeClock(T0)) as q:
        _old_history(q)
        store_for(q).write([Event(ev.LOG, T0 + 10**9, message="the future")])
    runner = CliRunner()
    args = ["store", "prune", "--url", url, "--older-than", "30d", "--dlq-older-than", "7d"]
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "would drop" in dry.output and "1 events" in dry.output
    assert "1 dead letters" in dry.output
    done = runner.invoke(app, [*args, "--json"])
    assert done.exit_code == 0, done.output
    doc = json.loads(done.output)
    assert doc["telemetry"] == {"events": 1, "requests": 1, "executions": 0, "claims": 0}
    assert doc["dead_letters"] == 1
    with open_queue(url) as q:
        assert [e.message for e in store_for(q).events()] == ["the future"]
        assert q.dlq_list() == []
    bad = runner.invoke(app, ["store", "prune", "--url", url, "--older-than", "soon"])
    assert bad.exit_code == 2 and "not a duration" in bad.output
    assert "Traceback" not in bad.output
