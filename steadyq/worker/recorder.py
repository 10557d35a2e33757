"""The recorder: what the execution has to write, and the order it is written in.

It holds the events not yet stored (the *buffer*), the settlements not yet sent (the
*pending* ones) and the requests whose outcome waits to be recorded, and commits them:
in the loop when the queue shares the store (one transaction for events, ledger and
settlements), else on a committer thread beside the next pull. Whichever way, **an
outcome is stored before the queue hears of it**. A failed commit puts its batch back
in front of what came since and raises on the loop's thread, where the outage guard
deals with it; ``failing`` says an outage is one of recording.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from steadyq.brokers.base import Queue, Settlement, SettleResult
from steadyq.errors import BackendError
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import EventStore
from steadyq.worker.options import MAX_UNCOMMITTED
from steadyq.worker.policy import Decision

_STORED_LOG_RANK = ev.severity_rank("WARNING")  # log records below are shown, not stored


def _is_rejection(settlement: Settlement) -> bool:
    """A gate rejection's settlement (its first event says so)."""
    events = settlement.events
    return bool(events) and events[0].kind == ev.MESSAGE_REJECTED


@dataclass(slots=True)
class Commit:
    """One batch of events and settlements on its way to the store and the queue."""

    buffered: list[Event]
    pending: list[Settlement]
    request_ids: list[str]
    result: SettleResult | None = None
    error: BackendError | None = None
    # monotonic: the decision of the first gate rejection it holds, if it holds any
    rejected_at: float | None = None


