"""A randomized kill run: workers and handler children SIGKILLed at random while a few
thousand messages (copies of requests and poison among them) go through. Afterwards
every message is settled one way, every request decided, and no handler run for a
request started after that request's completion was recorded."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from steadyq.brokers import open_queue, store_for
from steadyq.telemetry import events as ev
from steadyq.telemetry.store import COMPLETED, EventFilter, EventStore
from tests.test_reliability import HANDLERS, Processes, log_lines, url_for, wait_for

MESSAGES = 3000
WORKERS = 3
RUN_LIMIT_S = 240.0
MAX_QUIET_S = 5.0  # the longest a kill waits for a message to settle after the last one

# the run has its own limit; the suite's 120 s would cut a loaded run short
pytestmark = [pytest.mark.slow, pytest.mark.timeout(RUN_LIMIT_S + 120)]


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def children_of(pid: int) -> list[int]:
    """Every process below ``pid``: the handler children and the forkserver they come
    from (and multiprocessing's resource tracker); killing any of them is a fault the
    worker must survive."""
    found, todo = [], _children(pid)
    while todo:
        child = todo.pop()
        found.append(child)
        todo += _children(child)
    return found


def kill_at_random(
    procs: Processes,
    url: str,
    handler: str,
    args: list[str],
    workers: int,
    rng: random.Random,
    *,
    pause_s: tuple[float, float],
) -> Counter[str]:
    """Run ``workers`` worker processes on ``url`` and SIGKILL one of them, or one of
    the processes below it, every ``pause_s`` until the queue is drained (a killed
    worker is replaced at once); then stop them all with SIGTERM, each exiting 0.
    Returns how many workers and how many of their descendants were killed."""
    running = [procs.worker(url, handler, *args, name=f"w{i}") for i in range(workers)]
    names = [f"w{i}" for i in range(workers)]
    kills = Counter[str]()
    end = time.monotonic() + RUN_LIMIT_S
    left_at_kill, killed_at = math.inf, 0.0
    with open_queue(url) as q:
        while time.monotonic() < end:
            s = q.stats()
            left = s.ready + s.in_flight + s.delayed  # falls only as messages settle
            if left == 0:
                break
            if left >= left_at_kill and time.monotonic() - killed_at < MAX_QUIET_S:
                # nothing settled since the last kill: on a loaded machine a replaced
                # worker can take longer to start than the pause, and kills that come
                # faster than progress would never let the run end
                time.sleep(0.05)
                continue
            time.sleep(rng.uniform(*pause_s))
            left_at_kill, killed_at = left, time.monotonic()
            index = rng.randrange(workers)
            below = children_of(running[index].pid)
            if below and rng.random() < 0.5:
                os.kill(rng.choice(below), signal.SIGKILL)
                kills["child"] += 1
            else:
                running[index].kill()
                running[index].wait(30)
                kills["worker"] += 1
                names[index] = f"w{index}-{kills['worker']}"
                running[index] = procs.worker(url, handler, *args, name=names[index])
        else:
            pytest.fail(f"not drained in {RUN_LIMIT_S:g}s: {q.stats()}")
        # a worker signalled before it has set up its signal handling would just die
        pids = {w.pid for w in running}
        store = store_for(q)

        def all_ready() -> bool:
            for w, name in zip(running, names, strict=True):
                # a worker that died on its own is a failure to show, not to wait out
                assert w.poll() is None, f"{name} exited {w.returncode}: {procs.output(name)}"
            return pids <= ready_pids(store)

        # a worker started at the last kill may still be starting on a loaded machine
        wait_for(all_ready, 120, "every worker to be ready")
    for w in running:
        w.send_signal(signal.SIGTERM)
    for w in running:
        assert w.wait(60) == 0
    return kills


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def ready_pids(store: EventStore) -> set[int]:
    ready = {e.execution_id for e in store.events(EventFilter(kinds=[ev.EXECUTION_READY]))}
    return {
        int(e.data["pid"])
        for e in store.events(EventFilter(kinds=[ev.EXECUTION_STARTED]))
        if e.execution_id in ready
    }


def test_random_kills_lose_nothing_and_never_rerun_a_completed_request(
    tmp_path: Path, procs: Processes
) -> None:
    rng = random.Random(20261201)
    url = url_for(tmp_path)
    attrs = {"dir": str(tmp_path)}
    ids = [str(uuid.uuid4()) for _ in range(MESSAGES * 9 // 10)]
    bodies = [json.dumps({"request_id": r, "topic": "t"}).encode() for r in ids]
    # copies: one request in ten published twice, the copies spread through the queue
    for r in rng.sample(ids, len(ids) // 10):
        bodies.insert(
            rng.randrange(len(bodies)), json.dumps({"request_id": r, "topic": "t"}).encode()
        )
    poison = [f'{{"request_id": "test-smoke-{i}"}}'.encode() for i in range(MESSAGES // 20)]
    for p in poison:
        bodies.insert(rng.randrange(len(bodies)), p)
    with open_queue(url) as q:
        published = q.publish_batch([(b, attrs) for b in bodies])

    args = ["--concurrency", "2", "--deadline", "20s", "--lease", "3s", "--max-attempts", "50",
            "--retry-min", "0", "--retry-max", "0.1s", "--forever"]  # fmt: skip
    kills = kill_at_random(
        procs, url, f"{HANDLERS}:note_start", args, WORKERS, rng, pause_s=(0.1, 0.4)
    )
    assert kills["worker"] >= 3, kills

    with open_queue(url) as q:
        store = store_for(q)
        stats = q.stats()
        assert (stats.ready, stats.in_flight, stats.delayed) == (0, 0, 0)
        letters = {d.message_id: d for d in q.dlq_list()}
        outcomes = Counter[str]()
        per_message: dict[str, Counter[str]] = {}
        final = (ev.MESSAGE_SUCCEEDED, ev.MESSAGE_DUPLICATE, ev.MESSAGE_REJECTED,
                 ev.MESSAGE_DEAD_LETTERED)  # fmt: skip
        for e in store.events(EventFilter(kinds=final)):
            assert e.message_id is not None
            per_message.setdefault(e.message_id, Counter())[e.kind] += 1
            outcomes[e.kind] += 1
        # every message has exactly one final outcome, and the poison went to the DLQ
        assert set(per_message) == set(published)
        assert all(sum(c.values()) == 1 for c in per_message.values()), [
            (m, c) for m, c in per_message.items() if sum(c.values()) != 1
        ][:5]
        assert outcomes[ev.MESSAGE_REJECTED] == len(poison)
        assert {m for m, c in per_message.items() if c[ev.MESSAGE_REJECTED]} <= set(letters)
        assert outcomes[ev.MESSAGE_DEAD_LETTERED] == 0, "no valid message was dead-lettered"
        # every request completed once; copies were duplicates
        completed_at: dict[str, float] = {}
        for row in store.requests(status=COMPLETED):
            assert row.completed_at is not None
            completed_at[row.request_id] = row.completed_at
        assert set(ids) <= set(completed_at)
        assert outcomes[ev.MESSAGE_SUCCEEDED] == len(ids)

    # no handler run started after its request's completion was recorded
    late = [
        (r, float(t) - completed_at[r])
        for r, t, _pid in log_lines(tmp_path / "starts.log")
        if float(t) > completed_at[r]
    ]
    assert late == []


def test_a_killed_forkserver_is_replaced_and_the_worker_goes_on(
    tmp_path: Path, procs: Processes
) -> None:
    url = url_for(tmp_path)
    attrs = {"dir": str(tmp_path)}
    ids = [str(uuid.uuid4()) for _ in range(400)]
    with open_queue(url) as q:
        q.publish_batch(
            [(json.dumps({"request_id": r, "topic": "t"}).encode(), attrs) for r in ids]
        )
    args = ["--concurrency", "2", "--deadline", "20s", "--lease", "3s", "--forever"]
    worker = procs.worker(url, "note_start", *args, name="w")
    wait_for(lambda: len(log_lines(tmp_path / "starts.log")) >= 20, 120, "20 handler runs")
    [server] = [p for p in _children(worker.pid) if "forkserver" in cmdline(p)]
    os.kill(server, signal.SIGKILL)
    # the handler children die with their server; the worker starts new ones
    with open_queue(url) as q:
        wait_for(lambda: q.stats().ready == 0 and q.stats().in_flight == 0, 120, "the rest run")
        assert worker.poll() is None, "the worker ended"
        wait_for(
            lambda: {r.request_id for r in store_for(q).requests(status=COMPLETED)} >= set(ids),
            60,
            "all completed",
        )
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(60) == 0
