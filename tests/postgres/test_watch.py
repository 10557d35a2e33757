"""The watch on a PostgreSQL store: the same replay judges the same, with the same
figures, as on SQLite (the measures read through PostgresReader's SQL)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from steadyq.brokers import open_queue
from steadyq.brokers.postgres import PostgresQueue
from steadyq.telemetry.reader_postgres import PostgresReader
from steadyq.watch.plan import parse_plan
from steadyq.watch.run import run_watch
from steadyq.watch.sources.store import reader_for
from tests.conftest import FakeClock
from tests.watch import test_run
from tests.watch.test_run import DAY, HOUR, T0, incident_events, plan_text

# `steadyq watch --replay --json` on a PostgreSQL URL, through the CLI
test_cli_replay_json_and_exit_code = test_run.test_cli_replay_json_and_exit_code


@pytest.fixture
def db_url(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL the imported watch tests use, a PostgreSQL schema, and their opener."""

    def opener(url: str, clock: Callable[[], float]) -> tuple[Any, Any]:
        queue = open_queue(url, clock=clock)
        return queue, queue.colocated_store

    monkeypatch.setattr(test_run, "open_store", opener)
    return pg_url


def _replay(url: str, folder: Path, hang_at: float | None = None) -> dict[str, object]:
    clock = FakeClock(T0 + DAY + 10)
    with open_queue(url, clock=clock) as queue:
        store = queue.colocated_store
        assert store is not None
        store.write(incident_events(hang_at=hang_at))
        if isinstance(queue, PostgresQueue):
            assert isinstance(reader_for(store), PostgresReader)
        result = run_watch(parse_plan(plan_text()), store, queue, folder, clock=clock, replay=True)
    doc = result.report
    return {
        "verdict": result.verdict,
        "taken": result.checkpoints_taken,
        "figures": [cp["figures"] for cp in doc["checkpoints"]],
        "baseline": doc["baseline"]["figures"],
        "criteria": [(c["name"], c["status"]) for c in doc.get("criteria", [])],
    }


def test_a_replay_on_postgresql_judges_as_on_sqlite(pg_url: str, tmp_path: Path) -> None:
    on_pg = _replay(pg_url, tmp_path / "pg")
    on_sqlite = _replay(f"sqlite:///{tmp_path}/w.db", tmp_path / "lite")
    assert on_pg["taken"] == 6
    assert on_pg == on_sqlite


def test_a_failing_replay_on_postgresql_fails_as_on_sqlite(pg_url: str, tmp_path: Path) -> None:
    hang = T0 + 9 * HOUR
    on_pg = _replay(pg_url, tmp_path / "pg", hang)
    on_sqlite = _replay(f"sqlite:///{tmp_path}/w.db", tmp_path / "lite", hang)
    assert on_pg == on_sqlite and on_pg["taken"] == 3
