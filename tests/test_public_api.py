"""Guards on the public surface: what ``import steadyq`` offers is deliberate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import steadyq

EXPECTED = {
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
}


def test_all_is_exactly_the_public_api() -> None:
    assert set(steadyq.__all__) == EXPECTED
    for name in steadyq.__all__:
        assert hasattr(steadyq, name), name


def test_every_error_derives_from_the_root() -> None:
    for name in steadyq.__all__:
        obj = getattr(steadyq, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, steadyq.SteadyqError), name


def test_embedding_example_from_the_issue(tmp_path: Path) -> None:
    q = steadyq.open_queue(f"sqlite:///{tmp_path}/steadyq.db")
    mid = q.publish(b'{"request_id": "x"}', attributes={"source": "smoke"})
    [d] = q.pull(1, 10)
    assert d.message_id == mid and d.attributes == {"source": "smoke"}


def test_import_is_light() -> None:
    code = (
        "import sys, steadyq; "
        "bad = [m for m in ('psycopg', 'google.cloud.pubsub_v1', 'huey', 'hypothesis',"
        " 'steadyq.content', 'PIL', 'av') "
        "if m in sys.modules]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
