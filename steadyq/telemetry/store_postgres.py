"""The telemetry store in PostgreSQL (by default the queue's own schema).

The same tables and rules as the SQLite store (``store_sqlite``): events, the
``executions`` and ``requests`` views derived from them in the same write, claims and
the attempt counts of brokers that keep none. What differs is concurrency: many
worker processes on many hosts write at once, so

* the ledger upsert keeps ``completed`` final with ``ON CONFLICT … DO UPDATE … WHERE
  requests.status <> 'completed'``, which PostgreSQL evaluates on the row's latest
  version after waiting for a concurrent writer: a completion is never overwritten;
* a claim is one ``INSERT … ON CONFLICT DO UPDATE … WHERE`` (the other owner's claim
  has lapsed), and the ledger is read *after* it: a completion committed by the
  claim's previous owner is seen, so a completed request is never claimed to run;
* rows are written in key order (requests, claims), so two writers cannot deadlock
  on each other's rows;
* claim lapses and attempt-count ages are kept on the database's clock: a worker's
  ``until`` (its own wall clock) is turned into "that many seconds from now".
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from steadyq._postgres import (
    DB_NOW,
    PostgresDatabase,
    clean_json,
    clean_text,
)
from steadyq._sql import OUTCOME_KINDS_SQL, POSTGRES, events_query, requests_query
from steadyq.errors import BackendError
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import (
    CLAIM_BUSY,
    CLAIM_COMPLETED,
    CLAIMED,
    PRUNE_CHUNK,
    RUNNING,
    AttemptCount,
    EventFilter,
    EventStore,
    ExecutionRecord,
    LedgerRow,
    PruneCounts,
    RequestRecord,
    compose_ledger_rows,
    prune_cut,
    prune_tables,
)
from steadyq.telemetry.store_sqlite import _LEDGER_KINDS as _LEDGER_EVENT_KINDS
from steadyq.telemetry.store_sqlite import prepare_events

if TYPE_CHECKING:
    import psycopg

    from steadyq.watch.sources.store import Reader

EVENT_COLUMNS = (
    "ts, kind, severity, message, execution_id, message_id, request_id, attempt, reason,"
    " duration_ms, data"
)

# one statement for a whole batch of events, whatever its size
_INSERT_EVENTS = """
INSERT INTO SQ.events (ts, kind, severity, sev_rank, message, execution_id, message_id,
    request_id, attempt, reason, duration_ms, data)
SELECT * FROM unnest(%b::float8[], %b::text[], %b::text[], %b::int[], %b::text[], %b::text[],
    %b::text[], %b::text[], %b::int[], %b::text[], %b::float8[], %b::text[])
"""

# the ledger rows as the one rule composed them (store.move_ledger_row, in Python),
# written as they are, unless the stored row is completed: a completion committed by
# a concurrent writer meanwhile is never overwritten (PostgreSQL evaluates the WHERE
# on the row's latest version, after waiting for that writer)
_LEDGER_WRITE = """
INSERT INTO SQ.requests AS r (request_id, status, message_id, execution_id, updated_at,
    attempts, fields, duration_s, error, created_at, started_at, completed_at, failed_at)
SELECT v.request_id, v.status, v.message_id, v.execution_id, v.updated_at, v.attempts,
    v.fields::jsonb, v.duration_s, v.error, v.created_at, v.started_at, v.completed_at,
    v.failed_at
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::float8[], %b::int[],
    %b::text[], %b::float8[], %b::text[], %b::float8[], %b::float8[], %b::float8[],
    %b::float8[]) AS v (request_id, status, message_id, execution_id, updated_at, attempts,
    fields, duration_s, error, created_at, started_at, completed_at, failed_at)
ORDER BY v.request_id
ON CONFLICT (request_id) DO UPDATE SET
    status = excluded.status, message_id = excluded.message_id,
    execution_id = excluded.execution_id, updated_at = excluded.updated_at,
    attempts = excluded.attempts, fields = excluded.fields,
    duration_s = excluded.duration_s, error = excluded.error,
    created_at = excluded.created_at, started_at = excluded.started_at,
    completed_at = excluded.completed_at, failed_at = excluded.failed_at
