"""Durable delivery-attempt counts: a small contract of its own.

A queue that cannot count deliveries durably itself (Pub/Sub: its delivery attempt is
only known with a dead-letter policy, and a worker that dies loses what it knew) keeps
the counts in something that can: an :class:`AttemptCounter`. Every telemetry store is
one (:class:`~steadyq.telemetry.store.EventStore` implements this contract), and the
Pub/Sub queue takes any ``AttemptCounter``; a counter needs no events, ledger or claims.

Keys are opaque to the counter; the queue namespaces them (``subscription/message_id``).
Each key's count has three parts (:class:`AttemptCount`): deliveries (``attempts``,
raised at pull), the last error noted for it, and handler ``runs`` that ended in a
retryable failure. Counts live until the queue settles the message (``forget``) or
they go untouched for long (:meth:`AttemptCounter.prune_attempts`). A queue need not
count a delivery its broker durably tells is the first (Pub/Sub's ``delivery_attempt``
1 under a dead-letter policy): a key without a count is one nobody counted yet.

Methods raise :class:`~steadyq.errors.BackendError` when the backend fails.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import NamedTuple


class AttemptCount(NamedTuple):
    """A delivery attempt count kept for a broker that keeps none."""

    attempts: int
    last_error: str | None = None
    runs: int = 0  # handler runs that ended in a retryable failure


class AttemptCounter(abc.ABC):
    """Durable per-key delivery counts (see the module docstring)."""

    @abc.abstractmethod
    def count_attempts(self, keys: Sequence[str]) -> dict[str, AttemptCount]:
        """Raise the attempt count of each key by one, durably; return the new counts
        with the last error noted for the key. A key named twice counts once.

        Raises:
            BackendError: the store failed; no count was raised.
        """

    @abc.abstractmethod
    def attempts_of(self, keys: Sequence[str]) -> dict[str, int]:
        """The current attempt count of each key that has one (counted, not forgotten)."""

    @abc.abstractmethod
    def settle_attempts(
        self,
        errors: Mapping[str, str | None],
        forget: Sequence[str] = (),
        ran: Sequence[str] = (),
    ) -> None:
        """Note the last error of retried keys (a ``None`` error keeps the one noted),
        count one more handler run for the keys in ``ran``, and drop the counts of the
        keys in ``forget`` (settled). Keys without a count are left alone."""

    @abc.abstractmethod
    def prune_attempts(self, older_than_s: float, *, now: float | None = None) -> int:
        """Drop counts not raised for ``older_than_s`` seconds (messages settled
        elsewhere, or gone from their queue); return how many."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections. Idempotent."""
