"""A fleet on one PostgreSQL database, under faults.

* Four worker processes, kill -9 at random (workers and their handler children) over
  10,000 mixed messages: valid ones, every kind of poison the gate names, transient
  failures, and copies of requests. Afterwards nothing is lost, every message has
  exactly one final outcome, and no handler run started after its request's
  completion was recorded.
* The database server restarted under a running worker: the worker reports the
  outage, resumes, and nothing is lost or acknowledged without its record.

They need the machine's PostgreSQL (``pg_url``: a fresh schema, tests/postgres_db.py):
skipped with a reason without it, failed under CI. The restart test also needs
``pg_ctlcluster`` as root, as on these machines.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest

from steadyq.brokers import open_queue, store_for
from steadyq.telemetry import events as ev
from steadyq.telemetry.store import COMPLETED, FINAL_OUTCOME_KINDS, EventFilter, EventStore
from tests.conftest import require_service
from tests.faults.test_kill_run import RUN_LIMIT_S, kill_at_random
from tests.test_reliability import Processes, log_lines, wait_for

# the kill run has its own limit; the suite's 120 s would cut a loaded run short
pytestmark = [pytest.mark.slow, pytest.mark.timeout(RUN_LIMIT_S + 120)]

HANDLER = "tests.faults.fleet_handlers:start_then_maybe_fail"
MESSAGES = 10_000
WORKERS = 4
# one body per poison reason the gate can name for the core request
POISON = (
    b"\xff\xfe not utf-8",  # payload_not_utf8
    b"{not json",  # payload_not_json
    b"[1, 2, 3]",  # payload_not_object
    b'{"topic": "no id"}',  # request_id_missing
    b'{"request_id": "test-smoke"}',  # request_id_invalid
)


def _mixed_bodies(rng: random.Random) -> tuple[list[bytes], list[str], int]:
    """About 10,000 bodies: valid requests (one in twenty flaky), a copy of one request
    in ten, and poison of every kind, shuffled together."""
    ids = [str(uuid.uuid4()) for _ in range(MESSAGES * 85 // 100)]
    flaky = set(rng.sample(ids, len(ids) // 20))
    bodies = [
        json.dumps({"request_id": r, "topic": "flaky" if r in flaky else "t"}).encode() for r in ids
    ]
    bodies += [
        json.dumps({"request_id": r, "topic": "t"}).encode()
        for r in rng.sample(ids, len(ids) // 10)
    ]
    poison = [POISON[i % len(POISON)] for i in range(MESSAGES - len(bodies))]
    bodies += poison
    rng.shuffle(bodies)
    return bodies, ids, len(poison)


def _check_outcomes(
    url: str, published: list[str], ids: list[str], poison: int, tmp_path: Path
) -> None:
    with open_queue(url) as q:
        store: EventStore = store_for(q)
        stats = q.stats()
        assert (stats.ready, stats.in_flight, stats.delayed) == (0, 0, 0), stats
        letters = {d.message_id for d in q.dlq_list()}
        per_message: dict[str, Counter[str]] = {}
        for e in store.events(EventFilter(kinds=tuple(FINAL_OUTCOME_KINDS))):
            assert e.message_id is not None
            per_message.setdefault(e.message_id, Counter())[e.kind] += 1
        assert set(per_message) == set(published), "a message has no final outcome"
        doubled = [(m, c) for m, c in per_message.items() if sum(c.values()) != 1]
        assert doubled == [], doubled[:5]
        outcomes = sum(per_message.values(), Counter[str]())
        assert outcomes[ev.MESSAGE_REJECTED] == poison
        assert {m for m, c in per_message.items() if c[ev.MESSAGE_REJECTED]} <= letters
        assert outcomes[ev.MESSAGE_DEAD_LETTERED] == 0, "no valid message was dead-lettered"
        completed_at = {
            row.request_id: row.completed_at for row in store.requests(status=COMPLETED)
        }
        assert set(ids) <= set(completed_at)
        assert outcomes[ev.MESSAGE_SUCCEEDED] == len(ids)
    late = [
        (r, float(t) - completed_at[r])  # type: ignore[operator]
        for r, t, _pid in log_lines(tmp_path / "starts.log")
        if float(t) > completed_at[r]  # type: ignore[operator]
    ]
    assert late == [], late[:5]


def test_four_workers_killed_at_random_lose_nothing(
    tmp_path: Path, procs: Processes, pg_url: str
) -> None:
    rng = random.Random(20261201)
    bodies, ids, poison = _mixed_bodies(rng)
    attrs = {"dir": str(tmp_path)}
    with open_queue(pg_url) as q:
        published: list[str] = []
        for start in range(0, len(bodies), 1000):
            published += q.publish_batch([(b, attrs) for b in bodies[start : start + 1000]])

    args = ["--concurrency", "2", "--deadline", "20s", "--lease", "3s", "--max-attempts", "50",
            "--retry-min", "0", "--retry-max", "0.1s", "--forever"]  # fmt: skip
    kills = kill_at_random(procs, pg_url, HANDLER, args, WORKERS, rng, pause_s=(0.2, 0.6))
    assert kills["worker"] >= 3, kills
    _check_outcomes(pg_url, published, ids, poison, tmp_path)


def _pg_restart_command() -> list[str] | None:
    clusters = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not clusters or shutil.which("pg_ctlcluster") is None or os.geteuid() != 0:
        return None
    return ["pg_ctlcluster", "--skip-systemctl-redirect", clusters[-1], "main", "restart"]


def test_database_restart_is_an_outage_and_loses_nothing(
    tmp_path: Path, procs: Processes, pg_url: str
) -> None:
    command = _pg_restart_command()
    require_service(command is not None, "pg_ctlcluster (as root) is needed to restart PostgreSQL")
    assert command is not None
    ids = [str(uuid.uuid4()) for _ in range(3000)]
    bodies = [json.dumps({"request_id": r, "topic": "t"}).encode() for r in ids]
    attrs = {"dir": str(tmp_path)}
    with open_queue(pg_url) as q:
        published = q.publish_batch([(b, attrs) for b in bodies])
    args = ["--runner", "inline", "--lease", "5s", "--forever"]
    worker = procs.worker(pg_url, HANDLER, *args, name="restarted")
    # restart once the worker is well into the work
    wait_for(lambda: len(log_lines(tmp_path / "starts.log")) >= 300, 120, "300 handler runs")
    subprocess.run(command, check=True, capture_output=True, timeout=120)

    def drained() -> bool:
        try:
            with open_queue(pg_url) as q:
                s = q.stats()
                return s.ready == 0 and s.in_flight == 0 and s.delayed == 0
        except Exception:
            return False

    wait_for(drained, 180, "the queue to drain after the restart", poll_s=0.5)
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
    with open_queue(pg_url) as q:
        said = [e.message or "" for e in store_for(q).events(EventFilter(kinds=(ev.LOG,)))]
    assert any("backend unavailable" in m for m in said), said
    assert any("available again" in m for m in said), said
    _check_outcomes(pg_url, published, ids, 0, tmp_path)
