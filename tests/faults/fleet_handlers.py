"""Handlers for the fleet fault tests (``tests.faults.fleet_handlers:NAME``).

Evidence goes to the folder named by the message attribute ``dir``, one whole line per
``os.write`` on an O_APPEND descriptor, so concurrent processes never interleave lines.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from steadyq.runner import HandlerContext
from tests.faults.handlers import _note


def start_then_maybe_fail(request: Any, ctx: HandlerContext) -> None:
    """Note ``<request_id> <wall clock start> <pid>`` in ``starts.log``, work 2–6 ms; a
    request whose ``topic`` is ``flaky`` fails its first run (a transient error)."""
    _note(
        Path(ctx.attributes["dir"]) / "starts.log",
        f"{ctx.request_id} {time.time():.6f} {os.getpid()}",
    )
    time.sleep(0.002 + (hash(ctx.message_id) % 5) / 1000)
    topic = getattr(request, "topic", None) or (
        request.get("topic") if isinstance(request, dict) else None
    )
    if topic == "flaky" and ctx.attempt == 1:
        raise ConnectionError("flaky: the first run fails on purpose")
