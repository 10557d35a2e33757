"""The lease keeper: the calls in flight, the copies parked behind them, and the leases
and claims that keep both.

A running call's lease is extended when half spent, but never past the latest moment
its hard deadline can fall (``extend_until``); its request's claim is extended with it,
and so is the call's right to start (``start_by``, moved on in the runner). A parked
copy (a second copy of a request running here, or one claimed by another execution)
keeps its lease too, or it would be pulled again while it waits; it asks for its claim
again after 0.1 s, doubling up to 2 s, and at once when a request here is recorded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel

from steadyq.brokers.base import Delivery, Queue, Settlement
from steadyq.runner import Call, Runner
from steadyq.telemetry.store import EventStore
from steadyq.worker.options import CLAIM_RETRY_MAX_S, CLAIM_RETRY_S, WorkerOptions
from steadyq.worker.outage import OutageGuard

Request = tuple[Delivery, BaseModel, str, float]  # delivery, request, request_id, t0


@dataclass(slots=True)
class InFlight:
    delivery: Delivery
    request_id: str | None
    received_at: float
    call: Call
    claimed_until: float  # wall clock: when this execution's claim on the request lapses
    # leases are never extended past this (wall clock): the latest moment the call's
    # hard deadline can fall, after waiting behind at most `prefetch` calls
    extend_until: float = float("inf")


class LeaseKeeper:
    """What this execution holds: calls in flight and parked copies, with their leases."""

    def __init__(
        self,
        queue: Queue,
        store: EventStore,
        options: WorkerOptions,
        execution_id: str,
        guard: OutageGuard,
        *,
        clock: Callable[[], float],
    ) -> None:
        self.queue = queue
        self.store = store
        self.options = options
        self.execution_id = execution_id
        self.guard = guard
        self._clock = clock
        self.inflight: dict[int, InFlight] = {}
        self.running: set[str] = set()  # request ids with a call here, until recorded
        self.parked: list[Request] = []
        self.retry_at = 0.0  # monotonic: when parked copies ask for their claim again
        self._claim_retry_s = CLAIM_RETRY_S
        self.last_extend = 0.0

    # -- what is held ---------------------------------------------------------

    def start_by(self, leased_until: float, claimed_until: float) -> float:
        """The last moment a call may start: a little before its lease or its claim
        lapses, whichever comes first (the runner refuses it after that)."""
        return min(leased_until, claimed_until) - self.start_guard_s

    @property
    def start_guard_s(self) -> float:
        """How long before its lease or claim lapses a call may no longer start."""
        return min(1.0, self.options.effective_lease_s / 4)

    def track(self, item: InFlight) -> None:
        self.inflight[item.call.call_id] = item
        if item.request_id is not None:
            self.running.add(item.request_id)

    def park(self, items: list[Request], *, retry_in: float | None = None) -> None:
        self.parked.extend(items)
        if retry_in is not None:
            self.retry_at = time.monotonic() + retry_in

    def take(self, requests: list[Request], room: int) -> list[Request]:
        """The first ``room`` of ``requests``, to start now; the rest wait, unclaimed
        and with their leases kept, for a pass with room (a pull that asked for more
        than the runner had room for, ``PullReach``, or parked copies due again)."""
        keep = max(0, room)
        if len(requests) <= keep:
            return requests
        self.parked.extend(requests[keep:])
        return requests[:keep]

    def claim_answered(self, *, busy: bool) -> None:
        """Another execution holds a claim: ask again later, backing off."""
        if busy:
            self.retry_at = time.monotonic() + self._claim_retry_s
            self._claim_retry_s = min(CLAIM_RETRY_MAX_S, self._claim_retry_s * 2)
        else:
            self._claim_retry_s = CLAIM_RETRY_S

    def ready(self) -> list[Request]:
        """Parked copies due for another try whose request no longer runs here."""
        if not self.parked or time.monotonic() < self.retry_at:
            return []
        ready = [p for p in self.parked if p[2] not in self.running]
        if ready:
            self.parked = [p for p in self.parked if p[2] in self.running]
        return ready

    def released(self, request_ids: list[str]) -> None:
        """Requests whose outcome is recorded: their parked copies may go ahead."""
        for request_id in request_ids:
            self.running.discard(request_id)
        if request_ids and self.parked:
            self.retry_at = 0.0

    @property
    def holding(self) -> bool:
        return bool(self.inflight or self.parked)

    def give_back_parked(self) -> list[Settlement]:
        """Stopping: parked copies go back to the queue at once (never run here)."""
        nacks = [Settlement.nack(d, 0.0) for d, *_ in self.parked]
        self.parked.clear()
        return nacks

    def abandon(self) -> tuple[list[Settlement], list[str]]:
        """Everything held, given back at once: the nacks, and the claims to release."""
        nacks = [
            Settlement.nack(
                item.delivery, 0.0, error="execution stopped before the handler finished"
            )
            for item in self.inflight.values()
        ]
        claimed = [i.request_id for i in self.inflight.values() if i.request_id is not None]
        self.inflight.clear()
        return nacks + self.give_back_parked(), claimed

    # -- extending ------------------------------------------------------------

    def extend(self, lease_s: float, runner: Runner) -> None:
        """Extend the leases that are half spent (at most once a second or a quarter
        lease), the claims of the calls extended, and their ``start_by``."""
        now = time.monotonic()
        if now - self.last_extend < min(1.0, lease_s / 4) or not self.holding:
            return
        self.last_extend = now
        wall = self._clock()
        extended: list[InFlight] = []
        for item in self.inflight.values():
            d = item.delivery
            if d.leased_until - wall < lease_s / 2 and d.leased_until < item.extend_until:
                renewed = self._extend(d, max(0.5, min(lease_s, item.extend_until - wall)))
                if renewed is not None:
                    item.delivery = renewed
                    extended.append(item)
        if extended:
            # the claim lasts as long as the lease, and so does the call's right to start
            claim_until = wall + lease_s
            ids = [i.request_id for i in extended if i.request_id is not None]
            claimed = self.guard.call(
                "note",
                lambda: (self.store.extend_claims(ids, self.execution_id, claim_until), True)[1],
                fallback=False,
                what="extend claims",
            )
            for item in extended:
                if claimed:
                    item.claimed_until = claim_until
                runner.renew(
                    item.call.call_id, self.start_by(item.delivery.leased_until, item.claimed_until)
                )
        # a parked delivery waits for its request's running copy: keep its lease too,
        # or it is pulled again (here or elsewhere) while it waits
        for index, (d, request, request_id, t0) in enumerate(self.parked):
            if d.leased_until - wall < lease_s / 2:
                renewed = self._extend(d, lease_s)
                if renewed is not None:
                    self.parked[index] = (renewed, request, request_id, t0)

    def _extend(self, d: Delivery, lease_s: float) -> Delivery | None:
        renewed: Delivery | None = self.guard.call(
            "note",
            self.queue.extend,
            d,
            lease_s,
            what="extend lease",
            labels={"message_id": d.message_id},
        )
        return renewed
