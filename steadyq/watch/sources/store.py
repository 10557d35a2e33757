"""The watch's reader of a telemetry store, as the watch imports it.

The contract (:class:`Reader`) and the generic reader (:class:`StoreReader`) live in
:mod:`steadyq.telemetry.reader`, the SQLite store's own reader in
:mod:`steadyq.telemetry.reader_sqlite`: each store supplies its reader behind its
interface (:meth:`~steadyq.telemetry.store.EventStore.watch_reader`), so nothing here
knows which stores exist. :func:`reader_for` asks the store.
"""

from __future__ import annotations

from steadyq.telemetry.reader import (
    FAILURE_KINDS,
    PATTERN_KINDS,
    ExecutionRow,
    Reader,
    StoreReader,
    positive,
)
from steadyq.telemetry.reader_sqlite import SqliteReader
from steadyq.telemetry.store import EventStore

__all__ = [
    "FAILURE_KINDS",
    "PATTERN_KINDS",
    "ExecutionRow",
    "Reader",
    "SqliteReader",
    "StoreReader",
    "positive",
    "reader_for",
]


def reader_for(store: EventStore) -> Reader:
    """The reader ``store`` supplies (:meth:`EventStore.watch_reader`)."""
    return store.watch_reader()
