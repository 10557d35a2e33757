"""The WAL checkpoint runs off the commit path (steadyq/_sqlite.py, Checkpointer), and
that costs nothing in durability or in disk: the WAL stays bounded under a long write
load and behind a reader, and a kill -9 mid-load loses no committed transaction."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import steadyq._sqlite as sqlite_module
from steadyq._sqlite import AUTOCHECKPOINT_BACKSTOP_PAGES, SqliteDatabase
from tests.test_reliability import wait_for

REPO = Path(__file__).resolve().parents[2]


def wal_size(path: Path) -> int:
    try:
        return Path(f"{path}-wal").stat().st_size
    except FileNotFoundError:
        return 0


def fill(db: SqliteDatabase, rows: int, size: int = 3000) -> None:
    blob = os.urandom(size)
    with db.transaction() as conn:
        conn.executemany(
            "INSERT INTO messages (body, published_at, visible_at) VALUES (?, 0, 0)",
            [(blob,)] * rows,
        )


def test_commits_do_not_checkpoint_and_the_thread_does(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "q.db")
    try:
        (auto,) = db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()
        assert auto == AUTOCHECKPOINT_BACKSTOP_PAGES  # a commit checkpoints only as a backstop
        fill(db, 200)
        checkpointer = db._checkpointer
        assert checkpointer is not None and checkpointer.alive
        # the thread catches up: every frame written is in the database file
        wait_for(
            lambda: checkpointer.last is not None and checkpointer.last[2] >= checkpointer.last[1],
            10,
            "a complete background checkpoint",
        )
        _, frames, done = db.checkpoint_now()
        assert done == frames
    finally:
        db.close()
    assert not checkpointer.alive  # close() stops it


def test_the_wal_stays_bounded_under_a_long_write_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a small bound, and no backstop to hide behind: only the thread keeps it bounded
    monkeypatch.setattr(sqlite_module, "CHECKPOINT_BOUND_PAGES", 1000)
    monkeypatch.setattr(sqlite_module, "AUTOCHECKPOINT_BACKSTOP_PAGES", 1_000_000)
    path = tmp_path / "q.db"
    db = SqliteDatabase(path)
    try:
        page = db.conn.execute("PRAGMA page_size").fetchone()[0]
        written = biggest = 0
        blob = os.urandom(3000)
        # 40 MB of small commits back to back (a busy worker's pace, ~20 MB/s): with
        # no checkpoint at all the WAL would hold all of it
        deadline = time.monotonic() + 120
        while written < 40 * 1024 * 1024 and time.monotonic() < deadline:
            with db.transaction() as conn:
                conn.executemany(
                    "INSERT INTO messages (body, published_at, visible_at) VALUES (?, 0, 0)",
                    [(blob,)] * 4,
                )
            written += 4 * len(blob)
            biggest = max(biggest, wal_size(path))
            time.sleep(0.0005)
        assert written >= 40 * 1024 * 1024, "the load did not finish in time"
        checkpointer = db._checkpointer
        assert checkpointer is not None and checkpointer.bound_pages == 1000
        assert checkpointer.finishes > 0
        # the bound plus what came within a few intervals: a fraction of what was written
        assert biggest < 16 * 1024 * 1024, (biggest, written, page)
    finally:
        db.close()


def test_a_reader_holding_a_snapshot_is_waited_for_and_the_wal_starts_over(
    tmp_path: Path,
) -> None:
    path = tmp_path / "q.db"
    db = SqliteDatabase(path)
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        fill(db, 10)
        reader.execute("BEGIN")
        reader.execute("SELECT COUNT(*) FROM messages").fetchone()  # holds its snapshot
        checkpointer = db._checkpointer
        assert checkpointer is not None
        rows = checkpointer.bound_pages  # ~1 page a row: past the bound
        for _ in range(10):
            fill(db, rows // 10)
        grown = wal_size(path)
        assert grown > checkpointer.bound_pages * 4096 * 0.9
        # the thread tried to start the WAL over, waited for the reader, gave up for now
        wait_for(lambda: checkpointer.restarts > 0, 30, "a RESTART attempt behind the reader")
        assert checkpointer.last is not None and checkpointer.last[2] < checkpointer.last[1]
        reader.execute("COMMIT")  # lets go
        # the thread catches up on its own (no commit needed to wake it)...
        wait_for(
            lambda: checkpointer.last is not None and checkpointer.last[2] >= checkpointer.last[1],
            30,
            "a complete checkpoint after the reader let go",
        )
        before = wal_size(path)
        for _ in range(20):
            fill(db, 5)
        assert wal_size(path) == before  # reused from its start, not grown
    finally:
        reader.close()
        db.close()


WRITER = """
import sys
from steadyq._sqlite import SqliteDatabase
db = SqliteDatabase(sys.argv[1])
n = 0
while True:
    n += 1
    with db.transaction() as conn:
        conn.execute(
            "INSERT INTO messages (seq, body, published_at, visible_at) VALUES (?, ?, 0, 0)",
            (n, b"x" * 2000),
        )
    print(n, flush=True)  # only after COMMIT returned
"""


@pytest.mark.parametrize("kill_after_s", [1.0, 2.5])
def test_a_kill_9_mid_load_loses_no_committed_transaction(
    tmp_path: Path, kill_after_s: float
) -> None:
    path = tmp_path / "q.db"
    SqliteDatabase(path).close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.strip() == "1", first
        time.sleep(kill_after_s)  # mid-load, whatever the checkpointer is doing
        os.kill(proc.pid, signal.SIGKILL)
        acknowledged = [int(line) for line in [first, *proc.stdout] if line.strip()]
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    assert len(acknowledged) > 10
    db = SqliteDatabase(path)
    try:
        with db.reading() as conn:
            stored = {r[0] for r in conn.execute("SELECT seq FROM messages")}
    finally:
        db.close()
    missing = set(acknowledged) - stored
    assert not missing, f"{len(missing)} committed rows lost, e.g. {sorted(missing)[:5]}"


def _child_writes(parent_db_path: str, out: Any) -> None:
    # the parent's checkpointer is not running here: a commit through a fresh
    # database object starts this process's own, and SQLite works in the child
    child = SqliteDatabase(parent_db_path)
    try:
        fill(child, 50)
        mine = child._checkpointer
        out.put(mine is not None and mine.alive and mine._pid == os.getpid())
    finally:
        child.close()


def test_a_fork_beside_a_busy_checkpointer_leaves_the_child_a_working_sqlite(
    tmp_path: Path,
) -> None:
    import multiprocessing

    db = SqliteDatabase(tmp_path / "q.db")
    try:
        ctx = multiprocessing.get_context("fork")
        for _ in range(5):
            fill(db, 300)  # keeps the thread checkpointing while the forks happen
            parents = db._checkpointer
            assert parents is not None and parents.alive
            out = ctx.Queue()
            child = ctx.Process(target=_child_writes, args=(db.path, out))
            child.start()
            assert out.get(timeout=60) is True
            child.join(60)
            assert child.exitcode == 0
            assert parents.alive  # the parent's thread goes on
    finally:
        db.close()
