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

SCHEMES = ("sqlite", "memory")


def open_queue(url: str, *, clock: Callable[[], float] = time.time) -> Queue:
    """Open the queue a URL names: ``sqlite:///steadyq.db``, ``memory://``.

    Raises:
        ConfigError: the URL is malformed or names an unknown scheme.
        BackendUnavailable: the backend cannot be opened.
    """
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        from steadyq.brokers.sqlite import SqliteQueue

        return SqliteQueue.from_url(url, clock=clock)
    if scheme == "memory":
        from steadyq.brokers.memory import MemoryQueue

        return MemoryQueue(clock=clock)
    raise ConfigError(
        f"unknown queue URL {url!r}: expected one of " + ", ".join(f"{s}://" for s in SCHEMES)
    )


def store_for(queue: Queue) -> EventStore:
    """The telemetry store that goes with ``queue`` (its colocated one, for now).

    Raises:
        ConfigError: the queue has no store of its own and none was configured.
    """
    store = queue.colocated_store
    if store is None:
        raise ConfigError(f"a {queue.scheme}:// queue needs a separate telemetry store URL")
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
    "store_for",
]
