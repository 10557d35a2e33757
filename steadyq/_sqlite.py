"""One SQLite database file shared by the queue and the telemetry store.

WAL mode lets readers (the CLI, a watch) run beside writers; a busy timeout makes
several worker processes on one host queue up for the write lock instead of
failing; every write is one short ``BEGIN IMMEDIATE`` transaction. With
``synchronous=NORMAL`` a committed transaction survives the death of any process
(kill -9 included); only a power cut can lose the last few commits: those since the
last checkpoint, which a background thread (:class:`Checkpointer`) runs at least
every :data:`CHECKPOINT_INTERVAL_S` while there are commits, off the commit path
(docs/queue.md, "Durability").
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from steadyq._sql import OUTCOME_KINDS_SQL, SQLITE, WARNINGS_ONLY
from steadyq.errors import BackendError, BackendUnavailable, ConfigError

SCHEMA_VERSION = 3

log = logging.getLogger(__name__)

# -- checkpoints (docs/queue.md, "Durability") ----------------------------------------
# A writer connection never checkpoints on its own commit (the fsyncs of a checkpoint
# landed on one commit in a hundred and made the rejection p99); a thread with its own
# connection runs PASSIVE checkpoints instead, which neither wait for nor block writers.
CHECKPOINT_INTERVAL_S = 0.2  # at most this long between a commit and the next checkpoint
# While the WAL grows fast (a checkpoint found more than CHECKPOINT_BUSY_PAGES frames),
# the next one comes this soon: short passes keep the WAL small and the copies short.
CHECKPOINT_BUSY_INTERVAL_S = 0.02
CHECKPOINT_BUSY_PAGES = 1000
# Past this many frames in the WAL (a steady load that never leaves a gap for a PASSIVE
# checkpoint to finish in, or readers holding old snapshots), the thread runs a RESTART
# checkpoint: it holds writers back while it finishes, and waits for readers.
CHECKPOINT_BOUND_PAGES = 8000
# A writer connection checkpoints itself only past this many frames (SQLite's own
# auto-checkpoint): the backstop for a checkpointer that cannot run.
AUTOCHECKPOINT_BACKSTOP_PAGES = 3 * CHECKPOINT_BOUND_PAGES
# The locked pass that lets the WAL start over runs only when at most this many frames
# are left to copy (it makes one commit wait for that copy and the syncs).
FINISH_LEFTOVER_PAGES = 64
# How long a RESTART checkpoint waits for readers (holding writers back meanwhile)
# before it gives up, and how long until the next try after one gave up.
RESTART_WAIT_MS = 1000
RESTART_RETRY_S = 5.0
# After a checkpoint resets it, the WAL file is truncated to at most this many bytes.
JOURNAL_SIZE_LIMIT = 128 * 1024 * 1024

# The partial index's condition, WARNING and above. SQLite uses a partial index only
# for a query whose WHERE contains this very term: queries build theirs from it.

# Columns added after a table first shipped: (table, column, type). A file made by
# an older steadyq gets them on open; nothing is ever dropped or renamed.
ADDED_COLUMNS = (
    ("requests", "attempts", "INTEGER"),
    ("requests", "duration_s", "REAL"),
    ("requests", "fields", "TEXT"),
    ("requests", "error", "TEXT"),
    ("requests", "created_at", "REAL"),
    ("requests", "started_at", "REAL"),
    ("requests", "failed_at", "REAL"),
    ("messages", "runs", "INTEGER NOT NULL DEFAULT 0"),
    ("broker_attempts", "runs", "INTEGER NOT NULL DEFAULT 0"),
)

# The condition of the partial index events_outcome_message; a query uses the index
# only when its WHERE repeats this term as written.

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS steadyq_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS messages (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    body         BLOB NOT NULL,
    attributes   TEXT,
    published_at REAL NOT NULL,
    visible_at   REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    lease_token  TEXT,
    replays      INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    runs         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_visible ON messages (visible_at);

CREATE TABLE IF NOT EXISTS dead_letters (
    message_id       TEXT PRIMARY KEY,
    request_id       TEXT,
    reason           TEXT NOT NULL,
    detail           TEXT NOT NULL,
    attempts         INTEGER NOT NULL,
    payload          BLOB NOT NULL,
    attributes       TEXT,
    published_at     REAL NOT NULL,
    dead_lettered_at REAL NOT NULL,
    replays          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS dead_letters_at ON dead_letters (dead_lettered_at);

CREATE TABLE IF NOT EXISTS events (
    id           INTEGER PRIMARY KEY,
    ts           REAL NOT NULL,
    kind         TEXT NOT NULL,
    severity     TEXT NOT NULL,
    sev_rank     INTEGER NOT NULL,
    message      TEXT,
    execution_id TEXT,
    message_id   TEXT,
    request_id   TEXT,
    attempt      INTEGER,
    reason       TEXT,
    duration_ms  REAL,
    data         TEXT
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_kind_ts ON events (kind, ts);
-- WARNING and above only: the watch counts and mines them per checkpoint without
-- reading the INFO bulk, and INFO inserts skip it.
CREATE INDEX IF NOT EXISTS events_warn_ts ON events (ts) WHERE {WARNINGS_ONLY};
-- the outcome recorded for a message, looked up when a queue without this store
-- redelivers it (the ack after the record was lost): one entry per settled message
CREATE INDEX IF NOT EXISTS events_outcome_message ON events (message_id)
    WHERE {OUTCOME_KINDS_SQL};

CREATE TABLE IF NOT EXISTS executions (
    execution_id TEXT PRIMARY KEY,
    status       TEXT NOT NULL,
    started_at   REAL NOT NULL,
    ready_at     REAL,
    finished_at  REAL,
    data         TEXT
);
CREATE INDEX IF NOT EXISTS executions_started ON executions (started_at);

CREATE TABLE IF NOT EXISTS requests (
    request_id   TEXT PRIMARY KEY,
    status       TEXT NOT NULL,
    message_id   TEXT,
    execution_id TEXT,
    updated_at   REAL NOT NULL,
    completed_at REAL,
    attempts     INTEGER,
    fields       TEXT,  -- JSON object: what the workload shows (RequestRecord.fields)
    duration_s   REAL,
    error        TEXT,
    created_at   REAL,
    started_at   REAL,
    failed_at    REAL
);
CREATE INDEX IF NOT EXISTS requests_updated ON requests (updated_at);

-- who may run a request now: one live claim per request id, held by an execution from
-- the pull of a copy until its outcome is recorded (released in the same write)
CREATE TABLE IF NOT EXISTS request_claims (
    request_id TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    until      REAL NOT NULL
);

-- delivery attempts counted by steadyq for brokers that count none durably (Pub/Sub)
CREATE TABLE IF NOT EXISTS broker_attempts (
    key        TEXT PRIMARY KEY,
    attempts   INTEGER NOT NULL,
    last_error TEXT,
    updated_at REAL NOT NULL,
    runs       INTEGER NOT NULL DEFAULT 0
);
"""


