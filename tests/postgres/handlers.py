"""Handlers of the PostgreSQL tests (importable by worker processes)."""

from __future__ import annotations

import os
import time
from typing import Any


def gated(request: Any, ctx: Any) -> None:
    """Wait until the file ``$STEADYQ_TEST_GATE`` exists, then succeed."""
    gate = os.environ["STEADYQ_TEST_GATE"]
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)


def odd_text(request: Any, ctx: Any) -> None:
    """Fail with text PostgreSQL's text type cannot hold: a NUL, a lone surrogate."""
    ctx.logger.warning("careful: \x00 and \udcff in a log record")
    raise ValueError(f"bad byte \x00 in {request.topic!s} \udcff")
