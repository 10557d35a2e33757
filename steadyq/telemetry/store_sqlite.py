"""The telemetry store in a SQLite file (by default the queue's own file)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from steadyq._sql import OUTCOME_KINDS_SQL, SQLITE, events_query, requests_query
from steadyq._sqlite import SqliteDatabase
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event, EventFilter, severity_rank
from steadyq.telemetry.reader import Reader
from steadyq.telemetry.reader_sqlite import SqliteReader
from steadyq.telemetry.store import (
    CLAIM_BUSY,
    CLAIM_COMPLETED,
    CLAIMED,
    LEDGER_COLUMNS,
    PRUNE_CHUNK,
    RUNNING,
    AttemptCount,
    EventStore,
    ExecutionRecord,
    LedgerChange,
    LedgerRow,
    PruneCounts,
    RequestRecord,
    claim_releases,
    compose_ledger_rows,
    execution_updates,
    ledger_update,
    prune_cut,
    prune_tables,
)

_INSERT_EVENT = (
    "INSERT INTO events (ts, kind, severity, sev_rank, message, execution_id, message_id,"
    " request_id, attempt, reason, duration_ms, data) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
# Event rows go in as multi-row INSERTs of up to this many rows (12 parameters each,
# far below SQLite's limit): about a fifth cheaper per row than one row per step.
_ROWS_PER_INSERT = 64
_ROW_MARKS = "(?,?,?,?,?,?,?,?,?,?,?,?)"
_INSERT_HEAD = _INSERT_EVENT.split(" VALUES ")[0] + " VALUES "
EVENT_COLUMNS = (
    "ts, kind, severity, message, execution_id, message_id, request_id, attempt, reason,"
    " duration_ms, data"
)


# json.dumps(x, default=str) builds a new encoder per call; this is the same encoder, once
_encode = json.JSONEncoder(default=str).encode
# ... and its C core, made once too (the encoder above makes one per call): the same
# text, about half the cost. Anything it cannot do (a cycle, a failing default) goes
# to the encoder above, which raises what it always raised.
_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_c_encode = (
    None
    if _c_make_encoder is None
    else _c_make_encoder(
        None, str, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True
    )
)


def _dumps(value: Any) -> str:
    if _c_encode is not None:
        try:
            return "".join(_c_encode(value, 0))
        except Exception:  # the full encoder below says what was wrong
            pass
    return _encode(value)


def _data_text(data: Mapping[str, Any]) -> str | None:
    return _dumps(data) if data else None


_RANKS = ev.SEVERITY_RANK


def _event_row(event: Event, data: str | None) -> tuple[Any, ...]:
    """An event's row; ``data`` is the text of its data (:func:`_data_text`)."""
    severity = event.severity
    rank = _RANKS.get(severity)
    return (
        event.timestamp,
        event.kind,
        severity,
        severity_rank(severity) if rank is None else rank,
        event.message,
        event.execution_id,
        event.message_id,
        event.request_id,
        event.attempt,
        event.reason,
        event.duration_ms,
        data,
    )


_REQUEST_PREFIX = '{"request": '  # the data text of an arrival: {"request": FIELDS}


_EXECUTION_KINDS = frozenset((ev.EXECUTION_STARTED, ev.EXECUTION_READY, ev.EXECUTION_FINISHED))
_LEDGER_KINDS = frozenset(
    (
        ev.MESSAGE_PUBLISHED,
        ev.MESSAGE_RECEIVED,
        ev.MESSAGE_FAILED,
        ev.MESSAGE_TIMED_OUT,
        ev.MESSAGE_SUCCEEDED,
        ev.MESSAGE_DEAD_LETTERED,
        ev.MESSAGE_REJECTED,
    )
)


class _Prepared(NamedTuple):
    """What a batch of events writes, built before the transaction begins."""

    rows: list[tuple[Any, ...]]
    executions: list[tuple[Event, str, dict[str, Any]]]
    changes: list[LedgerChange]  # the ledger's moves, in event order (compose_ledger)
    releases: list[tuple[str, str]]
    # id(fields) -> (fields, their JSON text): fields whose text is known already (an
    # arrival's, cut from its event row), written without encoding them again
    texts: dict[int, tuple[object, str]]


