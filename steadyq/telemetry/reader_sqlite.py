"""The SQLite store's watch reader: every aggregate of an interval in SQL.

Returned by :meth:`steadyq.telemetry.store_sqlite.SqliteStore.watch_reader`; the
contract is :class:`steadyq.telemetry.reader.Reader`.
"""

from __future__ import annotations

import sqlite3
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
    from steadyq.telemetry.store_sqlite import SqliteStore


_EXEC_COLUMNS: Final = (
    "execution_id, status, started_at, finished_at, json_extract(data, '$.max_runtime_s')"
)
_PATTERN_KIND_SQL: Final = ",".join(f"'{k}'" for k in PATTERN_KINDS)
_REASON_SQL: Final = ",".join(f"'{r}'" for r in REASONS)
_KIND_SQL: Final = ",".join(f"'{k}'" for k in ev.KINDS)
_FAILURE_KIND_SQL: Final = ",".join(f"'{k}'" for k in FAILURE_KINDS)


class SqliteReader(Reader):
    """Aggregates in SQL over the ``(kind, ts)`` and partial WARNING indexes.

    Bulk kinds (received, succeeded) are only counted, from the covering
    ``(kind, ts)`` index; rows are read only for the rare kinds, and WARNING-and-above
    events come through the partial ``events_warn_ts`` index. ``INDEXED BY`` pins the
    rare-kind queries to ``(kind, ts)``: because of their ``ORDER BY ts`` the planner
    may otherwise walk the ``ts`` index over every row of the interval.
    """

    def __init__(self, store: SqliteStore) -> None:
        self._db = store.db
        self._conn: sqlite3.Connection | None = None

    @contextmanager
    def session(self) -> Iterator[None]:
        # reading() maps driver errors to BackendError, also those raised while the
        # caller iterates over a cursor inside the block
        with self._db.reading() as conn:
            began = not conn.in_transaction
            if began:
                conn.execute("BEGIN")  # one read snapshot for every query of the checkpoint
            self._conn = conn
            try:
                yield
            finally:
                self._conn = None
                if began:
                    conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        if self._conn is None:
            raise RuntimeError("the SQLite reader is used outside its session")
        return self._conn.execute(sql, params)

    def kind_counts(self, a: float, b: float) -> dict[str, int]:
        sql = (
            f"SELECT kind, count(*) FROM events WHERE kind IN ({_KIND_SQL})"
            " AND ts >= ? AND ts < ? GROUP BY kind"
        )
        return {str(kind): int(n) for kind, n in self._query(sql, (a, b))}

    def warnings(self, a: float, b: float) -> int:
        # the literal predicate is what lets SQLite use the partial index
        sql = f"SELECT count(*) FROM events WHERE {WARNINGS_ONLY} AND ts >= ? AND ts < ?"
        return int(self._query(sql, (a, b)).fetchone()[0])

    def rejections(
        self, a: float, b: float
    ) -> Iterator[tuple[str | None, str | None, int | None, float | None]]:
        sql = (
            "SELECT reason, message_id, attempt, duration_ms FROM events INDEXED BY events_kind_ts"
            " WHERE kind = ? AND ts >= ? AND ts < ? ORDER BY ts, id"
        )
        yield from self._query(sql, (ev.MESSAGE_REJECTED, a, b))

    def failures(
        self, a: float, b: float
    ) -> Iterator[tuple[str, str | None, str | None, str | None]]:
        sql = (
            "SELECT kind, reason, request_id, execution_id FROM events INDEXED BY events_kind_ts"
            f" WHERE kind IN ({_FAILURE_KIND_SQL}) AND ts >= ? AND ts < ? ORDER BY ts, id"
        )
        yield from self._query(sql, (a, b))

    def texts(self, a: float, b: float) -> Iterator[tuple[str, int]]:
        sql = (
            "SELECT message, count(*), min(ts) FROM events"
            f" WHERE {WARNINGS_ONLY} AND ts >= ? AND ts < ?"
            f" AND kind IN ({_PATTERN_KIND_SQL})"
            f" AND NOT (kind = '{ev.LOG}' AND coalesce(reason, '') IN ({_REASON_SQL}))"
            " AND message IS NOT NULL AND message != ''"
            " GROUP BY message ORDER BY min(ts), min(id)"
        )
        for message, n, _first in self._query(sql, (a, b)):
            yield str(message), int(n)

    def startups(self, a: float, b: float) -> Iterator[float]:
        sql = (
            "SELECT e.duration_ms, e.ts - x.started_at FROM events AS e"
            " LEFT JOIN executions AS x ON x.execution_id = e.execution_id"
            " WHERE e.kind = ? AND e.ts >= ? AND e.ts < ?"
        )
        yield from startup_seconds(self._query(sql, (ev.EXECUTION_READY, a, b)))

    def executions_started(self, a: float, b: float) -> list[ExecutionRow]:
        sql = f"SELECT {_EXEC_COLUMNS} FROM executions WHERE started_at >= ? AND started_at < ?"
        return execution_rows(self._query(sql, (a, b)))

    def executions_open_at(self, t: float) -> list[ExecutionRow]:
        sql = (
            f"SELECT {_EXEC_COLUMNS} FROM executions"
            " WHERE started_at < ? AND (finished_at IS NULL OR finished_at >= ?)"
        )
        return execution_rows(self._query(sql, (t, t)))

    def executions_by_id(self, ids: Sequence[str]) -> list[ExecutionRow]:
        found: list[ExecutionRow] = []
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            sql = (
                f"SELECT {_EXEC_COLUMNS} FROM executions"
                f" WHERE execution_id IN ({','.join('?' * len(chunk))})"
            )
            found.extend(execution_rows(self._query(sql, chunk)))
        return found
