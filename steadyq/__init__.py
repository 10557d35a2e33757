"""steadyq: queue-driven workers that cannot be poisoned.

The public API::

    import steadyq
    q = steadyq.open_queue("sqlite:///steadyq.db")
    mid = q.publish(b'{"request_id": "...", "topic": "fractions"}', attributes={"source": "smoke"})

The content workload is not part of it: ``steadyq.content`` (the ``steadyq[content]``
extra) plugs in as any handler does.
"""

from steadyq.brokers import open_queue, store_for
from steadyq.brokers.base import (
    DeadLetter,
    Delivery,
    DlqFilter,
    Queue,
    QueueStats,
    Settlement,
    SettleResult,
)
from steadyq.errors import (
    BackendError,
    BackendUnavailable,
    ConfigError,
    HandlerLoadError,
    LeaseLost,
    NotFound,
    PermanentError,
    ReplayRefused,
    SteadyqError,
)
from steadyq.gate import Gate, Rejection, Request
from steadyq.policy import RetryPolicy
from steadyq.runner import HandlerContext
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import EventFilter, EventStore, ExecutionRecord
from steadyq.worker import ExecutionResult, ExitCode, Worker, WorkerOptions

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "BackendUnavailable",
    "ConfigError",
    "DeadLetter",
    "Delivery",
    "DlqFilter",
    "Event",
    "EventFilter",
    "EventStore",
    "ExecutionRecord",
    "ExecutionResult",
    "ExitCode",
    "Gate",
    "HandlerContext",
    "HandlerLoadError",
    "LeaseLost",
    "NotFound",
    "PermanentError",
    "Queue",
    "QueueStats",
    "Rejection",
    "ReplayRefused",
    "Request",
    "RetryPolicy",
    "SettleResult",
    "Settlement",
    "SteadyqError",
    "Worker",
    "WorkerOptions",
    "__version__",
    "open_queue",
    "store_for",
]
