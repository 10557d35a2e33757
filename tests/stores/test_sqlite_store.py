"""What only the SQLite store promises beyond the contract suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from steadyq.brokers import open_store
from steadyq.telemetry import events as ev
from steadyq.telemetry import store_sqlite
from steadyq.telemetry.events import Event
from steadyq.telemetry.reader_sqlite import SqliteReader


def test_the_statement_refuses_to_overwrite_a_completed_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule composes onto the rows read in the write's transaction; should a write
    ever compose onto a stale read (another database's isolation, a bug), the SQL
    itself still keeps a completed row as it is."""
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    store.write([Event(ev.MESSAGE_SUCCEEDED, 1.0, request_id="r", attempt=1)])
    monkeypatch.setattr(store_sqlite, "_stored_requests", lambda conn, ids, texts: {})
    store.write([Event(ev.MESSAGE_RECEIVED, 2.0, request_id="r", attempt=2)])
    monkeypatch.undo()
    [row] = store.requests()
    assert (row.status, row.updated_at, row.attempts) == ("completed", 1.0, 1)
    store.close()


def test_its_watch_reader_aggregates_in_sql(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/s.db")
    assert isinstance(store.watch_reader(), SqliteReader)
    assert store.sqlite_store("x") is store
    store.close()
