"""The execution loop: pull, gate, start, collect, settle — composed of the outcome
policy (what each delivery becomes), the recorder (what is written, and in which order),
the lease keeper (what is held) and the outage guard (every backend call)."""

from __future__ import annotations

import contextlib
import gc
import os
import random
import signal
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from steadyq._signals import stop_signals
from steadyq.brokers.base import Delivery, Queue
from steadyq.errors import BackendError, HandlerLoadError, LeaseLost
from steadyq.gate import Gate, Rejection
from steadyq.handlers import worker_schema
from steadyq.runner import Call, InlineRunner, Outcome, ProcessRunner, Runner
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
from steadyq.worker.leases import InFlight, LeaseKeeper, Request
from steadyq.worker.options import (
    DEFAULT_BATCH,
    ExecutionResult,
    ExitCode,
    WorkerOptions,
)
from steadyq.worker.outage import OutageGuard
from steadyq.worker.policy import Decision, OutcomePolicy, decided_alike, ledger_fields
from steadyq.worker.recorder import Recorder
from steadyq.worker.retention import RetentionKeeper


def make_runner(opts: WorkerOptions, execution_id: str, emit: Callable[[Event], None]) -> Runner:
    """The runner the options name (not started).

    Raises:
        HandlerLoadError: no handler is named.
        ValueError: an unknown runner.
    """
    handler = opts.handler
    if handler is None:
        raise HandlerLoadError(
            "no handler: name one with --handler module:function"
            " (the content workload: --handler steadyq.content:handle)"
        )
    if opts.runner == "inline":
        return InlineRunner(handler, execution_id=execution_id, emit=emit, log_level=opts.log_level)
    if opts.runner == "process":
        return ProcessRunner(
            handler,
            concurrency=opts.concurrency,
            execution_id=execution_id,
            emit=emit,
            prefetch=opts.prefetch,
            log_level=opts.log_level,
        )
    raise ValueError(f"unknown runner {opts.runner!r}: use 'process' or 'inline'")


