"""One PostgreSQL database (one schema of it) shared by the queue and the telemetry store.

Connections come from a small psycopg_pool pool per process; every write is one short
transaction at READ COMMITTED. The schema is versioned and created on first open
under a transaction-level advisory lock, so many workers starting at once do not race.
All lease and schedule times are taken from the database's clock
(``statement_timestamp()``), never the worker's: hosts' clocks drift. Every SQL text
names its tables with the schema (``SQ.`` below stands for it), so nothing depends on
a session's ``search_path`` and a transaction-pooling PgBouncer can sit in between.

psycopg and psycopg_pool are the ``steadyq[postgres]`` extra, imported only here and
only when a ``postgresql://`` URL is opened.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from steadyq._sql import OUTCOME_KINDS_SQL, POSTGRES, WARNINGS_ONLY
from steadyq.errors import BackendError, BackendUnavailable, ConfigError

if TYPE_CHECKING:
    import psycopg

SCHEMA_VERSION = 1
SCHEMES = ("postgresql", "postgres")
DEFAULT_SCHEMA = "steadyq"

# The database's clock in epoch seconds, or the clock a test injects (a NULL
# parameter means "the database's"). statement_timestamp() is stable within a
# statement, so a comparison with it can bound an index scan.
DB_NOW = "COALESCE(%(now)s::float8, extract(epoch FROM statement_timestamp())::float8)"


_IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TOKEN = re.compile(r"\bSQ\.")

# The tables, in schema SQ. Times are epoch seconds (float8), as on SQLite.
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS SQ.steadyq_meta (key text PRIMARY KEY, value text NOT NULL);

-- the hot table: only messages not yet settled (ready, leased or delayed); an ack
-- deletes the row and a dead-letter moves it, so a claim never meets finished rows
CREATE TABLE IF NOT EXISTS SQ.messages (
    seq          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    body         bytea NOT NULL,
    attributes   text,
    published_at float8 NOT NULL,
    visible_at   float8 NOT NULL,
    attempts     integer NOT NULL DEFAULT 0,
    lease_token  text,
    replays      integer NOT NULL DEFAULT 0,
    last_error   text,
    runs         integer NOT NULL DEFAULT 0
);
-- availability order: a claim walks this index from the oldest visible_at and stops
-- after its batch (FOR UPDATE SKIP LOCKED passes over rows another claim holds)
CREATE INDEX IF NOT EXISTS messages_visible ON SQ.messages (visible_at, seq);

CREATE TABLE IF NOT EXISTS SQ.dead_letters (
    message_id       text PRIMARY KEY,
    request_id       text,
    reason           text NOT NULL,
    detail           text NOT NULL,
    attempts         integer NOT NULL,
    payload          bytea NOT NULL,
    attributes       text,
    published_at     float8 NOT NULL,
    dead_lettered_at float8 NOT NULL,
    replays          integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS dead_letters_at ON SQ.dead_letters (dead_lettered_at, message_id);

CREATE TABLE IF NOT EXISTS SQ.events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    ts           float8 NOT NULL,
    kind         text NOT NULL,
    severity     text NOT NULL,
    sev_rank     integer NOT NULL,
    message      text,
    execution_id text,
    message_id   text,
    request_id   text,
    attempt      integer,
    reason       text,
    duration_ms  float8,
    data         text
);
CREATE INDEX IF NOT EXISTS events_ts ON SQ.events (ts);
CREATE INDEX IF NOT EXISTS events_kind_ts ON SQ.events (kind, ts);
CREATE INDEX IF NOT EXISTS events_warn_ts ON SQ.events (ts) WHERE {WARNINGS_ONLY};
CREATE INDEX IF NOT EXISTS events_outcome_message ON SQ.events (message_id)
    WHERE {OUTCOME_KINDS_SQL};

CREATE TABLE IF NOT EXISTS SQ.executions (
    execution_id text PRIMARY KEY,
    status       text NOT NULL,
    started_at   float8 NOT NULL,
    ready_at     float8,
    finished_at  float8,
    data         jsonb
);
CREATE INDEX IF NOT EXISTS executions_started ON SQ.executions (started_at);

CREATE TABLE IF NOT EXISTS SQ.requests (
    request_id   text PRIMARY KEY,
    status       text NOT NULL,
    message_id   text,
    execution_id text,
    updated_at   float8 NOT NULL,
    completed_at float8,
    attempts     integer,
    fields       jsonb,
    duration_s   float8,
    error        text,
    created_at   float8,
    started_at   float8,
    failed_at    float8
);
CREATE INDEX IF NOT EXISTS requests_updated ON SQ.requests (updated_at);

-- who may run a request now; `until` is on the database's clock
CREATE TABLE IF NOT EXISTS SQ.request_claims (
    request_id text PRIMARY KEY,
    owner      text NOT NULL,
    until      float8 NOT NULL
);

-- delivery attempts counted for brokers that count none durably (Pub/Sub)
CREATE TABLE IF NOT EXISTS SQ.broker_attempts (
    key        text PRIMARY KEY,
    attempts   integer NOT NULL,
    last_error text,
    updated_at float8 NOT NULL,
    runs       integer NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS broker_attempts_updated ON SQ.broker_attempts (updated_at);

-- RFC 7396 merge of two JSON objects, nested objects too (SQLite's json_patch; the
-- ledger's changes carry no nulls, so nothing is ever deleted)
CREATE OR REPLACE FUNCTION SQ.steadyq_merge(a jsonb, b jsonb) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $fn$
    SELECT CASE
        WHEN b IS NULL THEN a
        WHEN a IS NULL OR jsonb_typeof(a) <> 'object' OR jsonb_typeof(b) <> 'object' THEN b
        ELSE (SELECT COALESCE(jsonb_object_agg(k,
                CASE WHEN a ? k AND b ? k THEN SQ.steadyq_merge(a -> k, b -> k)
                     WHEN b ? k THEN b -> k ELSE a -> k END), '{{}}'::jsonb)
              FROM (SELECT jsonb_object_keys(a) UNION SELECT jsonb_object_keys(b)) AS keys (k))
    END
$fn$;
"""


