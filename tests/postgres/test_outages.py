"""PostgreSQL going away while a worker runs is an outage: reported once, backed off,
resumed, nothing lost and nothing acknowledged without its record.

The server is never restarted here (other people use it): its sessions are ended with
``pg_terminate_backend``, which is what a restart does to every client, and one
settlement is held mid-transaction by a table lock and its session killed there.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from steadyq import RetryPolicy, Worker, WorkerOptions
from steadyq.brokers import open_queue
from steadyq.brokers.postgres import PostgresQueue
from steadyq.telemetry import events as ev
from steadyq.telemetry.store import EventFilter
from tests.postgres_db import BASE_URL

psycopg = pytest.importorskip("psycopg", reason="pip install -e .[postgres]")


def wait_for(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def schema_of(url: str) -> str:
    return url.split("schema=")[1].split("&")[0]


def terminate(schema: str, where: str = "true") -> int:
    with psycopg.connect(BASE_URL, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            f" WHERE application_name = %s AND pid <> pg_backend_pid() AND {where}",
            (f"steadyq {schema}",),
        ).fetchall()
    return len(rows)


def publish(q: PostgresQueue, n: int, topic: str = "ok") -> list[str]:
    bodies = [
        json.dumps({"request_id": str(uuid.uuid4()), "topic": topic}).encode() for _ in range(n)
    ]
    return q.publish_batch([(b, None) for b in bodies])


def options(**kw: object) -> WorkerOptions:
    base: dict[str, object] = {
        "handler": "tests.worker_handlers:by_topic",
        "runner": "inline",
        "drain": True,
        "deadline_s": 5.0,
        "lease_s": 3.0,
        "retry": RetryPolicy(0, 0, 3),
        "idle_poll_s": 0.05,
        "backend_outage_s": 60.0,
    }
    base.update(kw)
    return WorkerOptions(**base)  # type: ignore[arg-type]


def in_thread(worker: Worker) -> tuple[threading.Thread, list[Any]]:
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(worker.run()))
    thread.start()
    return thread, results


def succeeded(q: PostgresQueue) -> Counter[str]:
    store = q.colocated_store
    return Counter(
        e.message_id or "" for e in store.events(EventFilter(kinds=(ev.MESSAGE_SUCCEEDED,)))
    )


def test_sessions_killed_while_a_worker_runs_are_an_outage_it_resumes_from(pg_url: str) -> None:
    schema = schema_of(pg_url)
    with open_queue(pg_url) as q:
        assert isinstance(q, PostgresQueue)
        ids = publish(q, 3000)
        worker = Worker(q, q.colocated_store, options())
        thread, results = in_thread(worker)
        for kill in (1, 2, 3):  # three "restarts" while it works
            wait_for(lambda k=kill: worker.counts["succeeded"] > 300 * k, 60, "progress")
            terminate(schema)
        thread.join(120)
        assert results and results[0].exit_code == 0, results
        done = succeeded(q)
        assert set(done) == set(ids), "every message succeeded"
        assert max(done.values()) == 1, "and was recorded once"
        assert q.stats().to_dict() | {"oldest_unacked_age_s": None, "notes": []} == {
            "ready": 0, "in_flight": 0, "delayed": 0, "dead_lettered": 0,
            "oldest_unacked_age_s": None, "notes": [],
        }  # fmt: skip
        logs = [e.message for e in q.colocated_store.events(EventFilter(kinds=(ev.LOG,)))]
        assert any(m.startswith("backend unavailable, backing off: PostgreSQL") for m in logs)
        assert any(m == "backend available again" for m in logs)


def consistent(schema: str, ids: list[str]) -> dict[str, str]:
    """Where each message is, read in one snapshot: still queued, or succeeded; a
    message that is neither was acknowledged without its record."""
    with psycopg.connect(BASE_URL) as look:
        queued = {
            str(r[0]) for r in look.execute(f'SELECT seq FROM "{schema}".messages').fetchall()
        }
        done = {
            r[0]
            for r in look.execute(
                f'SELECT message_id FROM "{schema}".events WHERE kind = %s',
                (ev.MESSAGE_SUCCEEDED,),
            ).fetchall()
        }
    return {m: "queued" if m in queued else "succeeded" if m in done else "LOST" for m in ids}


def test_a_settlement_killed_mid_transaction_is_not_acknowledged(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = schema_of(pg_url)
    gate = tmp_path / "gate"
    monkeypatch.setenv("STEADYQ_TEST_GATE", str(gate))
    with open_queue(pg_url) as q:
        assert isinstance(q, PostgresQueue)
        ids = publish(q, 5, topic="gated")
        worker = Worker(q, q.colocated_store, options(handler="tests.postgres.handlers:gated"))
        with psycopg.connect(BASE_URL) as admin:
            thread, results = in_thread(worker)
            wait_for(lambda: (q.stats().in_flight or 0) >= 1, 30, "a batch to be leased")
            # the batch runs (its handlers wait at the gate); its settlement will ack
            # and then wait for the events table
            admin.execute(f'LOCK TABLE "{schema}".events IN SHARE ROW EXCLUSIVE MODE')
            gate.touch()

            def waiting() -> int | None:
                """The pid of our session waiting to write events, if any."""
                row = admin.execute(
                    "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)"
                    " WHERE a.application_name = %s AND NOT l.granted"
                    " AND l.relation = %s::regclass",
                    (f"steadyq {schema}", f'"{schema}".events'),
                ).fetchone()
                return None if row is None else int(row[0])

            wait_for(waiting, 30, "the settlement to wait for the lock")
            pid = waiting()
            # the waiting transaction has written to messages already: its acks
            held = admin.execute(
                "SELECT mode FROM pg_locks WHERE pid = %s AND granted AND relation = %s::regclass",
                (pid, f'"{schema}".messages'),
            ).fetchall()
            assert ("RowExclusiveLock",) in held
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            # the killed transaction's acks went with it: nothing gone without a record
            assert set(consistent(schema, ids).values()) == {"queued"}
            admin.rollback()  # the lock goes; the worker records and acks again
        thread.join(120)
        assert results and results[0].exit_code == 0, results
        assert set(consistent(schema, ids).values()) == {"succeeded"}
        assert max(succeeded(q).values()) == 1, "each recorded once"
        logs = [e.message for e in q.colocated_store.events(EventFilter(kinds=(ev.LOG,)))]
        assert any(m.startswith("backend unavailable, backing off: PostgreSQL") for m in logs)
