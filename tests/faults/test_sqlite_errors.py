"""SQLite failures at the boundary: each becomes a steadyq error naming its cause, and
the connection recovers when the condition clears.

Real conditions, no mock of sqlite3: SQLite's own page limit for a full disk, a
second connection holding the write lock, an immutable WAL file (``chattr +i``) for
a write that fails inside COMMIT.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from steadyq._sqlite import SqliteDatabase, max_page_count
from steadyq.brokers.base import Settlement
from steadyq.brokers.sqlite import SqliteQueue
from steadyq.errors import BackendError, BackendUnavailable, ConfigError
from steadyq.telemetry.events import Event
from tests.faults.files import chattr

ROW = b"x" * 3000  # about a page: a few rows need new pages


def fill_until_full(db: SqliteDatabase) -> BackendUnavailable:
    """Insert rows until the capped file refuses one; return that error."""
    with db.transaction() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS filler (b BLOB)")
    for _ in range(1000):
        try:
            with db.transaction() as conn:
                conn.execute("INSERT INTO filler VALUES (?)", (ROW,))
        except BackendUnavailable as exc:
            return exc
    raise AssertionError("the page limit never took effect")


def count(db: SqliteDatabase, table: str) -> int:
    with db.reading() as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SqliteDatabase]:
    database = SqliteDatabase(tmp_path / "q.db", busy_timeout_ms=100)
    yield database
    database.close()


def test_full_database_is_an_outage_with_its_cause_and_the_connection_recovers(
    db: SqliteDatabase,
) -> None:
    with db.transaction() as conn:
        conn.execute("CREATE TABLE filler (b BLOB)")
    limit = db.limit_pages(1)  # never below the current size: no room to grow
    with db.reading() as conn:
        assert limit == conn.execute("PRAGMA page_count").fetchone()[0]
    exc = fill_until_full(db)
    assert "database or disk is full" in str(exc)
    assert "SQLITE_FULL" in str(exc)
    assert isinstance(exc.__cause__, sqlite3.OperationalError)
    assert not db.conn.in_transaction
    before = count(db, "filler")
    # space comes back: the same connection writes again, and nothing half-done stayed
    db.limit_pages(1_000_000)
    with db.transaction() as conn:
        conn.execute("INSERT INTO filler VALUES (?)", (ROW,))
    assert count(db, "filler") == before + 1


def test_locked_database_is_an_outage_and_writes_resume_when_the_holder_lets_go(
    db: SqliteDatabase, tmp_path: Path
) -> None:
    holder = sqlite3.connect(tmp_path / "q.db", isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        locked = pytest.raises(BackendUnavailable, match="database is locked")
        with locked as info, db.transaction() as conn:
            conn.execute("CREATE TABLE t (x)")
        assert "SQLITE_BUSY" in str(info.value)
        assert not db.conn.in_transaction
        # reads go on beside the writer (WAL)
        assert count(db, "messages") == 0
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    with db.transaction() as conn:
        conn.execute("CREATE TABLE t (x)")


def test_a_transaction_left_open_does_not_poison_the_next_one(db: SqliteDatabase) -> None:
    db.conn.execute("BEGIN")  # as if a ROLLBACK had failed
    db.conn.execute("CREATE TABLE t (x)")
    with db.transaction() as conn:
        conn.execute("CREATE TABLE u (x)")
    with db.reading() as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "u" in names and "t" not in names


def test_other_driver_errors_are_backend_errors_not_outages(db: SqliteDatabase) -> None:
    with pytest.raises(BackendError, match="no such table") as info, db.transaction() as conn:
        conn.execute("INSERT INTO nowhere VALUES (1)")
    assert not isinstance(info.value, BackendUnavailable)
    assert isinstance(info.value.__cause__, sqlite3.OperationalError)
    with pytest.raises(BackendError, match="syntax error"), db.reading() as conn:
        conn.execute("SELEC 1")


def test_an_exception_of_the_caller_rolls_back_and_passes_through(db: SqliteDatabase) -> None:
    with pytest.raises(KeyError), db.transaction() as conn:
        conn.execute("CREATE TABLE t (x)")
        raise KeyError("mine")
    assert not db.conn.in_transaction
    with db.reading() as conn:
        assert conn.execute("SELECT name FROM sqlite_master WHERE name='t'").fetchone() is None


def test_a_commit_that_fails_reports_its_cause_not_the_rollback(db: SqliteDatabase) -> None:
    with db.transaction() as conn:
        conn.execute("CREATE TABLE t (b BLOB)")
    wal = Path(db.path + "-wal")
    if not chattr("+i", wal):
        pytest.skip("chattr +i not permitted here (needs root and ext4/xfs/btrfs/tmpfs)")
    try:
        # the write to the immutable WAL happens inside COMMIT; SQLite then rolls
        # the transaction back by itself
        with pytest.raises(BackendUnavailable) as info, db.transaction() as conn:
            conn.execute("INSERT INTO t VALUES (?)", (ROW,))
        text = str(info.value)
        assert "cannot commit" in text and "disk I/O error" in text, text
        assert "cannot rollback" not in text
        assert info.value.__context__ is None or "rollback" not in str(info.value.__context__)
        assert not db.conn.in_transaction
    finally:
        chattr("-i", wal)
    with db.transaction() as conn:
        conn.execute("INSERT INTO t VALUES (?)", (ROW,))
    assert count(db, "t") == 1


def test_a_settle_on_a_full_queue_changes_nothing_and_succeeds_later(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with SqliteQueue.from_url(url) as queue:
        queue.publish_batch([(b'{"n": %d}' % i, None) for i in range(20)])
    assert max_page_count(url + "?max_page_count=2") == 2
    with SqliteQueue.from_url(url + "?max_page_count=1&busy_timeout_ms=100") as queue:
        deliveries = queue.pull(20, 60)  # rewrites rows in place: fits
        assert len(deliveries) == 20
        events = [
            Event("message.succeeded", 1.0, message="x" * 2000, message_id=d.message_id)
            for d in deliveries
        ]
        acks = [Settlement.ack(d, [e]) for d, e in zip(deliveries, events, strict=True)]
        with pytest.raises(BackendUnavailable, match="database or disk is full"):
            queue.settle(acks)
        stats = queue.stats()
        assert (stats.in_flight, stats.dead_lettered) == (20, 0)
        assert count(queue.db, "events") == 0
        queue.db.limit_pages(1_000_000)
        result = queue.settle(acks)
        assert len(result.applied) == 20 and not result.lost
        assert queue.stats().in_flight == 0
        assert count(queue.db, "events") == 20


@pytest.mark.parametrize("query", ["max_page_count=0", "max_page_count=many"])
def test_bad_max_page_count_is_a_config_error(query: str) -> None:
    with pytest.raises(ConfigError, match="max_page_count"):
        max_page_count(f"sqlite:///q.db?{query}")


def test_a_nested_transaction_fails_and_leaves_the_outer_one_intact(db: SqliteDatabase) -> None:
    with db.transaction() as conn:
        conn.execute("CREATE TABLE t (x)")
        with pytest.raises(BackendError, match="within a transaction"), db.transaction():
            pass
        conn.execute("INSERT INTO t VALUES (1)")
    assert count(db, "t") == 1
