"""Handlers for the fault tests, loaded by ``steadyq worker`` as ``tests.faults.handlers:NAME``.

The scratch folder comes in the message attribute ``dir``; evidence is appended there
one whole line per ``os.write`` (O_APPEND), so concurrent children never interleave.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from steadyq.runner import HandlerContext

GATE_TIMEOUT_S = 60.0


def _note(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def gated(request: Any, ctx: HandlerContext) -> None:
    """Note the start, wait until the test creates ``go`` in the folder, note the end.

    Lets a test put the backend into a fault while calls are running, so their
    outcomes meet the fault when the worker records them.
    """
    folder = Path(ctx.attributes["dir"])
    _note(folder / "started.log", f"{ctx.message_id} {ctx.attempt}")
    end = time.monotonic() + GATE_TIMEOUT_S
    while not (folder / "go").exists():
        if time.monotonic() > end:
            raise TimeoutError("the test never opened the gate")
        time.sleep(0.02)
    _note(folder / "ran.log", f"{ctx.message_id} {ctx.attempt}")


def bulky(request: Any, ctx: HandlerContext) -> dict[str, str]:
    """Succeed with a 20 kB result: recording the outcome needs new database pages."""
    _note(Path(ctx.attributes["dir"]) / "ran.log", f"{ctx.message_id} {ctx.attempt}")
    return {"blob": "x" * 20_000}
