"""Shared fixtures: a controllable clock and backends by name."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.test_reliability import Processes


class FakeClock:
    """A clock that moves only when told to; injected wherever steadyq reads the time."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def require_service(available: bool, reason: str) -> None:
    """Skip a test that needs an absent service, except under CI where it must fail."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"required service missing under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own folder, so defaults such as ``./artifacts`` land there."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    """Worker subprocesses (and stray pids) that die with the test, whatever happens."""
    from tests.test_reliability import Processes

    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()
