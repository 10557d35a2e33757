"""The worker on Pub/Sub, end to end against the emulator: mixed traffic, kill -9 of a
worker mid-handler, and the emulator going away and coming back while a worker runs."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from steadyq import ExitCode, RetryPolicy, Worker, WorkerOptions
from steadyq.brokers import open_queue, open_store, store_for
from steadyq.brokers.pubsub import setup
from steadyq.gate import REASONS, Gate, Rejection
from steadyq.telemetry import events as ev
from steadyq.telemetry.store import EventFilter, EventStore
from tests.brokers.conftest import PROJECT
from tests.pubsub_emulator import Emulator
from tests.reliability_handlers import Job
from tests.test_reliability import Processes, body, wait_for

TERMINAL = (ev.MESSAGE_SUCCEEDED, ev.MESSAGE_REJECTED, ev.MESSAGE_DEAD_LETTERED)


def resources(unique: Callable[[str], str]) -> tuple[str, str]:
    topic, sub = unique("topic"), unique("sub")
    # no backoff of Pub/Sub's own: steadyq's retry delays are the ones under test
    setup(PROJECT, topic, sub, min_backoff_s=0, max_backoff_s=0, max_delivery_attempts=20)
    return topic, sub


def by_message(store: EventStore, *kinds: str) -> dict[str, list[ev.Event]]:
    out: dict[str, list[ev.Event]] = defaultdict(list)
    for e in store.events(EventFilter(kinds=kinds)):
        assert e.message_id is not None
        out[e.message_id].append(e)
    return out


@pytest.mark.slow
def test_two_thousand_mixed_messages_each_end_in_exactly_one_outcome(
    pubsub_host: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    _, sub = resources(unique)
    queue = open_queue(f"pubsub://{PROJECT}/{sub}")
    store = store_for(queue, f"sqlite:///{tmp_path}/store.db")
    rid = "6f9619ff-8b86-d011-b42d-00c04fc964ff"
    invalid = [
        b"\xff\xfe not utf-8",
        b"not json",
        b"[1, 2]",
        json.dumps({"topic": "ok"}).encode(),
        json.dumps({"request_id": "test-smoke-001", "topic": "ok"}).encode(),
        json.dumps({"request_id": rid, "topic": 5}).encode(),
        json.dumps({"request_id": str(uuid.uuid4()), "topic": "ok", "pad": "x" * 5000}).encode(),
    ]
    gate = Gate(Job, max_bytes=4096)  # the schema `mixed` brings
    expected_reasons = [r.reason for r in map(gate.check, invalid) if isinstance(r, Rejection)]
    assert sorted(expected_reasons) == sorted(REASONS), "one body per rejection reason"
    plan = (
        [body("ok") for _ in range(1000)]
        + [body("transient-1") for _ in range(300)]
        + [body("transient-9") for _ in range(100)]  # exhausts 3 attempts
        + [body("permanent") for _ in range(100)]
        + [invalid[i % len(invalid)] for i in range(500)]
    )
    ids = queue.publish_batch([(b, {"n": str(i)}) for i, b in enumerate(plan)])
    kind_of = {mid: b for mid, b in zip(ids, plan, strict=True)}

    options = WorkerOptions(
        handler="tests.reliability_handlers:mixed",
        runner="inline",
        drain=True,
        retry=RetryPolicy(0, 0, 3),
        max_bytes=4096,
        idle_poll_s=0.05,
        batch_size=200,
    )
    executions = 0
    while len(by_message(store, *TERMINAL)) < len(ids):
        executions += 1
        assert executions <= 8, "not every message reached an outcome"
        result = Worker(queue, store, options).run()
        assert result.exit_code == ExitCode.OK, result

    outcomes = by_message(store, *TERMINAL)
    assert sorted(outcomes) == sorted(ids)
    doubled = {m: [e.kind for e in v] for m, v in outcomes.items() if len(v) != 1}
    assert not doubled, "every message ends in exactly one outcome"
    kinds = Counter(v[0].kind for v in outcomes.values())
    assert kinds == {
        ev.MESSAGE_SUCCEEDED: 1300,
        ev.MESSAGE_REJECTED: 500,
        ev.MESSAGE_DEAD_LETTERED: 200,
    }
    rejected = {m for m, v in outcomes.items() if v[0].kind == ev.MESSAGE_REJECTED}
    assert Counter(outcomes[m][0].reason for m in rejected) == Counter(
        gate.check(kind_of[m]).reason  # type: ignore[union-attr]
        for m in rejected
    )
    exhausted = {m for m in ids if kind_of[m] in plan[1300:1400]}
    assert all(outcomes[m][0].reason == "max_attempts_exceeded" for m in exhausted)
    assert all(outcomes[m][0].attempt == 3 for m in exhausted)

    # the DLQ subscription holds exactly the rejected and the dead-lettered ones
    letters = queue.dlq_list()
    dead = {m for m, v in outcomes.items() if v[0].kind != ev.MESSAGE_SUCCEEDED}
    assert sorted(x.message_id for x in letters) == sorted(dead)
    assert {x.message_id: x.reason for x in letters} == {m: outcomes[m][0].reason for m in dead}
    assert all(x.attributes["n"] for x in letters)
    # and nothing is left to deliver
    assert queue.pull(100, 30) == []
    queue.close()


@pytest.mark.slow
def test_kill_9_of_worker_mid_handler_redelivers_and_finishes_once(
    pubsub_host: str, unique: Callable[[str], str], tmp_path: Path, procs: Processes
) -> None:
    _, sub = resources(unique)
    url = f"pubsub://{PROJECT}/{sub}"
    store_url = f"sqlite:///{tmp_path}/store.db"
    queue = open_queue(url)
    store = store_for(queue, store_url)
    attrs = {"dir": str(tmp_path)}
    target = queue.publish(body("block"), attrs)
    published = [target, *queue.publish_batch([(body("ok"), attrs) for _ in range(3)])]
    common = ["--store", store_url, "--lease", "2", "--deadline", "60", "--concurrency", "1",
              "--max-attempts", "3", "--retry-min", "0", "--retry-max", "0"]  # fmt: skip

    first = procs.worker(url, "slow_then_ok", *common, "--forever", name="worker1")
    pid_file = tmp_path / "blocked.pid"
    wait_for(lambda: pid_file.exists() or first.poll() is not None, 60, "the handler to block")
    assert first.poll() is None, procs.output("worker1")
    handler_pid = int(pid_file.read_text().split()[0])
    procs.pids.append(handler_pid)
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL

    second = procs.worker(url, "slow_then_ok", *common, "--forever", name="worker2")
    done = wait_for(
        lambda: (s := by_message(store, ev.MESSAGE_SUCCEEDED)).keys() >= set(published) and s,
        60,
        "every message to succeed after the kill",
    )
    second.send_signal(signal.SIGTERM)
    assert second.wait(30) == 0, procs.output("worker2")

    assert all(len(v) == 1 for v in done.values()), done
    [win] = done[target]
    assert win.attempt == 2, "the killed delivery came back with its attempt counted"
    ran = [line.split() for line in (tmp_path / "ok.log").read_text().splitlines()]
    assert sorted(r[0] for r in ran) == sorted(published), "each handler ran to the end once"
    assert queue.dlq_list() == []
    queue.close()


@pytest.mark.slow
def test_emulator_restart_while_a_worker_runs_is_an_outage_and_it_resumes(
    pubsub_host: str, tmp_path: Path, procs: Processes, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = Emulator().start()
    try:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
        topic, sub = f"topic-{uuid.uuid4().hex[:8]}", f"sub-{uuid.uuid4().hex[:8]}"
        setup(PROJECT, topic, sub)
        store_url = f"sqlite:///{tmp_path}/store.db"
        publisher = open_queue(f"pubsub://{PROJECT}/{topic}")
        store = store_for(open_queue(f"pubsub://{PROJECT}/{sub}"), store_url)

        def succeeded() -> dict[str | None, list[ev.Event]]:
            out: dict[str | None, list[ev.Event]] = defaultdict(list)
            for e in store.events(EventFilter(kinds=(ev.MESSAGE_SUCCEEDED,))):
                out[e.request_id].append(e)
            return out

        def logged(text: str) -> bool:
            return any(text in e.message for e in store.events(EventFilter(kinds=(ev.LOG,))))

        attrs = {"dir": str(tmp_path)}
        # message ids start again in a fresh emulator: follow request ids
        before = [str(uuid.uuid4()) for _ in range(50)]
        publisher.publish_batch([(body("ok", r), attrs) for r in before])
        worker = procs.worker(
            f"pubsub://{PROJECT}/{sub}",
            "slow_then_ok",
            "--store", store_url, "--forever", "--concurrency", "1", "--deadline", "10",
            name="worker",
        )  # fmt: skip
        wait_for(lambda: succeeded().keys() >= set(before), 60, "the first batch")
        publisher.close()

        emulator.stop()

        wait_for(lambda: logged("backend unavailable"), 30, "the outage to be reported")
        assert worker.poll() is None, procs.output("worker")

        emulator = Emulator(port=emulator.port).start()
        setup(PROJECT, topic, sub)  # the emulator forgot everything: set up again
        publisher = open_queue(f"pubsub://{PROJECT}/{topic}")
        after = [str(uuid.uuid4()) for _ in range(50)]
        publisher.publish_batch([(body("ok", r), attrs) for r in after])
        publisher.close()
        wait_for(
            lambda: succeeded().keys() >= set(after), 90, "the worker to resume after the outage"
        )
        # the notice is stored with the commit after the call that found the backend
        # back, which under load can land after these outcomes are visible
        wait_for(lambda: logged("backend available again"), 30, "the recovery to be reported")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(30) == 0, procs.output("worker")

        done = succeeded()
        assert sorted(r for r in done if r) == sorted(before + after)
        assert all(len(v) == 1 for v in done.values()), "each request succeeded once"
        ran = (tmp_path / "ok.log").read_text().splitlines()
        assert len(ran) == len(before) + len(after), "each handler ran once"
        [record] = store.executions()
        assert record.status == "succeeded", record
    finally:
        emulator.stop()


def test_leases_are_extended_but_never_past_the_calls_hard_deadline() -> None:
    from steadyq.brokers.memory import MemoryQueue
    from steadyq.runner import Call, InlineRunner
    from steadyq.worker.leases import InFlight
    from tests.conftest import FakeClock

    clock = FakeClock()
    queue = MemoryQueue(clock=clock)
    queue.publish(body("ok"))
    options = WorkerOptions(deadline_s=10, lease_s=4, prefetch=1, runner="inline")
    worker = Worker(queue, queue.colocated_store, options, clock=clock)
    [d] = queue.pull(1, 4)
    # the call may wait behind one prefetched call, then run for its deadline: 20 s at most
    call = Call(1, None, 1, d.message_id, None, {}, 10)
    worker.leases.track(InFlight(d, None, 0.0, call, clock.now + 4, clock.now + 20))
    runner = InlineRunner("steadyq.handlers:noop", execution_id="x", emit=lambda e: None)
    start = clock.now
    for _ in range(15):  # 45 s of a handler that never reports
        clock.advance(3)
        worker.leases.last_extend = 0.0  # let every turn extend
        worker.leases.extend(4, runner)
    leased_until = worker.leases.inflight[1].delivery.leased_until
    assert leased_until == pytest.approx(start + 20), "extended up to the cap, not beyond"
    assert queue.pull(1, 4) != [], "past the cap the lease lapses and the message is free"


def _slow_requests(n: int) -> list[tuple[bytes, None]]:
    return [
        (json.dumps({"request_id": str(uuid.uuid4()), "topic": "slow"}).encode(), None)
        for _ in range(n)
    ]


def _slow_worker(queue: object, store: EventStore, **kw: object) -> Worker:
    options = WorkerOptions(
        handler="tests.worker_handlers:by_topic",
        runner="inline",
        retry=RetryPolicy(0, 0, 5),
        idle_poll_s=0.05,
        **kw,  # type: ignore[arg-type]
    )
    return Worker(queue, store, options)  # type: ignore[arg-type]


def test_a_stopped_worker_finishes_what_it_holds_and_gives_back_what_it_read_ahead(
    pubsub_host: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    import threading
    import time

    _, sub = resources(unique)  # ack deadline 60 s: anything held and not given back waits
    store_url = f"sqlite:///{tmp_path}/store.db"
    queue = open_queue(f"pubsub://{PROJECT}/{sub}")
    store = store_for(queue, store_url)
    ids = queue.publish_batch(_slow_requests(12))
    worker = _slow_worker(queue, store)
    threading.Timer(1.0, worker.request_stop, args=("SIGTERM (test)",)).start()
    first = worker.run()
    queue.close()  # as `steadyq worker` does on its way out
    assert first.exit_code == ExitCode.OK and first.detail == "SIGTERM (test)"
    assert 0 < first.counts["succeeded"] < 12
    assert first.counts["received"] == first.counts["succeeded"], "nothing left half done"

    started = time.monotonic()
    again = open_queue(f"pubsub://{PROJECT}/{sub}")
    second = _slow_worker(again, store_for(again, store_url), drain=True).run()
    again.close()
    assert time.monotonic() - started < 30, "what the first worker held came back at once"
    assert first.counts["succeeded"] + second.counts["succeeded"] == 12
    recorded = open_store(store_url)
    done = by_message(recorded, ev.MESSAGE_SUCCEEDED)
    assert sorted(done) == sorted(ids) and all(len(v) == 1 for v in done.values())
    recorded.close()


def test_max_runtime_stops_pulling_before_a_deadline_would_overrun(
    pubsub_host: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    _, sub = resources(unique)
    queue = open_queue(f"pubsub://{PROJECT}/{sub}")
    store = store_for(queue, f"sqlite:///{tmp_path}/store.db")
    queue.publish_batch(_slow_requests(40))  # 0.3 s each: 12 s of work
    result = _slow_worker(queue, store, deadline_s=1.0, max_runtime_s=2.5).run()
    assert result.exit_code == ExitCode.OK and result.detail == "time budget reached"
    assert result.duration_s < 2.5 + 1.0
    assert 0 < result.counts["succeeded"] < 40
    assert result.counts["received"] == result.counts["succeeded"]
    queue.close()
