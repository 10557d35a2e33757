"""The watch's reader of a telemetry store: the contract, and the generic reader.

The measures (:mod:`steadyq.watch.measures`) never query a store themselves: they ask a
:class:`Reader` for the few rows and aggregates of one interval ``[a, b)`` (epoch
seconds, ``a`` included, ``b`` excluded). Each store supplies its own reader through
:meth:`~steadyq.telemetry.store.EventStore.watch_reader`: the SQLite store's
(:class:`~steadyq.telemetry.reader_sqlite.SqliteReader`) aggregates in SQL; a store
without one of its own is read through its public methods by :class:`StoreReader`.

Every method may raise :class:`~steadyq.errors.BackendError` when the store fails; the
watch then retries the whole checkpoint, so a reader keeps no state between calls.
"""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from steadyq.gate import REASONS
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import SEVERITY_RANK, EventFilter, severity_rank

if TYPE_CHECKING:
    from steadyq.telemetry.store import EventStore

WARNING_RANK: Final = SEVERITY_RANK["WARNING"]
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


def execution_rows(rows: Iterable[Sequence[Any]]) -> list[ExecutionRow]:
    """Rows of (execution_id, status, started_at, finished_at, max_runtime_s), as a SQL
    reader selects them, as :class:`ExecutionRow`."""
    return [
        ExecutionRow(str(eid), str(status), float(started), finished, positive(budget))
        for eid, status, started, finished, budget in rows
    ]


def startup_seconds(rows: Iterable[Sequence[Any]]) -> Iterator[float]:
    """Startup times from rows of (the ready event's duration_ms, its time since the
    execution started): the duration when the event has one, else the gap."""
    for duration_ms, since_start in rows:
        if duration_ms is not None:
            yield float(duration_ms) / 1000.0
        elif since_start is not None:
            yield float(since_start)


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


class StoreReader(Reader):
    """Any :class:`~steadyq.telemetry.store.EventStore`, through its public read
    methods: the default :meth:`~steadyq.telemetry.store.EventStore.watch_reader`."""

    def __init__(self, store: EventStore) -> None:
        self._store = store

    def _events(self, a: float, b: float, kinds: tuple[str, ...] | None = None) -> list[ev.Event]:
        return self._store.events(EventFilter(kinds=kinds, since=a, until=b))

    def kind_counts(self, a: float, b: float) -> dict[str, int]:
        return dict(Counter(e.kind for e in self._events(a, b, ev.KINDS)))

    def warnings(self, a: float, b: float) -> int:
        return len(self._store.events(EventFilter(since=a, until=b, min_severity="WARNING")))

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
            if severity_rank(e.severity) < WARNING_RANK or not e.message:
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
