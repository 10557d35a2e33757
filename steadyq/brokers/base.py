"""The queue contract every steadyq backend implements.

A queue holds messages (opaque bytes plus string attributes). A consumer *pulls* a
batch; each pulled message comes back as a :class:`Delivery` holding a *lease*:
until the lease expires no other pull returns that message. The consumer then
*settles* each delivery exactly once:

* **ack**: done, the message is gone;
* **nack** with a delay: try again later (the attempt is already counted);
* **dead-letter** with a reason: never try again, keep it in the dead-letter queue
  (DLQ) with its original bytes, attributes, reason and attempt count.

Guarantees every implementation gives (the contract suite in
``tests/brokers/contract.py`` checks each one):

* A message is never lost: it is in the queue (ready, leased or delayed) or in the
  DLQ until it is acked or purged.
* ``Delivery.attempt`` counts deliveries, is raised *at pull time* and is durable,
  so a message whose handler kills the worker still shows its attempts.
* A lease that expires makes the message deliverable again; settling the old
  delivery afterwards raises :class:`~steadyq.errors.LeaseLost` once someone else
  has pulled it. Two consumers never hold the same message at once.
* Dead-lettering is one atomic step: the message leaves the queue and enters the
  DLQ together, or neither happens.

Events (``steadyq.telemetry.events.Event``) may ride along with a settlement. A
queue whose database also holds the telemetry store (``colocated_store`` is not
None) writes them in the same transaction as the settlement, so the outcome and
the ack can never disagree. Other queues leave them to the caller.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from steadyq.telemetry.events import quick_init

if TYPE_CHECKING:
    from steadyq.telemetry.events import Event
    from steadyq.telemetry.store import EventStore

Attributes = Mapping[str, str]


@quick_init
@dataclass(frozen=True, slots=True)
class Delivery:
    """One leased delivery of a message.

    ``attempt`` is 1 on the first delivery: it counts deliveries. ``runs`` counts the
    handler runs that ended in a retryable failure (a nack with ``ran``); a delivery
    that never reported (its worker died before or while running it) raises
    ``attempt`` and not ``runs``. ``replays`` counts how often the message was
    replayed out of the DLQ. ``lease_token`` identifies this lease; settle with
    the same object you pulled.
    """

    message_id: str
    body: bytes
    attributes: Attributes
    attempt: int
    published_at: float
    lease_token: str
    leased_until: float
    replays: int = 0
    last_error: str | None = None
    runs: int = 0


@quick_init
@dataclass(frozen=True, slots=True)
class Settlement:
    """How to settle one delivery: ``ack``, ``nack`` (with ``delay_s``) or ``dead_letter``.

    ``reason`` and ``detail`` are required for ``dead_letter``; ``detail`` on a nack is
    kept as the message's last error, and ``ran`` on a nack counts one handler run
    (``Delivery.runs``). ``events`` are written with the settlement
    when the queue has a colocated store.
    """

    delivery: Delivery
    action: Literal["ack", "nack", "dead_letter"]
    delay_s: float = 0.0
    reason: str | None = None
    detail: str | None = None
    events: Sequence[Event] = ()
    request_id: str | None = None
    ran: bool = False

    @classmethod
    def ack(cls, delivery: Delivery, events: Sequence[Event] = ()) -> Settlement:
        return cls(delivery, "ack", events=events)

    @classmethod
    def nack(
        cls,
        delivery: Delivery,
        delay_s: float,
        *,
        error: str | None = None,
        events: Sequence[Event] = (),
        ran: bool = False,
    ) -> Settlement:
        return cls(delivery, "nack", delay_s=delay_s, detail=error, events=events, ran=ran)

    @classmethod
    def dead_letter(
        cls,
        delivery: Delivery,
        reason: str,
        detail: str = "",
        events: Sequence[Event] = (),
        *,
        request_id: str | None = None,
    ) -> Settlement:
        return cls(
            delivery,
            "dead_letter",
            reason=reason,
            detail=detail,
            events=events,
            request_id=request_id,
        )


@dataclass(frozen=True, slots=True)
class QueueStats:
    """A point-in-time view of a queue.

    ``ready``: deliverable now. ``in_flight``: leased and not expired. ``delayed``:
    waiting out a retry delay. ``oldest_unacked_age_s``: age of the oldest message
    still in the queue (None when empty or when the backend cannot tell).
    ``notes`` says in words what a backend could not measure.
    """

    ready: int | None
    in_flight: int | None
    delayed: int | None
    dead_lettered: int | None
    oldest_unacked_age_s: float | None
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "in_flight": self.in_flight,
            "delayed": self.delayed,
            "dead_lettered": self.dead_lettered,
            "oldest_unacked_age_s": self.oldest_unacked_age_s,
            "notes": list(self.notes),
        }


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message in the dead-letter queue, with everything needed to judge or replay it."""

    message_id: str
    request_id: str | None
    reason: str
    detail: str
    attempts: int
    payload: bytes
    attributes: Attributes
    published_at: float
    dead_lettered_at: float
    replays: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The documented ``dlq ls --json`` shape; payload as text when UTF-8, else base64."""
        import base64

        from steadyq.durations import rfc3339

        try:
            payload: str = self.payload.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            payload = base64.b64encode(self.payload).decode("ascii")
            encoding = "base64"
        return {
            "message_id": self.message_id,
            "request_id": self.request_id,
            "reason": self.reason,
            "detail": self.detail,
            "attempts": self.attempts,
            "replays": self.replays,
            "payload": payload,
            "payload_encoding": encoding,
            "attributes": dict(self.attributes),
            "published_at": rfc3339(self.published_at),
            "dead_lettered_at": rfc3339(self.dead_lettered_at),
        }


@dataclass(frozen=True, slots=True)
class DlqFilter:
    """Which dead letters a DLQ operation applies to; every field narrows the set.

    ``since``/``before`` compare with ``dead_lettered_at`` (epoch seconds).
    """

    reason: str | None = None
    since: float | None = None
    before: float | None = None
    message_ids: tuple[str, ...] | None = None
    limit: int | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.reason is not None and letter.reason != self.reason:
            return False
        if self.since is not None and letter.dead_lettered_at < self.since:
            return False
        if self.before is not None and letter.dead_lettered_at >= self.before:
            return False
        return not (self.message_ids is not None and letter.message_id not in self.message_ids)


@dataclass(frozen=True, slots=True)
class SettleResult:
    """What :meth:`Queue.settle` did: the settlements applied and those whose lease was lost."""

    applied: tuple[Settlement, ...] = ()
    lost: tuple[Settlement, ...] = field(default_factory=tuple)


class Queue(abc.ABC):
    """The contract. Implementations: memory, sqlite (more to come: postgres, pubsub).

    All times are epoch seconds from the queue's clock. Methods raise
    :class:`~steadyq.errors.BackendError` (or a subclass) when the backend fails;
    driver exceptions never escape.
    """

    #: The URL scheme this queue answers to, e.g. ``sqlite``.
    scheme: str = ""

    #: Capabilities, which the contract suite reads instead of skipping tests.
    #: ``clock_driven``: leases and retry delays run on the injected clock. False when
    #: the broker's server keeps that time (Pub/Sub): they pass in real time.
    clock_driven: bool = True
    #: ``counts_backlog``: :meth:`stats` gives ready, in-flight, delayed and
    #: dead-lettered counts. False when the backend has no such figures; the missing
    #: ones are then None and ``QueueStats.notes`` says why.
    counts_backlog: bool = True
    #: ``settles_concurrently``: :meth:`settle` may run on two threads at once. A
    #: worker with a store of its own then commits gate rejections on a lane of their
    #: own, beside the commit in flight (worker.md, "Recording outcomes").
    settles_concurrently: bool = False
    #: ``rejection_budget_s``: how long the worker lets a batch of gate rejections take,
    #: from the first one's decision to their dead letters committed. It pulls a stream
    #: of poison in batches only as large as stay within it (``PullReach``, worker.md):
    #: half a millisecond where a dead letter is a row (half of the millisecond a
    #: rejection is held to at p99); a network broker says more.
    rejection_budget_s: float = 0.0005

    @property
    def colocated_store(self) -> EventStore | None:
        """The telemetry store that shares this queue's transactions, if any."""
        return None

    def use_store(self, store: EventStore) -> None:  # noqa: B027 - optional hook
        """Hand a queue without a colocated store the telemetry store it goes with.

        A queue that keeps bookkeeping there (Pub/Sub keeps its attempt counts) takes
        ownership and closes it in :meth:`close`; others ignore it.
        """

    @abc.abstractmethod
    def publish(self, body: bytes, attributes: Attributes | None = None) -> str:
        """Add one message; return its message id once it is durable.

        Raises:
            TypeError: ``body`` is not bytes or an attribute is not a string.
            BackendError: the message could not be stored.
        """

    def publish_batch(self, items: Iterable[tuple[bytes, Attributes | None]]) -> list[str]:
        """Add many messages; return their ids in order. Faster than one by one where
        the backend can batch; all-or-nothing where the backend has transactions.

        Raises:
            TypeError, BackendError: as :meth:`publish`.
        """
        return [self.publish(body, attrs) for body, attrs in items]

    @abc.abstractmethod
    def pull(self, max_messages: int, lease_s: float) -> list[Delivery]:
        """Lease up to ``max_messages`` ready messages for ``lease_s`` seconds.

        Raises each returned message's attempt count by one, durably, before
        returning. Returns an empty list when nothing is ready (never blocks long).

        Raises:
            ValueError: ``max_messages < 1`` or ``lease_s <= 0``.
            BackendError: the backend failed; no lease was taken.
        """

    def read_ahead(self, max_messages: int) -> None:  # noqa: B027 - optional hook
        """Hint that about ``max_messages`` more will be pulled right away.

        A queue across a network may start fetching them now, so that the round trip
        overlaps the caller's work on what it already has. Fetched messages are not
        delivered: no attempt is counted and no lease is promised until a
        :meth:`pull` returns them. What the next pull does not take soon enough, and
        what is still fetched at :meth:`close`, goes back to the queue at once. The
        default does nothing.
        """

    @abc.abstractmethod
    def settle(
        self, settlements: Sequence[Settlement], *, events: Sequence[Event] = ()
    ) -> SettleResult:
        """Apply acks, nacks and dead-letters; atomically per settlement, and in one
        transaction where the backend allows.

        A settlement whose lease was taken over by another pull is not applied and
        is returned in ``SettleResult.lost`` (its events are not written). A
        settlement of a lease that expired but was not yet taken over is applied.

        ``events`` are other events to record, whatever happens to the settlements:
        a queue with a colocated store writes them in the same transaction (the
        worker's arrivals and log records ride along this way). A queue without one
        refuses them with ``ValueError``; write them to the store yourself.

        Raises:
            BackendError: the backend failed; none of the settlements was applied.
        """

    def ack(self, delivery: Delivery, events: Sequence[Event] = ()) -> None:
        """Acknowledge one delivery.

        Raises:
            LeaseLost: another consumer holds the message now.
            BackendError: the backend failed.
        """
        self._settle_one(Settlement.ack(delivery, events))

    def nack(
        self,
        delivery: Delivery,
        delay_s: float = 0.0,
        *,
        error: str | None = None,
        events: Sequence[Event] = (),
    ) -> None:
        """Give the message back, deliverable again after ``delay_s`` seconds.

        Raises:
            LeaseLost: another consumer holds the message now.
            BackendError: the backend failed.
        """
        self._settle_one(Settlement.nack(delivery, delay_s, error=error, events=events))

    def dead_letter(
        self, delivery: Delivery, reason: str, detail: str = "", events: Sequence[Event] = ()
    ) -> None:
        """Move the message to the DLQ with ``reason`` and ``detail``, in one step.

        Raises:
            LeaseLost: another consumer holds the message now.
            BackendError: the backend failed.
        """
        self._settle_one(Settlement.dead_letter(delivery, reason, detail, events))

    def _settle_one(self, settlement: Settlement) -> None:
        from steadyq.errors import LeaseLost

        result = self.settle([settlement])
        if result.lost:
            raise LeaseLost(f"message {settlement.delivery.message_id} was leased again")

    def wait_for_messages(self, timeout_s: float) -> bool | None:
        """For an idle worker: block up to ``timeout_s`` until the queue announces a
        publish, True when one woke it, False after the timeout. ``None`` (this
        default, returned at once): the queue announces nothing, and the caller
        sleeps between polls itself. PostgreSQL answers through LISTEN/NOTIFY."""
        return None

    @abc.abstractmethod
    def extend(self, delivery: Delivery, lease_s: float) -> Delivery:
        """Extend a lease to ``lease_s`` seconds from now; return the updated delivery.

        Raises:
            LeaseLost: another consumer holds the message now.
            BackendError: the backend failed.
        """

    @abc.abstractmethod
    def stats(self) -> QueueStats:
        """Counts of ready, in-flight, delayed and dead-lettered messages.

        Raises:
            BackendError: the backend failed.
        """

    @abc.abstractmethod
    def dlq_list(self, where: DlqFilter | None = None) -> list[DeadLetter]:
        """Dead letters matching ``where``, oldest first.

        Raises:
            BackendError: the backend failed.
        """

    @abc.abstractmethod
    def dlq_get(self, message_id: str) -> DeadLetter:
        """One dead letter.

        Raises:
            NotFound: no dead letter has that id.
            BackendError: the backend failed.
        """

    @abc.abstractmethod
    def dlq_replay(
        self, where: DlqFilter, *, max_replays: int = 3, dry_run: bool = False
    ) -> list[tuple[DeadLetter, str | None]]:
        """Publish matching dead letters again with their attempt count reset and their
        replay counter raised; remove them from the DLQ. Returns each letter with its
        new message id (None on a dry run, or when the loop guard skipped it).

        Letters already replayed ``max_replays`` times are skipped (returned with
        None), never replayed; the caller reports them.

        Raises:
            BackendError: the backend failed; nothing was replayed.
        """

    @abc.abstractmethod
    def dlq_purge(self, where: DlqFilter) -> int:
        """Delete matching dead letters for good; return how many.

        Raises:
            BackendError: the backend failed; nothing was deleted.
        """

    def dlq_expire(self, older_than_s: float, now: float | None = None) -> int:
        """Delete the dead letters dead-lettered more than ``older_than_s`` seconds
        before ``now`` (default: the queue's clock); return how many. ``0`` keeps them
        forever (deletes nothing). Retention: workers apply it on their own
        (:func:`steadyq.telemetry.retention.apply_retention`, default
        :data:`DLQ_RETENTION_S`), ``steadyq store prune --dlq-older-than`` on demand.

        This default expires nothing and returns 0: a queue whose dead letters expire
        by the broker's own retention (Pub/Sub's message retention on the dead-letter
        subscription) or that cannot delete them by age. :func:`expires_dead_letters`
        tells whether a queue overrides it.

        Raises:
            ValueError: ``older_than_s`` is negative or not a number.
            BackendError: the backend failed; nothing was deleted.
        """
        dlq_cut(older_than_s, 0.0)
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Idempotent."""

    def __enter__(self) -> Queue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: How long a dead letter is kept before workers expire it, by default: 7 days, the
#: incident's DLQ policy and Pub/Sub's own longest message retention. ``0`` keeps
#: dead letters forever. The one place this default is written.
DLQ_RETENTION_S = 7 * 86400.0


def dlq_cut(older_than_s: float, now: float) -> float | None:
    """The ``dead_lettered_at`` before which :meth:`Queue.dlq_expire` deletes, or None
    for ``0`` (keep forever).

    Raises:
        ValueError: ``older_than_s`` is negative or not a number.
    """
    if isinstance(older_than_s, bool) or not isinstance(older_than_s, int | float):
        raise ValueError(f"older_than_s must be a number of seconds, not {older_than_s!r}")
    if not older_than_s >= 0:
        raise ValueError(f"older_than_s must be 0 (keep forever) or more, not {older_than_s!r}")
    return None if older_than_s == 0 else now - older_than_s


def expires_dead_letters(queue: Queue) -> bool:
    """Whether ``queue`` implements :meth:`Queue.dlq_expire` (else it expires nothing)."""
    return type(queue).dlq_expire is not Queue.dlq_expire


def check_publish_args(body: object, attributes: Attributes | None) -> dict[str, str]:
    """Validate publish arguments the same way for every backend."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError(f"message body must be bytes, not {type(body).__name__}")
    attrs = dict(attributes or {})
    for key, value in attrs.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("message attributes must map str to str")
    return attrs


def check_pull_args(max_messages: int, lease_s: float) -> None:
    if max_messages < 1:
        raise ValueError(f"max_messages must be at least 1, not {max_messages}")
    if lease_s <= 0:
        raise ValueError(f"lease_s must be positive, not {lease_s}")
