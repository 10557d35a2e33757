"""The watch's reader of a telemetry store: the contract, and the readers steadyq has.

The measures (:mod:`steadyq.watch.measures`) never query a store themselves: they ask a
:class:`Reader` for the few rows and aggregates of one interval ``[a, b)`` (epoch
seconds, ``a`` included, ``b`` excluded). A store supplies its own reader behind the
store interface: a store with a ``watch_reader()`` method returns one (the SQLite store's
is :class:`SqliteReader`, which aggregates in SQL); any other store is read through its
public methods by :class:`StoreReader`. :func:`reader_for` picks.

Every method may raise :class:`~steadyq.errors.BackendError` when the store fails; the
watch then retries the whole checkpoint, so a reader keeps no state between calls.
"""

from __future__ import annotations

import abc
import sqlite3
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from steadyq._sqlite import WARNINGS_ONLY
from steadyq.gate import REASONS
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import SEVERITY_RANK, severity_rank
from steadyq.telemetry.store import EventFilter, EventStore
from steadyq.telemetry.store_sqlite import SqliteStore

__all__ = [
    "FAILURE_KINDS",
    "PATTERN_KINDS",
    "ExecutionRow",
    "Reader",
    "SqliteReader",
    "StoreReader",
    "positive",
    "reader_for",
]

_WARNING_RANK: Final = SEVERITY_RANK["WARNING"]
FAILURE_KINDS: Final = (ev.MESSAGE_FAILED, ev.MESSAGE_TIMED_OUT, ev.MESSAGE_DEAD_LETTERED)
# Texts mined for error patterns: log records and failure events of WARNING and above.
# A rejection's own log line is left out: rejections have their per-reason measures,
# and after a fix that adds the gate they would otherwise all be "new patterns".
PATTERN_KINDS: Final = (ev.LOG, *FAILURE_KINDS, ev.EXECUTION_FINISHED)


@dataclass(frozen=True, slots=True)
class ExecutionRow:
    """One execution as the measures see it. ``max_runtime_s`` is its own time budget
    (from its ``execution.started`` data), None when it stated none."""

    execution_id: str
    status: str
    started_at: float
    finished_at: float | None
    max_runtime_s: float | None


