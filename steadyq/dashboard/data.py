"""What the dashboard's pages show, read from the queue and the store.

The store is SQLite or PostgreSQL. Each statement is written once, in SQLite's
spelling; on PostgreSQL :class:`~steadyq._sql.PgStatements` spells it for the store's
schema (``?`` → ``%s``, tables qualified, ``INDEXED BY`` dropped), and the tables and
indexes are the same on both (``_sqlite.py``, ``_postgres.py``).

Every query is bounded by an index: events by ``(kind, ts)``, by the partial
WARNING-and-above index, or by id (the live feed); executions by ``started_at``;
the ledger by its primary key; dead letters by ``dead_lettered_at``. Nothing reads
the whole history, so a page costs the same on a 10 M-event store as on a new one.
"""

from __future__ import annotations

import json
import re
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from steadyq._postgres import PostgresDatabase
from steadyq._sql import (
    SQLITE,
    WARNINGS_ONLY,
    Holes,
    PgStatements,
    dlq_conditions,
    id_marks,
    sqlite_spelled,
)
from steadyq._sqlite import SqliteDatabase
from steadyq.brokers.base import DeadLetter, DlqFilter, Queue, QueueStats
from steadyq.dlq import stats as dlq_stats
from steadyq.errors import BackendError, ConfigError
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import EventFilter, EventStore, ExecutionRecord, RequestRecord
from steadyq.telemetry.store_sqlite import EVENT_COLUMNS, row_to_event

#: Windows the overview offers, in seconds.
WINDOWS = {"1h": 3600.0, "4h": 4 * 3600.0, "24h": 24 * 3600.0}
#: Kinds the live feed sends: executions, outcomes, rejections, retries.
LIVE_KINDS = (
    ev.EXECUTION_STARTED,
    ev.EXECUTION_FINISHED,
    *ev.TERMINAL_KINDS,
    ev.MESSAGE_FAILED,
    ev.MESSAGE_TIMED_OUT,
)
#: Kinds the overview counts.
COUNTED_KINDS = (
    ev.MESSAGE_REJECTED,
    ev.MESSAGE_TIMED_OUT,
    ev.MESSAGE_FAILED,
    ev.MESSAGE_DEAD_LETTERED,
)
#: Error templates are mined from at most this many of a window's newest
#: WARNING-and-above texts (and as many of the window before), so a window full
#: of them costs a bounded time; the page says when the cap was reached.
TEXTS_CAP = 20_000
#: A live stream that starts on PostgreSQL looks this many ids back for holes.
LOOK_BACK_IDS = 1000
#: A request's events are looked for over at most this much of its ledger row's life.
REQUEST_SPAN_S = 6 * 3600.0
# Variable parts of an error text, folded so that texts differing only there group
_VARIABLE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
    r"|0x[0-9a-fA-F]+|\d+(?:\.\d+)?"
)


def template_of(text: str) -> str:
    """An error text with ids and numbers replaced by ``<*>``."""
    return _VARIABLE.sub("<*>", text)[:300]


@dataclass(frozen=True, slots=True)
class Backlog:
    at: float
    stats: QueueStats


@dataclass(slots=True)
class Overview:
    start: float
    end: float
    executions: list[ExecutionRecord]
    execution_counts: dict[str, int]
    execution_limit_s: float | None
    kind_counts: dict[str, int]
    timeouts: list[Event]
    rejections: list[tuple[str, int]]
    templates: list[tuple[str, int, bool]]
    backlog: QueueStats | None
    backlog_history: list[Backlog]
    backend_error: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class LiveCursor:
    """How far one live stream has read: every id up to ``last_id``, but ``holes``."""

    last_id: int
    holes: Holes