WHERE r.status <> 'completed'
"""

_RELEASE_CLAIMS = """
DELETE FROM SQ.request_claims c USING unnest(%b::text[], %b::text[]) AS v (request_id, owner)
WHERE c.request_id = v.request_id AND c.owner = v.owner
"""

# Key lookups go through unnest + LATERAL (OFFSET 0 keeps the planner from flattening it
# into a join): one index probe per id, whatever the table's statistics say. With
# autovacuum off, a plan built on "the table is tiny" or "few rows match" would read
# the whole ledger (or every outcome event) for each batch.
_COMPLETED_OF = """
SELECT i.id FROM unnest(%b::text[]) AS i (id)
CROSS JOIN LATERAL (SELECT 1 FROM SQ.requests r
    WHERE r.request_id = i.id AND r.status = 'completed' OFFSET 0) AS x
"""

_CLAIM = f"""
INSERT INTO SQ.request_claims AS c (request_id, owner, until)
SELECT id, %(owner)s, {DB_NOW} + %(hold)s FROM unnest(%(ids)b::text[]) AS id ORDER BY id
ON CONFLICT (request_id) DO UPDATE SET owner = excluded.owner, until = excluded.until
WHERE c.owner = excluded.owner OR c.until <= {DB_NOW}
RETURNING request_id
"""

# the WHERE repeats the partial index's condition, so the index answers each probe
_OUTCOMES_OF = f"""
SELECT {EVENT_COLUMNS} FROM unnest(%b::text[]) AS i (mid)
CROSS JOIN LATERAL (SELECT *, id AS event_id FROM SQ.events
    WHERE message_id = i.mid AND {OUTCOME_KINDS_SQL} OFFSET 0) AS e
ORDER BY ts, event_id
"""

_REQUEST_COLUMNS = (
    "request_id, status, updated_at, message_id, execution_id, attempts, fields,"
    " duration_s, error, created_at, started_at, completed_at, failed_at"
)

# the stored ledger rows of sorted ids, locked in that order: one index probe per id,
# like the lookups above (as "request_id = ANY(ids)", statistics taken while the
# ledger was empty planned a sequential scan of the whole ledger for every batch)
_STORED_REQUESTS = f"""
SELECT x.* FROM unnest(%b::text[]) AS i (id)
CROSS JOIN LATERAL (SELECT {_REQUEST_COLUMNS} FROM SQ.requests r
    WHERE r.request_id = i.id FOR UPDATE) AS x
"""

_dumps = json.JSONEncoder(default=str).encode


def _jsonb(value: Any) -> str:
    return clean_json(_dumps(value))


def _as(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "f":
        return float(value)
    if kind == "i":
        return int(value)
    text = clean_text(value if isinstance(value, str) else str(value))
    return clean_json(text) if kind == "j" else text


def texts(values: Iterable[str]) -> list[str]:
    """``values`` as PostgreSQL's text holds them (:func:`~steadyq._postgres.clean_text`)."""
    return [clean_text(v) for v in values]


def columns(rows: Sequence[Sequence[Any]], kinds: str) -> list[list[Any]]:
    """Rows as column lists, the parameters of an ``unnest``; ``kinds`` has one letter
    per column, ``f`` float8, ``i`` integer, ``t`` text, ``j`` JSON text for jsonb, and
    each value is made that type (an array takes one type: an int among floats would
    not be sent) and cleaned of what PostgreSQL refuses (a NUL, a lone surrogate)."""
    return [_column([row[i] for row in rows], kind) for i, kind in enumerate(kinds)]


def _column(values: list[Any], kind: str) -> list[Any]:
    if kind == "t":
        # the common case (ASCII text without a NUL) as it is, without a call per value
        return [
            v
            if v is None or (v.__class__ is str and v.isascii() and "\x00" not in v)
            else _as(kind, v)
            for v in values
        ]
    if kind == "f":
        return [v if v is None or v.__class__ is float else float(v) for v in values]
    if kind == "i":
        return [v if v is None or v.__class__ is int else int(v) for v in values]
    return [_as(kind, v) for v in values]


_EVENT_KINDS = "fttittttitft"
_LEDGER_KINDS = "ttttfijftffff"


