"""A live watch on a PostgreSQL store keeps its state in that database: killed, it
resumes from any host that opens the store; two hosts never watch one plan at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from steadyq.brokers import open_queue
from steadyq.errors import AlreadyRunning
from steadyq.watch.plan import parse_plan
from steadyq.watch.run import Watch
from steadyq.watch.state import WatchState
from tests.conftest import FakeClock
from tests.postgres.test_watch import db_url  # noqa: F401  (the fixture the imports use)
from tests.watch import test_run
from tests.watch.test_run import T0, fake_sleep, plan_text

# the SQLite tests of resuming, run on PostgreSQL (db_url points them at a fresh schema)
test_killed_watch_resumes = (
    test_run.test_killed_watch_resumes_without_losing_or_repeating_a_checkpoint
)
test_a_changed_plan_is_refused = test_run.test_a_changed_plan_is_refused_while_its_run_is_unfinished
test_stop_request_leaves_a_resumable_run = test_run.test_stop_request_leaves_a_resumable_run


def test_the_state_is_in_the_stores_schema_not_in_memory(pg_url: str, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with open_queue(pg_url, clock=clock) as queue:
        store = queue.colocated_store
        watch = Watch(
            parse_plan(plan_text()),
            store,
            queue,
            report_dir=tmp_path,
            clock=clock,
            tick_s=3600,
            sleep=fake_sleep(clock, kill_after=T0 + 5 * 3600),
        )
        with pytest.raises(test_run.Killed):
            watch.run()
        schema = store.db.schema
        with store.db.transaction() as conn:
            found = conn.execute(
                "SELECT count(*) FROM information_schema.tables"
                " WHERE table_schema = %s AND table_name LIKE 'watch\\_%%'",
                (schema,),
            ).fetchone()
            epoch = conn.execute(
                "SELECT data_type FROM information_schema.columns WHERE table_schema = %s"
                " AND table_name = 'watch_checkpoints' AND column_name = 'at'",
                (schema,),
            ).fetchone()
        assert found[0] == 4
        assert epoch[0] == "double precision"  # epoch seconds keep their fraction


def test_two_hosts_never_hold_one_plan(pg_url: str) -> None:
    """Ten processes' worth of state objects (each with its own pool) race to create the
    tables and to claim the plan: the tables appear once and exactly one claim wins."""
    queues = [open_queue(pg_url) for _ in range(6)]
    try:
        states: list[WatchState] = [WatchState.for_store(q.colocated_store) for q in queues[:1]]
        barrier = threading.Barrier(5)
        made: list[WatchState] = []
        errors: list[BaseException] = []

        def make(queue: object) -> None:
            barrier.wait()
            try:
                made.append(WatchState.for_store(queue.colocated_store))  # type: ignore[attr-defined]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=make, args=(q,)) for q in queues[1:]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and len(made) == 5
        states += made
        won: list[str] = []
        refused: list[str] = []
        barrier = threading.Barrier(len(states))

        def claim(state: WatchState, owner: str) -> None:
            barrier.wait()
            try:
                state.claim("uuid-fix", "live", owner)
                won.append(owner)
            except AlreadyRunning:
                refused.append(owner)

        claims = [
            threading.Thread(target=claim, args=(s, f"host{i}:{1000 + i}:t{i}"))
            for i, s in enumerate(states)
        ]
        for t in claims:
            t.start()
        for t in claims:
            t.join()
        assert len(won) == 1 and len(refused) == len(states) - 1
        winner = won[0]
        other = next(s for s in states if s is not states[0])
        other.heartbeat("uuid-fix", "live", winner)  # any host sees the owner's row
        with pytest.raises(AlreadyRunning, match="took plan 'uuid-fix' over"):
            other.heartbeat("uuid-fix", "live", refused[0])
        other.release("uuid-fix", "live", winner)
        states[0].claim("uuid-fix", "live", refused[0])  # free again: the next one takes it
    finally:
        for q in queues:
            q.close()