def prepare_events(events: Sequence[Event], *, rows: bool = True) -> _Prepared:
    """The rows, execution changes and ledger changes of ``events``, built before the
    transaction begins. ``rows=False`` leaves the event rows out (views derived
    again from events already stored)."""
    executions: list[tuple[Event, str, dict[str, Any]]] = []
    ledger: list[LedgerChange] = []
    made: list[tuple[Any, ...]] = []
    texts: dict[int, tuple[object, str]] = {}
    received = ev.MESSAGE_RECEIVED
    for event in events:
        kind = event.kind
        if kind in _EXECUTION_KINDS:
            change = execution_updates(event)
            if change is not None:
                executions.append((event, *change))
        elif kind in _LEDGER_KINDS and event.request_id is not None:
            moved = ledger_update(event)
            if moved is not None:
                ledger.append(moved)
                data = event.data
                fields = moved.fields
                if kind == received and fields is not None and len(data) == 1:
                    # an arrival: its ledger fields are its data's "request" (when they
                    # needed no cleaning), so their text is a piece of the row's
                    text = _dumps(data)
                    if text.startswith(_REQUEST_PREFIX) and fields == data.get("request"):
                        texts[id(fields)] = (fields, text[len(_REQUEST_PREFIX) : -1])
                    if rows:
                        made.append(_event_row(event, text))
                    continue
        if rows:
            made.append(_event_row(event, _data_text(event.data)))
    return _Prepared(made, executions, ledger, claim_releases(events), texts)