class StoreView:
    """Read-only queries for the pages; DLQ actions go through the queue's contract."""

    def __init__(self, queue: Queue, store: EventStore, *, history: int = 720) -> None:
        # the pages' aggregates are SQL over the store's database (ConfigError otherwise)
        self.db: SqliteDatabase | PostgresDatabase = store_database(store)
        self._pg = isinstance(self.db, PostgresDatabase)
        self.queue = queue
        self.store = store
        # the dead letters are rows of the store's own database only for a queue whose
        # store it is (SQLite or PostgreSQL, the same schema)
        self._dlq_sql = queue.colocated_store is store
        # backlog samples taken while the dashboard runs (the queue keeps no history)
        self.history: deque[Backlog] = deque(maxlen=history)

    @contextmanager
    def _read(self) -> Iterator[Any]:
        """One snapshot for every query of a page; statements in SQLite's spelling."""
        if self._pg:
            # REPEATABLE READ, READ ONLY: the store's own snapshot, as the watch reads
            with self.store.snapshot() as pg:  # type: ignore[attr-defined]
                yield PgStatements(pg, self.db)  # type: ignore[arg-type]
            return
        with sqlite_spelled(self.db) as conn:
            began = not conn.in_transaction
            if began:
                conn.execute("BEGIN")  # one snapshot for every query of a page
            try:
                yield conn
            finally:
                if began:
                    conn.execute("COMMIT")

    # -- backlog ---------------------------------------------------------------------

    def sample_backlog(self, now: float | None = None) -> QueueStats:
        """The queue's counts now, kept for the backlog chart.

        Raises:
            BackendError: the queue failed.
        """
        stats = self.queue.stats()
        self.history.append(Backlog(time.time() if now is None else now, stats))
        return stats

    # -- overview --------------------------------------------------------------------

    def overview(self, start: float, end: float) -> Overview:
        """The five views for ``[start, end)``.

        Raises:
            BackendError: the store failed.
        """
        with self._read() as conn:
            # the rare kinds only: counting the bulk (received, succeeded) would walk
            # the index over every delivery of the window. One statement a kind: with
            # statistics, PostgreSQL plans "kind IN (…)" as a walk of the ts index over
            # every event of the window, and "kind = ?" through (kind, ts)
            kind_counts: dict[str, int] = {}
            for kind in COUNTED_KINDS:
                (n,) = conn.execute(
                    "SELECT count(*) FROM events INDEXED BY events_kind_ts"
                    " WHERE kind = ? AND ts >= ? AND ts < ?",
                    (kind, start, end),
                ).fetchone()
                if n:
                    kind_counts[kind] = int(n)
            counts = {
                str(s): int(n)
                for s, n in conn.execute(
                    "SELECT status, count(*) FROM executions"
                    " WHERE started_at >= ? AND started_at < ? GROUP BY status",
                    (start, end),
                )
            }
            rows = conn.execute(
                "SELECT execution_id, status, started_at, ready_at, finished_at, data"
                " FROM executions WHERE started_at >= ? AND started_at < ?"
                " ORDER BY started_at DESC LIMIT 100",
                (start, end),
            ).fetchall()
            executions = [
                ExecutionRecord(r[0], r[1], r[2], r[3], r[4], _object(r[5])) for r in rows
            ]
            timeouts = [
                row_to_event(r)
                for r in conn.execute(
                    f"SELECT {EVENT_COLUMNS} FROM events INDEXED BY events_kind_ts"
                    " WHERE kind = ? AND ts >= ? AND ts < ? ORDER BY ts DESC LIMIT 50",
                    (ev.MESSAGE_TIMED_OUT, start, end),
                )
            ]
            by_reason: dict[str, int] = {}
            for reason, n in conn.execute(
                "SELECT reason, count(*) FROM events INDEXED BY events_kind_ts"
                " WHERE kind = ? AND ts >= ? AND ts < ? GROUP BY reason",
                (ev.MESSAGE_REJECTED, start, end),
            ):
                key = "?" if reason is None else str(reason)
                by_reason[key] = by_reason.get(key, 0) + int(n)
            rejections = sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
            notes: list[str] = []
            templates = self._templates(conn, start, end, notes)
        limits = [
            float(x.data["max_runtime_s"])
            for x in executions
            if isinstance(x.data.get("max_runtime_s"), int | float)
        ]
        backlog: QueueStats | None = None
        error = None
        try:
            backlog = self.sample_backlog()
        except BackendError as exc:
            error = str(exc)
        return Overview(
            start=start,
            end=end,
            executions=executions,
            execution_counts=counts,
            execution_limit_s=max(limits) if limits else None,
            kind_counts=kind_counts,
            timeouts=timeouts,
            rejections=rejections,
            templates=templates,
            backlog=backlog,
            backlog_history=[b for b in self.history if b.at >= start],
            backend_error=error,
            notes=notes,
        )

    def _texts(self, conn: Any, start: float, end: float) -> tuple[dict[str, int], bool]:
        """Template counts of the window's newest texts, and whether the cap cut them."""
        # the partial index's own predicate (WARNINGS_ONLY) is what lets SQLite use it
        found: dict[str, int] = {}
        rows = conn.execute(
            "SELECT message, count(*) FROM (SELECT message FROM events"
            f" WHERE {WARNINGS_ONLY} AND ts >= ? AND ts < ?"
            " ORDER BY ts DESC LIMIT ?) AS newest WHERE message IS NOT NULL AND message != ''"
            " GROUP BY message",
            (start, end, TEXTS_CAP),
        )
        seen = 0
        for text, n in rows:
            key = template_of(str(text))
            found[key] = found.get(key, 0) + int(n)
            seen += int(n)
        return found, seen >= TEXTS_CAP

    def _templates(
        self, conn: Any, start: float, end: float, notes: list[str]
    ) -> list[tuple[str, int, bool]]:
        """Error templates of the window, each marked when the window just before it
        (of the same length, the baseline) never had it."""
        now, capped = self._texts(conn, start, end)
        if capped:
            notes.append(
                f"error templates from the newest {TEXTS_CAP:,} WARNING-and-above texts"
                " of the window"
            )
        if not now:
            return []
        before, _ = self._texts(conn, start - (end - start), start)
        ranked = sorted(now.items(), key=lambda kv: (-kv[1], kv[0]))[:30]
        return [(text, n, text not in before) for text, n in ranked]

    # -- live feed -------------------------------------------------------------------

    def last_event_id(self) -> int:
        with sqlite_spelled(self.db) as conn:
            return int(conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])

    def live_cursor(self, after: int | None = None) -> LiveCursor:
        """Where a live stream starts: after ``after``, else after the newest event.

        On PostgreSQL the ids just below the start that are not there yet may still be
        committed (:class:`~steadyq._sql.Holes`): the last :data:`LOOK_BACK_IDS` are
        looked at once, and their holes watched like any other.

        Raises:
            BackendError: the store failed.
        """
        start = self.last_event_id() if after is None else after
        cursor = LiveCursor(start, Holes(self._pg))
        if self._pg and start > 0:
            low = max(0, start - LOOK_BACK_IDS)
            with sqlite_spelled(self.db) as conn:
                rows = conn.execute(
                    "SELECT id FROM events WHERE id > ? AND id <= ? ORDER BY id", (low, start)
                )
                cursor.holes.passed(low, [int(r[0]) for r in rows], upto=start)
        return cursor

    def live_events(self, cursor: LiveCursor, limit: int = 200) -> list[Event]:
        """Live-feed events committed since the cursor's last read, which it moves on:
        those after its id (by the primary key), then any that filled a hole.

        Raises:
            BackendError: the store failed.
        """
        late_ids = cursor.holes.pending()
        late: list[Any] = []
        with sqlite_spelled(self.db) as conn:
            rows = conn.execute(
                f"SELECT id, {EVENT_COLUMNS} FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (cursor.last_id, limit * 5),
            ).fetchall()
            for at in range(0, len(late_ids), 500):
                chunk = late_ids[at : at + 500]
                late += conn.execute(
                    f"SELECT id, {EVENT_COLUMNS} FROM events WHERE id IN ({id_marks(chunk)})"
                    " ORDER BY id",
                    chunk,
                ).fetchall()
        cursor.holes.filled(int(r[0]) for r in late)
        if rows:
            cursor.holes.passed(cursor.last_id, [int(r[0]) for r in rows])
            cursor.last_id = int(rows[-1][0])
        wanted = set(LIVE_KINDS)
        return [row_to_event(r[1:]) for r in (*late, *rows) if r[2] in wanted][:limit]

    def events_after(self, event_id: int, limit: int = 200) -> tuple[int, list[Event]]:
        """Live-feed events written after ``event_id``, and the id to ask after next
        (one read: a stream keeps a :meth:`live_cursor` instead).

        Raises:
            BackendError: the store failed.
        """
        cursor = LiveCursor(event_id, Holes(False))
        found = self.live_events(cursor, limit)
        return cursor.last_id, found

    # -- dead letters ----------------------------------------------------------------

    def dlq_counts(self) -> list[tuple[str, int]]:
        if not self._dlq_sql:
            return [(g["reason"], g["count"]) for g in dlq_stats(self.queue.dlq_list())]
        with sqlite_spelled(self.db) as conn:
            return [
                (str(r), int(n))
                for r, n in conn.execute(
                    "SELECT reason, count(*) FROM dead_letters GROUP BY reason ORDER BY 2 DESC, 1"
                )
            ]

    def dlq_list(self, where: DlqFilter) -> list[DeadLetter]:
        return self.queue.dlq_list(where)

    def dlq_count(self, where: DlqFilter) -> int:
        """How many letters ``where`` selects (its limit ignored)."""
        if not self._dlq_sql:
            return len(self.queue.dlq_list(where))
        clauses, params = dlq_conditions(SQLITE, where)
        with sqlite_spelled(self.db) as conn:
            return int(
                conn.execute(f"SELECT count(*) FROM dead_letters{clauses}", params).fetchone()[0]
            )

    # -- requests --------------------------------------------------------------------

    def request(
        self, request_id: str, *, limit: int = 500
    ) -> tuple[RequestRecord | None, list[Event], str]:
        """A ledger row, the events that name the request, and how they were found.

        The events table has no request index: the search runs through the ``ts``
        index over the time the ledger row spans (``created_at`` … ``updated_at``, at
        most the last :data:`REQUEST_SPAN_S` of it). Every event kind that carries a
        request id also writes its ledger row, so a request without one can only be
        named by log records: those are read from the WARNING-and-above index, over
        the last hour.
        """
        rows = self.store.requests(request_id=request_id, limit=1)
        row = rows[0] if rows else None
        if row is None:
            end = time.time() + 1.0
            with self._read() as conn:
                found = [
                    row_to_event(r)
                    for r in conn.execute(
                        f"SELECT {EVENT_COLUMNS} FROM events WHERE {WARNINGS_ONLY}"
                        " AND ts >= ? AND ts < ? AND request_id = ? ORDER BY ts, id LIMIT ?",
                        (end - 3600.0, end, request_id, limit),
                    )
                ]
            return None, found, "no ledger row: warnings and errors of the last hour"
        end = row.updated_at + 1.0
        start = (row.created_at or row.updated_at) - 1.0
        how = "events between the ledger row's creation and its last update"
        if end - start > REQUEST_SPAN_S:
            start = end - REQUEST_SPAN_S
            how = f"events of the last {REQUEST_SPAN_S / 3600:g} hours before its last update"
        found = self.store.events(
            EventFilter(since=start, until=end, request_id=request_id, limit=limit)
        )
        return row, found, how

    # -- watches ---------------------------------------------------------------------

    def _has_table(self, conn: Any, name: str) -> bool:
        if self._pg:
            schema = self.db.schema  # type: ignore[union-attr]
            found = conn.execute("SELECT to_regclass(?)", (f'"{schema}".{name}',)).fetchone()
            return found is not None and found[0] is not None
        query = "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?"
        return conn.execute(query, (name,)).fetchone() is not None

    def watches(self, limit: int = 20) -> list[dict[str, Any]]:
        """The newest watch runs (none when no watch ever ran on this store)."""
        with sqlite_spelled(self.db) as conn:
            if not self._has_table(conn, "watch_runs"):
                return []
            rows = conn.execute(
                "SELECT run_id, plan_name, mode, status, window_start, window_end, verdict,"
                " verdict_reason, ended_early, updated_at FROM watch_runs"
                " ORDER BY created_at DESC LIMIT ?",
                (limit,),
            ).fetchall()
        keys = (
            "run_id",
            "plan_name",
            "mode",
            "status",
            "window_start",
            "window_end",
            "verdict",
            "verdict_reason",
            "ended_early",
            "updated_at",
        )
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def watch(self, run_id: str) -> dict[str, Any] | None:
        """One run: its plan, checkpoints (criteria and figures), next checkpoint time."""
        with sqlite_spelled(self.db) as conn:
            if not self._has_table(conn, "watch_runs"):
                return None
            row = conn.execute(
                "SELECT run_id, plan_name, mode, status, window_start, window_end, verdict,"
                " verdict_reason, ended_early, plan FROM watch_runs WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                return None
            records = [
                json.loads(r[0])
                for r in conn.execute(
                    "SELECT record FROM watch_checkpoints WHERE run_id = ? ORDER BY idx",
                    (run_id,),
                )
            ]
        plan = json.loads(row[9]) if row[9] else {}
        every = plan.get("checkpoint_every_s")
        next_at = None
        if row[6] is None and isinstance(every, int | float) and every > 0:
            last = records[-1]["at"] if records else row[4]
            next_at = min(float(last) + float(every), float(row[5]))
        return {
            "run_id": row[0],
            "plan_name": row[1],
            "mode": row[2],
            "status": row[3],
            "window_start": row[4],
            "window_end": row[5],
            "verdict": row[6],
            "verdict_reason": row[7],
            "ended_early": bool(row[8]),
            "checkpoint_every_s": every,
            "next_at": next_at,
            "checkpoints": records,
        }


def store_database(store: EventStore) -> SqliteDatabase | PostgresDatabase:
    """The SQLite or PostgreSQL database the dashboard reads ``store`` from.

    Raises:
        ConfigError: the store is neither.
    """
    from steadyq.telemetry.store_postgres import PostgresStore

    if isinstance(store, PostgresStore):
        return store.db
    try:
        return store.sqlite_store("the dashboard").db
    except ConfigError:
        raise ConfigError(
            "the dashboard works on a SQLite or PostgreSQL store (sqlite:///PATH or"
            f" postgresql://…); this store is {type(store).__name__}"
        ) from None


def _object(value: Any) -> dict[str, Any]:
    """A JSON object column: text on SQLite, already decoded (jsonb) on PostgreSQL."""
    if not value:
        return {}
    return value if isinstance(value, dict) else json.loads(value)
