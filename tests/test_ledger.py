"""The request ledger: pending → processing → completed | failed, on every store."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from steadyq import RetryPolicy, Worker, WorkerOptions
from steadyq.brokers import open_queue, store_for
from steadyq.brokers.base import Queue
from steadyq.content import ContentRequest
from steadyq.publishing import publish_recorded
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import EventStore
from tests.conftest import FakeClock


@pytest.fixture(params=["memory", "sqlite"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Queue]:
    url = "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/l.db"
    with open_queue(url) as q:
        yield q


def req(topic: str, modalities: list[str] | None = None) -> tuple[str, bytes]:
    rid = str(uuid.uuid4())
    data: dict[str, object] = {"request_id": rid, "topic": topic}
    if modalities is not None:
        data["modalities"] = modalities
    return rid, json.dumps(data).encode()


def status(store: EventStore, rid: str) -> str:
    [row] = store.requests(request_id=rid)
    return row.status


def test_published_requests_are_pending_then_settle(queue: Queue) -> None:
    store = store_for(queue)
    ok_id, ok = req("fractions", ["text"])
    flaky_id, flaky = req("flaky")
    broken_id, broken = req("permanent")
    publish_recorded(queue, store, [(ok, {}), (flaky, {}), (broken, {}), (b"not json", {})])
    assert {r.request_id: r.status for r in store.requests()} == {
        ok_id: "pending",
        flaky_id: "pending",
        broken_id: "pending",
    }
    options = WorkerOptions(
        handler="tests.worker_handlers:by_topic",
        runner="inline",
        drain=True,
        retry=RetryPolicy(0, 0, 3),
        schema=ContentRequest,  # its ledger_fields() name the modalities asked
    )
    Worker(queue, store, options).run()
    rows = {r.request_id: r for r in store.requests()}
    assert rows[ok_id].status == "completed" and rows[ok_id].fields == {"modalities": ["text"]}
    assert rows[flaky_id].fields == {"modalities": ["video"]}, "absent means video"
    assert rows[ok_id].created_at is not None and rows[ok_id].completed_at is not None
    assert rows[ok_id].started_at is not None and rows[ok_id].duration_s is not None
    assert rows[flaky_id].status == "completed" and rows[flaky_id].attempts == 2
    assert "transient" in (rows[flaky_id].error or ""), "the failed attempt's error is kept"
    assert rows[broken_id].status == "failed" and rows[broken_id].failed_at is not None
    assert (rows[broken_id].error or "").startswith("topic_refused")
    assert store.requests(status="failed") == [rows[broken_id]]


@pytest.mark.parametrize("url", ["memory://", "sqlite:///:memory:"])
def test_status_moves_through_each_state_and_completed_is_final(url: str, clock: FakeClock) -> None:
    rid = str(uuid.uuid4())
    with open_queue(url) as q:
        store = store_for(q)

        def write(kind: str, **fields: Any) -> None:
            clock.advance(1)
            store.write([Event(kind=kind, timestamp=clock(), request_id=rid, **fields)])

        write(ev.MESSAGE_PUBLISHED, message_id="m1")
        assert status(store, rid) == "pending"
        write(ev.MESSAGE_RECEIVED, attempt=1, data={"request": {"modalities": ["video"]}})
        assert status(store, rid) == "processing"
        write(ev.MESSAGE_FAILED, attempt=1, message="boom", reason="handler_error")
        assert status(store, rid) == "pending"
        write(ev.MESSAGE_RECEIVED, attempt=2)
        ledger = {"artifacts": {"video": "a/lesson.mp4"}, "note": None}
        result = {"ledger": ledger, "modalities": ["ignored: not under ledger"]}
        write(ev.MESSAGE_SUCCEEDED, attempt=2, duration_ms=1500.0, data={"result": result})
        write(ev.MESSAGE_DEAD_LETTERED, attempt=3, reason="max_attempts_exceeded")
        [row] = store.requests(request_id=rid)
        assert (row.status, row.attempts, row.duration_s) == ("completed", 2, 1.5)
        # the request's fields and the result's ledger merge; a null keeps what was there
        assert row.fields == {"modalities": ["video"], "artifacts": {"video": "a/lesson.mp4"}}
        assert row.error == "boom" and row.failed_at is None
        assert store.completed([rid]) == {rid}


def test_content_worker_fills_the_ledger_with_artifacts(tmp_path: Path) -> None:
    with open_queue(f"sqlite:///{tmp_path}/c.db") as queue:
        store = store_for(queue)
        rid, body = req("fractions", ["text"])
        publish_recorded(queue, store, [(body, {})])
        options = WorkerOptions(
            handler="steadyq.content:handle",
            runner="inline",
            drain=True,
            artifacts_dir=str(tmp_path / "a"),
        )
        Worker(queue, store, options).run()
        [row] = store.requests()
    assert row.status == "completed" and row.fields is not None
    assert row.fields["modalities"] == ["text"]
    artifacts = row.fields["artifacts"]
    assert Path(artifacts["text"]) == tmp_path / "a" / rid / "lesson.md"
    assert Path(artifacts["manifest"]).is_file()


_KINDS = (
    ev.MESSAGE_PUBLISHED,
    ev.MESSAGE_RECEIVED,
    ev.MESSAGE_FAILED,
    ev.MESSAGE_TIMED_OUT,
    ev.MESSAGE_SUCCEEDED,
    ev.MESSAGE_REJECTED,
    ev.MESSAGE_DEAD_LETTERED,
    ev.MESSAGE_DUPLICATE,
)


def _random_event(rng: Any, rid: str, at: float) -> Event:
    kind = rng.choice(_KINDS)
    data: dict[str, Any] = {}
    if kind in (ev.MESSAGE_PUBLISHED, ev.MESSAGE_RECEIVED) and rng.random() < 0.7:
        asked = rng.choice([["text"], ["video"], ["text", "video"]])
        data = {"request": {"modalities": asked, "o": {"a": rng.choice([1, None])}}}
    if kind == ev.MESSAGE_SUCCEEDED and rng.random() < 0.7:
        ledger = {"modalities": ("text",), "artifacts": {"text": f"a/{rid}.md"}}
        data = {"result": {"ledger": {**ledger, "o": {"b": rng.choice([2, None])}}}}
    return Event(
        kind,
        at,
        message=rng.choice(["", "boom"]),
        execution_id=rng.choice([None, "e1", "e2"]),
        message_id=rng.choice([None, "1", "2"]),
        request_id=rid,
        attempt=rng.choice([None, 1, 2, 3]),
        reason=rng.choice([None, "handler_error"]),
        duration_ms=rng.choice([None, 12.5]),
        data=data,
    )


def test_one_write_composes_ledger_changes_like_one_write_each(tmp_path: Path) -> None:
    """Several changes of one request in one write (one upsert) end as applying them one
    by one: the SQLite store against itself and against the memory store."""
    import random

    from steadyq.brokers import open_store
    from steadyq.brokers.memory import MemoryStore

    rng = random.Random(7)
    together = open_store(f"sqlite:///{tmp_path}/together.db")
    apart = open_store(f"sqlite:///{tmp_path}/apart.db")
    memory = MemoryStore()
    rids = [str(uuid.uuid4()) for _ in range(6)]
    at = 1000.0
    for _ in range(60):
        batch = []
        for _ in range(rng.randint(1, 12)):
            at += 1
            batch.append(_random_event(rng, rng.choice(rids), at))
        together.write(batch)
        memory.write(batch)
        for event in batch:
            apart.write([event])
    rows = {s: s.requests() for s in (together, apart, memory)}
    assert rows[together] == rows[apart]
    assert rows[together] == rows[memory]
    assert any(r.status == "completed" for r in rows[together])
    for store in (together, apart, memory):
        store.close()


def test_a_schema_2_file_keeps_its_ledger_fields(tmp_path: Path) -> None:
    """Files written before the ledger had `fields` kept the content workload's
    `modalities` and `artifacts` in columns of their own: they move into `fields`."""
    import sqlite3

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE steadyq_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO steadyq_meta VALUES ('schema_version', '2');
        CREATE TABLE requests (
            request_id TEXT PRIMARY KEY, status TEXT NOT NULL, message_id TEXT,
            execution_id TEXT, updated_at REAL NOT NULL, completed_at REAL, attempts INTEGER,
            modalities TEXT, duration_s REAL, artifacts TEXT, error TEXT, created_at REAL,
            started_at REAL, failed_at REAL);
        INSERT INTO requests (request_id, status, updated_at, modalities, artifacts)
            VALUES ('a', 'completed', 5, '["text"]', '{"text": "x/a/lesson.md"}'),
                   ('b', 'pending', 4, '["video"]', NULL),
                   ('c', 'failed', 3, NULL, NULL);
        """
    )
    conn.close()
    with open_queue(f"sqlite:///{path}") as queue:
        rows = {r.request_id: r for r in store_for(queue).requests()}
    assert rows["a"].fields == {"modalities": ["text"], "artifacts": {"text": "x/a/lesson.md"}}
    assert rows["b"].fields == {"modalities": ["video"]}
    assert rows["c"].fields is None and rows["c"].status == "failed"
    conn = sqlite3.connect(path)
    [(version,)] = conn.execute("SELECT value FROM steadyq_meta WHERE key='schema_version'")
    conn.close()
    assert version == "3"
    with open_queue(f"sqlite:///{path}") as queue:  # opening again changes nothing
        assert store_for(queue).requests(request_id="a")[0].fields == rows["a"].fields


@pytest.mark.parametrize("url", ["memory://", "sqlite:///:memory:"])
def test_ledger_fields_json_cannot_hold_are_left_out_not_a_failed_write(url: str) -> None:
    rid = str(uuid.uuid4())
    with open_queue(url) as q:
        store = store_for(q)
        request = {"modalities": ("text",), "when": Path("a/b"), "gone": None}
        store.write([Event(ev.MESSAGE_RECEIVED, 1.0, request_id=rid, data={"request": request})])
        bad = {"ledger": {"score": float("nan")}}
        store.write([Event(ev.MESSAGE_SUCCEEDED, 2.0, request_id=rid, data={"result": bad})])
        [row] = store.requests()
    assert row.status == "completed"
    assert row.fields == {"modalities": ["text"], "when": "a/b"}