def _migrate(conn: sqlite3.Connection, version: int, request_columns: set[str]) -> None:
    """Bring the rows of a file written at schema ``version`` up to date."""
    if version < 3 and {"modalities", "artifacts"} <= request_columns:
        # schema 2 kept the content workload's ledger fields in columns of their own;
        # they move into `fields`, and the old columns stay, unread, as they were
        conn.execute(
            "UPDATE requests SET fields = json_patch(COALESCE(fields, '{}'),"
            " json_object('modalities', json(modalities), 'artifacts', json(artifacts)))"
            " WHERE modalities IS NOT NULL OR artifacts IS NOT NULL"
        )


def sqlite_path(url: str) -> str:
    """The file path of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ConfigError(f"not a sqlite URL: {url!r}")
    if parts.netloc:
        raise ConfigError(
            f"sqlite URL {url!r} has a host; use sqlite:///relative.db or sqlite:////abs/path.db"
        )
    path = parts.path[1:] if parts.path.startswith("/") else parts.path
    if not path:
        raise ConfigError(f"sqlite URL {url!r} names no file")
    return path


def busy_timeout_ms(url: str) -> int:
    query = parse_qs(urlsplit(url).query)
    try:
        return int(query.get("busy_timeout_ms", ["30000"])[0])
    except ValueError:
        raise ConfigError(f"busy_timeout_ms in {url!r} must be an integer") from None


def max_page_count(url: str) -> int | None:
    """``?max_page_count=N`` of a sqlite URL: the file may not grow past N pages."""
    values = parse_qs(urlsplit(url).query).get("max_page_count")
    if not values:
        return None
    try:
        pages = int(values[0])
    except ValueError:
        raise ConfigError(f"max_page_count in {url!r} must be an integer") from None
    if pages < 1:
        raise ConfigError(f"max_page_count in {url!r} must be at least 1")
    return pages


# Primary result codes that say the database cannot be used right now, not that
# steadyq asked for something wrong: the worker backs off and retries them.
_UNAVAILABLE_CODES = {
    3: "SQLITE_PERM",
    5: "SQLITE_BUSY",
    6: "SQLITE_LOCKED",
    7: "SQLITE_NOMEM",
    8: "SQLITE_READONLY",
    10: "SQLITE_IOERR",
    13: "SQLITE_FULL",
    14: "SQLITE_CANTOPEN",
    15: "SQLITE_PROTOCOL",
}


def driver_error(exc: sqlite3.Error, context: str) -> BackendError:
    """The steadyq error for a sqlite3 error: :class:`BackendUnavailable` when the
    database is full, read-only, locked or failing I/O, else :class:`BackendError`.

    The message keeps SQLite's own text and names the result code, e.g. ``SQLite
    q.db: cannot commit: database or disk is full (SQLITE_FULL)``; the caller chains
    ``exc`` as the cause.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", None)
    text = f"{context}: {exc}" + (f" ({name})" if name else "")
    if isinstance(code, int) and (code & 0xFF) in _UNAVAILABLE_CODES:
        return BackendUnavailable(text)
    return BackendError(text)