def write_events(
    db: PostgresDatabase,
    conn: psycopg.Connection[Any],
    events: Sequence[Event],
    *,
    stored: Mapping[str, LedgerRow | None] | None = None,
    commit: bool = False,
) -> None:
    """Insert ``events`` and update the derived views, inside the caller's transaction.

    ``stored``: the ledger rows of (at least) these events' requests, already read and
    locked in this transaction (:func:`lock_requests`), None for a request read and
    found to have none; requests it does not name are read here.
    ``commit``: end the transaction with this write's last round trip (the COMMIT goes
    in the same pipeline as the inserts; the server runs it only if they all worked).
    """
    if not events:
        if commit:
            conn.commit()
        return
    prepared = prepare_events(events)
    ledger: list[tuple[Any, ...]] = []
    if prepared.changes:
        # the stored rows, locked until this transaction ends, moved by the one rule
        def lookup(ids: Sequence[str]) -> dict[str, LedgerRow]:
            known = {} if stored is None else stored
            have = {i: row for i in ids if (row := known.get(i)) is not None}
            missing = [i for i in ids if i not in known]
            if missing:
                with conn.cursor() as cur:
                    have.update(_stored_requests(db, cur, missing))
            return have

        rows = compose_ledger_rows(prepared.changes, lookup)
        ledger = sorted((_ledger_params(r) for r in rows.values()), key=lambda p: p[0])
    # one round trip for the rest: the statements still run one after the other
    with conn.pipeline(), conn.cursor() as cur:
        if prepared.rows:
            cur.execute(db.sql(_INSERT_EVENTS), columns(prepared.rows, _EVENT_KINDS))
        for event, what, values in prepared.executions:
            _apply_execution(db, cur, event, what, values)
        if ledger:
            cur.execute(db.sql(_LEDGER_WRITE), columns(ledger, _LEDGER_KINDS))
        if prepared.releases:
            releases = sorted(prepared.releases)
            cur.execute(db.sql(_RELEASE_CLAIMS), columns(releases, "tt"))
        if commit:
            conn.commit()


def ledger_ids(events: Iterable[Event]) -> list[str]:
    """The requests whose ledger rows a write of ``events`` may move (sorted)."""
    kinds = _LEDGER_EVENT_KINDS
    return sorted({e.request_id for e in events if e.request_id is not None and e.kind in kinds})


def lock_requests(db: PostgresDatabase, cur: psycopg.Cursor[Any], ids: Sequence[str]) -> None:
    """Send the read of ``ids``' ledger rows, locked in key order (FOR UPDATE), on
    ``cur`` (in a pipeline: its answer comes with the pipeline's);
    :func:`stored_rows` reads the answer."""
    cur.execute(db.sql(_STORED_REQUESTS), (texts(sorted(ids)),))


def stored_rows(cur: psycopg.Cursor[Any], ids: Iterable[str] = ()) -> dict[str, LedgerRow | None]:
    """The rows :func:`lock_requests` read, by request id; each of ``ids`` (those it
    was asked for) that has no row maps to None."""
    found: dict[str, LedgerRow | None] = dict.fromkeys(texts(ids))
    found.update((row[0], list(row)) for row in cur.fetchall())
    return found


def _stored_requests(
    db: PostgresDatabase, cur: psycopg.Cursor[Any], ids: Sequence[str]
) -> dict[str, LedgerRow]:
    """The stored ledger rows of ``ids`` (LEDGER_COLUMNS order, fields a dict), locked
    (FOR UPDATE, in key order) so that no writer moves them before this write does."""
    lock_requests(db, cur, ids)
    return {k: row for k, row in stored_rows(cur).items() if row is not None}


def _ledger_params(row: LedgerRow) -> tuple[Any, ...]:
    """A composed row as the write's parameters (in _LEDGER_KINDS order)."""
    (request_id, status, updated_at, message_id, execution_id, attempts, fields,
     duration_s, error, created_at, started_at, completed_at, failed_at) = row  # fmt: skip
    return (request_id, status, message_id, execution_id, updated_at, attempts,
            None if fields is None else _dumps(fields), duration_s, error,
            created_at, started_at, completed_at, failed_at)  # fmt: skip