def _started_data(opts: WorkerOptions) -> dict[str, Any]:
    """What ``execution.started`` says about the execution."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "runner": opts.runner,
        "concurrency": opts.concurrency,
        "deadline_s": opts.deadline_s,
        "max_runtime_s": opts.max_runtime_s,
        "max_attempts": opts.retry.max_attempts,
        "drain": opts.drain,
    }


@contextlib.contextmanager
def _heap_frozen() -> Iterator[None]:
    """Keep what is in memory when the loop starts (modules, classes, the clients' and
    pydantic's objects: tens of thousands) out of the garbage collector's passes while
    the loop runs, and give it back at the end.

    The loop makes short-lived objects by the million, so the collector runs often, and
    each of its full passes walked every one of those long-lived objects again: with a
    Pub/Sub client loaded, 40-55 ms a pass, one or two passes every 10,000 messages.
    Frozen, the same pass takes well under a millisecond. It changes nothing the worker
    does: a cycle of garbage among the frozen objects is only freed after the loop.
    (The freeze is process-wide; executions that overlap in one process share it.)
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class PullReach:
    """How many messages the next pull asks for.

    Normally what the runner has room to start: a worker takes no more than it can
    run, and the rest stays in the queue for the other executions. But a batch that
    started no call (poison, copies already done, outcomes already recorded) says
    nothing of the handler's pace, and the room is then often one call (an inline
    runner that has not timed a call yet): a stream of poison was pulled, recorded and
    dead-lettered one message at a time, a transaction (or a publish and an ack RPC)
    each. So after a full pull that brought no request to run, the next pull asks for
    twice as many, up to a batch, while the last commit of rejections took at most
    half the queue's ``rejection_budget_s``, and half as many once one took longer
    than the budget. A pull that brings requests ends it; those beyond the
    runner's room wait, unclaimed, for the next passes (``LeaseKeeper.take``).
    """

    def __init__(self, batch_size: int, budget_s: float) -> None:
        self.batch_size = batch_size
        self.budget_s = budget_s
        self.floor = 0  # the least the next pull asks for, whatever the runner's room

    @classmethod
    def of(cls, queue: Queue, batch_size: int) -> PullReach:
        """The reach of pulls from ``queue`` (a wrapper without the attribute: the default)."""
        return cls(batch_size, getattr(queue, "rejection_budget_s", Queue.rejection_budget_s))

    def ask(self, room: int) -> int:
        return min(self.batch_size, max(room, self.floor))

    def pulled(self, asked: int, got: int, requests: int, took_s: float | None) -> None:
        """After a pull: ``got`` of ``asked`` came, ``requests`` of them to run;
        ``took_s``: how long the last commit of rejections took (None: none yet)."""
        if requests:
            self.floor = 0
        elif took_s is not None and took_s > self.budget_s:
            self.floor = asked // 2
        elif got >= asked and (took_s is None or took_s <= self.budget_s / 2):
            self.floor = min(self.batch_size, 2 * asked)


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
        self.options = opts = options or WorkerOptions()
        self.gate = Gate(
            opts.schema, max_bytes=opts.max_bytes, allow_unknown_fields=opts.allow_unknown_fields
        )
        self.execution_id = execution_id or uuid.uuid4().hex[:16]
        self._sink = sink
        self._clock = clock
        self.counts: Counter[str] = Counter()
        self.policy = OutcomePolicy(
            opts, self.execution_id, clock=clock, rng=rng or random.Random()
        )
        self.recorder = Recorder(queue, store, self.execution_id, clock=clock, sink=sink)
        self.guard = OutageGuard(self.recorder, opts.backend_outage_s, self._sleep)
        self.leases = LeaseKeeper(queue, store, opts, self.execution_id, self.guard, clock=clock)
        self.recorder.on_released = self.leases.released
        self._call_ids = iter(range(1, 1 << 62))
        self._signals = 0
        self._stop_reason = ""
        self.retention = RetentionKeeper(queue, store, opts, self.guard, self.recorder)

    def request_stop(self, reason: str = "stop requested") -> None:
        """Stop pulling and finish in-flight work; a second call abandons it."""
        self._signals += 1
        self._stop_reason = reason

    def _decide(self, decision: Decision) -> None:
        counts = self.counts
        for key in decision.counted:
            counts[key] += 1
        self.recorder.decide(decision)

    # -- one execution --------------------------------------------------------

    def run(self) -> ExecutionResult:
        """Run one execution to its end and return what it did.

        Raises nothing for expected failures (an unloadable handler, a backend
        outage): they end the execution with a status and an exit code.
        """
        opts, rec = self.options, self.recorder
        started = self._clock()
        started_mono = time.monotonic()
        first = rec.event(
            ev.EXECUTION_STARTED, message="execution started", data=_started_data(opts)
        )
        self.guard.record(rec.write_now, [first], back_off=False)
        try:
            runner = self._make_runner()
            self._adopt_handler_schema()
            runner.start()
        except HandlerLoadError as exc:
            return self._finish(
                started, None, FAILED, ExitCode.HANDLER_UNLOADABLE, f"handler unusable: {exc}"
            )
        ready = self._clock()
        ready_event = rec.event(
            ev.EXECUTION_READY, message="execution ready", duration_ms=(ready - started) * 1000
        )
        self.guard.record(rec.write_now, [ready_event], back_off=False)
        rec.start_committer()
        with stop_signals(
            lambda signum: self.request_stop(f"received {signal.Signals(signum).name}")
        ):
            try:
                with _heap_frozen():
                    status, code, detail = self._loop(runner, started_mono)
            except BackendError as exc:
                status, code, detail = FAILED, ExitCode.BACKEND_UNAVAILABLE, str(exc)
                self._abandon(runner)
            except BaseException as exc:
                self._abandon(runner)
                if not isinstance(exc, Exception):
                    raise
                status, code, detail = FAILED, ExitCode.ERROR, f"{type(exc).__name__}: {exc}"
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
        return make_runner(self.options, self.execution_id, self.recorder.emit)

    def _loop(self, runner: Runner, started_mono: float) -> tuple[str, ExitCode, str]:
        opts, rec, leases = self.options, self.recorder, self.leases
        lease_s = opts.effective_lease_s
        batch_size = opts.batch_size or int(getattr(self.queue, "pull_batch", DEFAULT_BATCH))
        reach = PullReach.of(self.queue, batch_size)
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
            ready = leases.ready()
            if ready:
                self._start(ready, runner)  # received and gated already: no new events
            capacity = runner.capacity()
            if may_pull and capacity > 0:
                asked = reach.ask(capacity)
                deliveries = self.guard.pull(self.queue.pull, asked, lease_s, lease_s=lease_s)
                if deliveries:
                    pulled = len(deliveries)
                    started = self._accept(deliveries, runner)
                    reach.pulled(asked, pulled, started, rec.rejections_took_s)
                    spare = runner.capacity()
                    if pulled == asked and spare > 0:
                        # more is likely ready and there is room for it: a network
                        # queue fetches it while this batch is recorded and settled
                        self.guard.call(
                            "note", self.queue.read_ahead, reach.ask(spare), what="read ahead"
                        )
                else:
                    found_empty = self.guard.drained(self.queue.stats)
            wait_s = 0.0 if pulled else min(0.2, idle_s) if leases.inflight else 0.0
            outcomes = runner.poll(wait_s)
            for outcome in outcomes:
                self._collect(outcome)
            # an idle pass also waits for the commit still running in the background
            self.guard.record(rec.flush_now if not (pulled or outcomes) else rec.flush)
            leases.extend(lease_s, runner)
            self.retention.tick()
            if not may_pull and not leases.inflight and leases.parked:
                rec.settle(leases.give_back_parked())
            if not leases.holding and not rec.committing:
                if not may_pull:
                    if self._signals:
                        return SUCCEEDED, ExitCode.OK, self._stop_reason
                    return SUCCEEDED, ExitCode.OK, "time budget reached"
                if opts.drain and found_empty and not outcomes and not rec.unrecorded():
                    return SUCCEEDED, ExitCode.OK, "queue drained"
            if pulled or outcomes:
                idle_s = 0.0
            else:
                idle_s = min(opts.idle_poll_s, max(0.01, idle_s * 2))
                if not leases.inflight and self._signals == 0:
                    # a queue that announces publishes (PostgreSQL) wakes the worker at once
                    woken = self.queue.wait_for_messages(idle_s)
                    if woken is None:
                        self._sleep(idle_s)
                    elif woken:
                        idle_s = 0.0

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self._signals == 0 and time.monotonic() < end:
            time.sleep(min(0.05, max(0.0, end - time.monotonic())))

    # -- accepting deliveries ---------------------------------------------------

    def _accept(self, deliveries: list[Delivery], runner: Runner) -> int:
        """Gate and record a pulled batch; start its requests. Returns how many
        requests it brought (not rejected, not recorded already)."""
        received: list[Event] = []
        requests: list[Request] = []
        sink, clock, check, policy = self._sink, self._clock, self.gate.check, self.policy
        self.counts["received"] += len(deliveries)
        recorded = self._recorded_outcomes(deliveries)
        for d in deliveries:
            outcome = recorded.get(d.message_id) if recorded else None
            if outcome is not None and decided_alike(outcome, check(d.body)):
                event = policy.arrival(d, clock(), {"outcome_recorded": outcome.kind})
                self.recorder.show(event)
                received.append(event)
                self._decide(policy.as_recorded(d, outcome))
                continue
            t0 = time.perf_counter()
            at = clock()
            data: dict[str, Any] = {"replays": d.replays} if d.replays else {}
            arrived = None
            if sink is not None:
                # the sink sees the arrival before the gate has looked at the body
                arrived = policy.arrival(d, at, data)
                sink(arrived)
            checked = check(d.body)
            if isinstance(checked, Rejection):
                received.append(arrived or policy.arrival(d, at, data))
                self._decide(policy.reject(d, checked, (time.perf_counter() - t0) * 1000))
                continue
            request_id = str(getattr(checked, "request_id", ""))
            # the accepted request enters the ledger as "processing"
            data = {**data, "request": ledger_fields(checked)}
            received.append(policy.arrival(d, at, data, request_id))
            requests.append((d, checked, request_id, t0))
        self.recorder.received(received)
        # poison is dead-lettered now, not after this batch's handlers (a store of its own)
        self.guard.record(self.recorder.flush_rejections)
        self._start(requests, runner)
        return len(requests)

    def _recorded_outcomes(self, deliveries: list[Delivery]) -> dict[str, Event]:
        """Outcomes already recorded for redelivered messages of a queue that does not
        share the store: the worker died after recording them, before the queue heard.
        (Where the queue shares the store, outcome and settlement commit together.)
        Unknown when the store is down: decided as for any delivery."""
        if self.recorder.colocated:
            return {}
        again = [d.message_id for d in deliveries if d.attempt > 1]
        if not again:
            return {}
        found: dict[str, Event] = self.guard.call(
            "note", self.store.outcomes_of, again, fallback={}, what="look up outcomes"
        )
        return found

    def _start(self, requests: list[Request], runner: Runner) -> None:
        """Claim each request; ack duplicates, park copies of requests that run here or
        in another execution, run the rest.

        The claim (not a look at the ledger) is what makes a request run once: it is
        taken before a call is submitted and released with the call's outcome, so a
        copy pulled anywhere while the first runs waits for that outcome."""
        opts, leases, policy = self.options, self.leases, self.policy
        requests = leases.take(requests, runner.capacity())
        if not requests:
            return
        running = leases.running
        here: list[Request] = []
        others: list[Request] = []
        for r in requests:
            (here if r[2] in running else others).append(r)
        claim_until = self._clock() + opts.effective_lease_s
        ids = list(dict.fromkeys([r[2] for r in others]))
        found = self.guard.call(
            "record", self.store.claim, ids, self.execution_id, claim_until, fallback=None
        )
        if found is None:
            # nothing claimed: everything waits (its leases kept) until the store is back
            leases.park(requests, retry_in=1.0)
            return
        leases.park(here)
        busy = False
        # what every call of the batch shares, worked out once
        max_deliveries = opts.effective_max_deliveries
        start_guard = leases.start_guard_s
        deadline_s, artifacts_dir = opts.deadline_s, opts.artifacts_dir
        hold_s = deadline_s * (opts.prefetch + 1)
        call_ids, clock, track, submit = self._call_ids, self._clock, leases.track, runner.submit
        for item in others:
            d, request, request_id, t0 = item
            state = found.get(request_id)
            if state == CLAIM_COMPLETED:
                self._decide(policy.duplicate(d, request_id))
                continue
            if request_id in running:
                leases.park([item])  # a second copy in this batch
                continue
            if state == CLAIM_BUSY:
                leases.park([item])  # another execution runs it: wait for its outcome
                busy = True
                continue
            if d.runs > 0 or d.attempt > max_deliveries:  # else given_up has no answer
                given_up = policy.given_up(d, request_id)
                if given_up is not None:
                    self._decide(given_up)  # its event releases the claim
                    continue
            leased_until = d.leased_until
            call = Call(
                call_id=next(call_ids),
                request=request,
                attempt=d.attempt,
                message_id=d.message_id,
                request_id=request_id,
                attributes=dict(d.attributes),
                deadline_s=deadline_s,
                artifacts_dir=artifacts_dir,
                start_by=min(leased_until, claim_until) - start_guard,
            )
            track(InFlight(d, request_id, t0, call, claim_until, clock() + hold_s))
            submit(call)
        leases.claim_answered(busy=busy)

    # -- outcomes -----------------------------------------------------------------

    def _collect(self, outcome: Outcome) -> None:
        item = self.leases.inflight.pop(outcome.call_id, None)
        if item is None:
            return
        if outcome.status == "stale":
            self._revalidate(item)
            return
        if item.request_id is not None:
            # running until its outcome is recorded: a copy waits (parked) until then
            self.recorder.outcome_waits(item.request_id)
        self._decide(self.policy.outcome(item.delivery, item.request_id, outcome))

    def _revalidate(self, item: InFlight) -> None:
        """A call the runner refused to start: its lease or claim had run out while it
        waited (this worker was frozen or stalled). Take the lease back if nobody else
        has the message, and let the claim decide again (another execution may have
        completed the request meanwhile); otherwise leave the message to its new owner."""
        d, request_id = item.delivery, item.request_id
        if request_id is not None:
            self.leases.running.discard(request_id)
        try:
            renewed = self.guard.call(
                "note",
                self.queue.extend,
                d,
                self.options.effective_lease_s,
                what="extend lease",
                passthrough=(LeaseLost,),
                labels={"message_id": d.message_id},
            )
        except LeaseLost:
            self.recorder.log(
                "WARNING",
                f"message {d.message_id} was not run here: its lease ran out while the"
                " call waited (a frozen or stalled worker), and it was delivered again",
                message_id=d.message_id,
                request_id=request_id,
                attempt=d.attempt,
            )
            return
        if renewed is None:
            return  # its lease lapses and it comes back; nothing ran
        self.leases.park([(renewed, item.call.request, request_id or "", item.received_at)])
        self.leases.retry_at = 0.0

    # -- the end ------------------------------------------------------------------

    def _abandon(self, runner: Runner) -> None:
        """Kill running handlers and give their messages back at once."""
        runner.abort()
        nacks, claimed = self.leases.abandon()
        if self.guard.quietly(self.recorder.flush_now) and nacks:
            self.guard.quietly(self.queue.settle, nacks)
        # given back without an outcome: their copies elsewhere need not wait
        self.guard.quietly(self.store.release_claims, claimed, self.execution_id)

    def _finish(
        self, started: float, ready: float | None, status: str, code: ExitCode, detail: str
    ) -> ExecutionResult:
        finished = self._clock()
        budget = self.options.max_runtime_s
        if status == SUCCEEDED and budget is not None and finished - started > budget:
            status = TIMED_OUT
        rec = self.recorder
        last = rec.event(
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
        if self.guard.quietly(rec.flush_now):
            events, rec.buffer = [*rec.buffer, last], []
            self.guard.quietly(rec.write_now, events)
        rec.close()
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
