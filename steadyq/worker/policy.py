"""The outcome policy: what a gate rejection, a handler's outcome, a duplicate or a
delivery given up becomes.

Pure: it reads a clock (for the events' timestamps) and a random source (for retry
delays) and nothing else. Each answer is a :class:`Decision`: the ``Settlement`` the
queue will hear of, carrying the events that describe it, and the counts it adds to
the execution's. The loop hands decisions to the recorder; nothing here writes,
prints or asks a backend.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, NamedTuple

from pydantic import BaseModel

from steadyq.brokers.base import Delivery, Settlement
from steadyq.gate import PAYLOAD_TOO_LARGE, REQUEST_ID_INVALID, Rejection, request_id_of
from steadyq.runner import Outcome
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.worker.options import MAX_ATTEMPTS_EXCEEDED, MAX_DELIVERIES_EXCEEDED, WorkerOptions

_SUCCEEDED = ("succeeded",)
_FAILURE_REASON = {"timeout": "deadline_exceeded", "crashed": "worker_lost"}


def _runs(n: int) -> str:
    return "1 run" if n == 1 else f"{n} runs"


def ledger_fields(request: BaseModel) -> dict[str, Any]:
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


def decided_alike(outcome: Event, checked: BaseModel | Rejection) -> bool:
    """Whether a recorded outcome belongs to this body: rejected for the same reason,
    or the same request. A queue that reuses message ids (an emulator restarted) may
    deliver a new message under the id of a settled one."""
    if isinstance(checked, Rejection):
        return outcome.kind == ev.MESSAGE_REJECTED and outcome.reason == checked.reason
    request_id = getattr(checked, "request_id", None)
    return outcome.kind != ev.MESSAGE_REJECTED and outcome.request_id == str(request_id)


class Decision(NamedTuple):
    """How one delivery ends: its settlement (with its events) and what it counts.

    (A named tuple: one is made per message, and it costs less than a frozen dataclass.)
    """

    settlement: Settlement
    counted: tuple[str, ...] = ()

    @property
    def events(self) -> tuple[Event, ...]:
        return tuple(self.settlement.events)


class OutcomePolicy:
    """Turns what happened to a delivery into a :class:`Decision`."""

    def __init__(
        self,
        options: WorkerOptions,
        execution_id: str,
        *,
        clock: Callable[[], float],
        rng: random.Random,
    ) -> None:
        self.options = options
        self.execution_id = execution_id
        self._clock = clock
        self._rng = rng

    def _event(self, kind: str, d: Delivery, request_id: str | None, **fields: Any) -> Event:
        return Event(
            kind,
            self._clock(),
            execution_id=self.execution_id,
            message_id=d.message_id,
            request_id=request_id,
            attempt=d.attempt,
            **fields,
        )

    def arrival(
        self, d: Delivery, at: float, data: dict[str, Any], request_id: str | None = None
    ) -> Event:
        """The ``message.received`` event of one delivery."""
        return Event(
            ev.MESSAGE_RECEIVED,
            at,
            execution_id=self.execution_id,
            message_id=d.message_id,
            request_id=request_id,
            attempt=d.attempt,
            data=data,
        )

    def reject(self, d: Delivery, rejection: Rejection, latency_ms: float) -> Decision:
        """The gate refused the body: dead-letter and ack, never retried."""
        # an id to label it by, unless the id is what was wrong or the body is too big
        # to read again (the gate refused it for its size without parsing it)
        request_id = (
            request_id_of(d.body)
            if rejection.reason not in (REQUEST_ID_INVALID, PAYLOAD_TOO_LARGE)
            else None
        )
        events = (
            self._event(
                ev.MESSAGE_REJECTED,
                d,
                request_id,
                severity="WARNING",
                message=rejection.detail,
                reason=rejection.reason,
                duration_ms=latency_ms,
                data={"fields": list(rejection.fields)} if rejection.fields else {},
            ),
            self._event(
                ev.LOG,
                d,
                request_id,
                severity="WARNING",
                message=rejection.log_text,
                reason=rejection.reason,
            ),
        )
        settlement = Settlement.dead_letter(
            d, rejection.reason, rejection.detail, events, request_id=request_id
        )
        return Decision(settlement, ("rejected",))

    def duplicate(self, d: Delivery, request_id: str) -> Decision:
        """The request's completion is recorded: ack without running the handler."""
        event = self._event(
            ev.MESSAGE_DUPLICATE,
            d,
            request_id,
            message="request already completed; acknowledged without running the handler",
        )
        return Decision(Settlement.ack(d, (event,)), ("duplicate",))

    def as_recorded(self, d: Delivery, outcome: Event) -> Decision:
        """A redelivery whose outcome is recorded already: settle it as recorded, with
        no second outcome event."""
        if outcome.kind in (ev.MESSAGE_REJECTED, ev.MESSAGE_DEAD_LETTERED):
            settlement = Settlement.dead_letter(
                d, outcome.reason or "unknown", outcome.message, request_id=outcome.request_id
            )
        else:
            settlement = Settlement.ack(d)
        return Decision(settlement, ("resettled",))

    def given_up(self, d: Delivery, request_id: str | None) -> Decision | None:
        """A dead letter when a delivery must not run again: its handler ran and failed
        ``max_attempts`` times, or it was delivered ``max_deliveries`` times without an
        outcome (each time its worker died first, or around the handler)."""
        opts = self.options
        if opts.retry.exhausted(d.runs) and d.runs > 0:
            last = f"; last error: {d.last_error}" if d.last_error else ""
            return self.dead_letter(
                d, request_id, MAX_ATTEMPTS_EXCEEDED, f"gave up after {_runs(d.runs)}{last}"
            )
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
            return self.dead_letter(d, request_id, MAX_DELIVERIES_EXCEEDED, detail)
        return None

    def dead_letter(
        self, d: Delivery, request_id: str | None, reason: str, detail: str
    ) -> Decision:
        event = self._event(
            ev.MESSAGE_DEAD_LETTERED,
            d,
            request_id,
            severity="ERROR",
            message=detail,
            reason=reason,
        )
        settlement = Settlement.dead_letter(d, reason, detail, (event,), request_id=request_id)
        return Decision(settlement, ("dead_lettered",))

    def outcome(self, d: Delivery, request_id: str | None, outcome: Outcome) -> Decision:
        """A handler call ended (not ``stale``: a call that never started is the loop's)."""
        duration_ms = outcome.duration_s * 1000
        if outcome.status == "ok":  # the hot path: built directly
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
            return Decision(Settlement(d, "ack", events=(succeeded,)), _SUCCEEDED)
        if outcome.status == "permanent":
            reason = outcome.reason or "handler_rejected"
            text = outcome.error or "handler raised PermanentError"
            event = self._event(
                ev.MESSAGE_DEAD_LETTERED,
                d,
                request_id,
                severity="ERROR",
                message=text,
                reason=reason,
                duration_ms=duration_ms,
            )
            settlement = Settlement.dead_letter(d, reason, text, (event,), request_id=request_id)
            return Decision(settlement, ("dead_lettered",))
        timed_out = outcome.status == "timeout"
        reason = _FAILURE_REASON.get(outcome.status, "handler_error")
        error = outcome.error or reason
        events = [
            self._event(
                ev.MESSAGE_TIMED_OUT if timed_out else ev.MESSAGE_FAILED,
                d,
                request_id,
                severity="ERROR",
                message=error,
                reason=reason,
                duration_ms=duration_ms,
                data={"traceback": outcome.traceback} if outcome.traceback else {},
            ),
            self._event(
                ev.LOG,
                d,
                request_id,
                severity="ERROR",
                message=f"Handler attempt {d.attempt} failed: {error}",
                reason=reason,
            ),
        ]
        failed = "timed_out" if timed_out else "failed"
        run = d.runs + 1  # this run, counted durably by the nack below
        if self.options.retry.exhausted(run):
            detail = f"gave up after {_runs(run)}"
            if d.attempt > run:
                detail += f" ({d.attempt} deliveries)"
            detail += f"; last error: {error}"
            if outcome.traceback:
                detail += "\n\n" + outcome.traceback
            events.append(
                self._event(
                    ev.MESSAGE_DEAD_LETTERED,
                    d,
                    request_id,
                    severity="ERROR",
                    message=detail,
                    reason=MAX_ATTEMPTS_EXCEEDED,
                )
            )
            settlement = Settlement.dead_letter(
                d, MAX_ATTEMPTS_EXCEEDED, detail, events, request_id=request_id
            )
            return Decision(settlement, (failed, "dead_lettered"))
        delay = self.options.retry.delay_s(run, self._rng)
        settlement = Settlement.nack(d, delay, error=error, events=events, ran=True)
        return Decision(settlement, (failed, "retried"))