def insert_rows(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Insert event rows (as :func:`_event_row` makes them), in order, inside the
    caller's transaction."""
    if len(rows) == 1:
        conn.execute(_INSERT_EVENT, rows[0])
        return
    for start in range(0, len(rows), _ROWS_PER_INSERT):
        chunk = rows[start : start + _ROWS_PER_INSERT]
        conn.execute(
            _INSERT_HEAD + ",".join([_ROW_MARKS] * len(chunk)),
            [value for row in chunk for value in row],
        )


def apply_prepared(conn: sqlite3.Connection, prepared: _Prepared) -> None:
    """Write prepared events inside the caller's transaction.

    The ledger's changes are composed by the one rule
    (:func:`~steadyq.telemetry.store.compose_ledger`) onto the rows read inside this
    transaction (``BEGIN IMMEDIATE``: no other writer runs between the read and the
    write); the composed rows are then written, and the statement itself still
    refuses to overwrite a completed row.
    """
    if prepared.rows:
        insert_rows(conn, prepared.rows)
    for event, what, values in prepared.executions:
        _apply_execution(conn, event, what, values)
    if prepared.changes:
        texts = dict(prepared.texts)  # id(fields) -> (fields, their text)
        rows = compose_ledger_rows(prepared.changes, lambda ids: _stored_requests(conn, ids, texts))
        conn.executemany(_LEDGER_WRITE, [_request_params(r, texts) for r in rows.values()])
    if prepared.releases:
        conn.executemany(_RELEASE_CLAIM, prepared.releases)


def insert_events_only(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    """Insert events without touching the derived views (a bulk import that derives
    them afterwards, in time order), inside the caller's transaction."""
    if events:
        insert_rows(conn, [_event_row(e, _data_text(e.data)) for e in events])


def write_events(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    """Insert events and update the derived views, inside the caller's transaction."""
    if events:
        apply_prepared(conn, prepare_events(events))


def _stored_requests(
    conn: sqlite3.Connection, ids: Sequence[str], texts: dict[int, tuple[object, str]]
) -> dict[str, LedgerRow]:
    """The stored rows of ``ids``; ``texts`` notes each decoded ``fields`` object's
    JSON text, so a row whose fields did not change is written back without encoding."""
    found: dict[str, LedgerRow] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        sql = (
            f"SELECT {_REQUEST_COLUMNS} FROM requests"
            f" WHERE request_id IN ({','.join('?' * len(chunk))})"
        )
        for stored in conn.execute(sql, chunk):
            row = found[stored[0]] = list(stored)
            text = row[6]
            if text:
                row[6] = fields = json.loads(text)
                texts[id(fields)] = (fields, text)  # held: the id stays unique
            else:
                row[6] = None
    return found


def _request_params(row: LedgerRow, texts: Mapping[int, tuple[object, str]]) -> LedgerRow:
    fields = row[6]
    if fields is not None:
        stored = texts.get(id(fields))
        row[6] = stored[1] if stored is not None and stored[0] is fields else _dumps(fields)
    return row


def _apply_execution(
    conn: sqlite3.Connection, event: Event, what: str, values: dict[str, Any]
) -> None:
    if what == "start":
        conn.execute(
            "INSERT INTO executions (execution_id, status, started_at, data) VALUES (?,?,?,?)"
            " ON CONFLICT (execution_id) DO NOTHING",
            (event.execution_id, RUNNING, values["started_at"], json.dumps(values["data"])),
        )
    elif what == "ready":
        conn.execute(
            "UPDATE executions SET ready_at = ? WHERE execution_id = ?",
            (values["ready_at"], event.execution_id),
        )
    else:
        conn.execute(
            "UPDATE executions SET finished_at = ?, status = ?,"
            " data = json_patch(COALESCE(data, '{}'), ?) WHERE execution_id = ?",
            (
                values["finished_at"],
                values["status"],
                json.dumps(values["data"], default=str),
                event.execution_id,
            ),
        )


_RELEASE_CLAIM = "DELETE FROM request_claims WHERE request_id = ? AND owner = ?"


_REQUEST_COLUMNS = ", ".join(LEDGER_COLUMNS)
# The composed row as it is (the rule ran in Python: compose_ledger), unless the stored
# row is completed: completed is final even against a writer that raced this one.
_LEDGER_WRITE = (
    f"INSERT INTO requests ({_REQUEST_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT (request_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in LEDGER_COLUMNS[1:])
    + " WHERE requests.status != 'completed'"
)


def _row_to_request(row: sqlite3.Row | tuple[Any, ...]) -> RequestRecord:
    return RequestRecord(
        request_id=row[0],
        status=row[1],
        updated_at=row[2],
        message_id=row[3],
        execution_id=row[4],
        attempts=row[5],
        fields=json.loads(row[6]) if row[6] else None,
        duration_s=row[7],
        error=row[8],
        created_at=row[9],
        started_at=row[10],
        completed_at=row[11],
        failed_at=row[12],
    )


def row_to_event(row: sqlite3.Row | tuple[Any, ...]) -> Event:
    (
        ts,
        kind,
        severity,
        message,
        execution_id,
        message_id,
        request_id,
        attempt,
        reason,
        duration_ms,
        data,
    ) = row
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


def claim_in(
    conn: sqlite3.Connection, request_ids: Sequence[str], owner: str, until: float, now: float
) -> dict[str, str]:
    """:meth:`SqliteStore.claim` inside the caller's transaction (the SQLite queue
    claims a pulled batch in the transaction of its settlements)."""
    ids = list(dict.fromkeys(request_ids))
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    done = {
        r
        for (r,) in conn.execute(
            f"SELECT request_id FROM requests WHERE status = 'completed'"
            f" AND request_id IN ({marks})",
            ids,
        )
    }
    claimed: set[str] = set()
    free = [r for r in ids if r not in done]
    for start in range(0, len(free), 500):
        chunk = free[start : start + 500]
        # one statement: a claim is taken where there is none, renewed where it is this
        # owner's, taken over where it lapsed; a live claim of another owner stays, and
        # its request (not returned) is busy
        rows = conn.execute(
            "INSERT INTO request_claims (request_id, owner, until) VALUES "
            + ",".join(["(?,?,?)"] * len(chunk))
            + " ON CONFLICT (request_id) DO UPDATE SET owner = excluded.owner,"
            " until = excluded.until"
            " WHERE request_claims.owner = excluded.owner OR request_claims.until <= ?"
            " RETURNING request_id",
            [*(v for r in chunk for v in (r, owner, until)), now],
        )
        claimed.update(r for (r,) in rows)
    return {
        r: CLAIM_COMPLETED if r in done else CLAIMED if r in claimed else CLAIM_BUSY for r in ids
    }


class SqliteStore(EventStore):
    """Events, executions and the request ledger in a SQLite file."""

    def __init__(self, db: SqliteDatabase, *, owns_db: bool = False) -> None:
        self.db = db
        self._owns_db = owns_db

    def write(self, events: Sequence[Event]) -> None:
        if not events:
            return
        # built before the transaction: the lock is held only while SQLite works
        prepared = prepare_events(events)
        with self.db.transaction() as conn:
            apply_prepared(conn, prepared)

    def events(self, where: EventFilter | None = None) -> list[Event]:
        sql, params = events_query(SQLITE, EVENT_COLUMNS, where or EventFilter())
        with self.db.reading() as conn:
            return [row_to_event(row) for row in conn.execute(sql, params)]

    def executions(
        self, *, since: float | None = None, limit: int | None = None, now: float | None = None
    ) -> list[ExecutionRecord]:
        sql = "SELECT execution_id, status, started_at, ready_at, finished_at, data FROM executions"
        params: list[Any] = []
        if since is not None:
            sql += " WHERE started_at >= ?"
            params.append(since)
        sql += " ORDER BY started_at DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self.db.reading() as conn:
            rows = conn.execute(sql, params).fetchall()
        at = time.time() if now is None else now
        return [
            ExecutionRecord(
                execution_id=r[0],
                status=r[1],
                started_at=r[2],
                ready_at=r[3],
                finished_at=r[4],
                data=json.loads(r[5]) if r[5] else {},
            ).as_of(at)
            for r in rows
        ]

    def outcomes_of(self, message_ids: Sequence[str]) -> dict[str, Event]:
        ids = list(dict.fromkeys(message_ids))
        if not ids:
            return {}
        sql = (
            f"SELECT {EVENT_COLUMNS} FROM events INDEXED BY events_outcome_message"
            f" WHERE message_id IN ({','.join('?' * len(ids))}) AND {OUTCOME_KINDS_SQL}"
            " ORDER BY ts, id"
        )
        with self.db.reading() as conn:
            found = [row_to_event(row) for row in conn.execute(sql, ids)]
        return {e.message_id: e for e in found if e.message_id is not None}

    def claim(self, request_ids: Sequence[str], owner: str, until: float) -> dict[str, str]:
        if not request_ids:
            return {}
        with self.db.transaction() as conn:
            return claim_in(conn, request_ids, owner, until, time.time())

    def extend_claims(self, request_ids: Sequence[str], owner: str, until: float) -> None:
        if request_ids:
            with self.db.transaction() as conn:
                conn.executemany(
                    "UPDATE request_claims SET until = ? WHERE request_id = ? AND owner = ?",
                    [(until, r, owner) for r in dict.fromkeys(request_ids)],
                )

    def release_claims(self, request_ids: Sequence[str], owner: str) -> None:
        if request_ids:
            with self.db.transaction() as conn:
                conn.executemany(_RELEASE_CLAIM, [(r, owner) for r in dict.fromkeys(request_ids)])

    def completed(self, request_ids: Iterable[str]) -> set[str]:
        ids = list(dict.fromkeys(request_ids))
        found: set[str] = set()
        with self.db.reading() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = conn.execute(
                    "SELECT request_id FROM requests WHERE status = 'completed' AND request_id"
                    f" IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                found.update(r[0] for r in rows)
        return found

    def requests(
        self,
        *,
        status: str | None = None,
        request_id: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[RequestRecord]:
        sql, params = requests_query(
            SQLITE, _REQUEST_COLUMNS, status=status, request_id=request_id, since=since, limit=limit
        )
        with self.db.reading() as conn:
            return [_row_to_request(tuple(row)) for row in conn.execute(sql, params)]

    def count_attempts(self, keys: Sequence[str]) -> dict[str, AttemptCount]:
        now = time.time()
        ids = list(dict.fromkeys(keys))
        counted: dict[str, AttemptCount] = {}
        with self.db.transaction() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                # one statement per chunk: raise (or start) each count, return the new ones
                rows = conn.execute(
                    "INSERT INTO broker_attempts (key, attempts, updated_at) VALUES"
                    + ",".join(["(?,1,?)"] * len(chunk))
                    + " ON CONFLICT (key) DO UPDATE SET attempts = attempts + 1,"
                    " updated_at = excluded.updated_at RETURNING key, attempts, last_error, runs",
                    [value for key in chunk for value in (key, now)],
                ).fetchall()
                counted.update((r[0], AttemptCount(r[1], r[2], r[3])) for r in rows)
        return counted

    def attempts_of(self, keys: Sequence[str]) -> dict[str, int]:
        ids = list(dict.fromkeys(keys))
        found: dict[str, int] = {}
        with self.db.reading() as conn:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                rows = conn.execute(
                    "SELECT key, attempts FROM broker_attempts"
                    f" WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                found.update((r[0], r[1]) for r in rows)
        return found

    def settle_attempts(
        self,
        errors: Mapping[str, str | None],
        forget: Sequence[str] = (),
        ran: Sequence[str] = (),
    ) -> None:
        noted = [(error, key) for key, error in errors.items() if error is not None]
        if not noted and not forget and not ran:
            return
        with self.db.transaction() as conn:
            conn.executemany("UPDATE broker_attempts SET last_error = ? WHERE key = ?", noted)
            conn.executemany(
                "UPDATE broker_attempts SET runs = runs + 1 WHERE key = ?", [(k,) for k in ran]
            )
            # one statement per 500 keys: a third cheaper than a DELETE per key
            gone = list(dict.fromkeys(forget))
            for start in range(0, len(gone), 500):
                chunk = gone[start : start + 500]
                conn.execute(
                    f"DELETE FROM broker_attempts WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                )

    def prune_attempts(self, older_than_s: float, *, now: float | None = None) -> int:
        before = (time.time() if now is None else now) - older_than_s
        with self.db.transaction() as conn:
            return conn.execute(
                "DELETE FROM broker_attempts WHERE updated_at < ?", (before,)
            ).rowcount

    # -- retention ----------------------------------------------------------------

    def prune(
        self, older_than_s: float, *, now: float | None = None, dry_run: bool = False
    ) -> PruneCounts:
        cut = prune_cut(older_than_s, now)

        def count(table: str) -> int:
            with self.db.reading() as conn:
                sql = f"SELECT count(*) FROM {table} WHERE {_PRUNED[table]}"
                return int(conn.execute(sql, (cut,)).fetchone()[0])

        def delete_chunk(table: str) -> int:
            with self.db.transaction() as conn:
                return int(
                    conn.execute(
                        f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table}"
                        f" WHERE {_PRUNED[table]} LIMIT {PRUNE_CHUNK})",
                        (cut,),
                    ).rowcount
                )

        return prune_tables(count, delete_chunk, dry_run=dry_run)

    # -- what other parts ask of a store ------------------------------------------

    def watch_reader(self) -> Reader:
        return SqliteReader(self)

    def sqlite_store(self, purpose: str) -> SqliteStore:
        return self

    def close(self) -> None:
        if self._owns_db:
            self.db.close()


# What prune drops, per table (one parameter: the cut); see EventStore.prune.
_PRUNED = {
    "events": "ts < ?",
    "requests": "status IN ('completed', 'failed') AND updated_at < ?",
    "executions": (
        "coalesce(finished_at, CASE WHEN status = 'running'"
        " AND json_extract(data, '$.max_runtime_s') > 0"
        " THEN started_at + json_extract(data, '$.max_runtime_s') END) < ?"
    ),
    "request_claims": "until < ?",
}
