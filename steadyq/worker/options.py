"""What one execution is told (``WorkerOptions``) and what it reports (``ExecutionResult``,
``ExitCode``), and the worker's fixed numbers."""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field

from pydantic import BaseModel

from steadyq.brokers.base import DLQ_RETENTION_S
from steadyq.exit_codes import ExitCode as ExitCode  # the commands' codes, defined once
from steadyq.policy import RetryPolicy
from steadyq.runner import Handler

MAX_ATTEMPTS_EXCEEDED = "max_attempts_exceeded"
MAX_DELIVERIES_EXCEEDED = "max_deliveries_exceeded"
DEFAULT_BATCH = 64  # messages per pull unless the queue or the options say otherwise
# settlements that may wait while the committer thread is busy before the loop waits too
MAX_UNCOMMITTED = 1000
# how soon a copy parked behind another execution's claim asks again (doubling up to the max)
CLAIM_RETRY_S = 0.1
CLAIM_RETRY_MAX_S = 2.0
# how often a worker applies its retention (the first time soon after it is ready)
RETENTION_EVERY_S = 3600.0


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
    # retention the worker applies by itself, every RETENTION_EVERY_S (0 keeps forever):
    # dead letters older than this are deleted (a queue whose broker expires them itself,
    # Pub/Sub, deletes nothing); telemetry (events, finished ledger rows) is kept unless set
    dlq_retention_s: float = DLQ_RETENTION_S
    telemetry_retention_s: float = 0.0

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
