"""The request ledger as workers fill it, on every queue's store.

The ledger's rule itself (every move, composition within a write, completed final,
fields merging) is checked on every store by the contract suite, tests/stores.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from steadyq import RetryPolicy, Worker, WorkerOptions
from steadyq.brokers import open_queue, store_for
from steadyq.brokers.base import Queue
from steadyq.content import ContentRequest
from steadyq.publishing import publish_recorded
from steadyq.telemetry.store import EventStore


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


def test_quick_init_keeps_the_dataclass_as_it_was() -> None:
    """The quicker __init__ of the per-message dataclasses has the same signature,
    defaults (a fresh factory default each time) and frozen-ness."""
    import dataclasses
    import inspect
    import pickle

    from steadyq.brokers.base import Delivery, Settlement
    from steadyq.telemetry.events import Event
    from steadyq.telemetry.store import LedgerChange

    for cls in (Event, Delivery, Settlement, LedgerChange):
        names = [p.name for p in inspect.signature(cls).parameters.values()]
        assert names == [f.name for f in dataclasses.fields(cls)]
    a, b = Event("k", 1.0), Event("k", 1.0)
    assert a == b and a.data == {} and a.data is not b.data and a.severity == "INFO"
    assert pickle.loads(pickle.dumps(a)) == a
    assert dataclasses.replace(a, kind="z").kind == "z"
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.kind = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Event("k")  # type: ignore[call-arg]
    d = Delivery("1", b"x", {}, 1, 0.0, "t", 9.0)
    assert Settlement.ack(d).action == "ack" and d.runs == 0 and d.replays == 0
