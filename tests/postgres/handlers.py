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
