"""Reliability of the SQLite worker: crashes, hangs, suicides, concurrency, and accounting.

Every test runs against a real SQLite file in ``tmp_path``. Nothing sleeps to
synchronise: the tests poll for a condition with a deadline (:func:`wait_for`).
Handlers live in :mod:`tests.reliability_handlers` and find their scratch folder in
the message attribute ``dir``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any, TypeVar

import pytest

from steadyq import ExecutionResult, ExitCode, RetryPolicy, Worker, WorkerOptions
from steadyq.brokers import open_queue, store_for
from steadyq.brokers.base import Queue
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import EventFilter

REPO = Path(__file__).resolve().parents[1]
HANDLERS = "tests.reliability_handlers"
T = TypeVar("T")

# -- helpers ------------------------------------------------------------------------


def wait_for(predicate: Callable[[], T], timeout: float, what: str = "", poll_s: float = 0.02) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(poll_s)


def body(topic: str, request_id: str | None = None) -> bytes:
    return json.dumps({"request_id": request_id or str(uuid.uuid4()), "topic": topic}).encode()


def url_for(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'queue.db'}"


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[Queue]:
    q = open_queue(url_for(tmp_path))
    yield q
    q.close()


def events_of(q: Queue, *kinds: str) -> list[Event]:
    return store_for(q).events(EventFilter(kinds=kinds))


def by_message(events: list[Event]) -> dict[str, list[Event]]:
    out: dict[str, list[Event]] = defaultdict(list)
    for e in events:
        assert e.message_id is not None, e
        out[e.message_id].append(e)
    return out


def queue_is_empty(q: Queue) -> bool:
    s = q.stats()
    return s.ready == 0 and s.in_flight == 0 and s.delayed == 0


def run_until_empty(
    q: Queue, options: WorkerOptions, max_executions: int = 20
) -> list[ExecutionResult]:
    """Run draining executions until nothing is ready, delayed or in flight."""
    results: list[ExecutionResult] = []
    while not queue_is_empty(q):
        assert len(results) < max_executions, f"not drained after {max_executions} executions"
        s = q.stats()
        if not s.ready and not s.in_flight:  # only delayed retries left: wait them out
            wait_for(lambda: q.stats().ready, 30, "a delayed retry to become ready")
        result = Worker(q, store_for(q), options).run()
        assert result.exit_code == ExitCode.OK, result
        results.append(result)
    return results


def proc_state(pid: int) -> tuple[str, int] | None:
    """(state letter, parent pid) of a process from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def is_gone(pid: int) -> bool:
    state = proc_state(pid)
    return state is None or state[0] in ("Z", "X")


def log_lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line]