def _apply_execution(
    db: PostgresDatabase,
    cur: psycopg.Cursor[Any],
    event: Event,
    what: str,
    values: dict[str, Any],
) -> None:
    if what == "start":
        cur.execute(
            db.sql(
                "INSERT INTO SQ.executions (execution_id, status, started_at, data)"
                " VALUES (%s, %s, %s, %s::jsonb) ON CONFLICT (execution_id) DO NOTHING"
            ),
            (event.execution_id, RUNNING, values["started_at"], _jsonb(values["data"])),
        )
    elif what == "ready":
        cur.execute(
            db.sql("UPDATE SQ.executions SET ready_at = %s WHERE execution_id = %s"),
            (values["ready_at"], event.execution_id),
        )
    else:
        cur.execute(
            db.sql(
                "UPDATE SQ.executions SET finished_at = %s, status = %s,"
                " data = SQ.steadyq_merge(COALESCE(data, '{}'::jsonb), %s::jsonb)"
                " WHERE execution_id = %s"
            ),
            (values["finished_at"], values["status"], _jsonb(values["data"]), event.execution_id),
        )


def row_to_event(row: Sequence[Any]) -> Event:
    (ts, kind, severity, message, execution_id, message_id, request_id, attempt, reason,
     duration_ms, data) = row  # fmt: skip
    return Event(
        kind=kind,
        timestamp=ts,
        severity=severity,
        message=message or "",
        execution_id=execution_id,
        message_id=message_id,
        request_id=request_id,
        attempt=attempt,
        reason=reason,
        duration_ms=duration_ms,
        data=json.loads(data) if data else {},
    )


def _row_to_request(row: Sequence[Any]) -> RequestRecord:
    return RequestRecord(
        request_id=row[0],
        status=row[1],
        updated_at=row[2],
        message_id=row[3],
        execution_id=row[4],
        attempts=row[5],
        fields=row[6] if row[6] else None,
        duration_s=row[7],
        error=row[8],
        created_at=row[9],
        started_at=row[10],
        completed_at=row[11],
        failed_at=row[12],
    )


