"""The execution loop: pull, gate, run, settle, and account for every message.

One :class:`Worker` run is one *execution* (a Cloud Run Job task, a cron run, a
pod): ``execution.started`` → ``execution.ready`` → ``execution.finished``.
Every delivery ends in exactly one of: succeeded (ack), duplicate (ack),
rejected (dead-letter + ack), dead-lettered (dead-letter + ack), or retried (nack
with backoff) — and the events say which.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import IntEnum
from typing import Any

from pydantic import BaseModel

from steadyq._signals import stop_signals
from steadyq.brokers.base import Delivery, Queue, Settlement, SettleResult
from steadyq.errors import BackendError, HandlerLoadError, LeaseLost
from steadyq.gate import (
    PAYLOAD_TOO_LARGE,
    REQUEST_ID_INVALID,
    Gate,
    Rejection,
    request_id_of,
)
from steadyq.handlers import worker_schema
from steadyq.policy import RetryPolicy
from steadyq.runner import (
    Call,
    Handler,
    InlineRunner,
    Outcome,
    ProcessRunner,
    Runner,
)
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import (
    CLAIM_BUSY,
    CLAIM_COMPLETED,
    FAILED,
    INTERRUPTED,
    SUCCEEDED,
    TIMED_OUT,
    EventStore,
)

MAX_ATTEMPTS_EXCEEDED = "max_attempts_exceeded"
MAX_DELIVERIES_EXCEEDED = "max_deliveries_exceeded"


def _runs(n: int) -> str:
    return "1 run" if n == 1 else f"{n} runs"


DEFAULT_BATCH = 64  # messages per pull unless the queue or the options say otherwise
# settlements that may wait while the committer thread is busy before the loop waits too
MAX_UNCOMMITTED = 1000
# how soon a copy parked behind another execution's claim asks again (doubling up to the max)
CLAIM_RETRY_S = 0.1
CLAIM_RETRY_MAX_S = 2.0
_STORED_LOG_RANK = ev.severity_rank("WARNING")  # log records below are shown, not stored


def _ledger_fields(request: BaseModel) -> dict[str, Any]:
    """What a request model wants the ledger to show while it is open.

    A model may define ``ledger_fields() -> dict`` (the content request reports its
    modalities); anything else contributes nothing.
    """
    hook = getattr(request, "ledger_fields", None)
    if not callable(hook):
        return {}
    try:
        fields = hook()
    except Exception:  # a label must never fail a delivery
        return {}
    return dict(fields) if isinstance(fields, dict) else {}


def _arrival(
    execution_id: str,
    d: Delivery,
    at: float,
    data: dict[str, Any],
    request_id: str | None = None,
) -> Event:
    """The ``message.received`` event of one delivery."""
    return Event(
        ev.MESSAGE_RECEIVED,
        at,
        execution_id=execution_id,
        message_id=d.message_id,
        request_id=request_id,
        attempt=d.attempt,
        data=data,
    )


def _decided_alike(outcome: Event, checked: BaseModel | Rejection) -> bool:
    """Whether a recorded outcome belongs to this body: rejected for the same reason,
    or the same request. A queue that reuses message ids (an emulator restarted) may
    deliver a new message under the id of a settled one."""
    if isinstance(checked, Rejection):
        return outcome.kind == ev.MESSAGE_REJECTED and outcome.reason == checked.reason
    request_id = getattr(checked, "request_id", None)
    return outcome.kind != ev.MESSAGE_REJECTED and outcome.request_id == str(request_id)


class ExitCode(IntEnum):
    """The worker's exit codes (also ``steadyq worker``'s)."""

    OK = 0  # drained, stopped by a first signal, or reached its time budget
    ERROR = 1  # an unexpected error ended the execution
    USAGE = 2  # bad command line or settings
    BACKEND_UNAVAILABLE = 3  # the queue or store could not be opened or stayed down
    HANDLER_UNLOADABLE = 4  # the handler could not be imported or started
    INTERRUPTED = 5  # a second signal: in-flight work was nacked and the worker left


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How one execution behaves. Durations are seconds.

    ``handler`` is required to run (there is no default workload); ``schema``, when
    set, wins over the handler's own ``request_schema``.
    """

    handler: str | Handler | None = None
    runner: str = "process"
    concurrency: int = field(default_factory=lambda: os.cpu_count() or 1)
    deadline_s: float = 600.0
    max_runtime_s: float | None = None
    drain: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    lease_s: float | None = None
    # messages asked for per pull; None: the queue's own batch (``pull_batch``: one
    # Pub/Sub pull of 100), else 64
    batch_size: int | None = None
    prefetch: int = 4
    idle_poll_s: float = 1.0
    schema: type[BaseModel] | None = None
    allow_unknown_fields: bool = False
    max_bytes: int = 10 * 1024 * 1024
    backend_outage_s: float = 300.0
    artifacts_dir: str = "artifacts"
    # deliveries without an outcome before a message is given up; None: see below
    max_deliveries: int | None = None
    # lowest level of the handlers' log records that reach the sink; the store keeps
    # WARNING and above whatever this says
    log_level: int = logging.WARNING

    @property
    def effective_max_deliveries(self) -> int:
        """A generous cap on deliveries (at least 10, three per allowed run): it only
        catches messages whose worker keeps dying before their handler reports."""
        if self.max_deliveries is not None:
            return self.max_deliveries
        return max(10, 3 * self.retry.max_attempts)

    @property
    def effective_lease_s(self) -> float:
        if self.lease_s is not None:
            return self.lease_s
        return self.deadline_s + min(30.0, max(2.0, self.deadline_s * 0.1))


