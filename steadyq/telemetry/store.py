"""The telemetry store contract: where events, executions and the request ledger live.

The store is written by workers and read by the CLI, the watch and the reports.
Besides the raw events it keeps two views that are derived from them *in the same
write*, so they can never drift from the events:

* ``executions``: one row per ``steadyq worker`` run (started, ready, finished);
* ``requests``: the request ledger, one row per ``request_id``, whose status
  moves ``pending`` (published, or waiting for a retry) → ``processing`` (a
  worker accepted it) → ``completed`` (a ``message.succeeded`` names it) or
  ``failed`` (rejected or dead-lettered). ``completed`` is final: it is what the
  worker's duplicate check reads.

How a ledger row moves is written once, here: :func:`ledger_update` (what an event
changes) and :func:`move_ledger_row` (the row after a change). Every store
composes a write's changes with them, in event order, onto the rows it holds, and
stores the composed rows; a store's own storage only refuses to overwrite a row that
is already ``completed`` (a concurrent writer may have completed it meanwhile).
docs/store.md is the contract in prose; ``tests/stores`` is the suite every store
passes.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from steadyq.durations import rfc3339
from steadyq.errors import ConfigError
from steadyq.telemetry import events as ev
from steadyq.telemetry.attempts import AttemptCount, AttemptCounter
from steadyq.telemetry.events import Event, EventFilter, quick_init
from steadyq.telemetry.reader import Reader, StoreReader

if TYPE_CHECKING:
    from steadyq.telemetry.store_sqlite import SqliteStore

__all__ = [
    "LEDGER_COLUMNS",
    "AttemptCount",
    "AttemptCounter",
    "EventFilter",
    "EventStore",
    "ExecutionRecord",
    "LedgerChange",
    "LedgerRow",
    "PruneCounts",
    "RequestRecord",
    "apply_ledger_change",
    "compose_ledger",
    "compose_ledger_rows",
    "ledger_update",
    "move_ledger_row",
]


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

    def as_of(self, now: float) -> ExecutionRecord:
        """This execution as it stands at ``now``: one still ``running`` past its time
        budget (``max_runtime_s`` of its start) was killed without writing its finish
        (a task timeout, SIGKILL, a lost VM), so it reads as ``timed_out``, ended when
        its budget ran out. The watch counts it the same way."""
        budget = self.data.get("max_runtime_s")
        if self.status != RUNNING or not isinstance(budget, int | float) or budget <= 0:
            return self
        if now <= self.started_at + budget:
            return self
        return replace(self, status=TIMED_OUT, finished_at=self.started_at + budget)

    def to_dict(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "status": self.status,
            "started_at": _stamp(self.started_at),
            "ready_at": _stamp(self.ready_at),
            "finished_at": _stamp(self.finished_at),
            "duration_s": _round(self.duration_s),
            "startup_s": _round(self.startup_s),
            "counts": self.data.get("counts", {}),
            "host": self.data.get("host"),
        }


def _stamp(value: float | None) -> str | None:
    return None if value is None else rfc3339(value)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# Execution statuses. "running" is only ever a row without a finished event.
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed_out"
INTERRUPTED = "interrupted"
EXECUTION_STATUSES = (RUNNING, SUCCEEDED, FAILED, TIMED_OUT, INTERRUPTED)


class EventStore(AttemptCounter):
    """Where telemetry lives. Implementations: memory (``store_memory``), sqlite
    (``store_sqlite``). The contract in prose is docs/store.md; ``tests/stores``
    runs one suite against every store.

    A store is also an :class:`~steadyq.telemetry.attempts.AttemptCounter`.
    Methods raise :class:`~steadyq.errors.BackendError` when the backend fails.
    """

    @abc.abstractmethod
    def write(self, events: Sequence[Event]) -> None:
        """Store ``events`` and update the executions and ledger views, atomically:
        the ledger by :func:`compose_ledger` (the one rule), and the claims that
        outcome events end released (:func:`claim_releases`)."""

    @abc.abstractmethod
    def events(self, where: EventFilter | None = None) -> list[Event]:
        """Events matching ``where``, oldest first unless ``newest_first``."""

    @abc.abstractmethod
    def executions(
        self, *, since: float | None = None, limit: int | None = None, now: float | None = None
    ) -> list[ExecutionRecord]:
        """Executions started at or after ``since``, newest first, each as it stands at
        ``now`` (default: the current time; see :meth:`ExecutionRecord.as_of`)."""

    @abc.abstractmethod
    def completed(self, request_ids: Iterable[str]) -> set[str]:
        """The subset of ``request_ids`` that the ledger records as completed."""

    @abc.abstractmethod
    def requests(
        self,
        *,
        status: str | None = None,
        request_id: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[RequestRecord]:
        """Ledger rows, most recently updated first; ``since`` bounds ``updated_at``."""

    @abc.abstractmethod
    def outcomes_of(self, message_ids: Sequence[str]) -> dict[str, Event]:
        """The final outcome recorded for each message that has one (its
        ``message.succeeded``, ``duplicate``, ``rejected`` or ``dead_lettered`` event).

        A queue that does not share this store may deliver a message again after its
        outcome was recorded, when the worker died before the queue heard of it; the
        worker then settles it as recorded instead of deciding, and recording, again.
        """

    # -- claims: which execution may run a request now ------------------------------
    # A worker claims the request ids of what it pulled before it runs them, and the
    # outcome events it writes release them (in the same write). So a second copy of a
    # request, pulled anywhere while the first runs, waits and is then acknowledged as a
    # duplicate, or runs if the first failed. A claim lapses at ``until``: a dead
    # worker's requests are free again once its leases would have run out.

    @abc.abstractmethod
    def claim(self, request_ids: Sequence[str], owner: str, until: float) -> dict[str, str]:
        """Claim each request for ``owner`` until ``until`` (wall clock), atomically.

        Returns, for each id, :data:`CLAIMED` (now held by ``owner``, also when it
        already was), :data:`CLAIM_COMPLETED` (the ledger records the request as
        completed: nothing is claimed) or :data:`CLAIM_BUSY` (another owner holds a
        claim that has not lapsed).

        Raises:
            BackendError: the store failed; nothing was claimed.
        """

    @abc.abstractmethod
    def extend_claims(self, request_ids: Sequence[str], owner: str, until: float) -> None:
        """Move the lapse of ``owner``'s claims on ``request_ids`` to ``until``.
        Claims ``owner`` no longer holds are left alone."""

    @abc.abstractmethod
    def release_claims(self, request_ids: Sequence[str], owner: str) -> None:
        """Drop ``owner``'s claims on ``request_ids`` (outcome events release their
        own; this is for work given back without an outcome)."""

    # -- delivery attempts of brokers that cannot count them durably (Pub/Sub) ------
    # count_attempts / attempts_of / settle_attempts / prune_attempts: the
    # AttemptCounter contract (steadyq.telemetry.attempts), which every store keeps.

    # -- retention ----------------------------------------------------------------

    def prune(
        self, older_than_s: float, *, now: float | None = None, dry_run: bool = False
    ) -> PruneCounts:
        """Drop what is older than ``now - older_than_s``: events, *finished* ledger
        rows (``completed`` or ``failed``, by ``updated_at``), finished executions (by
        their finish, or by the end of their budget for one that never wrote its
        finish: :meth:`ExecutionRecord.as_of`) and lapsed claims. Pending and
        processing requests and running executions are kept whatever their age.
        ``dry_run`` counts without dropping. Returns the counts.

        A pruned ``completed`` row no longer makes a later copy of its request a
        duplicate: keep rows longer than a copy can arrive (a queue's own retention).

        Raises:
            ValueError: ``older_than_s`` is not positive.
            ConfigError: this store keeps no retention.
            BackendError: the store failed; what was dropped before stays dropped
                (each part is dropped in its own short transactions).
        """
        raise ConfigError(f"{type(self).__name__} cannot prune old telemetry")

    # -- what other parts ask of a store ------------------------------------------

    def watch_reader(self) -> Reader:
        """The reader the watch's measures read this store through (each store's
        reads written once: the SQLite store aggregates in SQL). Default: the generic
        :class:`~steadyq.telemetry.reader.StoreReader` over the public methods."""
        return StoreReader(self)

    def sqlite_store(self, purpose: str) -> SqliteStore:
        """This store as a SQLite store, for a piece that works on SQLite files only
        (``steadyq import gcloud``, the live ``--source`` watch).

        Raises:
            ConfigError: this store is not a SQLite file; the message names ``purpose``.
        """
        raise ConfigError(
            f"{purpose} works on a SQLite store (sqlite:///PATH); this store is"
            f" {type(self).__name__}"
        )


# What a claim found (EventStore.claim).
CLAIMED = "claimed"
CLAIM_COMPLETED = "completed"
CLAIM_BUSY = "busy"

# The outcome events that end a claim: their execution has decided the request.
CLAIM_ENDING_KINDS = frozenset(
    (
        ev.MESSAGE_SUCCEEDED,
        ev.MESSAGE_FAILED,
        ev.MESSAGE_TIMED_OUT,
        ev.MESSAGE_DEAD_LETTERED,
        ev.MESSAGE_REJECTED,
        ev.MESSAGE_DUPLICATE,
    )
)


# The outcomes that end a message's life: recorded once per message.
FINAL_OUTCOME_KINDS = frozenset(
    (ev.MESSAGE_SUCCEEDED, ev.MESSAGE_DUPLICATE, ev.MESSAGE_REJECTED, ev.MESSAGE_DEAD_LETTERED)
)


def claim_releases(events: Iterable[Event]) -> list[tuple[str, str]]:
    """The (request_id, owner) claims that ``events`` end."""
    return [
        (e.request_id, e.execution_id)
        for e in events
        if e.kind in CLAIM_ENDING_KINDS and e.request_id is not None and e.execution_id is not None
    ]


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


# Request statuses in the ledger.
PENDING = "pending"
PROCESSING = "processing"
COMPLETED = "completed"
REQUEST_FAILED = "failed"
REQUEST_STATUSES = (PENDING, PROCESSING, COMPLETED, REQUEST_FAILED)


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request in the ledger. Times are epoch seconds.

    ``fields`` is what the workload wants shown for the request, a JSON object: the
    request model's ``ledger_fields()`` when it is published or received, merged with
    the ``ledger`` object of the handler's result when it completes (the content
    workload: ``modalities`` asked, then produced, and the ``artifacts`` it wrote).
    ``duration_s`` is the handler time of the attempt that completed it.
    """

    request_id: str
    status: str
    updated_at: float
    message_id: str | None = None
    execution_id: str | None = None
    attempts: int | None = None
    fields: dict[str, Any] | None = None
    duration_s: float | None = None
    error: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "status": self.status,
            "fields": self.fields,
            "duration_s": _round(self.duration_s),
            "attempts": self.attempts,
            "message_id": self.message_id,
            "execution_id": self.execution_id,
            "error": self.error,
            "created_at": _stamp(self.created_at),
            "started_at": _stamp(self.started_at),
            "completed_at": _stamp(self.completed_at),
            "failed_at": _stamp(self.failed_at),
            "updated_at": _stamp(self.updated_at),
        }