@dataclass(frozen=True, slots=True)
class PgUrl:
    """A parsed ``postgresql://`` URL: the libpq conninfo and steadyq's own options."""

    conninfo: str
    schema: str
    notify: bool
    prepare: bool
    pool_max: int
    connect_timeout_s: float
    synchronous_commit: str | None
    idle_in_transaction_s: float
    vacuum_every: int
    shown: str  # for messages: the URL without its password

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of this schema's queue."""
        return f"steadyq_{self.schema}"[:63]


_OWN_OPTIONS = (
    "schema",
    "notify",
    "prepare",
    "pool_max",
    "synchronous_commit",
    "idle_in_transaction_s",
    "vacuum_every",
)


def _flag(value: str, name: str, url: str) -> bool:
    lowered = value.lower()
    if lowered in ("on", "true", "1", "yes"):
        return True
    if lowered in ("off", "false", "0", "no"):
        return False
    raise ConfigError(f"{name} in {url!r} must be on or off, not {value!r}")


_N = TypeVar("_N", int, float)


def _number(kind: type[_N], text: str, name: str, url: str) -> _N:
    """``text`` as an int or a float, the value of the URL option ``name``.

    Raises:
        ConfigError: it is not one.
    """
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name} in {url!r} must be {what}") from None


def parse_url(url: str) -> PgUrl:
    """``postgresql://user:pass@host:port/db?schema=NAME&notify=off…``.

    steadyq's options: ``schema`` (default ``steadyq``; lowercase letters, digits and
    ``_``), ``notify`` (``on``; ``off`` polls only, for a transaction-pooling
    PgBouncer), ``prepare`` (``on``; ``off`` never prepares statements server-side,
    for PgBouncer before 1.21), ``pool_max`` (connections per process, 4),
    ``synchronous_commit`` (sent with each connection when given),
    ``idle_in_transaction_s`` (30: the server ends a session of ours that sits inside a
    transaction that long, so a frozen or vanished worker's row locks cannot keep its
    messages from other workers; ``0`` sends nothing), ``vacuum_every`` (50000: after
    settling that many messages a process vacuums the queue's hot tables in the
    background, for servers whose autovacuum is off; ``0`` never). Every other query
    option (``sslmode``, ``connect_timeout``, ``application_name`` …) goes to libpq.

    Raises:
        ConfigError: not a PostgreSQL URL, or an option is malformed.
    """
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigError(f"not a PostgreSQL URL: {url!r}")
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in _OWN_OPTIONS}
    rest = [(k, v) for k, v in query if k not in _OWN_OPTIONS]
    schema = own.get("schema", DEFAULT_SCHEMA)
    if not _IDENT.match(schema):
        raise ConfigError(
            f"schema {schema!r} in {url!r}: use lowercase letters, digits and _ (at most 63)"
        )
    if schema.startswith("pg_"):
        raise ConfigError(f"schema {schema!r} in {url!r}: names starting pg_ are PostgreSQL's own")
    pool_max = _number(int, own.get("pool_max", "4"), "pool_max", url)
    if pool_max < 1:
        raise ConfigError(f"pool_max in {url!r} must be at least 1")
    sync = own.get("synchronous_commit")
    if sync is not None and sync not in ("on", "off", "local", "remote_write", "remote_apply"):
        raise ConfigError(f"synchronous_commit in {url!r}: on, off, local, remote_write or …")
    idle_s = _number(float, own.get("idle_in_transaction_s", "30"), "idle_in_transaction_s", url)
    if idle_s < 0:
        raise ConfigError(f"idle_in_transaction_s in {url!r} must not be negative")
    vacuum_every = _number(int, own.get("vacuum_every", "50000"), "vacuum_every", url)
    timeout = dict(rest).get("connect_timeout", "10")
    connect_timeout_s = _number(float, timeout, "connect_timeout", url)
    if "connect_timeout" not in dict(rest):
        rest.append(("connect_timeout", "10"))
    if "application_name" not in dict(rest):
        # what pg_stat_activity shows: an operator sees whose connections these are
        rest.append(("application_name", f"steadyq {schema}"))
    conninfo = urlunsplit(
        ("postgresql", parts.netloc, parts.path, urlencode(rest, quote_via=quote), "")
    )
    netloc = parts.netloc
    if "@" in netloc and ":" in netloc.split("@", 1)[0]:
        netloc = netloc.split("@", 1)[0].split(":", 1)[0] + ":***@" + netloc.split("@", 1)[1]
    shown = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
    return PgUrl(
        conninfo=conninfo,
        schema=schema,
        notify=_flag(own.get("notify", "on"), "notify", url),
        prepare=_flag(own.get("prepare", "on"), "prepare", url),
        pool_max=pool_max,
        connect_timeout_s=connect_timeout_s,
        synchronous_commit=sync,
        idle_in_transaction_s=idle_s,
        vacuum_every=max(0, vacuum_every),
        shown=shown + f" (schema {schema})",
    )


