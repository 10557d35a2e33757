"""Built-in handlers.

``record`` is the default until the content workload lands: it accepts the
request and logs nothing; the worker's ``message.succeeded`` event is the record.
"""

from __future__ import annotations

from typing import Any

from steadyq.runner import HandlerContext


def record(request: Any, ctx: HandlerContext) -> None:
    """Accept the request: the worker records its success in the store."""


def noop(request: Any, ctx: HandlerContext) -> None:
    """Do nothing; for benchmarks."""
