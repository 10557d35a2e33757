"""Handlers for tests/test_process_runner.py: a request is (what, seconds, log path)."""

from __future__ import annotations

import os
import time
from typing import Any

from steadyq.runner import HandlerContext


def work(request: Any, ctx: HandlerContext) -> None:
    """Sleep ``seconds`` (or hang for ``what == "hang"``, or return at once for
    ``"noop"``), then note the call's message id and this process's pid in the log: one
    line per call run to its end."""
    what, seconds, log = request
    if what == "noop":
        return  # nothing, not even the log: as quick as a call gets
    if what == "hang":
        while True:
            time.sleep(1)
    time.sleep(seconds)
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"{ctx.message_id} {os.getpid()}\n")
