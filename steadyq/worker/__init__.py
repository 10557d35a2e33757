"""The worker: one :class:`Worker` run is one *execution* (a Cloud Run Job task, a cron
run, a pod): ``execution.started`` → ``execution.ready`` → ``execution.finished``.
Every delivery ends in exactly one of: succeeded (ack), duplicate (ack), rejected
(dead-letter + ack), dead-lettered (dead-letter + ack), or retried (nack with backoff)
— and the events say which.

The pieces, each readable and testable alone (docs/worker.md, "How the worker is built"):

* :mod:`.options`: ``WorkerOptions``, ``ExecutionResult``, ``ExitCode``;
* :mod:`.policy`: ``OutcomePolicy``, what a rejection, an outcome, a duplicate or a
  delivery given up becomes (a ``Decision``: settlement, events, counts); pure;
* :mod:`.recorder`: ``Recorder``, the buffer, the pending settlements and the commit
  (on a committer thread when the store is not the queue's);
* :mod:`.outage`: ``OutageGuard``, through which every backend call of the loop goes;
* :mod:`.leases`: ``LeaseKeeper``, calls in flight, parked copies, their leases and claims;
* :mod:`.loop`: ``Worker``, the loop that composes them.
"""

from steadyq.worker.loop import Worker
from steadyq.worker.options import (
    DEFAULT_BATCH,
    MAX_ATTEMPTS_EXCEEDED,
    MAX_DELIVERIES_EXCEEDED,
    MAX_UNCOMMITTED,
    ExecutionResult,
    ExitCode,
    WorkerOptions,
)

__all__ = [
    "DEFAULT_BATCH",
    "MAX_ATTEMPTS_EXCEEDED",
    "MAX_DELIVERIES_EXCEEDED",
    "MAX_UNCOMMITTED",
    "ExecutionResult",
    "ExitCode",
    "Worker",
    "WorkerOptions",
]
