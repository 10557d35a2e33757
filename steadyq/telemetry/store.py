"""The telemetry store contract: where events, executions and the request ledger live.

The store is written by workers and read by the CLI, the watch and the reports.
Besides the raw events it keeps two views that are derived from them *in the same
write*, so they can never drift from the events:

* ``executions``: one row per ``steadyq worker`` run (started, ready, finished);
* ``requests``: the idempotency ledger, one row per ``request_id``
  (``completed`` once a ``message.succeeded`` names it; ``failed`` when it was
  dead-lettered and never completed).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to read; every field narrows the set. Times are epoch seconds."""

    kinds: tuple[str, ...] | None = None
    since: float | None = None
    until: float | None = None
    min_severity: str | None = None
    execution_id: str | None = None
    message_id: str | None = None
    request_id: str | None = None
    limit: int | None = None
    newest_first: bool = False


@dataclass(frozen=True, slots=True)
class ExecutionRecord:
    """One execution: a single ``steadyq worker`` run."""

    execution_id: str
    status: str
    started_at: float
    ready_at: float | None = None
    finished_at: float | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def startup_s(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.started_at

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at

    def to_dict(self) -> dict[str, Any]:
        from steadyq.durations import rfc3339

        def stamp(value: float | None) -> str | None:
            return None if value is None else rfc3339(value)

        return {
            "execution_id": self.execution_id,
            "status": self.status,
            "started_at": stamp(self.started_at),
            "ready_at": stamp(self.ready_at),
            "finished_at": stamp(self.finished_at),
            "duration_s": _round(self.duration_s),
            "startup_s": _round(self.startup_s),
            "counts": self.data.get("counts", {}),
            "host": self.data.get("host"),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# Execution statuses. "running" is only ever a row without a finished event.
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
INTERRUPTED = "interrupted"
EXECUTION_STATUSES = (RUNNING, SUCCEEDED, FAILED, TIMED_OUT, INTERRUPTED)


class EventStore(abc.ABC):
    """Where telemetry lives. Implementations: memory, sqlite.

    Methods raise :class:`~steadyq.errors.BackendError` when the backend fails.
    """

    @abc.abstractmethod
    def write(self, events: Sequence[Event]) -> None:
        """Store ``events`` and update the executions and ledger views, atomically."""

    @abc.abstractmethod
    def events(self, where: EventFilter | None = None) -> list[Event]:
        """Events matching ``where``, oldest first unless ``newest_first``."""

    @abc.abstractmethod
    def executions(
        self, *, since: float | None = None, limit: int | None = None
    ) -> list[ExecutionRecord]:
        """Executions started at or after ``since``, newest first."""

    @abc.abstractmethod
    def completed(self, request_ids: Iterable[str]) -> set[str]:
        """The subset of ``request_ids`` that the ledger records as completed."""

    def close(self) -> None:  # noqa: B027 - optional hook, most stores share a connection
        """Release connections. Idempotent."""


def execution_updates(event: Event) -> tuple[str, dict[str, Any]] | None:
    """What an execution event changes in the ``executions`` view, if anything."""
    if event.execution_id is None:
        return None
    if event.kind == ev.EXECUTION_STARTED:
        return "start", {"started_at": event.timestamp, "data": dict(event.data)}
    if event.kind == ev.EXECUTION_READY:
        return "ready", {"ready_at": event.timestamp}
    if event.kind == ev.EXECUTION_FINISHED:
        return "finish", {
            "finished_at": event.timestamp,
            "status": str(event.data.get("status", FAILED)),
            "data": dict(event.data),
        }
    return None


def ledger_update(event: Event) -> str | None:
    """The ledger status an event implies for its request, if any."""
    if event.request_id is None:
        return None
    if event.kind == ev.MESSAGE_SUCCEEDED:
        return "completed"
    if event.kind in (ev.MESSAGE_DEAD_LETTERED, ev.MESSAGE_REJECTED):
        return "failed"
    return None