def positive(value: Any) -> float | None:
    """``value`` as a float when it is a positive number, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value > 0 else None


class Reader(abc.ABC):
    """The rows the measures need, for one interval ``[a, b)``.

    Implement every abstract method; :meth:`session` is optional. Results must not
    depend on calls made before (the watch may read an interval again after a failure).

    Raises (every method):
        BackendError: the store could not be read.
    """

    @contextmanager
    def session(self) -> Iterator[None]:
        """Everything read inside sees one state of the store, where the store allows."""
        yield

    @abc.abstractmethod
    def kind_counts(self, a: float, b: float) -> dict[str, int]:
        """How many events of each kind of :data:`steadyq.telemetry.events.KINDS`."""

    @abc.abstractmethod
    def warnings(self, a: float, b: float) -> int:
        """How many events of severity WARNING and above (any kind)."""

    @abc.abstractmethod
    def rejections(
        self, a: float, b: float
    ) -> Iterable[tuple[str | None, str | None, int | None, float | None]]:
        """(reason, message_id, attempt, duration_ms) of ``message.rejected``, oldest first."""

    @abc.abstractmethod
    def failures(
        self, a: float, b: float
    ) -> Iterable[tuple[str, str | None, str | None, str | None]]:
        """(kind, reason, request_id, execution_id) of failed / timed-out / dead-lettered."""

    @abc.abstractmethod
    def texts(self, a: float, b: float) -> Iterable[tuple[str, int]]:
        """Distinct texts to mine for patterns, with counts, in order of first appearance:
        messages of :data:`PATTERN_KINDS` events of WARNING and above, except ``log``
        events whose reason is a gate reason code."""

    @abc.abstractmethod
    def startups(self, a: float, b: float) -> Iterable[float]:
        """Startup seconds of executions that became ready in the interval."""

    @abc.abstractmethod
    def executions_started(self, a: float, b: float) -> list[ExecutionRow]:
        """Executions whose start lies in the interval."""

    @abc.abstractmethod
    def executions_open_at(self, t: float) -> list[ExecutionRow]:
        """Executions started before ``t`` whose finish, if any, is not before ``t``."""

    @abc.abstractmethod
    def executions_by_id(self, ids: Sequence[str]) -> list[ExecutionRow]:
        """The current rows of these executions (unknown ids are left out)."""


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
        for duration_ms, since_start in self._query(sql, (ev.EXECUTION_READY, a, b)):
            if duration_ms is not None:
                yield float(duration_ms) / 1000.0
            elif since_start is not None:
                yield float(since_start)

    @staticmethod
    def _rows(rows: Iterable[tuple[Any, ...]]) -> list[ExecutionRow]:
        return [
            ExecutionRow(str(eid), str(status), float(started), finished, positive(budget))
            for eid, status, started, finished, budget in rows
        ]

    def executions_started(self, a: float, b: float) -> list[ExecutionRow]:
        sql = f"SELECT {_EXEC_COLUMNS} FROM executions WHERE started_at >= ? AND started_at < ?"
        return self._rows(self._query(sql, (a, b)))

    def executions_open_at(self, t: float) -> list[ExecutionRow]:
        sql = (
            f"SELECT {_EXEC_COLUMNS} FROM executions"
            " WHERE started_at < ? AND (finished_at IS NULL OR finished_at >= ?)"
        )
        return self._rows(self._query(sql, (t, t)))

    def executions_by_id(self, ids: Sequence[str]) -> list[ExecutionRow]:
        found: list[ExecutionRow] = []
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            sql = (
                f"SELECT {_EXEC_COLUMNS} FROM executions"
                f" WHERE execution_id IN ({','.join('?' * len(chunk))})"
            )
            found.extend(self._rows(self._query(sql, chunk)))
        return found


class StoreReader(Reader):
    """Any :class:`EventStore`, through its public read methods (the memory store, tests)."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def _events(self, a: float, b: float, kinds: tuple[str, ...] | None = None) -> list[ev.Event]:
        return self._store.events(EventFilter(kinds=kinds, since=a, until=b))

    def kind_counts(self, a: float, b: float) -> dict[str, int]:
        return dict(Counter(e.kind for e in self._events(a, b, ev.KINDS)))

    def warnings(self, a: float, b: float) -> int:
        return sum(1 for e in self._events(a, b) if severity_rank(e.severity) >= _WARNING_RANK)

    def rejections(
        self, a: float, b: float
    ) -> Iterator[tuple[str | None, str | None, int | None, float | None]]:
        for e in self._events(a, b, (ev.MESSAGE_REJECTED,)):
            yield e.reason, e.message_id, e.attempt, e.duration_ms

    def failures(
        self, a: float, b: float
    ) -> Iterator[tuple[str, str | None, str | None, str | None]]:
        for e in self._events(a, b, FAILURE_KINDS):
            yield e.kind, e.reason, e.request_id, e.execution_id

    def texts(self, a: float, b: float) -> Iterator[tuple[str, int]]:
        counts: Counter[str] = Counter()  # insertion order = first appearance
        for e in self._events(a, b, PATTERN_KINDS):
            if severity_rank(e.severity) < _WARNING_RANK or not e.message:
                continue
            if e.kind == ev.LOG and (e.reason or "") in REASONS:
                continue
            counts[e.message] += 1
        yield from counts.items()

    def startups(self, a: float, b: float) -> Iterator[float]:
        started = {r.execution_id: r.started_at for r in self._store.executions()}
        for e in self._events(a, b, (ev.EXECUTION_READY,)):
            if e.duration_ms is not None:
                yield e.duration_ms / 1000.0
            elif e.execution_id in started:
                yield e.timestamp - started[e.execution_id]

    def _all(self) -> list[ExecutionRow]:
        return [
            ExecutionRow(
                r.execution_id,
                r.status,
                r.started_at,
                r.finished_at,
                positive(r.data.get("max_runtime_s")),
            )
            for r in self._store.executions()
        ]

    def executions_started(self, a: float, b: float) -> list[ExecutionRow]:
        return [r for r in self._all() if a <= r.started_at < b]

    def executions_open_at(self, t: float) -> list[ExecutionRow]:
        return [
            r
            for r in self._all()
            if r.started_at < t and (r.finished_at is None or r.finished_at >= t)
        ]

    def executions_by_id(self, ids: Sequence[str]) -> list[ExecutionRow]:
        wanted = set(ids)
        return [r for r in self._all() if r.execution_id in wanted]


def reader_for(store: EventStore) -> Reader:
    """The reader a store supplies (``store.watch_reader()``), else the generic one."""
    supplied = getattr(store, "watch_reader", None)
    if callable(supplied):
        reader = supplied()
        if isinstance(reader, Reader):
            return reader
    if isinstance(store, SqliteStore):
        return SqliteReader(store)
    return StoreReader(store)
