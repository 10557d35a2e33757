"""steadyq: queue-driven workers that cannot be poisoned.

The public API::

    import steadyq
    q = steadyq.open_queue("sqlite:///steadyq.db")
    mid = q.publish(b'{"request_id": "...", "topic": "fractions"}', attributes={"source": "smoke"})

The content workload is not part of it: ``steadyq.content`` (the ``steadyq[content]``
extra) plugs in as any handler does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# what each public name is, imported on first use (PEP 562): ``import steadyq.runner``
# (a handler child, the forkserver) then costs the runner's own imports, not the whole
# package's (the brokers, the stores, the worker)
_WHERE: dict[str, str] = {
    "BackendError": "steadyq.errors",
    "BackendUnavailable": "steadyq.errors",
    "ConfigError": "steadyq.errors",
    "DeadLetter": "steadyq.brokers.base",
    "Delivery": "steadyq.brokers.base",
    "DlqFilter": "steadyq.brokers.base",
    "Event": "steadyq.telemetry.events",
    "EventFilter": "steadyq.telemetry.store",
    "EventStore": "steadyq.telemetry.store",
    "ExecutionRecord": "steadyq.telemetry.store",
    "ExecutionResult": "steadyq.worker",
    "ExitCode": "steadyq.worker",
    "Gate": "steadyq.gate",
    "HandlerContext": "steadyq.runner",
    "HandlerLoadError": "steadyq.errors",
    "LeaseLost": "steadyq.errors",
    "NotFound": "steadyq.errors",
    "PermanentError": "steadyq.errors",
    "Queue": "steadyq.brokers.base",
    "QueueStats": "steadyq.brokers.base",
    "Rejection": "steadyq.gate",
    "ReplayRefused": "steadyq.errors",
    "Request": "steadyq.gate",
    "RetryPolicy": "steadyq.policy",
    "SettleResult": "steadyq.brokers.base",
    "Settlement": "steadyq.brokers.base",
    "SteadyqError": "steadyq.errors",
    "Worker": "steadyq.worker",
    "WorkerOptions": "steadyq.worker",
    "open_queue": "steadyq.brokers",
    "store_for": "steadyq.brokers",
}

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


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'steadyq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
