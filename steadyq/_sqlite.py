"""One SQLite database file shared by the queue and the telemetry store.

WAL mode lets readers (the CLI, a watch) run beside writers; a busy timeout makes
several worker processes on one host queue up for the write lock instead of
failing; every write is one short ``BEGIN IMMEDIATE`` transaction. With
``synchronous=NORMAL`` a committed transaction survives the death of any process
(kill -9 included); only a power cut can lose the last few commits.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from steadyq.errors import BackendError, BackendUnavailable, ConfigError
from steadyq.telemetry.events import SEVERITY_RANK

SCHEMA_VERSION = 3

# The partial index's condition, WARNING and above. SQLite uses a partial index only
# for a query whose WHERE contains this very term: queries build theirs from it.
WARNINGS_ONLY = f"sev_rank >= {SEVERITY_RANK['WARNING']}"

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
OUTCOME_KINDS_SQL = (
    "kind IN ('message.succeeded', 'message.duplicate', 'message.rejected',"
    " 'message.dead_lettered')"
)

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

    Raises:
        BackendUnavailable: the file cannot be opened; read-only, also when there is
            no file there or it is not a steadyq database of this version.
    """

    _writing = False  # inside transaction(): its BEGIN succeeded, no COMMIT/ROLLBACK yet

    def __init__(
        self, path: str | Path, *, busy_timeout_ms: int = 30000, read_only: bool = False
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

    def close(self) -> None:
        if not getattr(self, "_closed", True):
            self._closed = True
            self.conn.close()
