"""The watch's reader of a PostgreSQL store: the measures' aggregates run in SQL.

The same queries as :class:`~steadyq.watch.sources.store.SqliteReader`, in
PostgreSQL's dialect, over the same indexes: bulk kinds are only counted from
``(kind, ts)``, WARNING-and-above rows come through the partial ``events_warn_ts``
index (the WHERE repeats its condition, as the planner needs), and a checkpoint's
queries share one REPEATABLE READ snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final

from steadyq._sql import WARNINGS_ONLY
from steadyq.gate import REASONS
from steadyq.telemetry import events as ev
from steadyq.telemetry.reader import (
    FAILURE_KINDS,
    PATTERN_KINDS,
    ExecutionRow,
    Reader,
    execution_rows,
    startup_seconds,
)

if TYPE_CHECKING:
    import psycopg

    from steadyq.telemetry.store_postgres import PostgresStore

_EXEC_COLUMNS: Final = "execution_id, status, started_at, finished_at, data -> 'max_runtime_s'"


class PostgresReader(Reader):
    """Aggregates in SQL on a :class:`~steadyq.telemetry.store_postgres.PostgresStore`."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store
        self._db = store.db
        self._conn: psycopg.Connection[Any] | None = None

    @contextmanager
    def session(self) -> Iterator[None]:
        with self._store.snapshot() as conn:
            self._conn = conn
            try:
                yield
            finally:
                self._conn = None

    def _query(self, sql: str, params: Sequence[Any] | dict[str, Any]) -> list[tuple[Any, ...]]:
        if self._conn is not None:
            return self._conn.execute(self._db.sql(sql), params).fetchall()
        with self._db.reading() as conn:  # outside a session: a snapshot of its own
            return conn.execute(self._db.sql(sql), params).fetchall()

    def kind_counts(self, a: float, b: float) -> dict[str, int]:
        sql = (
            "SELECT kind, count(*) FROM SQ.events WHERE kind = ANY(%s)"
            " AND ts >= %s AND ts < %s GROUP BY kind"
        )
        return {str(kind): int(n) for kind, n in self._query(sql, (list(ev.KINDS), a, b))}

    def warnings(self, a: float, b: float) -> int:
        sql = f"SELECT count(*) FROM SQ.events WHERE {WARNINGS_ONLY} AND ts >= %s AND ts < %s"
        return int(self._query(sql, (a, b))[0][0])

    def rejections(
        self, a: float, b: float
    ) -> Iterator[tuple[str | None, str | None, int | None, float | None]]:
        sql = (
            "SELECT reason, message_id, attempt, duration_ms FROM SQ.events"
            " WHERE kind = %s AND ts >= %s AND ts < %s ORDER BY ts, id"
        )
        yield from self._query(sql, (ev.MESSAGE_REJECTED, a, b))

    def failures(
        self, a: float, b: float
    ) -> Iterator[tuple[str, str | None, str | None, str | None]]:
        sql = (
            "SELECT kind, reason, request_id, execution_id FROM SQ.events"
            " WHERE kind = ANY(%s) AND ts >= %s AND ts < %s ORDER BY ts, id"
        )
        yield from self._query(sql, (list(FAILURE_KINDS), a, b))

    def texts(self, a: float, b: float) -> Iterator[tuple[str, int]]:
        sql = (
            "SELECT message, count(*) FROM SQ.events"
            f" WHERE {WARNINGS_ONLY} AND ts >= %s AND ts < %s AND kind = ANY(%s)"
            " AND NOT (kind = %s AND coalesce(reason, '') = ANY(%s))"
            " AND message IS NOT NULL AND message <> ''"
            " GROUP BY message ORDER BY min(ts), min(id)"
        )
        params = (a, b, list(PATTERN_KINDS), ev.LOG, list(REASONS))
        for message, n in self._query(sql, params):
            yield str(message), int(n)

    def startups(self, a: float, b: float) -> Iterator[float]:
        sql = (
            "SELECT e.duration_ms, e.ts - x.started_at FROM SQ.events AS e"
            " LEFT JOIN SQ.executions AS x ON x.execution_id = e.execution_id"
            " WHERE e.kind = %s AND e.ts >= %s AND e.ts < %s ORDER BY e.ts, e.id"
        )
        yield from startup_seconds(self._query(sql, (ev.EXECUTION_READY, a, b)))

    def executions_started(self, a: float, b: float) -> list[ExecutionRow]:
        sql = (
            f"SELECT {_EXEC_COLUMNS} FROM SQ.executions WHERE started_at >= %s AND started_at < %s"
            " ORDER BY started_at, execution_id"
        )
        return execution_rows(self._query(sql, (a, b)))

    def executions_open_at(self, t: float) -> list[ExecutionRow]:
        sql = (
            f"SELECT {_EXEC_COLUMNS} FROM SQ.executions"
            " WHERE started_at < %s AND (finished_at IS NULL OR finished_at >= %s)"
            " ORDER BY started_at, execution_id"
        )
        return execution_rows(self._query(sql, (t, t)))

    def executions_by_id(self, ids: Sequence[str]) -> list[ExecutionRow]:
        if not ids:
            return []
        sql = f"SELECT {_EXEC_COLUMNS} FROM SQ.executions WHERE execution_id = ANY(%s)"
        return execution_rows(self._query(sql, (list(ids),)))