@dataclass(slots=True)
class ExecutionResult:
    """What one execution did."""

    execution_id: str
    status: str
    exit_code: ExitCode
    counts: Counter[str]
    started_at: float
    ready_at: float | None
    finished_at: float
    detail: str = ""

    @property
    def duration_s(self) -> float:
        return self.finished_at - self.started_at

    @property
    def startup_s(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.started_at


_Request = tuple[Delivery, BaseModel, str, float]  # delivery, request, request_id, t0


@dataclass(slots=True)
class _Commit:
    """One batch of events and settlements on its way to the store and the queue."""

    buffered: list[Event]
    pending: list[Settlement]
    request_ids: list[str]
    result: SettleResult | None = None
    error: BackendError | None = None


@dataclass(slots=True)
class _InFlight:
    delivery: Delivery
    request_id: str | None
    received_at: float
    call: Call
    claimed_until: float  # wall clock: when this execution's claim on the request lapses
    # leases are never extended past this (wall clock): the latest moment the call's
    # hard deadline can fall, after waiting behind at most `prefetch` calls
    extend_until: float = float("inf")


class Worker:
    """Runs one execution against a queue and a telemetry store.

    ``clock`` is injected for the timestamps of events; ``sink`` receives every
    event as it happens (the CLI prints them as JSON lines).
    """

    def __init__(
        self,
        queue: Queue,
        store: EventStore,
        options: WorkerOptions | None = None,
        *,
        sink: Callable[[Event], None] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        execution_id: str | None = None,
    ) -> None:
        self.queue = queue
        self.store = store
        self.options = options or WorkerOptions()
        self.gate = Gate(
            self.options.schema,
            max_bytes=self.options.max_bytes,
            allow_unknown_fields=self.options.allow_unknown_fields,
        )
        self.execution_id = execution_id or uuid.uuid4().hex[:16]
        self._sink = sink
        self._clock = clock
        self._rng = rng or random.Random()
        self._colocated = queue.colocated_store is store
        self._buffer: list[Event] = []
        self._settle: list[Settlement] = []
        self._inflight: dict[int, _InFlight] = {}
        self._requests_running: set[str] = set()
        self._settled_ids: list[str] = []  # settled, not yet recorded
        self._committer: ThreadPoolExecutor | None = None
        self._committing: Future[_Commit] | None = None
        self._parked: list[_Request] = []
        self._parked_retry_at = 0.0  # monotonic: when parked copies ask for their claim again
        self._claim_retry_s = CLAIM_RETRY_S
        self._call_ids = iter(range(1, 1 << 62))
        self._signals = 0
        self._stop_reason = ""
        self.counts: Counter[str] = Counter()
        self._outage_since: float | None = None
        self._recording_failed = False  # the outage is one of recording outcomes
        self._last_extend = 0.0

    # -- events -----------------------------------------------------------

    def _event(self, kind: str, **fields: Any) -> Event:
        event = Event(kind=kind, timestamp=self._clock(), execution_id=self.execution_id, **fields)
        if self._sink is not None:
            self._sink(event)
        return event

    def _emit(self, event: Event) -> None:
        """Queue an event written by a handler or a runner for the next flush."""
        if self._sink is not None:
            self._sink(event)
        if event.kind != ev.LOG or ev.severity_rank(event.severity) >= _STORED_LOG_RANK:
            self._buffer.append(event)

    def _log(self, severity: str, text: str, **fields: Any) -> Event:
        return self._event(ev.LOG, severity=severity, message=text, **fields)

    # -- signals ----------------------------------------------------------

    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop pulling and finish in-flight work; a second call abandons it."""
        self._signals += 1
        self._stop_reason = reason

    # -- the loop ---------------------------------------------------------

    def run(self) -> ExecutionResult:
        """Run one execution to its end and return what it did.

        Raises nothing for expected failures (an unloadable handler, a backend
        outage): they end the execution with a status and an exit code.
        """
        opts = self.options
        started = self._clock()
        started_mono = time.monotonic()
        self._write(
            [
                self._event(
                    ev.EXECUTION_STARTED,
                    message="execution started",
                    data={
                        "host": socket.gethostname(),
                        "pid": os.getpid(),
                        "runner": opts.runner,
                        "concurrency": opts.concurrency,
                        "deadline_s": opts.deadline_s,
                        "max_runtime_s": opts.max_runtime_s,
                        "max_attempts": opts.retry.max_attempts,
                        "drain": opts.drain,
                    },
                )
            ]
        )
        try:
            runner = self._make_runner()
            self._adopt_handler_schema()
            runner.start()
        except HandlerLoadError as exc:
            return self._finish(
                started, None, FAILED, ExitCode.HANDLER_UNLOADABLE, f"handler unusable: {exc}"
            )
        ready = self._clock()
        self._write(
            [
                self._event(
                    ev.EXECUTION_READY,
                    message="execution ready",
                    duration_ms=(ready - started) * 1000,
                )
            ]
        )
        if not self._colocated:
            # a store of its own: record and settle each batch beside the next pull
            self._committer = ThreadPoolExecutor(1, thread_name_prefix="steadyq-commit")
        with stop_signals(
            lambda signum: self.request_stop(f"received {signal.Signals(signum).name}")
        ):
            try:
                status, code, detail = self._loop(runner, started_mono)
            except BackendError as exc:
                status, code, detail = FAILED, ExitCode.BACKEND_UNAVAILABLE, str(exc)
                self._abandon(runner)
            except BaseException as exc:
                self._abandon(runner)
                if isinstance(exc, Exception):
                    status, code = FAILED, ExitCode.ERROR
                    detail = f"{type(exc).__name__}: {exc}"
                else:
                    raise
            finally:
                runner.close()
        return self._finish(started, ready, status, code, detail)

    def _adopt_handler_schema(self) -> None:
        """Validate with the handler's own ``request_schema`` unless the options name
        a schema.

        Raises:
            HandlerLoadError: the handler cannot be imported, or its schema is unusable.
        """
        opts = self.options
        if opts.schema is None:
            self.gate = Gate(
                worker_schema(None, opts.handler),
                max_bytes=opts.max_bytes,
                allow_unknown_fields=opts.allow_unknown_fields,
            )

    def _make_runner(self) -> Runner:
        opts = self.options
        handler = opts.handler
        if handler is None:
            raise HandlerLoadError(
                "no handler: name one with --handler module:function"
                " (the content workload: --handler steadyq.content:handle)"
            )
        if opts.runner == "inline":
            return InlineRunner(
                handler,
                execution_id=self.execution_id,
                emit=self._emit,
                log_level=opts.log_level,
            )
        if opts.runner == "process":
            return ProcessRunner(
                handler,
                concurrency=opts.concurrency,
                execution_id=self.execution_id,
                emit=self._emit,
                prefetch=opts.prefetch,
                log_level=opts.log_level,
            )
        raise ValueError(f"unknown runner {opts.runner!r}: use 'process' or 'inline'")

    def _loop(self, runner: Runner, started_mono: float) -> tuple[str, ExitCode, str]:
        opts = self.options
        lease_s = opts.effective_lease_s
        batch_size = opts.batch_size or int(getattr(self.queue, "pull_batch", DEFAULT_BATCH))
        idle_s = 0.0
        while True:
            if self._signals >= 2:
                self._abandon(runner)
                return INTERRUPTED, ExitCode.INTERRUPTED, self._stop_reason + " twice"
            elapsed = time.monotonic() - started_mono
            budget_left = None if opts.max_runtime_s is None else opts.max_runtime_s - elapsed
            may_pull = self._signals == 0 and (budget_left is None or budget_left > opts.deadline_s)
            pulled = 0
            found_empty = False  # only a pull that came back empty proves the queue drained
            if self._parked and time.monotonic() >= self._parked_retry_at:
                self._restart_parked(runner)
            capacity = runner.capacity()
            if may_pull and capacity > 0:
                asked = min(capacity, batch_size)
                deliveries = self._guarded(self.queue.pull, asked, lease_s)
                if deliveries:
                    pulled = len(deliveries)
                    self._accept(deliveries, runner)
                    spare = runner.capacity()
                    if pulled == asked and spare > 0:
                        # more is likely ready and there is room for it: a network
                        # queue fetches it while this batch is recorded and settled
                        self.queue.read_ahead(min(spare, batch_size))
                else:
                    found_empty = self._outage_since is None
            wait_s = 0.0 if pulled else min(0.2, idle_s) if self._inflight else 0.0
            outcomes = runner.poll(wait_s)
            for outcome in outcomes:
                self._settle_outcome(outcome)
            # an idle pass also waits for the commit still running in the background
            self._flush_guarded(wait=not (pulled or outcomes))
            self._extend_leases(lease_s, runner)
            if not may_pull and not self._inflight and self._parked:
                self._give_back_parked()
            if not self._inflight and not self._parked and self._committing is None:
                if not may_pull:
                    if self._signals:
                        return SUCCEEDED, ExitCode.OK, self._stop_reason
                    return SUCCEEDED, ExitCode.OK, "time budget reached"
                if opts.drain and found_empty and not outcomes and not self._unrecorded():
                    return SUCCEEDED, ExitCode.OK, "queue drained"
            if pulled or outcomes:
                idle_s = 0.0
            else:
                idle_s = min(opts.idle_poll_s, max(0.01, idle_s * 2))
                if not self._inflight:
                    self._sleep(idle_s)

    def _unrecorded(self) -> bool:
        """Outcomes or events still waiting for the store (during an outage)."""
        return bool(self._settle) or (self._recording_failed and bool(self._buffer))

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self._signals == 0 and time.monotonic() < end:
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    def _guarded(
        self, pull: Callable[[int, float], list[Delivery]], count: int, lease_s: float
    ) -> list[Delivery]:
        """Pull; during an outage log once, back off, and give up after a while."""
        try:
            result = pull(count, lease_s)
        except BackendError as exc:
            self._outage(exc)
            return []
        if self._outage_since is not None and not self._recording_failed:
            # a pull that works ends an outage of pulls; one of recording ends only
            # when what waited is recorded (a pull that finds nothing writes nothing)
            self._outage_over()
        return result

    def _outage_over(self) -> None:
        self._outage_since = None
        self._buffer.append(self._log("NOTICE", "backend available again"))

    def _outage(self, exc: BackendError) -> None:
        """Log the start of an outage once, back off, give up after a while."""
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            # the detail names the backend (the queue, or a store of its own)
            self._buffer.append(self._log("ERROR", f"backend unavailable, backing off: {exc}"))
        if now - self._outage_since > self.options.backend_outage_s:
            raise exc
        self._sleep(min(5.0, 0.1 * 2 ** min(10, int(now - self._outage_since))))

    def _flush_guarded(self, *, wait: bool = False) -> None:
        """Flush (and with ``wait``, see it committed); a failure keeps the outcomes
        for the next flush and counts as an outage."""
        try:
            if wait:
                self._flush_now()
            else:
                self._flush()
        except BackendError as exc:
            self._recording_failed = True
            self._outage(exc)

    # -- accepting deliveries ----------------------------------------------

    def _accept(self, deliveries: list[Delivery], runner: Runner) -> None:
        received: list[Event] = []
        requests: list[_Request] = []
        sink, clock, check = self._sink, self._clock, self.gate.check
        execution_id = self.execution_id
        self.counts["received"] += len(deliveries)
        recorded = self._recorded_outcomes(deliveries)
        for d in deliveries:
            outcome = recorded.get(d.message_id) if recorded else None
            if outcome is not None and _decided_alike(outcome, check(d.body)):
                self._settle_as_recorded(d, outcome, received)
                continue
            t0 = time.perf_counter()
            at = clock()
            data: dict[str, Any] = {"replays": d.replays} if d.replays else {}
            arrived = None
            if sink is not None:
                # the sink sees the arrival before the gate has looked at the body
                arrived = _arrival(execution_id, d, at, data)
                sink(arrived)
            checked = check(d.body)
            if isinstance(checked, Rejection):
                received.append(arrived or _arrival(execution_id, d, at, data))
                self._reject(d, checked, t0)
                continue
            request_id = str(getattr(checked, "request_id", ""))
            # the accepted request enters the ledger as "processing"
            data = {**data, "request": _ledger_fields(checked)}
            received.append(_arrival(execution_id, d, at, data, request_id))
            requests.append((d, checked, request_id, t0))
        # received events go before anything buffered meanwhile, so the store
        # shows each delivery's arrival before its outcome
        self._buffer[:0] = received
        self._start(requests, runner)

    def _restart_parked(self, runner: Runner) -> None:
        """Give parked copies whose request no longer runs here another try."""
        ready = [p for p in self._parked if p[2] not in self._requests_running]
        if ready:
            self._parked = [p for p in self._parked if p[2] in self._requests_running]
            self._start(ready, runner)  # received and gated already: no new events

    def _recorded_outcomes(self, deliveries: list[Delivery]) -> dict[str, Event]:
        """Outcomes already recorded for redelivered messages of a queue that does not
        share the store: the worker died after recording them, before the queue heard.
        (Where the queue shares the store, outcome and settlement commit together.)"""
        if self._colocated:
            return {}
        again = [d.message_id for d in deliveries if d.attempt > 1]
        if not again:
            return {}
        try:
            return self.store.outcomes_of(again)
        except BackendError as exc:
            # unknown: decide as for any delivery; the store being down stops the
            # record anyway, and the outage is noted by the write that fails next
            self._buffer.append(self._log("WARNING", f"could not look up outcomes: {exc}"))
            return {}

    def _settle_as_recorded(self, d: Delivery, outcome: Event, received: list[Event]) -> None:
        """Finish the settlement of a message whose outcome is recorded already: the
        outcome is not decided, run or recorded a second time."""
        self.counts["resettled"] += 1
        event = _arrival(self.execution_id, d, self._clock(), {"outcome_recorded": outcome.kind})
        if self._sink is not None:
            self._sink(event)
        received.append(event)
        if outcome.kind in (ev.MESSAGE_REJECTED, ev.MESSAGE_DEAD_LETTERED):
            self._settle.append(
                Settlement.dead_letter(
                    d, outcome.reason or "unknown", outcome.message, request_id=outcome.request_id
                )
            )
        else:
            self._settle.append(Settlement.ack(d))

    def _start(self, requests: list[_Request], runner: Runner) -> None:
        """Claim each request; ack duplicates, park copies of requests that run here or
        in another execution, run the rest.

        The claim (not a look at the ledger) is what makes a request run once: it is
        taken before a call is submitted and released with the call's outcome, so a
        copy pulled anywhere while the first runs waits for that outcome."""
        if not requests:
            return
        opts = self.options
        lease_s = opts.effective_lease_s
        here = [r for r in requests if r[2] in self._requests_running]
        others = [r for r in requests if r[2] not in self._requests_running]
        claim_until = self._clock() + lease_s
        try:
            found = self.store.claim(
                list(dict.fromkeys(r[2] for r in others)), self.execution_id, claim_until
            )
        except BackendError as exc:
            # nothing claimed: everything waits (its leases kept) until the store is back
            self._parked.extend(requests)
            self._parked_retry_at = time.monotonic() + 1.0
            self._recording_failed = True
            self._outage(exc)
            return
        self._parked.extend(here)
        busy = False
        for item in others:
            d, request, request_id, t0 = item
            state = found.get(request_id)
            if state == CLAIM_COMPLETED:
                self.counts["duplicate"] += 1
                self._settle.append(
                    Settlement.ack(
                        d,
                        [
                            self._event(
                                ev.MESSAGE_DUPLICATE,
                                message_id=d.message_id,
                                request_id=request_id,
                                attempt=d.attempt,
                                message="request already completed; acknowledged without"
                                " running the handler",
                            )
                        ],
                    )
                )
                continue
            if request_id in self._requests_running:
                self._parked.append(item)  # a second copy in this batch
                continue
            if state == CLAIM_BUSY:
                self._parked.append(item)  # another execution runs it: wait for its outcome
                busy = True
                continue
            given_up = self._given_up(d)
            if given_up is not None:
                self._dead_letter(d, request_id, *given_up)  # its event releases the claim
                continue
            call = Call(
                call_id=next(self._call_ids),
                request=request,
                attempt=d.attempt,
                message_id=d.message_id,
                request_id=request_id,
                attributes=dict(d.attributes),
                deadline_s=opts.deadline_s,
                artifacts_dir=opts.artifacts_dir,
                start_by=self._start_by(d.leased_until, claim_until),
            )
            self._inflight[call.call_id] = _InFlight(
                d,
                request_id,
                t0,
                call,
                claim_until,
                self._clock() + opts.deadline_s * (opts.prefetch + 1),
            )
            self._requests_running.add(request_id)
            runner.submit(call)
        if busy:
            self._parked_retry_at = time.monotonic() + self._claim_retry_s
            self._claim_retry_s = min(CLAIM_RETRY_MAX_S, self._claim_retry_s * 2)
        else:
            self._claim_retry_s = CLAIM_RETRY_S

    def _given_up(self, d: Delivery) -> tuple[str, str] | None:
        """(reason, detail) when a delivery must not run again: its handler ran and
        failed ``max_attempts`` times, or it was delivered ``max_deliveries`` times
        without an outcome (each time its worker died first, or around the handler)."""
        opts = self.options
        if opts.retry.exhausted(d.runs) and d.runs > 0:
            last = f"; last error: {d.last_error}" if d.last_error else ""
            return MAX_ATTEMPTS_EXCEEDED, f"gave up after {_runs(d.runs)}{last}"
        if d.attempt > opts.effective_max_deliveries:
            lost = d.attempt - 1 - d.runs
            detail = (
                f"delivered {d.attempt} times: the handler ran and failed {_runs(d.runs)},"
                f" and {lost} deliveries ended with no outcome (the worker holding the"
                " message died: a handler that kills its worker, the OOM killer, or kills"
                " from outside)"
            )
            if d.last_error:
                detail += f"; last handler error: {d.last_error}"
            return MAX_DELIVERIES_EXCEEDED, detail
        return None

    def _start_by(self, leased_until: float, claimed_until: float) -> float:
        """The last moment a call may start: a little before its lease or its claim
        lapses, whichever comes first (the runner refuses it after that)."""
        guard = min(1.0, self.options.effective_lease_s / 4)
        return min(leased_until, claimed_until) - guard

    def _reject(self, d: Delivery, rejection: Rejection, t0: float) -> None:
        self.counts["rejected"] += 1
        latency_ms = (time.perf_counter() - t0) * 1000
        # an id to label it by, unless the id is what was wrong or the body is too big
        # to read again (the gate refused it for its size without parsing it)
        request_id = (
            request_id_of(d.body)
            if rejection.reason not in (REQUEST_ID_INVALID, PAYLOAD_TOO_LARGE)
            else None
        )
        events = [
            self._event(
                ev.MESSAGE_REJECTED,
                severity="WARNING",
                message=rejection.detail,
                message_id=d.message_id,
                request_id=request_id,
                attempt=d.attempt,
                reason=rejection.reason,
                duration_ms=latency_ms,
                data={"fields": list(rejection.fields)} if rejection.fields else {},
            ),
            self._log(
                "WARNING",
                rejection.log_text,
                message_id=d.message_id,
                request_id=request_id,
                attempt=d.attempt,
                reason=rejection.reason,
            ),
        ]
        self._settle.append(
            Settlement.dead_letter(
                d, rejection.reason, rejection.detail, events, request_id=request_id
            )
        )

    def _dead_letter(self, d: Delivery, request_id: str | None, reason: str, detail: str) -> None:
        self.counts["dead_lettered"] += 1
        events = [
            self._event(
                ev.MESSAGE_DEAD_LETTERED,
                severity="ERROR",
                message=detail,
                message_id=d.message_id,
                request_id=request_id,
                attempt=d.attempt,
                reason=reason,
            ),
        ]
        self._settle.append(
            Settlement.dead_letter(d, reason, detail, events, request_id=request_id)
        )

    # -- outcomes -----------------------------------------------------------

    def _settle_outcome(self, outcome: Outcome) -> None:
        item = self._inflight.pop(outcome.call_id, None)
        if item is None:
            return
        if outcome.status == "stale":
            self._revalidate(item)
            return
        d, request_id = item.delivery, item.request_id
        if request_id is not None:
            # running until its outcome is recorded: a copy waits (parked) until then
            self._settled_ids.append(request_id)
        duration_ms = outcome.duration_s * 1000
        if outcome.status == "ok":
            self.counts["succeeded"] += 1
            succeeded = Event(
                ev.MESSAGE_SUCCEEDED,
                self._clock(),
                execution_id=self.execution_id,
                message_id=d.message_id,
                request_id=request_id,
                attempt=d.attempt,
                duration_ms=duration_ms,
                data={"result": outcome.result} if outcome.result else {},
            )
            if self._sink is not None:
                self._sink(succeeded)
            self._settle.append(Settlement(d, "ack", events=(succeeded,)))
            return
        labels: dict[str, Any] = {
            "message_id": d.message_id,
            "request_id": request_id,
            "attempt": d.attempt,
        }
        if outcome.status == "permanent":
            self.counts["dead_lettered"] += 1
            reason = outcome.reason or "handler_rejected"
            text = outcome.error or "handler raised PermanentError"
            self._settle.append(
                Settlement.dead_letter(
                    d,
                    reason,
                    text,
                    [
                        self._event(
                            ev.MESSAGE_DEAD_LETTERED,
                            severity="ERROR",
                            message=text,
                            reason=reason,
                            duration_ms=duration_ms,
                            **labels,
                        )
                    ],
                    request_id=request_id,
                )
            )
            return
        timed_out = outcome.status == "timeout"
        kind = ev.MESSAGE_TIMED_OUT if timed_out else ev.MESSAGE_FAILED
        reason = {"timeout": "deadline_exceeded", "crashed": "worker_lost"}.get(
            outcome.status, "handler_error"
        )
        self.counts["timed_out" if timed_out else "failed"] += 1
        error = outcome.error or reason
        events = [
            self._event(
                kind,
                severity="ERROR",
                message=error,
                reason=reason,
                duration_ms=duration_ms,
                data={"traceback": outcome.traceback} if outcome.traceback else {},
                **labels,
            ),
            self._log(
                "ERROR", f"Handler attempt {d.attempt} failed: {error}", reason=reason, **labels
            ),
        ]
        run = d.runs + 1  # this run, counted durably by the nack below
        if self.options.retry.exhausted(run):
            self.counts["dead_lettered"] += 1
            detail = f"gave up after {_runs(run)}"
            if d.attempt > run:
                detail += f" ({d.attempt} deliveries)"
            detail += f"; last error: {error}"
            if outcome.traceback:
                detail += "\n\n" + outcome.traceback
            events.append(
                self._event(
                    ev.MESSAGE_DEAD_LETTERED,
                    severity="ERROR",
                    message=detail,
                    **{**labels, "reason": MAX_ATTEMPTS_EXCEEDED},
                )
            )
            self._settle.append(
                Settlement.dead_letter(
                    d, MAX_ATTEMPTS_EXCEEDED, detail, events, request_id=request_id
                )
            )
        else:
            self.counts["retried"] += 1
            delay = self.options.retry.delay_s(run, self._rng)
            self._settle.append(Settlement.nack(d, delay, error=error, events=events, ran=True))

    def _revalidate(self, item: _InFlight) -> None:
        """A call the runner refused to start: its lease or claim had run out while it
        waited (this worker was frozen or stalled). Take the lease back if nobody else
        has the message, and let the claim decide again (another execution may have
        completed the request meanwhile); otherwise leave the message to its new owner."""
        d, request_id = item.delivery, item.request_id
        if request_id is not None:
            self._requests_running.discard(request_id)
        try:
            d = self.queue.extend(d, self.options.effective_lease_s)
        except LeaseLost:
            self._buffer.append(
                self._log(
                    "WARNING",
                    f"message {d.message_id} was not run here: its lease ran out while the"
                    " call waited (a frozen or stalled worker), and it was delivered again",
                    message_id=d.message_id,
                    request_id=request_id,
                    attempt=d.attempt,
                )
            )
            return
        except BackendError as exc:
            self._buffer.append(
                self._log("WARNING", f"could not extend lease: {exc}", message_id=d.message_id)
            )
            return  # its lease lapses and it comes back; nothing ran
        self._parked.append((d, item.call.request, request_id or "", item.received_at))
        self._parked_retry_at = 0.0

    # -- writing ------------------------------------------------------------

    def _write(self, events: list[Event]) -> None:
        """Write ``events`` now; during an outage they wait in the buffer for the next
        flush (the execution goes on: the pull is what decides whether it can)."""
        if not events:
            return
        try:
            self.store.write(events)
        except BackendError as exc:
            self._buffer.extend(events)
            self._buffer.append(self._log("ERROR", f"backend unavailable, backing off: {exc}"))

    def _flush(self) -> None:
        """Write buffered events and settle outcomes: one store transaction for both
        (with the settlement itself when the queue holds the store).

        With a committer thread (a queue whose store is elsewhere, usually across a
        network), the batch is handed over and recorded and settled beside the next
        pull. While a commit is still running, new outcomes wait and go together
        with the next one (up to MAX_UNCOMMITTED settlements)."""
        committing = self._committing
        if committing is not None and not committing.done() and len(self._settle) < MAX_UNCOMMITTED:
            return
        self._await_commit()
        buffered, self._buffer = self._buffer, []
        pending, self._settle = self._settle, []
        released, self._settled_ids = self._settled_ids, []
        if not pending and not buffered:
            self._release(released)
            return
        job = _Commit(buffered, pending, released)
        if self._committer is None:
            self._committed(self._commit(job))
        else:
            self._committing = self._committer.submit(self._commit, job)

    def _flush_now(self) -> None:
        """Flush everything and see it committed."""
        self._await_commit()
        self._flush()
        self._await_commit()

    def _await_commit(self) -> None:
        """Wait for the commit in the background, if any; its failure surfaces here."""
        committing, self._committing = self._committing, None
        if committing is not None:
            self._committed(committing.result())

    def _commit(self, job: _Commit) -> _Commit:
        """Record and settle one batch; a backend failure is kept in ``job.error`` with
        what is left to do (this may run on the committer thread: it touches no state
        of the worker)."""
        try:
            if not job.pending:
                self.store.write(job.buffered)
                job.buffered = []
                return job
            if self._colocated:
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

    def _committed(self, job: _Commit) -> None:
        """Account for a finished commit: note lost leases, or put back what failed."""
        if job.error is not None:
            self._buffer[:0] = job.buffered
            self._settle[:0] = job.pending
            self._settled_ids[:0] = job.request_ids
            raise job.error
        self._release(job.request_ids)
        if job.result is not None:
            self._note_lost(job.result)
        if self._recording_failed:  # what waited is recorded: the store works again
            self._recording_failed = False
            if self._outage_since is not None:
                self._outage_over()

    def _release(self, request_ids: list[str]) -> None:
        """Requests whose outcome is recorded: their parked copies may go ahead."""
        for request_id in request_ids:
            self._requests_running.discard(request_id)
        if request_ids and self._parked:
            self._parked_retry_at = 0.0

    def _note_lost(self, result: SettleResult) -> None:
        for lost in result.lost:
            self._buffer.append(
                self._log(
                    "WARNING",
                    f"lease on message {lost.delivery.message_id} was lost before its"
                    f" {lost.action} was recorded; it will be delivered again",
                    message_id=lost.delivery.message_id,
                    attempt=lost.delivery.attempt,
                )
            )

    def _extend_leases(self, lease_s: float, runner: Runner) -> None:
        now = time.monotonic()
        if now - self._last_extend < min(1.0, lease_s / 4) or not (self._inflight or self._parked):
            return
        self._last_extend = now
        wall = self._clock()
        extended: list[_InFlight] = []
        for item in self._inflight.values():
            d = item.delivery
            if d.leased_until - wall < lease_s / 2 and d.leased_until < item.extend_until:
                try:
                    item.delivery = self.queue.extend(
                        d, max(0.5, min(lease_s, item.extend_until - wall))
                    )
                    extended.append(item)
                except BackendError as exc:
                    self._buffer.append(
                        self._log(
                            "WARNING", f"could not extend lease: {exc}", message_id=d.message_id
                        )
                    )
        if extended:
            # the claim lasts as long as the lease, and so does the call's right to start
            claim_until = wall + lease_s
            try:
                self.store.extend_claims(
                    [i.request_id for i in extended if i.request_id is not None],
                    self.execution_id,
                    claim_until,
                )
            except BackendError as exc:
                self._buffer.append(self._log("WARNING", f"could not extend claims: {exc}"))
            else:
                for item in extended:
                    item.claimed_until = claim_until
            for item in extended:
                runner.renew(
                    item.call.call_id,
                    self._start_by(item.delivery.leased_until, item.claimed_until),
                )
        # a parked delivery waits for its request's running copy: keep its lease too,
        # or it is pulled again (here or elsewhere) while it waits
        for index, (d, request, request_id, t0) in enumerate(self._parked):
            if d.leased_until - wall < lease_s / 2:
                try:
                    self._parked[index] = (self.queue.extend(d, lease_s), request, request_id, t0)
                except BackendError as exc:
                    self._buffer.append(
                        self._log(
                            "WARNING", f"could not extend lease: {exc}", message_id=d.message_id
                        )
                    )

    def _give_back_parked(self) -> None:
        """Stopping: copies still waiting for another execution's claim go back to the
        queue at once (their attempt was never run here)."""
        self._settle.extend(Settlement.nack(d, 0.0) for d, *_ in self._parked)
        self._parked.clear()

    def _abandon(self, runner: Runner) -> None:
        """Kill running handlers and give their messages back at once."""
        runner.abort()
        nacks = [
            Settlement.nack(
                item.delivery, 0.0, error="execution stopped before the handler finished"
            )
            for item in self._inflight.values()
        ]
        claimed = [i.request_id for i in self._inflight.values() if i.request_id is not None]
        self._inflight.clear()
        for d, *_ in self._parked:
            nacks.append(Settlement.nack(d, 0.0))
        self._parked.clear()
        with contextlib.suppress(BackendError):
            self._flush_now()
            if nacks:
                self.queue.settle(nacks)
        with contextlib.suppress(BackendError):
            # given back without an outcome: their copies elsewhere need not wait
            self.store.release_claims(claimed, self.execution_id)

    def _finish(
        self,
        started: float,
        ready: float | None,
        status: str,
        code: ExitCode,
        detail: str,
    ) -> ExecutionResult:
        finished = self._clock()
        budget = self.options.max_runtime_s
        if status == SUCCEEDED and budget is not None and finished - started > budget:
            status = TIMED_OUT
        events = [
            self._event(
                ev.EXECUTION_FINISHED,
                severity="INFO" if status == SUCCEEDED else "ERROR",
                message=f"execution {status}: {detail}" if detail else f"execution {status}",
                duration_ms=(finished - started) * 1000,
                data={
                    "status": status,
                    "exit_code": int(code),
                    "detail": detail,
                    "counts": dict(self.counts),
                },
            )
        ]
        with contextlib.suppress(BackendError):
            self._flush_now()
            self._write(self._buffer + events)
            self._buffer = []
        if self._committer is not None:
            self._committer.shutdown()
            self._committer = None
        return ExecutionResult(
            execution_id=self.execution_id,
            status=status,
            exit_code=code,
            counts=self.counts,
            started_at=started,
            ready_at=ready,
            finished_at=finished,
            detail=detail,
        )
