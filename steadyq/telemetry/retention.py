"""Retention: what a running system drops by itself, and when.

Tables must not grow without bound. Two things age out:

* **dead letters**, after :data:`~steadyq.brokers.base.DLQ_RETENTION_S` (7 days) by
  default, ``0`` keeping them forever: the queue's :meth:`~steadyq.brokers.base.Queue.dlq_expire`;
* **telemetry** (events, finished ledger rows, finished executions, lapsed claims):
  the store's :meth:`~steadyq.telemetry.store.EventStore.prune`, off unless asked
  (``telemetry_s``), since the watch and the reports read that history.

A worker calls :func:`apply_retention` now and then (every ``every_s``, see
:meth:`RetentionPolicy.due`); ``steadyq store prune`` does the same on demand.
docs/store.md ("Retention") says why the defaults are what they are.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from steadyq.brokers.base import DLQ_RETENTION_S

if TYPE_CHECKING:
    from steadyq.brokers.base import Queue
    from steadyq.telemetry.store import EventStore, PruneCounts


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long things are kept, in seconds; ``0`` keeps them forever.

    ``dlq_s``: dead letters (default 7 days). ``telemetry_s``: events and the other
    pruned telemetry (default 0: kept). ``every_s``: how often a worker applies it.
    """

    dlq_s: float = DLQ_RETENTION_S
    telemetry_s: float = 0.0
    every_s: float = 3600.0

    def __post_init__(self) -> None:
        for name in ("dlq_s", "telemetry_s", "every_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number of seconds, not {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be 0 or a positive number of seconds, not {value}")
        if self.every_s == 0:
            raise ValueError("every_s must be positive")

    def due(self, last: float | None, now: float) -> bool:
        """Whether a worker that last applied the policy at ``last`` (None: never)
        should apply it at ``now``."""
        return last is None or now - last >= self.every_s


@dataclass(frozen=True, slots=True)
class RetentionResult:
    """What one :func:`apply_retention` dropped."""

    dead_letters: int
    telemetry: PruneCounts | None  # None: telemetry is kept forever by the policy


def apply_retention(
    queue: Queue, store: EventStore, policy: RetentionPolicy, now: float | None = None
) -> RetentionResult:
    """Expire dead letters older than ``policy.dlq_s`` and, when ``policy.telemetry_s``
    is set, prune the store's telemetry older than that; ``now`` defaults to the
    current time. Cheap when there is nothing to drop (each part is an indexed
    delete), so a worker may call it every :attr:`RetentionPolicy.every_s`.

    Raises:
        ConfigError: the policy prunes telemetry and this store cannot.
        BackendError: the queue or the store failed (an outage, for the worker's
            guard); what was dropped before the failure stays dropped.
    """
    at = time.time() if now is None else now
    letters = queue.dlq_expire(policy.dlq_s, at) if policy.dlq_s else 0
    pruned = store.prune(policy.telemetry_s, now=at) if policy.telemetry_s else None
    return RetentionResult(letters, pruned)
