"""The SQLite file's layout: what queries rely on stays true."""

from __future__ import annotations

from pathlib import Path

from steadyq._sqlite import WARNINGS_ONLY, SqliteDatabase
from steadyq.telemetry.events import SEVERITY_RANK


def test_the_watch_s_warning_queries_use_the_partial_index(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "layout.db")
    try:
        with db.reading() as conn:
            [(definition,)] = conn.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'events_warn_ts'"
            )
            plan = " ".join(
                str(row[-1])
                for row in conn.execute(
                    "EXPLAIN QUERY PLAN SELECT count(*) FROM events"
                    f" WHERE {WARNINGS_ONLY} AND ts >= ? AND ts < ?",
                    (0.0, 1.0),
                )
            )
    finally:
        db.close()
    assert definition.endswith(f"WHERE {WARNINGS_ONLY}")
    assert f"sev_rank >= {SEVERITY_RANK['WARNING']}" == WARNINGS_ONLY
    assert "events_warn_ts" in plan, plan