def import_driver() -> Any:
    """psycopg, or a ConfigError saying how to install it."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise ConfigError(
            "PostgreSQL needs psycopg 3 and psycopg_pool: pip install 'steadyq[postgres]'"
        ) from None
    return psycopg


# SQLSTATE classes and codes that say the database cannot do work right now (it went
# away, restarts, is full, refuses connections, or the transaction lost a race that a
# retry wins), not that steadyq asked for something wrong.
_UNAVAILABLE_CLASSES = ("08", "53", "57", "58", "40", "55", "25")


def driver_error(exc: BaseException, context: str) -> BackendError:
    """The steadyq error for a psycopg (or pool) error: :class:`BackendUnavailable`
    when the database is unreachable, restarting, terminated our connection, full,
    read-only or the transaction must be retried (serialization, deadlock, lock
    timeout); else :class:`BackendError`. The text keeps PostgreSQL's own message and
    SQLSTATE, e.g. ``PostgreSQL …: terminating connection due to administrator
    command (57P01)``; the caller chains ``exc`` as the cause."""
    sqlstate = getattr(exc, "sqlstate", None)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = f"{context}: {text}" + (f" ({sqlstate})" if sqlstate else "")
    try:
        import psycopg
        import psycopg_pool
    except ImportError:  # pragma: no cover - no driver, no driver errors
        return BackendError(text)
    if isinstance(exc, psycopg_pool.PoolTimeout | psycopg_pool.PoolClosed):
        return BackendUnavailable(text)
    if sqlstate is None and isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return BackendUnavailable(text)  # no server answer at all: the connection is gone
    if isinstance(sqlstate, str) and sqlstate[:2] in _UNAVAILABLE_CLASSES:
        return BackendUnavailable(text)
    return BackendError(text)


# an escape jsonb refuses: \u0000, or a surrogate not in a high+low pair (a pair is
# matched first and kept); only where the backslash is not itself escaped
_JSON_BAD = re.compile(
    r"(?<!\\)((?:\\\\)*)\\u(d[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|0000|d[89a-f][0-9a-f]{2})",
    re.IGNORECASE,
)


def _json_fix(match: re.Match[str]) -> str:
    if len(match.group(2)) > 4:
        return match.group(0)  # a valid pair
    return match.group(1) + "\\ufffd"


def clean_text(value: str) -> str:
    """``value`` as PostgreSQL's ``text`` can hold it: a NUL becomes U+FFFD and a lone
    surrogate (Python text decoded with ``surrogateescape``) becomes ``?``. Either
    would fail the whole write, and a handler's error text must never poison a batch."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def clean_json(text: str) -> str:
    """JSON text as ``jsonb`` accepts it: ``\\u0000`` and lone surrogate escapes (which
    jsonb refuses) become U+FFFD; valid surrogate pairs stay."""
    if "\\u" not in text:
        return text
    return _JSON_BAD.sub(_json_fix, text)


