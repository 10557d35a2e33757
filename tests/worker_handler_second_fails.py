"""A handler module whose import fails in the second handler process that loads it.

$STEADYQ_TEST_LOADS names a folder: each handler process notes its pid there; the one
that finds another's note raises. The worker process itself imports it freely.
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any

if multiprocessing.current_process().name == "steadyq-handler":
    _folder = Path(os.environ["STEADYQ_TEST_LOADS"])
    try:
        fd = os.open(_folder / "first", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        raise RuntimeError("the second handler process refuses to load") from None
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)


def handle(request: Any, ctx: Any) -> None:
    return None
