"""Filesystem conditions for the fault tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def chattr(flag: str, *paths: Path) -> bool:
    """Run ``chattr FLAG PATHS``; False where the filesystem or the user may not."""
    try:
        done = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