class SqliteDatabase:
    """A connection with the schema in place and a transaction helper.

    One object per process (connections must not cross a fork). Thread-safe: a lock
    serialises use of the connection.

    ``read_only`` opens an existing steadyq file for reading and never writes: no
    folder, file or schema is created, and a file the user may only read can be
    inspected (writes fail with BackendError).

    ``background_checkpoint`` (the default for a file): this connection does not
    checkpoint the WAL on its commits; the first commit starts a
    :class:`Checkpointer` thread for this process that does. ``False`` keeps
    SQLite's own auto-checkpoint (every 1,000 pages, on the commit that passes it).

    Raises:
        BackendUnavailable: the file cannot be opened; read-only, also when there is
            no file there or it is not a steadyq database of this version.
    """

    dialect = SQLITE  # how its SQL spells parameters and tables (steadyq._sql)

    _writing = False  # inside transaction(): its BEGIN succeeded, no COMMIT/ROLLBACK yet
    background_checkpoint = False
    _checkpointer: Checkpointer | None = None

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 30000,
        read_only: bool = False,
        background_checkpoint: bool = True,
    ) -> None:
        self.path = str(path)
        self.read_only = read_only and self.path != ":memory:"
        if self.read_only:
            self._open_read_only(busy_timeout_ms)
            self._closed = False
            return
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(
                self.path,
                timeout=busy_timeout_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            self.conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self._lock = threading.RLock()
            self._checkpointer: Checkpointer | None = None
            self.background_checkpoint = background_checkpoint and self.path != ":memory:"
            if self.background_checkpoint:
                self.conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_BACKSTOP_PAGES}")
                self.conn.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
            self._create_schema()
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        except OSError as exc:
            raise BackendUnavailable(f"cannot open SQLite database {self.path!r}: {exc}") from exc
        self._closed = False

    def _open_read_only(self, busy_timeout_ms: int) -> None:
        file = Path(self.path)
        if not file.is_file():
            where = "no such file" if not file.exists() else "not a file"
            raise BackendUnavailable(f"no steadyq database at {self.path} ({where})")
        self._lock = threading.RLock()
        uri = file.resolve().as_uri()
        try:
            try:
                # mode=ro: SQLite never writes the database, yet sees a live writer's WAL
                row = self._connect_read_only(f"{uri}?mode=ro", busy_timeout_ms)
            except sqlite3.OperationalError:
                if Path(f"{self.path}-wal").exists():
                    raise
                # a WAL file whose folder we may not write, and no -wal beside it: no
                # writer is live, and SQLite can read the file only as immutable
                row = self._connect_read_only(f"{uri}?mode=ro&immutable=1", busy_timeout_ms)
        except sqlite3.Error as exc:
            with contextlib.suppress(AttributeError):
                self.conn.close()
            if "no such table" in str(exc) or "not a database" in str(exc):
                raise BackendUnavailable(f"no steadyq database at {self.path} ({exc})") from exc
            raise BackendUnavailable(f"cannot read SQLite database {self.path!r}: {exc}") from exc
        version = None if row is None else int(row[0])
        if version != SCHEMA_VERSION:
            self.conn.close()
            if version is None:
                raise BackendUnavailable(f"no steadyq database at {self.path} (no schema version)")
            if version > SCHEMA_VERSION:
                raise BackendUnavailable(
                    f"{self.path} was written by a newer steadyq (schema {version}); upgrade"
                )
            raise BackendUnavailable(
                f"{self.path} has schema {version} from an older steadyq; a command that"
                f" writes (steadyq worker, publish) upgrades it to schema {SCHEMA_VERSION}"
            )

    def _connect_read_only(self, uri: str, busy_timeout_ms: int) -> tuple[str] | None:
        """Connect to ``uri`` and read the schema version (which fails early if the
        file cannot be read as opened)."""
        with contextlib.suppress(AttributeError):
            self.conn.close()
        self.conn = sqlite3.connect(
            uri,
            uri=True,
            timeout=busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        self.conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        row: tuple[str] | None = self.conn.execute(
            "SELECT value FROM steadyq_meta WHERE key='schema_version'"
        ).fetchone()
        return row

    def _create_schema(self) -> None:
        with self.transaction() as conn:
            legacy = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
            for table, column, kind in ADDED_COLUMNS:
                have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                if have and column not in have:
                    conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute(
                "SELECT value FROM steadyq_meta WHERE key='schema_version'"
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO steadyq_meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif int(row[0]) > SCHEMA_VERSION:
                raise BackendUnavailable(
                    f"{self.path} was written by a newer steadyq (schema {row[0]}); upgrade"
                )
            elif int(row[0]) < SCHEMA_VERSION:
                _migrate(conn, int(row[0]), legacy)
                conn.execute(
                    "UPDATE steadyq_meta SET value = ? WHERE key = 'schema_version'",
                    (str(SCHEMA_VERSION),),
                )

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``).

        Raises:
            BackendUnavailable: the database cannot be written now (disk full, file
                read-only, locked past the busy timeout, an I/O error); the
                transaction was rolled back and the connection stays usable, so the
                same call may be retried once the condition clears.
            BackendError: any other driver error (the original chained as the cause).
        """
        with self._lock:
            if not self._writing:
                # a transaction left open by a failure whose ROLLBACK failed too must
                # not make every later BEGIN fail with "within a transaction" (a
                # nested call, by contrast, still fails at its BEGIN)
                self._rollback()
            try:
                self.conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise driver_error(exc, f"SQLite {self.path}: cannot begin a write") from exc
            self._writing = True
            try:
                try:
                    yield self.conn
                except sqlite3.Error as exc:
                    self._rollback()
                    raise driver_error(exc, f"SQLite {self.path}") from exc
                except BaseException:
                    self._rollback()
                    raise
                try:
                    self.conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    # SQLite may have rolled back already (a full disk or an I/O
                    # error during COMMIT does): the cause is this error, never
                    # the ROLLBACK's
                    self._rollback()
                    raise driver_error(exc, f"SQLite {self.path}: cannot commit") from exc
            finally:
                self._writing = False
            if self.background_checkpoint:
                checkpointer = self._checkpointer
                if checkpointer is None or not checkpointer.alive:
                    checkpointer = self._start_checkpointer()
                checkpointer.dirty = True

    def limit_pages(self, pages: int) -> int:
        """Let this connection grow the file to at most ``pages`` pages (SQLite's
        ``max_page_count``; never below the current size) and return the limit in
        force. A write that needs more fails as a full disk does (SQLITE_FULL)."""
        with self.reading() as conn:
            conn.execute(f"PRAGMA max_page_count={int(pages)}")
            row = conn.execute("PRAGMA max_page_count").fetchone()
        return int(row[0])

    def _rollback(self) -> None:
        """Roll back the open transaction, if any; never raises over the real cause."""
        if not self.conn.in_transaction:
            return
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("ROLLBACK")

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """Reads outside a write transaction; driver errors are mapped as by
        :meth:`transaction`."""
        with self._lock:
            try:
                yield self.conn
            except sqlite3.Error as exc:
                raise driver_error(exc, f"SQLite {self.path}") from exc

    def _start_checkpointer(self) -> Checkpointer:
        checkpointer = Checkpointer(self.path, owner=self)
        self._checkpointer = checkpointer
        return checkpointer

    def checkpoint_now(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """Run a checkpoint on this connection now: ``(busy, wal frames, frames
        checkpointed)`` as SQLite's ``wal_checkpoint`` returns them."""
        if mode not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            raise ValueError(f"unknown checkpoint mode {mode!r}")
        with self.reading() as conn:
            row = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        return int(row[0]), int(row[1]), int(row[2])

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            checkpointer, self._checkpointer = self._checkpointer, None
            if checkpointer is not None:
                checkpointer.stop()
            self.conn.close()


class Checkpointer:
    """A thread, with its own connection, that checkpoints a WAL database off the
    commit path.

    While commits come (``dirty`` is set by :meth:`SqliteDatabase.transaction` after
    each), it runs a PASSIVE checkpoint every ``interval_s`` (every
    CHECKPOINT_BUSY_INTERVAL_S while the WAL grows fast): that copies committed
    frames into the database file and syncs both, without taking the write lock, so
    no commit waits for it. Once the WAL holds more than ``bound_pages`` frames
    (commits that never leave a gap for a checkpoint to finish in), one short pass
    runs between two of this process's transactions so the next starts the WAL over;
    if frames are still left (readers whose snapshots need them, another process's
    writer), a RESTART checkpoint holds writers back while it finishes and waits (up
    to RESTART_WAIT_MS) for those readers, so the WAL cannot grow without bound
    while readers come and go (see :meth:`_checkpoint`). A reader that never lets go
    pins the WAL in any mode.

    One per database object and process: a fork leaves the thread behind, and the
    child starts its own on its first commit (an at-fork hook also keeps a fork from
    landing in the middle of a checkpoint, where SQLite's locks would be copied
    taken). A failing checkpoint is logged and tried again; the writer connections'
    auto-checkpoint backstop (AUTOCHECKPOINT_BACKSTOP_PAGES) bounds the WAL if this
    thread cannot run at all.
    """

    def __init__(
        self,
        path: str,
        *,
        owner: object | None = None,
        interval_s: float | None = None,
        bound_pages: int | None = None,
    ) -> None:
        self.path = path
        self.interval_s = CHECKPOINT_INTERVAL_S if interval_s is None else interval_s
        self.bound_pages = CHECKPOINT_BOUND_PAGES if bound_pages is None else bound_pages
        # the thread ends when its owner (the database object) is gone unclosed
        self._owner = None if owner is None else weakref.ref(owner)
        self.dirty = False
        self.checkpoints = 0  # completed checkpoint calls, of any mode
        self.finishes = 0  # PASSIVE checkpoints between two transactions (see _checkpoint)
        self.restarts = 0
        self.last: tuple[int, int, int] | None = None
        self._pid = os.getpid()
        self._stop = threading.Event()
        self._busy = threading.Lock()  # held while a checkpoint runs (see _before_fork)
        self._failing = False
        self._wait_s = self.interval_s
        self._restart_after = 0.0  # monotonic: no RESTART before (one gave up)
        self._thread = threading.Thread(
            target=self._run, name=f"steadyq-checkpoint {Path(path).name}", daemon=True
        )
        _CHECKPOINTERS.add(self)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Running in this process (a forked child sees its parent's, not running)."""
        return self._pid == os.getpid() and self._thread.is_alive()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self.alive and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not self._stop.wait(self._wait_s):
                if self._owner is not None and self._owner() is None:
                    return
                if not self.dirty:
                    continue
                self.dirty = False
                try:
                    with self._busy:
                        if conn is None:
                            conn = sqlite3.connect(
                                self.path, isolation_level=None, check_same_thread=False
                            )
                            # PASSIVE never waits; this bounds how long RESTART does
                            conn.execute(f"PRAGMA busy_timeout={RESTART_WAIT_MS}")
                        self._checkpoint(conn)
                except sqlite3.Error as exc:
                    self.dirty = True  # try again next interval
                    if not self._failing:
                        log.warning("WAL checkpoint of %s failed, will retry: %s", self.path, exc)
                    self._failing = True
                else:
                    self._failing = False
        finally:
            if conn is not None:
                with self._busy, contextlib.suppress(sqlite3.Error):
                    conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        """PASSIVE checkpoints, and a RESTART one past the bound (caller holds
        ``_busy``).

        SQLite starts the WAL over from its beginning only at a write transaction
        that begins with every frame checkpointed and no reader in the WAL. Under a
        steady load commits land while a checkpoint copies (and syncs), so that
        moment may never come: a second PASSIVE pass (short: only what came
        meanwhile; up to four) tries to finish in a gap between commits, and past the
        bound, once little is left, one more runs while holding this process's
        connection lock, i.e. between two of its transactions, so its next one
        starts the WAL over. If frames are still
        left (another process's writer, or a reader's snapshot), RESTART takes the
        write lock, finishes, and waits up to RESTART_WAIT_MS for readers to leave
        the WAL."""
        busy, frames, done = self._passive(conn)
        for _ in range(3):
            # each pass copies what came during the last: short passes converge, and
            # the one that finishes under the lock below has little left to copy
            if busy or frames - done <= FINISH_LEFTOVER_PAGES:
                break
            busy, frames, done = self._passive(conn)
        if frames > self.bound_pages and frames - done <= FINISH_LEFTOVER_PAGES:
            # commits came during every pass, or the last pass finished but no commit
            # has started the WAL over yet: finish between two of this process's
            # transactions (holding their lock). That costs the next commit the copy
            # of what came since the last pass and, if anything did, two syncs: once
            # per bound, not once per SQLite's 1,000 pages
            owner = None if self._owner is None else self._owner()
            lock = getattr(owner, "_lock", None)
            if lock is not None and lock.acquire(timeout=1.0):
                try:
                    busy, frames, done = self._passive(conn)
                    self.finishes += 1
                finally:
                    lock.release()
        self.last = (busy, frames, done)
        self._wait_s = (
            min(self.interval_s, CHECKPOINT_BUSY_INTERVAL_S)
            if frames > CHECKPOINT_BUSY_PAGES
            else self.interval_s
        )
        now = time.monotonic()
        if frames > self.bound_pages and done < frames and now >= self._restart_after:
            busy, frames, done = conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
            self.restarts += 1
            self.last = (busy, frames, done)
            if busy:
                # a reader held on past RESTART_WAIT_MS: writers go on, try again later
                self._restart_after = now + RESTART_RETRY_S
            log.info(
                "WAL of %s past %d pages: RESTART checkpoint in %.3f s (%s)",
                self.path,
                self.bound_pages,
                time.monotonic() - now,
                "gave up waiting for a reader" if busy else "done",
            )
        if frames > done:
            self.dirty = True  # frames left behind a reader: try again next interval

    def _passive(self, conn: sqlite3.Connection) -> tuple[int, int, int]:
        busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        self.checkpoints += 1
        return int(busy), int(frames), int(done)

    def _before_fork(self) -> None:
        if self.alive:
            self._busy.acquire()

    def _after_fork(self) -> None:
        if self._busy.locked():
            with contextlib.suppress(RuntimeError):
                self._busy.release()


_CHECKPOINTERS: weakref.WeakSet[Checkpointer] = weakref.WeakSet()


def _before_fork() -> None:
    for checkpointer in list(_CHECKPOINTERS):
        checkpointer._before_fork()


def _after_fork() -> None:
    for checkpointer in list(_CHECKPOINTERS):
        checkpointer._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_before_fork, after_in_parent=_after_fork, after_in_child=_after_fork
    )