def qualify(sql: str, schema: str) -> str:
    """``sql`` with every ``SQ.`` naming ``schema``."""
    return _TOKEN.sub(f'"{schema}".', sql)


class PostgresDatabase:
    """A connection pool with the schema in place, and transaction helpers.

    One object per process (pools must not cross a fork). Thread-safe: each
    transaction has a connection of its own for its duration.

    ``read_only`` opens an existing steadyq schema for reading: nothing is created,
    every transaction begins READ ONLY, and a schema that is missing or of another
    version is refused.

    Raises:
        ConfigError: the URL is malformed, or the driver is not installed.
        BackendUnavailable: the database cannot be reached, or its schema was written
            by a newer steadyq (or, read-only, is missing).
    """

    dialect = POSTGRES  # how its SQL spells parameters and tables (steadyq._sql)

    def __init__(self, url: str, *, read_only: bool = False, min_size: int = 1) -> None:
        self.url = parse_url(url)
        self.schema = self.url.schema
        self.read_only = read_only
        self.name = f"PostgreSQL {self.url.shown}"
        import_driver()
        from psycopg_pool import ConnectionPool

        self._sql: dict[str, str] = {}
        self._closed = False
        self._lock = threading.Lock()
        kwargs: dict[str, Any] = {"autocommit": False}
        if not self.url.prepare:
            kwargs["prepare_threshold"] = None
        options = []
        if self.url.synchronous_commit is not None:
            options.append(f"-c synchronous_commit={self.url.synchronous_commit}")
        if self.url.idle_in_transaction_s > 0:
            # every transaction of steadyq's lasts milliseconds; one idle for this long
            # belongs to a frozen or vanished process, whose row locks would otherwise
            # hide its messages from every other worker's SKIP LOCKED claim
            millis = int(self.url.idle_in_transaction_s * 1000)
            options.append(f"-c idle_in_transaction_session_timeout={millis}")
        if options:
            # the URL's own `options` (libpq's), if any, come first and are kept
            given = dict(parse_qsl(urlsplit(self.url.conninfo).query)).get("options")
            kwargs["options"] = " ".join([given, *options] if given else options)
        self._kwargs = kwargs
        # one direct connection first: a clear error when the server is unreachable,
        # and the schema checked (or created) before any pool thread starts
        psycopg = import_driver()
        try:
            first = psycopg.connect(self.url.conninfo, **kwargs)
            first.read_only = read_only
        except psycopg.Error as exc:
            raise BackendUnavailable(f"cannot connect to {self.name}: {_first_line(exc)}") from exc
        try:
            with first:
                if read_only:
                    self._check_version(first)
                else:
                    self._create_schema(first)
        except psycopg.Error as exc:
            raise driver_error(exc, self.name) from exc
        pool_log = logging.getLogger("psycopg.pool")
        if pool_log.level == logging.NOTSET:
            # the worker reports an outage itself, once; the pool's retries are noise
            pool_log.setLevel(logging.ERROR)
        self.pool = ConnectionPool(
            self.url.conninfo,
            kwargs=kwargs,
            # read-only: every transaction begins READ ONLY (no session state, so this
            # works behind PgBouncer too)
            configure=_read_only if read_only else None,
            min_size=min(min_size, self.url.pool_max),
            max_size=self.url.pool_max,
            open=True,
            timeout=self.url.connect_timeout_s,
            num_workers=1,
            name=f"steadyq-{self.schema}",
        )

    def sql(self, text: str) -> str:
        """``text`` with its ``SQ.`` prefixes naming this schema (cached)."""
        done = self._sql.get(text)
        if done is None:
            done = self._sql[text] = qualify(text, self.schema)
        return done

    def _version(self, conn: psycopg.Connection[Any]) -> int | None:
        row = conn.execute("SELECT to_regclass(%s)", (f'"{self.schema}".steadyq_meta',)).fetchone()
        if row is None or row[0] is None:
            return None
        found = conn.execute(
            self.sql("SELECT value FROM SQ.steadyq_meta WHERE key = 'schema_version'")
        ).fetchone()
        return None if found is None else int(found[0])

    def _refuse_newer(self, version: int | None) -> None:
        if version is not None and version > SCHEMA_VERSION:
            raise BackendUnavailable(
                f"{self.name} was written by a newer steadyq (schema {version}, this one"
                f" knows {SCHEMA_VERSION}); upgrade steadyq"
            )

    def _check_version(self, conn: psycopg.Connection[Any]) -> None:
        version = self._version(conn)
        self._refuse_newer(version)
        if version is None:
            raise BackendUnavailable(f"no steadyq database at {self.name} (no steadyq tables)")
        if version != SCHEMA_VERSION:
            raise BackendUnavailable(
                f"{self.name} has schema {version} from an older steadyq; a command that"
                f" writes (steadyq worker, publish) upgrades it to schema {SCHEMA_VERSION}"
            )

    def _create_schema(self, conn: psycopg.Connection[Any]) -> None:
        # fast path: already in place (no lock taken, nothing written)
        version = self._version(conn)
        conn.rollback()
        self._refuse_newer(version)
        if version == SCHEMA_VERSION:
            return
        with conn.transaction():
            # one creator at a time per schema; the others wait here, then find it done
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"steadyq:{self.schema}",))
            version = self._version(conn)
            self._refuse_newer(version)
            if version == SCHEMA_VERSION:
                return
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            conn.execute(self.sql(SCHEMA))
            conn.execute(
                self.sql(
                    "INSERT INTO SQ.steadyq_meta (key, value) VALUES ('schema_version', %s)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                ),
                (str(SCHEMA_VERSION),),
            )

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on a pooled connection, committed when the block ends.

        Raises:
            BackendUnavailable: the database is unreachable, restarting, terminated the
                connection, is full, or the transaction must be retried; it was rolled
                back (or never committed), and the same call may be retried.
            BackendError: any other driver error (the original chained as the cause).
        """
        psycopg = import_driver()
        import psycopg_pool

        try:
            with self.pool.connection() as conn:
                # the pool commits when the block ends cleanly and rolls back otherwise
                try:
                    yield conn
                except psycopg.Error as exc:
                    raise driver_error(exc, self.name) from exc
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.PoolClosed) as exc:
            # the COMMIT, or getting a connection, failed
            raise driver_error(exc, self.name) from exc

    reading = transaction  # reads are transactions too (READ COMMITTED, short)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(Exception):
            self.pool.close()


def _read_only(conn: psycopg.Connection[Any]) -> None:
    conn.read_only = True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