@quick_init
@dataclass(frozen=True, slots=True)
class LedgerChange:
    """What one event changes in its request's ledger row; ``None`` fields keep theirs."""

    request_id: str
    status: str
    at: float
    message_id: str | None = None
    execution_id: str | None = None
    attempts: int | None = None
    fields: dict[str, Any] | None = None  # merged into the row's (merge_fields)
    duration_s: float | None = None
    error: str | None = None


def merge_fields(old: dict[str, Any] | None, new: dict[str, Any] | None) -> dict[str, Any] | None:
    """``new`` merged into ``old`` key by key, nested objects too.

    The changes carry no nulls (:func:`ledger_fields_of` drops them), so nothing is
    ever deleted.
    """
    if new is None:
        return old
    if old is None:
        return new
    merged = dict(old)
    for key, value in new.items():
        before = merged.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            merged[key] = merge_fields(before, value)
        else:
            merged[key] = value
    return merged


_NO_FIELD = object()


def _json_value(value: Any) -> Any:
    """``value`` as the store keeps it (tuples as lists, unknown types as text), or
    ``_NO_FIELD`` for what JSON cannot hold (NaN, a key that is not text)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value  # the common cases first, by exact type
    if kind is dict or isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if type(key) is not str and not isinstance(key, str):
                return _NO_FIELD
            if item is None:
                continue  # a null keeps the earlier value: never stored
            plain = type(item)
            if plain is str or plain is int or plain is bool:
                out[key] = item
                continue
            kept = _json_value(item)
            if kept is _NO_FIELD:
                return _NO_FIELD
            out[key] = kept
        return out
    if kind is list or isinstance(value, list | tuple):
        items = []
        for item in value:
            plain = type(item)
            if plain is str or plain is int or plain is bool or item is None:
                items.append(item)
                continue
            kept = _json_value(item)
            if kept is _NO_FIELD:
                return _NO_FIELD
            items.append(kept)
        return items
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _NO_FIELD
    return str(value)


def ledger_fields_of(value: object) -> dict[str, Any] | None:
    """``value`` as ledger fields: a JSON object as the store keeps it, nulls left
    out (a null keeps the earlier value), or None when it is not an object, is empty,
    or holds what JSON cannot (NaN, keys that are not text).
    """
    if not isinstance(value, dict) or not value:
        return None
    fields = _json_value(value)
    return fields if isinstance(fields, dict) and fields else None


#: A ledger row's values in the order the rule works on them (RequestRecord's fields).
LEDGER_COLUMNS = (
    "request_id",
    "status",
    "updated_at",
    "message_id",
    "execution_id",
    "attempts",
    "fields",
    "duration_s",
    "error",
    "created_at",
    "started_at",
    "completed_at",
    "failed_at",
)
# LedgerRow indexes the rule uses
_STATUS, _UPDATED, _MESSAGE, _EXECUTION, _ATTEMPTS, _FIELDS, _DURATION, _ERROR = range(1, 9)
_CREATED, _STARTED, _COMPLETED, _FAILED = range(9, 13)

#: A ledger row as the rule works on it: a list of values in :data:`LEDGER_COLUMNS`
#: order (a store's own form, cheaper to compose than a frozen RequestRecord).
LedgerRow = list[Any]


def move_ledger_row(row: LedgerRow | None, c: LedgerChange) -> LedgerRow | None:
    """The ledger row after ``c``, or ``None`` when ``c`` changes nothing: THE rule.

    * a ``completed`` row is final: nothing moves it again;
    * the status and ``updated_at`` are the change's;
    * ``message_id``, ``execution_id``, ``attempts``, ``duration_s`` and ``error`` are
      the change's when it has them, else the row keeps its own;
    * ``fields`` merge key by key (:func:`merge_fields`: a new object when they change,
      the row's own object when they do not);
    * ``created_at`` is the first change's time; ``started_at`` / ``completed_at`` /
      ``failed_at`` are stamped by a change to ``processing`` / ``completed`` /
      ``failed`` (the latest such change's time).

    ``row`` is changed in place (and returned). Every store applies this rule,
    through :func:`compose_ledger_rows` or :func:`compose_ledger`; none has a copy.
    """
    status = c.status
    at = c.at
    if row is None:
        return [
            c.request_id,
            status,
            at,
            c.message_id,
            c.execution_id,
            c.attempts,
            c.fields,
            c.duration_s,
            c.error,
            at,
            at if status == PROCESSING else None,
            at if status == COMPLETED else None,
            at if status == REQUEST_FAILED else None,
        ]
    if row[_STATUS] == COMPLETED:
        return None
    row[_STATUS] = status
    row[_UPDATED] = at
    if c.message_id is not None:
        row[_MESSAGE] = c.message_id
    if c.execution_id is not None:
        row[_EXECUTION] = c.execution_id
    if c.attempts is not None:
        row[_ATTEMPTS] = c.attempts
    if c.fields is not None:
        row[_FIELDS] = merge_fields(row[_FIELDS], c.fields)
    if c.duration_s is not None:
        row[_DURATION] = c.duration_s
    if c.error is not None:
        row[_ERROR] = c.error
    if row[_CREATED] is None:
        row[_CREATED] = at
    if status == PROCESSING:
        row[_STARTED] = at
    elif status == COMPLETED:
        row[_COMPLETED] = at
    elif status == REQUEST_FAILED:
        row[_FAILED] = at
    return row


def compose_ledger_rows(
    changes: Iterable[LedgerChange],
    stored: Callable[[Sequence[str]], Mapping[str, LedgerRow]],
) -> dict[str, LedgerRow]:
    """The ledger rows one write leaves, by :func:`move_ledger_row` in event order onto
    the rows the store holds: the rows that changed, by request id.

    ``stored(ids)`` returns the store's current rows of ``ids`` (those it has), as new
    lists the composition may change; it is asked once per write. A store then writes
    the returned rows as they are, refusing only to overwrite a row that is
    ``completed`` by the time it writes (a concurrent writer completed it meanwhile:
    completed stays final).
    """
    moves = list(changes)
    if not moves:
        return {}
    rows = dict(stored(list(dict.fromkeys(c.request_id for c in moves))))
    changed: dict[str, LedgerRow] = {}
    for c in moves:
        after = move_ledger_row(rows.get(c.request_id), c)
        if after is not None:
            rows[c.request_id] = changed[c.request_id] = after
    return changed


def ledger_row(record: RequestRecord) -> LedgerRow:
    """``record`` as a :data:`LedgerRow` (a new list)."""
    return [getattr(record, name) for name in LEDGER_COLUMNS]


def compose_ledger(
    changes: Iterable[LedgerChange],
    stored: Callable[[Sequence[str]], Mapping[str, RequestRecord]],
) -> dict[str, RequestRecord]:
    """:func:`compose_ledger_rows` for a store that keeps :class:`RequestRecord` s."""
    rows = compose_ledger_rows(
        changes, lambda ids: {r: ledger_row(record) for r, record in stored(ids).items()}
    )
    return {r: RequestRecord(*row) for r, row in rows.items()}


def apply_ledger_change(row: RequestRecord | None, c: LedgerChange) -> RequestRecord | None:
    """The record after ``c`` (``None``: unchanged), by :func:`move_ledger_row`."""
    after = move_ledger_row(None if row is None else ledger_row(row), c)
    return None if after is None else RequestRecord(*after)


# Ledger statuses that end a request: what retention may drop.
FINISHED_REQUEST_STATUSES = (COMPLETED, REQUEST_FAILED)


@dataclass(frozen=True, slots=True)
class PruneCounts:
    """What :meth:`EventStore.prune` dropped (or, on a dry run, would drop)."""

    events: int = 0
    requests: int = 0
    executions: int = 0
    claims: int = 0

    @property
    def total(self) -> int:
        return self.events + self.requests + self.executions + self.claims

    def to_dict(self) -> dict[str, int]:
        return {
            "events": self.events,
            "requests": self.requests,
            "executions": self.executions,
            "claims": self.claims,
        }


def prune_cut(older_than_s: float, now: float | None) -> float:
    """The time before which :meth:`EventStore.prune` drops (checked argument)."""
    if not isinstance(older_than_s, int | float) or not older_than_s > 0:
        raise ValueError(f"older_than_s must be a positive number of seconds, not {older_than_s!r}")
    return (time.time() if now is None else now) - older_than_s


PRUNE_CHUNK = 5000  # rows a prune deletes per transaction
PRUNED_TABLES = ("events", "requests", "executions", "request_claims")


def prune_tables(
    count: Callable[[str], int], delete_chunk: Callable[[str], int], *, dry_run: bool
) -> PruneCounts:
    """:meth:`EventStore.prune` over a SQL store's tables: ``count(table)`` says what
    the cut selects, ``delete_chunk(table)`` deletes at most :data:`PRUNE_CHUNK` of it
    in a transaction of its own and says how many. Short transactions: a worker
    writing beside the prune waits for one chunk at a time, never for the history."""
    counts = {}
    for table in PRUNED_TABLES:
        if dry_run:
            counts[table] = count(table)
            continue
        dropped = 0
        while True:
            n = delete_chunk(table)
            dropped += n
            if n < PRUNE_CHUNK:
                break
        counts[table] = dropped
    return PruneCounts(*(counts[table] for table in PRUNED_TABLES))


def ledger_update(event: Event) -> LedgerChange | None:
    """How an event moves its request in the ledger, if it does."""
    request_id = event.request_id
    if request_id is None:
        return None
    kind = event.kind
    if kind == ev.MESSAGE_RECEIVED or kind == ev.MESSAGE_PUBLISHED:
        asked = ledger_fields_of(event.data.get("request"))
        status = PROCESSING if kind == ev.MESSAGE_RECEIVED else PENDING
        return LedgerChange(
            request_id,
            status,
            event.timestamp,
            event.message_id,
            event.execution_id,
            event.attempt,
            fields=asked,
        )
    if kind == ev.MESSAGE_SUCCEEDED:
        result = event.data.get("result")
        produced = ledger_fields_of(result.get("ledger")) if isinstance(result, dict) else None
        return LedgerChange(
            request_id,
            COMPLETED,
            event.timestamp,
            event.message_id,
            event.execution_id,
            event.attempt,
            fields=produced,
            duration_s=None if event.duration_ms is None else event.duration_ms / 1000,
        )
    if kind == ev.MESSAGE_FAILED or kind == ev.MESSAGE_TIMED_OUT:
        # the attempt failed and will be retried, unless a dead-letter event follows
        return LedgerChange(
            request_id,
            PENDING,
            event.timestamp,
            event.message_id,
            event.execution_id,
            event.attempt,
            error=event.message or event.reason,
        )
    if kind == ev.MESSAGE_DEAD_LETTERED or kind == ev.MESSAGE_REJECTED:
        text = (
            f"{event.reason}: {event.message}"
            if event.reason and event.message
            else event.reason or event.message
        )
        return LedgerChange(
            request_id,
            REQUEST_FAILED,
            event.timestamp,
            event.message_id,
            event.execution_id,
            event.attempt,
            error=text or None,
        )
    return None
