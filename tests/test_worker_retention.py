"""Workers keep the dead-letter queue bounded by themselves (docs/store.md, "Retention")."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from steadyq.brokers import open_queue, store_for
from steadyq.errors import NotFound
from steadyq.telemetry import events as ev
from steadyq.telemetry.store import EventFilter
from tests.test_worker import drain, request

DAY = 86400.0


def _age_letters(db: Path, days: float) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE dead_letters SET dead_lettered_at = dead_lettered_at - ?", (days * DAY,)
        )


@pytest.mark.parametrize("keep", [False, True])
def test_a_worker_expires_week_old_dead_letters_unless_told_to_keep_them(
    tmp_path: Path, keep: bool
) -> None:
    db = tmp_path / "r.db"
    queue = open_queue(f"sqlite:///{db}")
    old = queue.publish(request(request_id="test-smoke-1"))
    young = queue.publish(request(request_id="test-smoke-2"))
    drain(queue)  # both rejected: two letters, written now
    _age_letters(db, 8)
    with sqlite3.connect(db) as conn:  # the second one is only a day old
        conn.execute(
            "UPDATE dead_letters SET dead_lettered_at = dead_lettered_at + ? WHERE message_id = ?",
            (7 * DAY, young),
        )
    queue.publish(request())
    drain(queue, dlq_retention_s=0.0 if keep else 7 * DAY)
    assert queue.dlq_get(young).message_id == young
    notices = [
        e.message or ""
        for e in store_for(queue).events(EventFilter(kinds=(ev.LOG,)))
        if (e.message or "").startswith("retention:")
    ]
    if keep:
        assert queue.dlq_get(old).message_id == old
        assert notices == []
    else:
        with pytest.raises(NotFound):
            queue.dlq_get(old)
        assert notices == ["retention: deleted 1 dead letters"]
    queue.close()
