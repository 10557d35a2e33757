"""PostgreSQL for the tests: the machine's server, one fresh schema per test, dropped after.

``STEADYQ_TEST_POSTGRES`` names the server (default
``postgresql://postgres@127.0.0.1:5432/test``, trust auth). A test that needs it and
cannot reach it skips with the reason, and fails under ``CI=true``
(:func:`tests.conftest.require_service`). Schemas are named ``t_pg_`` + a random
suffix (PostgreSQL reserves ``pg_`` itself), so parallel runs never meet; nothing
database-wide is ever changed.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from tests.conftest import require_service

if TYPE_CHECKING:
    from steadyq.telemetry.store_postgres import PostgresStore

BASE_URL = os.environ.get("STEADYQ_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@functools.cache
def unavailable() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg and psycopg_pool are not installed (pip install -e .[postgres])"
    try:
        with psycopg.connect(BASE_URL, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {BASE_URL} is unreachable: {str(exc).strip().splitlines()[0]}"
    return None


def require_postgres() -> None:
    reason = unavailable()
    require_service(reason is None, reason or "")


def new_schema() -> str:
    return f"t_pg_{uuid.uuid4().hex[:12]}"


def url_for(schema: str, **options: str) -> str:
    sep = "&" if "?" in BASE_URL else "?"
    extra = "".join(f"&{k}={v}" for k, v in options.items())
    return f"{BASE_URL}{sep}schema={schema}{extra}"


def drop_schema(schema: str) -> None:
    import psycopg

    with psycopg.connect(BASE_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def postgres_url(**options: str) -> Iterator[str]:
    """The URL of a fresh schema (created by whatever opens it first), dropped after."""
    require_postgres()
    schema = new_schema()
    try:
        yield url_for(schema, **options)
    finally:
        drop_schema(schema)


@contextmanager
def make_postgres_store() -> Iterator[PostgresStore]:
    """A :class:`PostgresStore` on a fresh schema; closed and dropped afterwards. The
    factory the EventStore contract suite plugs in."""
    from steadyq.telemetry.store_postgres import PostgresStore

    with postgres_url() as url:
        store = PostgresStore.from_url(url)
        try:
            yield store
        finally:
            store.close()
