"""Fixtures of the PostgreSQL tests: a fresh schema per test (tests/postgres_db.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres_db import postgres_url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a fresh schema on the machine's PostgreSQL, dropped after the test."""
    with postgres_url() as url:
        yield url