class PostgresStore(EventStore):
    """Events, executions, the request ledger, claims and attempt counts in PostgreSQL."""

    def __init__(self, db: PostgresDatabase, *, owns_db: bool = False) -> None:
        self.db = db
        self._owns_db = owns_db

    @classmethod
    def from_url(cls, url: str, *, read_only: bool = False) -> PostgresStore:
        return cls(PostgresDatabase(url, read_only=read_only), owns_db=True)

    def write(self, events: Sequence[Event]) -> None:
        if events:
            with self.db.transaction() as conn:
                write_events(self.db, conn, events, commit=True)

    def events(self, where: EventFilter | None = None) -> list[Event]:
        sql, params = events_query(POSTGRES, EVENT_COLUMNS, where or EventFilter())
        with self.db.reading() as conn:
            return [row_to_event(row) for row in conn.execute(self.db.sql(sql), params)]

    def executions(
        self, *, since: float | None = None, limit: int | None = None, now: float | None = None
    ) -> list[ExecutionRecord]:
        sql = (
            "SELECT execution_id, status, started_at, ready_at, finished_at, data"
            " FROM SQ.executions"
        )
        params: list[Any] = []
        if since is not None:
            sql += " WHERE started_at >= %s"
            params.append(since)
        sql += " ORDER BY started_at DESC, execution_id"
        if limit is not None:
            sql += " LIMIT %s"
            params.append(limit)
        with self.db.reading() as conn:
            rows = conn.execute(self.db.sql(sql), params).fetchall()
        at = time.time() if now is None else now
        return [
            ExecutionRecord(
                execution_id=r[0],
                status=r[1],
                started_at=r[2],
                ready_at=r[3],
                finished_at=r[4],
                data=r[5] or {},
            ).as_of(at)
            for r in rows
        ]

    def completed(self, request_ids: Iterable[str]) -> set[str]:
        ids = list(dict.fromkeys(request_ids))
        if not ids:
            return set()
        with self.db.reading() as conn:
            return {r[0] for r in conn.execute(self.db.sql(_COMPLETED_OF), (ids,))}

    def requests(
        self,
        *,
        status: str | None = None,
        request_id: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[RequestRecord]:
        sql, params = requests_query(
            POSTGRES,
            _REQUEST_COLUMNS,
            status=status,
            request_id=request_id,
            since=since,
            limit=limit,
        )
        with self.db.reading() as conn:
            return [_row_to_request(row) for row in conn.execute(self.db.sql(sql), params)]

    def outcomes_of(self, message_ids: Sequence[str]) -> dict[str, Event]:
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return {}
        with self.db.reading() as conn:
            found = [row_to_event(r) for r in conn.execute(self.db.sql(_OUTCOMES_OF), (ids,))]
        return {e.message_id: e for e in found if e.message_id is not None}

    # -- claims -----------------------------------------------------------------------

    def claim(self, request_ids: Sequence[str], owner: str, until: float) -> dict[str, str]:
        asked = {r: clean_text(r) for r in dict.fromkeys(request_ids)}
        ids = sorted(set(asked.values()))
        if not ids:
            return {}
        owner = clean_text(owner)
        params = {"ids": ids, "owner": owner, "hold": until - time.time(), "now": None}
        with self.db.transaction() as conn:
            with conn.pipeline():  # one round trip; the server runs them in this order
                # take what is free (or ours, or lapsed) first; a concurrent claimer of
                # the same id waits for our row lock and then finds it held
                claimed = conn.execute(self.db.sql(_CLAIM), params)
                # then the ledger, in a statement of its own (a snapshot taken after the
                # claim went in): a completion committed meanwhile is seen
                completed = conn.execute(self.db.sql(_COMPLETED_OF), (ids,))
                conn.commit()
            taken = {r[0] for r in claimed.fetchall()}
            done = {r[0] for r in completed.fetchall()}
        if done & taken:
            # claims taken on completed requests are not needed: given back at once
            # (rare: a copy of a request completed elsewhere). Should that fail, they
            # lapse by themselves; a copy meanwhile waits, then finds the completion.
            with contextlib.suppress(BackendError):
                self.release_claims(sorted(done & taken), owner)
        return {
            r: CLAIM_COMPLETED if k in done else CLAIMED if k in taken else CLAIM_BUSY
            for r, k in asked.items()
        }

    def extend_claims(self, request_ids: Sequence[str], owner: str, until: float) -> None:
        ids = sorted(set(texts(request_ids)))
        owner = clean_text(owner)
        if not ids:
            return
        with self.db.transaction() as conn:
            conn.execute(
                self.db.sql(
                    f"UPDATE SQ.request_claims c SET until = {DB_NOW} + %(hold)s"
                    " FROM unnest(%(ids)b::text[]) AS v (id)"
                    " WHERE c.request_id = v.id AND c.owner = %(owner)s"
                ),
                {"ids": ids, "owner": owner, "hold": until - time.time(), "now": None},
            )

    def release_claims(self, request_ids: Sequence[str], owner: str) -> None:
        ids = sorted(set(texts(request_ids)))
        if ids:
            with self.db.transaction() as conn:
                conn.execute(self.db.sql(_RELEASE_CLAIMS), (ids, [clean_text(owner)] * len(ids)))

    # -- attempt counts of brokers that keep none -------------------------------------

    def count_attempts(self, keys: Sequence[str]) -> dict[str, AttemptCount]:
        ids = sorted(dict.fromkeys(keys))
        if not ids:
            return {}
        with self.db.transaction() as conn:
            rows = conn.execute(
                self.db.sql(
                    "INSERT INTO SQ.broker_attempts AS b (key, attempts, updated_at)"
                    f" SELECT k, 1, {DB_NOW} FROM unnest(%(keys)b::text[]) AS k ORDER BY k"
                    " ON CONFLICT (key) DO UPDATE SET attempts = b.attempts + 1,"
                    " updated_at = excluded.updated_at RETURNING key, attempts, last_error, runs"
                ),
                {"keys": ids, "now": None},
            ).fetchall()
        return {r[0]: AttemptCount(r[1], r[2], r[3]) for r in rows}

    def attempts_of(self, keys: Sequence[str]) -> dict[str, int]:
        ids = list(dict.fromkeys(keys))
        if not ids:
            return {}
        with self.db.reading() as conn:
            rows = conn.execute(
                self.db.sql(
                    "SELECT b.key, b.attempts FROM unnest(%b::text[]) AS i (k)"
                    " CROSS JOIN LATERAL (SELECT key, attempts FROM SQ.broker_attempts"
                    " WHERE key = i.k OFFSET 0) AS b"
                ),
                (ids,),
            )
            return {r[0]: r[1] for r in rows}

    def settle_attempts(
        self,
        errors: Mapping[str, str | None],
        forget: Sequence[str] = (),
        ran: Sequence[str] = (),
    ) -> None:
        noted = sorted((key, error) for key, error in errors.items() if error is not None)
        if not noted and not forget and not ran:
            return
        with self.db.transaction() as conn, conn.cursor() as cur:
            if noted:
                cur.execute(
                    self.db.sql(
                        "UPDATE SQ.broker_attempts b SET last_error = v.error"
                        " FROM unnest(%b::text[], %b::text[]) AS v (key, error)"
                        " WHERE b.key = v.key"
                    ),
                    columns(noted, "tt"),
                )
            if ran:
                cur.execute(
                    self.db.sql(
                        "UPDATE SQ.broker_attempts b SET runs = b.runs + v.n"
                        " FROM (SELECT k, count(*) AS n FROM unnest(%b::text[]) AS k GROUP BY k)"
                        " AS v (key, n) WHERE b.key = v.key"
                    ),
                    (sorted(ran),),
                )
            if forget:
                cur.execute(
                    self.db.sql(
                        "DELETE FROM SQ.broker_attempts b USING unnest(%b::text[]) AS v (k)"
                        " WHERE b.key = v.k"
                    ),
                    (sorted(forget),),
                )

    def prune_attempts(self, older_than_s: float, *, now: float | None = None) -> int:
        with self.db.transaction() as conn:
            cur = conn.execute(
                self.db.sql(
                    f"DELETE FROM SQ.broker_attempts WHERE updated_at < {DB_NOW} - %(age)s"
                ),
                {"now": now, "age": older_than_s},
            )
            return cur.rowcount

    # -- retention ----------------------------------------------------------------------

    def prune(
        self, older_than_s: float, *, now: float | None = None, dry_run: bool = False
    ) -> PruneCounts:
        cut = prune_cut(older_than_s, now)

        def count(table: str) -> int:
            with self.db.transaction() as conn:
                sql = self.db.sql(f"SELECT count(*) FROM SQ.{table} WHERE {_PRUNED[table]}")
                return int(conn.execute(sql, (cut,)).fetchone()[0])  # type: ignore[index]

        def delete_chunk(table: str) -> int:
            with self.db.transaction() as conn:
                sql = self.db.sql(
                    f"DELETE FROM SQ.{table} WHERE ctid = ANY(ARRAY(SELECT ctid FROM SQ.{table}"
                    f" WHERE {_PRUNED[table]} LIMIT {PRUNE_CHUNK}))"
                )
                return int(conn.execute(sql, (cut,)).rowcount)

        return prune_tables(count, delete_chunk, dry_run=dry_run)

    # -- the watch ----------------------------------------------------------------------

    def watch_reader(self) -> Reader:
        """The watch's reader of this store: aggregates in SQL (:class:`PostgresReader`)."""
        from steadyq.telemetry.reader_postgres import PostgresReader

        return PostgresReader(self)

    @contextmanager
    def snapshot(self) -> Iterator[psycopg.Connection[Any]]:
        """One connection in a REPEATABLE READ, READ ONLY transaction: every query
        inside sees the same state of the store."""
        with self.db.transaction() as conn:
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            # the watch works between its queries; a read-only snapshot holds no row
            # locks, so the idle-in-transaction limit (for frozen writers) is lifted
            conn.execute("SELECT set_config('idle_in_transaction_session_timeout', '0', true)")
            yield conn

    def close(self) -> None:
        if self._owns_db:
            self.db.close()


# What prune drops, per table (one parameter: the cut, epoch seconds); EventStore.prune.
# Claims lapse on the database's clock, which the cut (a wall-clock time) stands in for.
_PRUNED = {
    "events": "ts < %s",
    "requests": "status IN ('completed', 'failed') AND updated_at < %s",
    "executions": (
        "coalesce(finished_at, CASE WHEN status = 'running'"
        " AND (data->>'max_runtime_s')::float8 > 0"
        " THEN started_at + (data->>'max_runtime_s')::float8 END) < %s"
    ),
    "request_claims": "until < %s",
}
