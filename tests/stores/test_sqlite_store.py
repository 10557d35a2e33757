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


@pytest.mark.parametrize(
    "request_fields",
    [
        {"modalities": ["video"], "n": 2, "deep": {"x": 1.5, "ok": True}},
        {"kept": 1, "dropped": None},  # nulls are never stored: the text is made anew
        {"pair": (1, 2)},  # a tuple is stored as a list
        {"nan": float("nan")},  # not JSON: no fields at all
    ],
)
def test_an_arrivals_ledger_fields_are_stored_as_if_encoded_on_their_own(
    tmp_path: Path, request_fields: dict[str, object]
) -> None:
    """The arrival's ledger text is cut from its event row's text when the fields
    needed no cleaning; the stored ledger and event are those of encoding each alone."""
    store = open_store(f"sqlite:///{tmp_path / 'q.db'}")
    rid = "0b5d7a8e-1c2f-4a3b-9d4e-5f6a7b8c9d0e"
    store.write(
        [
            Event(
                ev.MESSAGE_RECEIVED,
                1.0,
                execution_id="e",
                message_id="1",
                request_id=rid,
                attempt=1,
                data={"request": request_fields},
            )
        ]
    )
    (record,) = store.requests(request_id=rid)
    from steadyq.telemetry.store import ledger_fields_of

    assert record.fields == ledger_fields_of(request_fields)
    (stored,) = store.events()
    assert stored.data == store_sqlite.json.loads(store_sqlite._encode({"request": request_fields}))


def test_the_encoder_writes_what_json_dumps_writes() -> None:
    class Odd:
        def __str__(self) -> str:
            return "odd"

    for value in ({"a": [1, 2.5, "é", None, True]}, {"o": Odd()}, "text", [1e300]):
        assert store_sqlite._dumps(value) == store_sqlite.json.dumps(value, default=str)
    cycle: list[object] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular"):
        store_sqlite._dumps(cycle)
