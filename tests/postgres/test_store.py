"""The telemetry store on PostgreSQL: the store tests SQLite passes, and what only a
shared database must add (concurrent writers, claims racing, the watch's reader)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from steadyq.brokers import open_queue, open_store, store_for
from steadyq.brokers.base import Queue
from steadyq.brokers.memory import MemoryStore
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import CLAIM_BUSY, CLAIM_COMPLETED, CLAIMED, EventFilter, EventStore
from steadyq.telemetry.store_postgres import PostgresStore
from steadyq.watch.sources.store import ExecutionRow, Reader, SqliteReader, reader_for
from tests.postgres_db import make_postgres_store
from tests.stores.contract import _random_event
from tests.test_ledger import test_published_requests_are_pending_then_settle  # noqa: F401


@pytest.fixture
def queue(pg_url: str) -> Iterator[Queue]:
    with open_queue(pg_url) as q:
        yield q


@pytest.fixture
def store() -> Iterator[EventStore]:
    with make_postgres_store() as made:
        yield made


def test_store_url_opens_a_postgres_store_that_survives_reopening(pg_url: str) -> None:
    first = open_store(pg_url)
    assert isinstance(first, PostgresStore)
    first.count_attempts(["sub/42"])
    first.close()
    again = open_store(pg_url.replace("postgresql://", "postgres://"))
    assert again.count_attempts(["sub/42"])["sub/42"].attempts == 2
    again.close()


def test_one_write_composes_like_one_write_each_and_like_memory(
    pg_url: str, tmp_path: Path
) -> None:
    """Random ledger traffic: PostgreSQL written in batches, PostgreSQL written event by
    event and the memory store (the reference, apply_ledger_change) end the same; the
    events read back as from SQLite."""
    rng = random.Random(11)
    together = open_store(pg_url)
    apart_url = pg_url.replace("schema=", "schema=b")
    apart = open_store(apart_url)
    memory = MemoryStore()
    sqlite = open_store(f"sqlite:///{tmp_path}/ref.db")
    rids = [str(uuid.uuid4()) for _ in range(6)]
    at = 1000.0
    try:
        for _ in range(40):
            batch = []
            for _ in range(rng.randint(1, 12)):
                at += 1
                batch.append(_random_event(rng, rng.choice(rids), at))
            together.write(batch)
            memory.write(batch)
            sqlite.write(batch)
            for event in batch:
                apart.write([event])
        rows = [s.requests() for s in (together, apart, memory)]
        assert rows[0] == rows[1] == rows[2]
        assert any(r.status == "completed" for r in rows[0])
        assert rows[0] == sqlite.requests()
        # the events read back as written, filters and order as on SQLite
        for where in (
            EventFilter(),
            EventFilter(kinds=(ev.MESSAGE_SUCCEEDED, ev.MESSAGE_FAILED), since=1010, until=1100),
            EventFilter(execution_id="e1", newest_first=True, limit=7),
            EventFilter(message_id="2", min_severity="INFO"),
            EventFilter(request_id=rids[0]),
        ):
            assert together.events(where) == sqlite.events(where), where
        assert together.outcomes_of(["1", "2", "3"]) == sqlite.outcomes_of(["1", "2", "3"])
    finally:
        together.close()
        apart.close()
        sqlite.close()
        from tests.postgres_db import drop_schema

        drop_schema(apart_url.split("schema=")[1].split("&")[0])


def test_completed_is_final_against_concurrent_writers(pg_url: str) -> None:
    """Writers in other processes' connections race a completion with failures and
    receipts of the same requests: every completed request stays completed."""
    stores = [open_store(pg_url) for _ in range(4)]
    rids = [f"r{i}" for i in range(50)]
    errors: list[BaseException] = []

    def writer(store: EventStore, kind: str, seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(5):
                order = rids[:]
                rng.shuffle(order)
                store.write([Event(kind, time.time(), request_id=r, message_id="m") for r in order])
        except BaseException as exc:
            errors.append(exc)

    stores[0].write([Event(ev.MESSAGE_RECEIVED, time.time(), request_id=r) for r in rids])
    threads = [
        threading.Thread(target=writer, args=(stores[0], ev.MESSAGE_SUCCEEDED, 1)),
        threading.Thread(target=writer, args=(stores[1], ev.MESSAGE_FAILED, 2)),
        threading.Thread(target=writer, args=(stores[2], ev.MESSAGE_RECEIVED, 3)),
        threading.Thread(target=writer, args=(stores[3], ev.MESSAGE_DEAD_LETTERED, 4)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == []
        assert {r.request_id for r in stores[1].requests(status="completed")} == set(rids)
    finally:
        for s in stores:
            s.close()


def test_claims_race_one_owner_per_request_and_completed_is_never_claimed(pg_url: str) -> None:
    stores = [open_store(pg_url) for _ in range(4)]
    rids = [f"q{i}" for i in range(200)]
    won: dict[str, list[str]] = {}
    lock = threading.Lock()

    def claimer(store: EventStore, owner: str) -> None:
        order = rids[:]
        random.Random(owner).shuffle(order)
        for start in range(0, len(order), 20):
            found = store.claim(order[start : start + 20], owner, time.time() + 30)
            with lock:
                for rid, state in found.items():
                    if state == CLAIMED:
                        won.setdefault(rid, []).append(owner)

    try:
        threads = [
            threading.Thread(target=claimer, args=(s, f"e{i}")) for i, s in enumerate(stores)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(won) == sorted(rids)
        assert all(len(owners) == 1 for owners in won.values()), "a request claimed twice"
        # the owner completes one; nobody may claim it again, not even after it lapsed
        rid, [owner] = next(iter(won.items()))
        stores[0].write(
            [Event(ev.MESSAGE_SUCCEEDED, time.time(), request_id=rid, execution_id=owner)]
        )
        assert stores[1].claim([rid], "late", time.time() + 30) == {rid: CLAIM_COMPLETED}
        other = next(r for r in rids if r != rid)
        assert stores[1].claim([other], "late", time.time() + 30) == {other: CLAIM_BUSY}
        # a lapsed claim is free again; its lapse is on the database's clock
        stores[2].claim(["lapse"], "a", time.time() + 0.5)
        assert stores[3].claim(["lapse"], "b", time.time() + 30) == {"lapse": CLAIM_BUSY}
        deadline = time.monotonic() + 20
        while stores[3].claim(["lapse"], "b", time.time() + 30) != {"lapse": CLAIMED}:
            assert time.monotonic() < deadline, "the lapsed claim never came free"
            time.sleep(0.2)
        stores[3].release_claims(["lapse"], "b")
        assert stores[2].claim(["lapse"], "a", time.time() + 30) == {"lapse": CLAIMED}
    finally:
        for s in stores:
            s.close()


def _watch_events(rng: random.Random) -> list[Event]:
    out: list[Event] = []
    at = 5000.0
    for i in range(400):
        at += rng.random() * 3
        kind = rng.choice(ev.KINDS)
        severity = rng.choice(["INFO", "INFO", "WARNING", "ERROR"])
        data: dict[str, Any] = {}
        if kind == ev.EXECUTION_STARTED:
            data = {"max_runtime_s": rng.choice([None, 60, 0, "x"])}
        out.append(
            Event(
                kind,
                at,
                severity=severity,
                message=rng.choice(["", "disk full", "timeout on 3", "ok"]),
                execution_id=rng.choice(["x1", "x2", "x3", f"x{i}"])
                if kind.startswith("execution")
                else rng.choice([None, "x1", "x2"]),
                message_id=str(rng.randint(1, 30)),
                request_id=rng.choice([None, "a", "b"]),
                attempt=rng.choice([None, 1, 2]),
                reason=rng.choice([None, "invalid_json", "handler_error"]),
                duration_ms=rng.choice([None, 12.0]),
                data=data,
            )
        )
    return out


def _by_id(rows: list[ExecutionRow]) -> list[ExecutionRow]:
    return sorted(rows, key=lambda r: r.execution_id)


def _same(sql: Reader, ref: Reader, a: float, b: float) -> None:
    assert sql.kind_counts(a, b) == ref.kind_counts(a, b)
    assert sql.warnings(a, b) == ref.warnings(a, b)
    assert list(sql.rejections(a, b)) == list(ref.rejections(a, b))
    assert list(sql.failures(a, b)) == list(ref.failures(a, b))
    assert list(sql.texts(a, b)) == list(ref.texts(a, b))
    assert sorted(sql.startups(a, b)) == sorted(ref.startups(a, b))
    assert _by_id(sql.executions_started(a, b)) == _by_id(ref.executions_started(a, b))
    assert _by_id(sql.executions_open_at(a)) == _by_id(ref.executions_open_at(a))


def test_watch_reader_aggregates_in_sql_as_sqlite_does(pg_url: str, tmp_path: Path) -> None:
    from steadyq.telemetry.reader_postgres import PostgresReader

    events = _watch_events(random.Random(5))
    store = open_store(pg_url)
    sqlite = open_store(f"sqlite:///{tmp_path}/ref.db")
    try:
        store.write(events)
        sqlite.write(events)
        sql, ref = reader_for(store), reader_for(sqlite)
        assert isinstance(sql, PostgresReader) and isinstance(ref, SqliteReader)
        windows = [(5000.0, 5400.0), (5400.0, 6300.0), (0.0, 1e10), (7000.0, 7000.0)]
        with sql.session(), ref.session():
            for a, b in windows:
                _same(sql, ref, a, b)
            ids = ["x1", "x2", "nope"]
            assert _by_id(sql.executions_by_id(ids)) == _by_id(ref.executions_by_id(ids))
            assert sql.warnings(0, 1e10) > 0
        assert sql.kind_counts(0, 1e10), "outside a session a query reads too"
    finally:
        store.close()
        sqlite.close()


def test_queue_and_store_share_one_schema(pg_url: str) -> None:
    with open_queue(pg_url) as q:
        assert store_for(q, "sqlite:///ignored.db") is q.colocated_store


def test_key_lookups_probe_the_index_whatever_the_statistics_say(pg_url: str) -> None:
    """Autovacuum is off on the machine's server: tables analyzed while empty, then
    filled. The per-batch lookups (completed, claims, outcomes, attempt counts, the
    ledger rows a write moves) must
    still probe an index per id, never read the whole ledger or every outcome."""
    from steadyq.telemetry import store_postgres as sp

    store = open_store(pg_url)
    assert isinstance(store, PostgresStore)
    db = store.db
    try:
        with db.transaction() as conn:
            for table in ("requests", "events", "broker_attempts"):
                conn.execute(db.sql(f"ANALYZE SQ.{table}"))
        now = time.time()
        for start in range(0, 6000, 2000):
            store.write(
                [
                    Event(kind, now, message_id=str(i), request_id=f"r{i}")
                    for i in range(start, start + 2000)
                    for kind in (ev.MESSAGE_RECEIVED, ev.MESSAGE_SUCCEEDED)
                ]
            )
        store.count_attempts([f"k{i}" for i in range(6000)])
        ids = [f"r{i}" for i in range(100)]
        with db.reading() as conn:
            for sql, params in (
                (sp._COMPLETED_OF, (ids,)),
                (sp._OUTCOMES_OF, ([str(i) for i in range(100)],)),
                (sp._STORED_REQUESTS, (sorted(ids),)),  # a settlement's ledger read
            ):
                plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + db.sql(sql), params))
                assert "Seq Scan" not in plan and "Hash" not in plan, plan
                assert "Index Scan" in plan, plan
        assert store.completed(ids) == set(ids)
        assert len(store.outcomes_of([str(i) for i in range(100)])) == 100
        assert len(store.attempts_of([f"k{i}" for i in range(100)])) == 100
    finally:
        store.close()


def test_text_postgresql_cannot_hold_does_not_poison_a_worker(pg_url: str) -> None:
    """A NUL or a lone surrogate in a handler's error and log record (text SQLite keeps
    and PostgreSQL's text and jsonb refuse) is stored replaced, and the message still
    reaches its outcome; so does a ledger field holding them."""
    import json

    from steadyq import RetryPolicy, Worker, WorkerOptions

    with open_queue(pg_url) as q:
        store = store_for(q)
        rid = str(uuid.uuid4())
        q.publish(json.dumps({"request_id": rid, "topic": "x"}).encode())
        options = WorkerOptions(
            handler="tests.postgres.handlers:odd_text",
            runner="inline",
            drain=True,
            retry=RetryPolicy(0, 0, 2),
            backend_outage_s=5,
        )
        result = Worker(q, store, options).run()
        assert result.exit_code == 0, result.detail
        [letter] = q.dlq_list()
        assert letter.reason == "max_attempts_exceeded" and "\ufffd" in letter.detail
        failed = store.events(EventFilter(kinds=(ev.MESSAGE_FAILED,)))
        assert len(failed) == 2 and "bad byte \ufffd in x ?" in failed[0].message
        store.write(
            [
                Event(
                    ev.MESSAGE_SUCCEEDED,
                    time.time(),
                    request_id="odd",
                    data={"result": {"ledger": {"t": "a\x00b\udcff", "ok": "\U0001f600"}}},
                )
            ]
        )
        [row] = store.requests(request_id="odd")
        assert row.fields == {"t": "a\ufffdb\ufffd", "ok": "\U0001f600"}


def test_a_watch_session_may_pause_between_queries(pg_url: str) -> None:
    """The idle-in-transaction limit ends frozen writers' sessions; a reader's snapshot,
    which locks no rows, may sit between its queries for longer."""
    store = PostgresStore.from_url(pg_url + "&idle_in_transaction_s=0.5")
    try:
        store.write([Event(ev.LOG, 10.0, severity="WARNING", message="x")])
        reader = store.watch_reader()
        with reader.session():
            assert reader.warnings(0, 100) == 1
            time.sleep(1.2)
            assert reader.warnings(0, 100) == 1
    finally:
        store.close()
