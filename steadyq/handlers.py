"""Built-in handlers.

``record`` accepts the request and does nothing else (the worker's
``message.succeeded`` event is the record); ``noop`` is the same, named for
benchmarks. The default handler is the content workload, ``steadyq.content:handle``.
"""

from __future__ import annotations

from typing import Any

from steadyq.runner import HandlerContext


def record(request: Any, ctx: HandlerContext) -> None:
    """Accept the request: the worker records its success in the store."""


def noop(request: Any, ctx: HandlerContext) -> None:
    """Do nothing; for benchmarks."""
