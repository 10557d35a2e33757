"""Atomic file writes: whole files only, with ordinary permissions."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from steadyq._files import _UMASK, write_atomic


def test_written_whole_with_the_permissions_open_would_give(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    write_atomic(target, b"first")
    write_atomic(target, b"second version")
    assert target.read_bytes() == b"second version"
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_UMASK
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"], "no temp file left behind"
    mask = os.umask(0o022)
    os.umask(mask)
    assert mask == _UMASK, "the umask read at import is the process's"