class Recorder:
    """Buffers, commits and accounts for events and settlements.

    ``sink`` sees every event as it happens; ``on_released`` hears of requests whose
    outcome is recorded (their parked copies may go ahead); ``on_recovered`` of the
    first commit that works after recording failed.
    """

    def __init__(
        self,
        queue: Queue,
        store: EventStore,
        execution_id: str,
        *,
        clock: Callable[[], float],
        sink: Callable[[Event], None] | None = None,
        on_released: Callable[[list[str]], None] = lambda ids: None,
    ) -> None:
        self.queue = queue
        self.store = store
        self.execution_id = execution_id
        self.colocated = queue.colocated_store is store
        self.on_released = on_released
        self.on_recovered: Callable[[], None] = lambda: None
        self.failing = False  # the outage is one of recording outcomes
        self._clock = clock
        self._sink = sink
        self.buffer: list[Event] = []
        self.pending: list[Settlement] = []
        self._settled_ids: list[str] = []  # settled, not yet recorded
        self._committer: ThreadPoolExecutor | None = None
        self._committing: Future[Commit] | None = None
        # a second lane for gate rejections, beside the commit in flight (a store of
        # its own and a queue whose settle may run on two threads)
        self._lane: ThreadPoolExecutor | None = None
        # its commits, oldest first: the one running and at most one waiting to start,
        # which takes every rejection handed over by then (the inbox) when it starts
        self._rejecting: list[Future[Commit]] = []
        # handed to the lane, not yet taken: while it holds anything, a commit waits to
        # start that will take it (submitted when the inbox stopped being empty)
        self._inbox: list[Commit] = []
        self._inbox_lock = threading.Lock()
        self._rejected_at: float | None = None  # the first rejection not yet committed
        # how long the last commit of gate rejections took, from the first one's
        # decision to committed (the worker sizes its pulls of poison by it)
        self.rejections_took_s: float | None = None

    # -- what happens -------------------------------------------------------

    def event(self, kind: str, **fields: Any) -> Event:
        """An event of the execution's own, shown now (the caller decides where it goes)."""
        event = Event(kind=kind, timestamp=self._clock(), execution_id=self.execution_id, **fields)
        if self._sink is not None:
            self._sink(event)
        return event

    def log(self, severity: str, text: str, **fields: Any) -> None:
        """A log record of the worker's own: shown now, stored with the next commit."""
        self.buffer.append(self.event(ev.LOG, severity=severity, message=text, **fields))

    def emit(self, event: Event) -> None:
        """An event written by a handler or a runner: shown, and stored with the next
        commit when it is of a level the store keeps."""
        if self._sink is not None:
            self._sink(event)
        if event.kind != ev.LOG or ev.severity_rank(event.severity) >= _STORED_LOG_RANK:
            self.buffer.append(event)

    def show(self, event: Event) -> None:
        if self._sink is not None:
            self._sink(event)

    def received(self, events: list[Event]) -> None:
        """Arrivals go before anything buffered meanwhile, so the store shows each
        delivery's arrival before its outcome."""
        self.buffer[:0] = events

    def decide(self, decision: Decision) -> None:
        """A delivery's end, shown now and settled with the next commit."""
        sink = self._sink
        if sink is not None:
            for event in decision.settlement.events:
                sink(event)
        if self._rejected_at is None and _is_rejection(decision.settlement):
            self._rejected_at = time.monotonic()
        self.pending.append(decision.settlement)

    def settle(self, settlements: Iterable[Settlement]) -> None:
        self.pending.extend(settlements)

    def outcome_waits(self, request_id: str) -> None:
        """A request that keeps "running" until its outcome is recorded."""
        self._settled_ids.append(request_id)

    # -- writing --------------------------------------------------------------

    def start_committer(self) -> None:
        """A store of its own: record and settle each batch beside the next pull."""
        if not self.colocated and self._committer is None:
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="steadyq-commit")
            if self.queue.settles_concurrently:
                self._lane = ThreadPoolExecutor(1, thread_name_prefix="steadyq-reject")

    def write_now(self, events: list[Event]) -> None:
        """Write ``events`` now; if the store refuses, they wait in the buffer for the
        next commit (and the error is raised for the outage guard)."""
        if not events:
            return
        try:
            self.store.write(events)
        except BackendError:
            self.buffer.extend(events)
            raise

    @property
    def committing(self) -> bool:
        return self._committing is not None or bool(self._rejecting)

    def flush_rejections(self) -> None:
        """Record and settle the gate's rejections of the batch just pulled now, on
        their own lane, instead of behind the commit in flight and this batch's
        handlers: a poison message is dead-lettered in milliseconds whatever else
        the worker does. Their arrivals go with them (an arrival is stored before its
        outcome); the order "stored, then the queue hears" holds on the lane too. A
        rejection holds no claim. While the lane is busy, rejections wait in its inbox:
        the lane's next commit takes all of them the moment it starts.

        Raises:
            BackendError: an earlier commit of the lane failed (what it held waits
                for the next flush).
        """
        if self._lane is None:
            return
        self._reap_lane()
        urgent = [s for s in self.pending if _is_rejection(s)]
        if not urgent:
            return
        ids = {s.delivery.message_id for s in urgent}
        self.pending = [s for s in self.pending if s.delivery.message_id not in ids]
        arrivals = [e for e in self.buffer if e.kind == ev.MESSAGE_RECEIVED and e.message_id in ids]
        self.buffer = [
            e for e in self.buffer if not (e.kind == ev.MESSAGE_RECEIVED and e.message_id in ids)
        ]
        since, self._rejected_at = self._rejected_at, None
        with self._inbox_lock:
            waiting = bool(self._inbox)  # a commit waiting to start will take these too
            self._inbox.append(Commit(arrivals, urgent, [], rejected_at=since))
        if not waiting:
            self._rejecting.append(self._lane.submit(self._commit_inbox))

    def _commit_inbox(self) -> Commit:
        """On the lane: one commit of every rejection handed over so far."""
        with self._inbox_lock:
            parts, self._inbox = self._inbox, []
        starts = [p.rejected_at for p in parts if p.rejected_at is not None]
        job = Commit(
            [e for p in parts for e in p.buffered],
            [s for p in parts for s in p.pending],
            [],
            rejected_at=min(starts) if starts else None,
        )
        return self._commit(job)

    def _reap_lane(self) -> None:
        """Account for the lane's commits that have ended, oldest first; never waits."""
        rejecting = self._rejecting
        while rejecting and rejecting[0].done():
            self._committed(rejecting.pop(0).result())

    def unrecorded(self) -> bool:
        """Outcomes or events still waiting for the store (during an outage)."""
        return bool(self.pending) or (self.failing and bool(self.buffer))

    def flush(self) -> None:
        """Commit buffered events and pending settlements: one store transaction for
        both (with the settlement itself when the queue holds the store).

        With a committer thread the batch is handed over; while a commit is still
        running, new outcomes wait and go with the next one (up to MAX_UNCOMMITTED).

        Raises:
            BackendError: a commit failed; what it held waits for the next flush.
        """
        committing = self._committing
        if committing is not None and not committing.done() and len(self.pending) < MAX_UNCOMMITTED:
            return
        self.await_commit()
        buffered, self.buffer = self.buffer, []
        pending, self.pending = self.pending, []
        released, self._settled_ids = self._settled_ids, []
        if not pending and not buffered:
            self._release(released)
            return
        job = Commit(buffered, pending, released, rejected_at=self._rejected_at)
        self._rejected_at = None
        if self._committer is None:
            self._committed(self._commit(job))
        else:
            self._committing = self._committer.submit(self._commit, job)

    def flush_now(self) -> None:
        """Flush everything and see it committed."""
        self.await_commit()
        self.flush()
        self.await_commit()

    def await_commit(self) -> None:
        """Wait for the commits in the background, if any; a failure surfaces here."""
        rejecting, self._rejecting = self._rejecting, []
        committing, self._committing = self._committing, None
        try:
            # each lane commit is accounted for, so one's failure loses no other's batch
            failure: BaseException | None = None
            for job in rejecting:
                try:
                    self._committed(job.result())
                except BaseException as exc:
                    failure = failure or exc
            if failure is not None:
                raise failure
        finally:
            if committing is not None:
                self._committed(committing.result())

    def _commit(self, job: Commit) -> Commit:
        """Record and settle one batch; a backend failure is kept in ``job.error`` with
        what is left to do (this may run on the committer thread: it touches nothing
        of the recorder's)."""
        try:
            if not job.pending:
                self.store.write(job.buffered)
                job.buffered = []
                return job
            if self.colocated:
                job.result = self.queue.settle(job.pending, events=job.buffered)
                job.buffered = []
            else:
                # outcomes are recorded before the queue hears of them
                self.store.write([*job.buffered, *(e for s in job.pending for e in s.events)])
                job.buffered = []
                try:
                    job.result = self.queue.settle(job.pending)
                except BackendError:
                    # written: the settle retried after this failure must not write them again
                    job.pending = [replace(s, events=()) for s in job.pending]
                    raise
            job.pending = []
        except BackendError as exc:
            job.error = exc
            return job
        if job.rejected_at is not None:
            self.rejections_took_s = time.monotonic() - job.rejected_at
        return job

    def _committed(self, job: Commit) -> None:
        """Account for a finished commit: note lost leases, or put back what failed."""
        if job.error is not None:
            self.buffer[:0] = job.buffered
            self.pending[:0] = job.pending
            self._settled_ids[:0] = job.request_ids
            raise job.error
        self._release(job.request_ids)
        if job.result is not None:
            for lost in job.result.lost:
                self.log(
                    "WARNING",
                    f"lease on message {lost.delivery.message_id} was lost before its"
                    f" {lost.action} was recorded; it will be delivered again",
                    message_id=lost.delivery.message_id,
                    attempt=lost.delivery.attempt,
                )
        if self.failing:  # what waited is recorded: the store works again
            self.failing = False
            self.on_recovered()

    def _release(self, request_ids: list[str]) -> None:
        if request_ids:
            self.on_released(request_ids)

    def close(self) -> None:
        for lane in (self._committer, self._lane):
            if lane is not None:
                lane.shutdown()
        self._committer = self._lane = None
