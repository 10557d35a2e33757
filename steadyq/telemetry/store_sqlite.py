"""The telemetry store in a SQLite file (by default the queue's own file)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from steadyq._sqlite import SqliteDatabase
from steadyq.telemetry.events import Event, severity_rank
from steadyq.telemetry.store import (
    RUNNING,
    EventFilter,
    EventStore,
    ExecutionRecord,
    execution_updates,
    ledger_update,
)

_INSERT_EVENT = (
    "INSERT INTO events (ts, kind, severity, sev_rank, message, execution_id, message_id,"
    " request_id, attempt, reason, duration_ms, data) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
_EVENT_COLUMNS = (
    "ts, kind, severity, message, execution_id, message_id, request_id, attempt, reason,"
    " duration_ms, data"
)


def _event_row(event: Event) -> tuple[Any, ...]:
    return (
        event.timestamp,
        event.kind,
        event.severity,
        severity_rank(event.severity),
        event.message,
        event.execution_id,
        event.message_id,
        event.request_id,
        event.attempt,
        event.reason,
        event.duration_ms,
        json.dumps(event.data, default=str) if event.data else None,
    )


def write_events(conn: sqlite3.Connection, events: Sequence[Event]) -> None:
    """Insert events and update the derived views, inside the caller's transaction."""
    if not events:
        return
    conn.executemany(_INSERT_EVENT, [_event_row(e) for e in events])
    completed: list[tuple[Any, ...]] = []
    failed: list[tuple[Any, ...]] = []
    for event in events:
        change = execution_updates(event)
        if change is not None:
            _apply_execution(conn, event, *change)
        status = ledger_update(event)
        if status == "completed":
            completed.append(
                (
                    event.request_id,
                    event.message_id,
                    event.execution_id,
                    event.timestamp,
                    event.timestamp,
                )
            )
        elif status is not None:
            failed.append(
                (event.request_id, status, event.message_id, event.execution_id, event.timestamp)
            )
    if completed:
        conn.executemany(_LEDGER_COMPLETED, completed)
    if failed:
        conn.executemany(_LEDGER_OTHER, failed)


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


_LEDGER_COMPLETED = (
    "INSERT INTO requests (request_id, status, message_id, execution_id, updated_at,"
    " completed_at) VALUES (?, 'completed', ?, ?, ?, ?)"
    " ON CONFLICT (request_id) DO UPDATE SET status = 'completed',"
    " message_id = excluded.message_id, execution_id = excluded.execution_id,"
    " updated_at = excluded.updated_at, completed_at = excluded.completed_at"
    " WHERE requests.status != 'completed'"
)
_LEDGER_OTHER = (
    "INSERT INTO requests (request_id, status, message_id, execution_id, updated_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (request_id) DO UPDATE SET"
    " status = excluded.status, updated_at = excluded.updated_at"
    " WHERE requests.status != 'completed'"
)


def _row_to_event(row: sqlite3.Row | tuple[Any, ...]) -> Event:
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


class SqliteStore(EventStore):
    """Events, executions and the request ledger in a SQLite file."""

    def __init__(self, db: SqliteDatabase, *, owns_db: bool = False) -> None:
        self.db = db
        self._owns_db = owns_db

    def write(self, events: Sequence[Event]) -> None:
        if not events:
            return
        with self.db.transaction() as conn:
            write_events(conn, events)

    def events(self, where: EventFilter | None = None) -> list[Event]:
        where = where or EventFilter()
        clauses: list[str] = []
        params: list[Any] = []
        if where.kinds is not None:
            clauses.append(f"kind IN ({','.join('?' * len(where.kinds))})")
            params.extend(where.kinds)
        for column, value, op in (
            ("ts", where.since, ">="),
            ("ts", where.until, "<"),
            ("execution_id", where.execution_id, "="),
            ("message_id", where.message_id, "="),
            ("request_id", where.request_id, "="),
        ):
            if value is not None:
                clauses.append(f"{column} {op} ?")
                params.append(value)
        if where.min_severity is not None:
            clauses.append("sev_rank >= ?")
            params.append(severity_rank(where.min_severity))
        sql = f"SELECT {_EVENT_COLUMNS} FROM events"
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY ts DESC, id DESC" if where.newest_first else " ORDER BY ts, id"
        if where.limit is not None:
            sql += " LIMIT ?"
            params.append(where.limit)
        with self.db.reading() as conn:
            return [_row_to_event(row) for row in conn.execute(sql, params)]

    def executions(
        self, *, since: float | None = None, limit: int | None = None
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
        return [
            ExecutionRecord(
                execution_id=r[0],
                status=r[1],
                started_at=r[2],
                ready_at=r[3],
                finished_at=r[4],
                data=json.loads(r[5]) if r[5] else {},
            )
            for r in rows
        ]

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

    def close(self) -> None:
        if self._owns_db:
            self.db.close()