class Processes:
    """Subprocess workers and stray pids to clean up whatever happens in a test."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.popens: list[subprocess.Popen[bytes]] = []
        self.pids: list[int] = []

    def worker(self, url: str, handler: str, *args: str, name: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEADYQ_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        cmd = [
            sys.executable, "-m", "steadyq.cli", "worker",
            "--url", url, "--handler", handler if ":" in handler else f"{HANDLERS}:{handler}",
            "--log-format", "none", *args,
        ]  # fmt: skip
        with open(self.tmp_path / f"{name}.log", "wb") as log:
            # cwd is the scratch folder: no steadyq.toml from the repository is picked up
            proc = subprocess.Popen(cmd, cwd=self.tmp_path, env=env, stdout=log, stderr=log)
        self.popens.append(proc)
        return proc

    def output(self, name: str) -> str:
        path = self.tmp_path / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cleanup(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self.popens:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)


def fast_options(handler: str, **kw: Any) -> WorkerOptions:
    base: dict[str, Any] = {
        "handler": f"{HANDLERS}:{handler}",
        "runner": "process",
        "concurrency": 2,
        "deadline_s": 1.0,
        "lease_s": 1.5,
        "retry": RetryPolicy(0, 0.05, 3),
        "drain": True,
        "idle_poll_s": 0.05,
    }
    base.update(kw)
    return WorkerOptions(**base)


# -- 1. kill -9 of the worker in the middle of a handler ---------------------------


@pytest.mark.slow
def test_kill_9_of_worker_mid_handler_redelivers_and_loses_nothing(
    tmp_path: Path, queue: Queue, procs: Processes
) -> None:
    url = url_for(tmp_path)
    attrs = {"dir": str(tmp_path)}
    target = queue.publish(body("block"), attrs)
    others = queue.publish_batch([(body("ok"), attrs) for _ in range(3)])
    published = [target, *others]
    common = ["--lease", "1", "--deadline", "60", "--concurrency", "1", "--max-attempts", "3",
              "--retry-min", "0", "--retry-max", "0"]  # fmt: skip

    first = procs.worker(url, "slow_then_ok", *common, "--forever", name="worker1")
    pid_file = tmp_path / "blocked.pid"
    wait_for(lambda: pid_file.exists() or first.poll() is not None, 60, "the handler to block")
    assert first.poll() is None, procs.output("worker1")
    handler_pid, handler_parent = map(int, pid_file.read_text().split())
    procs.pids.append(handler_pid)
    # the handler runs in a process started for the worker: by its forkserver (a child
    # of the worker), or by the worker itself where children are forked or spawned
    server = proc_state(handler_parent)
    assert handler_parent == first.pid or (server is not None and server[1] == first.pid)
    state = proc_state(handler_pid)
    assert state is not None and state[1] == handler_parent, state
    if handler_parent != first.pid:
        procs.pids.append(handler_parent)

    # the delivery is durable before the kill: attempt 1 recorded, lease held (and extended)
    wait_for(
        lambda: [e for e in events_of(queue, ev.MESSAGE_RECEIVED) if e.message_id == target],
        10,
        "message.received of the target",
    )
    wait_for(lambda: queue.stats().in_flight == len(published), 10, "all messages leased")

    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    # the handler child dies with its worker (PR_SET_PDEATHSIG), it is not left blocking
    wait_for(lambda: is_gone(handler_pid), 10, "the orphaned handler child to die by itself")

    # no sweeper: once the lease lapses the messages are simply ready again
    wait_for(lambda: queue.stats().ready == len(published), 10, "the lease to lapse")

    second = procs.worker(url, "slow_then_ok", *common, "--drain", name="worker2")
    assert second.wait(60) == 0, procs.output("worker2")

    assert queue_is_empty(queue)
    succeeded = by_message(events_of(queue, ev.MESSAGE_SUCCEEDED))
    dead = queue.dlq_list()
    assert dead == [], [d.to_dict() for d in dead]
    # nothing lost, nothing doubled: published = succeeded + dead-lettered
    assert sorted(succeeded) == sorted(published)
    assert all(len(v) == 1 for v in succeeded.values()), succeeded
    assert len(published) == len(succeeded) + len(dead)

    # the target came back as attempt 2 and succeeded then, in the second execution
    [win] = succeeded[target]
    assert win.attempt == 2
    received = by_message(events_of(queue, ev.MESSAGE_RECEIVED))[target]
    assert [e.attempt for e in received] == [1, 2]
    assert received[0].execution_id != received[1].execution_id == win.execution_id
    assert not events_of(queue, ev.MESSAGE_FAILED, ev.MESSAGE_TIMED_OUT)

    # the handler really ran once per message, in the second worker only
    ran = log_lines(tmp_path / "ok.log")
    assert sorted(r[0] for r in ran) == sorted(published)
    assert {int(r[1]) for r in ran} == {2}  # prefetched messages never started in worker 1
    assert handler_pid not in {int(r[2]) for r in ran}

    # the killed execution never finished; the second one did
    records = {r.execution_id: r for r in store_for(queue).executions()}
    assert records[str(received[0].execution_id)].finished_at is None
    assert records[str(win.execution_id)].status == "succeeded"


# -- 2. a handler that hangs forever -------------------------------------------------


@pytest.mark.slow
def test_hanging_handler_is_killed_at_deadline_retried_then_dead_lettered(
    tmp_path: Path, queue: Queue
) -> None:
    attrs = {"dir": str(tmp_path)}
    options = fast_options("hang_or_ok")
    n_fast = 30
    hang = queue.publish(body("hang"), attrs)
    fast = queue.publish_batch([(body("ok"), attrs) for _ in range(n_fast)])

    results = run_until_empty(queue, options)

    # the fast messages flowed past the hanging one, in the first execution, at attempt 1
    assert results[0].counts["succeeded"] == n_fast
    succeeded = by_message(events_of(queue, ev.MESSAGE_SUCCEEDED))
    assert sorted(succeeded) == sorted(fast)
    assert all(len(v) == 1 and v[0].attempt == 1 for v in succeeded.values())
    timed_out = events_of(queue, ev.MESSAGE_TIMED_OUT)
    # at most the calls prefetched behind the hanging one (prefetch - 1) had to wait for its kill
    first_kill = min(e.timestamp for e in timed_out)
    late = [m for m, (e,) in succeeded.items() if e.timestamp > first_kill]
    assert len(late) <= options.prefetch - 1, late

    # the hanging message: killed at each deadline, max_attempts times, then dead-lettered
    assert {e.message_id for e in timed_out} == {hang}
    assert options.retry.max_attempts == 3
    assert [e.attempt for e in timed_out] == [1, 2, 3]
    for e in timed_out:
        assert e.reason == "deadline_exceeded"
        assert e.duration_ms is not None
        assert options.deadline_s * 1000 <= e.duration_ms < options.deadline_s * 1000 + 1500, e
    assert not events_of(queue, ev.MESSAGE_FAILED)
    [dead_event] = events_of(queue, ev.MESSAGE_DEAD_LETTERED)
    assert (dead_event.message_id, dead_event.reason, dead_event.attempt) == (
        hang,
        "max_attempts_exceeded",
        3,
    )
    [letter] = queue.dlq_list()
    assert (letter.message_id, letter.reason, letter.attempts) == (hang, "max_attempts_exceeded", 3)
    assert "DeadlineExceeded" in letter.detail

    # each attempt ran in its own child, and every one of them is really dead
    hung = log_lines(tmp_path / "hang.log")
    assert [int(r[1]) for r in hung] == [1, 2, 3]
    pids = {int(r[2]) for r in hung}
    assert len(pids) == 3
    assert all(is_gone(pid) for pid in pids)

    assert queue_is_empty(queue)
    assert queue.stats().dead_lettered == 1
    assert sum(r.counts["timed_out"] for r in results) == 3


# -- 3. a handler that kills its own process -------------------------------------------


@pytest.mark.slow
def test_handler_that_kills_its_process_reaches_dlq_and_worker_keeps_going(
    tmp_path: Path, queue: Queue
) -> None:
    attrs = {"dir": str(tmp_path)}
    options = fast_options("suicide_or_ok", deadline_s=5.0, lease_s=6.0)
    before = queue.publish_batch([(body("ok"), attrs) for _ in range(10)])
    suicide = queue.publish(body("suicide"), attrs)
    after = queue.publish_batch([(body("ok"), attrs) for _ in range(10)])

    results = run_until_empty(queue, options)

    assert all(r.status == "succeeded" for r in results)
    succeeded = by_message(events_of(queue, ev.MESSAGE_SUCCEEDED))
    assert sorted(succeeded) == sorted(before + after)
    assert all(len(v) == 1 and v[0].attempt == 1 for v in succeeded.values())

    failed = events_of(queue, ev.MESSAGE_FAILED)
    assert [(e.message_id, e.attempt, e.reason) for e in failed] == [
        (suicide, 1, "worker_lost"),
        (suicide, 2, "worker_lost"),
        (suicide, 3, "worker_lost"),
    ]
    [letter] = queue.dlq_list()
    assert (letter.message_id, letter.reason, letter.attempts) == (
        suicide,
        "max_attempts_exceeded",
        3,
    )
    assert "WorkerLost" in letter.detail and "SIGKILL" in letter.detail, letter.detail
    [dead_event] = events_of(queue, ev.MESSAGE_DEAD_LETTERED)
    assert dead_event.message_id == suicide
    assert "WorkerLost" in dead_event.message

    deaths = log_lines(tmp_path / "suicide.log")
    assert [int(r[1]) for r in deaths] == [1, 2, 3]
    assert len({r[2] for r in deaths}) == 3  # a fresh child after each death
    assert queue_is_empty(queue)


# -- 4. two worker processes on one SQLite file -------------------------------------


@pytest.mark.slow
def test_two_worker_processes_never_run_one_delivery_at_once(
    tmp_path: Path, queue: Queue, procs: Processes
) -> None:
    url = url_for(tmp_path)
    attrs = {"dir": str(tmp_path)}
    n = 300
    published = queue.publish_batch([(body("ok"), attrs) for _ in range(n)])
    args = ["--concurrency", "2", "--deadline", "30", "--max-attempts", "3",
            "--retry-min", "0", "--retry-max", "0", "--drain"]  # fmt: skip
    workers = [procs.worker(url, "record_overlap", *args, name=f"worker{i}") for i in (1, 2)]
    for i, w in enumerate(workers, 1):
        assert w.wait(90) == 0, procs.output(f"worker{i}")

    calls = [
        (mid, int(attempt), int(pid), int(ppid), int(start), int(end))
        for mid, attempt, pid, ppid, start, end in log_lines(tmp_path / "calls.log")
    ]
    per_message: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for mid, _attempt, _pid, ppid, start, end in calls:
        per_message[mid].append((start, end, ppid))
    # the safety property: no two runs of one message overlap in time
    for mid, spans in per_message.items():
        spans.sort()
        for (_s1, e1, w1), (s2, _e2, w2) in pairwise(spans):
            assert e1 <= s2, f"message {mid} ran at once in workers {w1} and {w2}"
    # and in fact nothing ran twice: every message ran once and succeeded once
    assert sorted(per_message) == sorted(published)
    assert all(len(spans) == 1 for spans in per_message.values())
    succeeded = by_message(events_of(queue, ev.MESSAGE_SUCCEEDED))
    assert sorted(succeeded) == sorted(published)
    assert all(len(v) == 1 for v in succeeded.values())
    assert not events_of(queue, ev.MESSAGE_FAILED, ev.MESSAGE_TIMED_OUT)
    assert not [e for e in events_of(queue, ev.LOG) if "lease" in e.message]
    assert queue_is_empty(queue) and queue.dlq_list() == []

    # both workers did real work, at the same time
    share = Counter(ppid for *_, ppid, _s, _e in calls)
    assert set(share) == {w.pid for w in workers}, (share, [w.pid for w in workers])
    assert all(count > 0 for count in share.values())
    executions = store_for(queue).executions()
    assert len(executions) == 2 and all(r.status == "succeeded" for r in executions)
    assert sum(r.data["counts"]["succeeded"] for r in executions) == n


# -- 5. ten thousand mixed messages: every one accounted for -------------------------

MAX_BYTES = 512


def _mixed_workload(rng: random.Random) -> list[tuple[bytes, str, str | None]]:
    """(body, expected terminal kind, expected reason) for 10,000 messages."""
    items: list[tuple[bytes, str, str | None]] = []

    def rid() -> str:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))

    def reject(reason: str, payload: bytes) -> None:
        items.append((payload, ev.MESSAGE_REJECTED, reason))

    for i in range(400):
        reject("payload_not_utf8", b'{"request_id": "\xff\xfe%d", "topic": "ok"}' % i)
        reject("payload_not_json", b'{"request_id": %d, "topic": ' % i)
        reject("payload_not_object", json.dumps([i, "ok"] if i % 2 else f"text {i}").encode())
        reject("payload_too_large", body("x" * (MAX_BYTES + i % 50), rid()))
        reject(
            "request_id_missing",
            json.dumps({"topic": "ok", "n": i} if i % 2 else {"request_id": None}).encode(),
        )
        reject(
            "request_id_invalid",
            json.dumps({"request_id": f"not-a-uuid-{i}", "topic": "ok"}).encode()
            if i % 2
            else json.dumps({"request_id": "{" + rid() + "}", "topic": "ok"}).encode(),
        )
        reject(
            "schema_invalid",
            json.dumps({"request_id": rid(), "topic": ""}).encode()
            if i % 2
            else json.dumps({"request_id": rid(), "topic": "ok", "grade_level": 13}).encode(),
        )
    for _ in range(300):
        items.append((body("permanent", rid()), ev.MESSAGE_DEAD_LETTERED, "bad_topic"))
    for k, count in ((1, 800), (2, 400)):
        for _ in range(count):
            items.append((body(f"transient-{k}", rid()), ev.MESSAGE_SUCCEEDED, None))
    for _ in range(200):  # fails every allowed attempt
        items.append(
            (body("transient-3", rid()), ev.MESSAGE_DEAD_LETTERED, "max_attempts_exceeded")
        )
    n_ok = 10_000 - len(items) - 2 * 20
    for _ in range(n_ok):
        items.append((body("ok", rid()), ev.MESSAGE_SUCCEEDED, None))
    rng.shuffle(items)
    # 20 requests published twice; the second copy (half of them with the id in upper
    # case, which is the same request) comes later and must be a duplicate
    for d in range(20):
        request_id = rid()
        first_at = rng.randrange(len(items) + 1)
        items.insert(first_at, (body("ok", request_id), ev.MESSAGE_SUCCEEDED, None))
        again = request_id.upper() if d % 2 else request_id
        second_at = rng.randrange(first_at + 1, len(items) + 1)
        items.insert(second_at, (body("ok", again), ev.MESSAGE_DUPLICATE, None))
    assert len(items) == 10_000
    return items


@pytest.mark.slow
def test_ten_thousand_mixed_messages_each_end_in_exactly_one_outcome(
    tmp_path: Path, queue: Queue
) -> None:
    items = _mixed_workload(random.Random(20240517))
    ids = queue.publish_batch([(b, {"n": str(i)}) for i, (b, _, _) in enumerate(items)])
    expected = {mid: (kind, reason) for mid, (_, kind, reason) in zip(ids, items, strict=True)}
    options = WorkerOptions(
        handler=f"{HANDLERS}:mixed",
        runner="inline",
        deadline_s=5,
        retry=RetryPolicy(0, 0, 3),
        max_bytes=MAX_BYTES,
        drain=True,
        idle_poll_s=0.01,
    )

    results = run_until_empty(queue, options)

    # every message: exactly one terminal outcome, and the expected one
    terminal = by_message(events_of(queue, *ev.TERMINAL_KINDS))
    assert set(terminal) == set(ids)
    wrong = {
        mid: [(e.kind, e.reason) for e in found]
        for mid, found in terminal.items()
        if [(e.kind, e.reason) for e in found] != [expected[mid]]
    }
    assert not wrong, dict(list(wrong.items())[:10])

    # per-reason counts of rejections and dead letters match what was published
    want = Counter(expected.values())
    got = Counter((e.kind, e.reason) for found in terminal.values() for e in found)
    assert got == want
    assert want[(ev.MESSAGE_DUPLICATE, None)] == 20

    # retries: transient-K failed exactly K times (3 at most) before its outcome
    failures = Counter(e.message_id for e in events_of(queue, ev.MESSAGE_FAILED))
    by_topic: dict[str, Counter[int]] = defaultdict(Counter)
    for mid, (b, _, _) in zip(ids, items, strict=True):
        topic = json.loads(b)["topic"] if expected[mid][0] != ev.MESSAGE_REJECTED else None
        if topic:
            by_topic[topic][failures[mid]] += 1
    assert by_topic["transient-1"] == Counter({1: 800})
    assert by_topic["transient-2"] == Counter({2: 400})
    assert by_topic["transient-3"] == Counter({3: 200})
    assert set(by_topic["ok"]) == {0} and set(by_topic["permanent"]) == {0}

    # the queue's own counts agree with the events
    dead = queue.dlq_list()
    n_rejected = sum(1 for k, _ in expected.values() if k == ev.MESSAGE_REJECTED)
    n_dead = sum(1 for k, _ in expected.values() if k == ev.MESSAGE_DEAD_LETTERED)
    assert len(dead) == queue.stats().dead_lettered == n_rejected + n_dead
    assert Counter(d.reason for d in dead) == Counter(
        r for k, r in expected.values() if k in (ev.MESSAGE_REJECTED, ev.MESSAGE_DEAD_LETTERED)
    )
    assert {d.message_id for d in dead} == {
        m for m, (k, _) in expected.items() if k in (ev.MESSAGE_REJECTED, ev.MESSAGE_DEAD_LETTERED)
    }
    assert all(d.attempts == 3 for d in dead if d.reason == "max_attempts_exceeded")
    assert all(d.attempts == 1 for d in dead if d.reason != "max_attempts_exceeded")
    assert queue_is_empty(queue)

    # and the executions' own counts agree with the events too
    total: Counter[str] = sum((r.counts for r in results), Counter())
    assert total["succeeded"] == want[(ev.MESSAGE_SUCCEEDED, None)]
    assert total["duplicate"] == 20
    assert total["rejected"] == n_rejected
    assert total["dead_lettered"] == n_dead
    assert total["failed"] == sum(failures.values()) == 800 + 2 * 400 + 3 * 200
    assert total["received"] == len(events_of(queue, ev.MESSAGE_RECEIVED))
    assert total["received"] == 10_000 + total["retried"]


# -- found while writing the above -------------------------------------------------


@pytest.mark.slow
def test_a_draining_execution_does_not_leave_a_ready_retry_behind(
    tmp_path: Path, queue: Queue
) -> None:
    """``--drain`` exits "when nothing is ready or in flight": a retry with no delay is ready."""
    queue.publish(body("ok"), {"dir": str(tmp_path)})
    options = fast_options("slow_flaky", concurrency=1, deadline_s=5, lease_s=6)
    assert options.retry.delay_s(1) == 0  # RetryPolicy(0, ...): the retry is ready at once
    result = Worker(queue, store_for(queue), options).run()
    assert result.exit_code == ExitCode.OK
    assert result.counts["failed"] == 1
    assert queue_is_empty(queue), (result.detail, queue.stats())
    assert result.counts["succeeded"] == 1


@pytest.mark.slow
def test_a_parked_duplicate_keeps_its_lease_while_the_first_copy_runs(
    tmp_path: Path, queue: Queue
) -> None:
    """A second copy of a running request waits (parked) holding its lease, however long."""
    request = body("sleep-2.0")
    first, second = queue.publish_batch([(request, {"dir": str(tmp_path)})] * 2)
    result = Worker(
        queue,
        store_for(queue),
        fast_options("sleepy", deadline_s=10, lease_s=0.8, retry=RetryPolicy(0, 0, 5)),
    ).run()

    assert result.exit_code == ExitCode.OK
    assert queue_is_empty(queue)
    assert [e.message_id for e in events_of(queue, ev.MESSAGE_SUCCEEDED)] == [first]
    assert [e.message_id for e in events_of(queue, ev.MESSAGE_DUPLICATE)] == [second]
    assert len([r for r in log_lines(tmp_path / "calls.log") if r[3] == "start"]) == 1
    lost = [e.message for e in events_of(queue, ev.LOG) if "lease" in e.message]
    received = [(e.message_id, e.attempt) for e in events_of(queue, ev.MESSAGE_RECEIVED)]
    # the parked copy was never delivered again: its lease did not lapse
    assert sorted(set(received)) == [(first, 1), (second, 1)], received
    assert not lost, lost
    # and each delivery was received (and counted) once
    assert sorted(received) == [(first, 1), (second, 1)], received
    assert result.counts["received"] == 2


@pytest.mark.slow
def test_a_request_whose_duplicate_waited_past_the_lease_is_not_dead_lettered(
    tmp_path: Path, queue: Queue
) -> None:
    """The first copy fails once, slowly; the copy that waited meanwhile must still run.

    Expected: the handler runs twice (one failure, one success), the request is
    completed in the ledger, the other copy is a duplicate, nothing is dead-lettered.
    """
    request_id = str(uuid.uuid4())
    copies = queue.publish_batch([(body("sleep-1.2", request_id), {"dir": str(tmp_path)})] * 2)
    options = fast_options("slow_fail_once", deadline_s=10, lease_s=0.5, retry=RetryPolicy(0, 0, 3))

    run_until_empty(queue, options, max_executions=5)

    dead = queue.dlq_list()
    assert dead == [], [(d.message_id, d.reason, d.attempts, d.detail) for d in dead]
    assert store_for(queue).completed([request_id]) == {request_id}
    runs = [r for r in log_lines(tmp_path / "calls.log") if r[3] != "start"]
    assert sorted(r[3] for r in runs) == ["fail", "ok"], runs
    terminal = sorted((e.kind, str(e.message_id)) for e in events_of(queue, *ev.TERMINAL_KINDS))
    assert [k for k, _ in terminal] == [ev.MESSAGE_DUPLICATE, ev.MESSAGE_SUCCEEDED], terminal
    assert sorted(m for _, m in terminal) == sorted(copies)
