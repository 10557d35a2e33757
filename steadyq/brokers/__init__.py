"""Queue backends, picked by URL scheme; drivers are imported only when used."""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import urlsplit

from steadyq.brokers.base import (
    DeadLetter,
    Delivery,
    DlqFilter,
    Queue,
    QueueStats,
    Settlement,
    SettleResult,
)
from steadyq.errors import ConfigError
from steadyq.telemetry.store import EventStore

SCHEMES = ("sqlite", "memory", "pubsub", "postgresql")
POSTGRES_SCHEMES = ("postgresql", "postgres")
DEFAULT_STORE_URL = "sqlite:///steadyq.db"


def open_queue(
    url: str, *, clock: Callable[[], float] = time.time, read_only: bool = False
) -> Queue:
    """Open the queue a URL names: ``sqlite:///steadyq.db``, ``memory://``,
    ``pubsub://PROJECT/TOPIC_OR_SUBSCRIPTION``, ``postgresql://user@host/db?schema=NAME``
    (or ``postgres://``).

    ``read_only`` is for commands that only look: a SQLite file (a PostgreSQL schema)
    must exist already and is opened without writing (nothing is created).

    ``clock`` is the time of leases and delays where steadyq keeps them; PostgreSQL
    uses the database's own clock unless a clock other than ``time.time`` is given
    (tests).

    Raises:
        ConfigError: the URL is malformed or names an unknown scheme.
        BackendUnavailable: the backend cannot be opened.
    """
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from steadyq.brokers.sqlite import SqliteQueue

        return SqliteQueue.from_url(url, clock=clock, read_only=read_only)
    if scheme == "memory":
        from steadyq.brokers.memory import MemoryQueue

        return MemoryQueue(clock=clock)
    if scheme == "pubsub":
        from steadyq.brokers.pubsub import PubSubQueue

        return PubSubQueue.from_url(url, clock=clock)
    if scheme in POSTGRES_SCHEMES:
        from steadyq.brokers.postgres import PostgresQueue

        return PostgresQueue.from_url(
            url, clock=None if clock is time.time else clock, read_only=read_only
        )
    raise ConfigError(
        f"unknown queue URL {url!r}: expected one of " + ", ".join(f"{s}://" for s in SCHEMES)
    )


def open_store(url: str, *, read_only: bool = False) -> EventStore:
    """Open a telemetry store by URL (``sqlite:///steadyq.db``,
    ``postgresql://user@host/db?schema=NAME``); ``read_only`` as for :func:`open_queue`.

    Raises:
        ConfigError: the URL names no store steadyq has.
        BackendUnavailable: the store cannot be opened.
    """
    scheme = urlsplit(url).scheme
    if scheme in POSTGRES_SCHEMES:
        from steadyq.telemetry.store_postgres import PostgresStore

        return PostgresStore.from_url(url, read_only=read_only)
    if scheme != "sqlite":
        raise ConfigError(
            f"unknown store URL {url!r}: expected sqlite:///path.db or postgresql://…"
        )
    from steadyq._sqlite import SqliteDatabase, busy_timeout_ms, sqlite_path
    from steadyq.telemetry.store_sqlite import SqliteStore

    db = SqliteDatabase(sqlite_path(url), busy_timeout_ms=busy_timeout_ms(url), read_only=read_only)
    return SqliteStore(db, owns_db=True)


def store_for(queue: Queue, url: str | None = None, *, read_only: bool = False) -> EventStore:
    """The telemetry store that goes with ``queue``: its colocated one when it has
    one, else the store ``url`` names (default ``sqlite:///steadyq.db``; a
    ``postgresql://`` store is shared by every host and execution, attempt counts and
    ledger included), which the queue then owns (closing the queue closes it).

    Raises:
        ConfigError: ``url`` names no store steadyq has.
        BackendUnavailable: the store cannot be opened.
    """
    store = queue.colocated_store
    if store is not None:
        return store
    store = open_store(url or DEFAULT_STORE_URL, read_only=read_only)
    queue.use_store(store)
    return store


__all__ = [
    "DeadLetter",
    "Delivery",
    "DlqFilter",
    "Queue",
    "QueueStats",
    "SettleResult",
    "Settlement",
    "open_queue",
    "open_store",
    "store_for",
]
