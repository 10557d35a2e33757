"""The process runner's batched hand-off: calls a child holds but has not started are
taken back from a child held up by a long call, a child killed mid-batch loses no call,
and what it finished without reporting is not run again."""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from steadyq.runner import (
    _RUNNING_FIELDS,
    _STARTED,
    REVOKE_AFTER_S,
    Call,
    Outcome,
    ProcessRunner,
)

HANDLER = "tests.runner_handlers:work"


@pytest.fixture
def runner_of() -> Iterator[object]:
    made: list[ProcessRunner] = []

    def make(concurrency: int) -> ProcessRunner:
        runner = ProcessRunner(
            HANDLER, concurrency=concurrency, execution_id="t", emit=lambda e: None
        )
        runner.start()
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.abort()


def call(n: int, what: str, seconds: float, log: Path, deadline_s: float = 30.0) -> Call:
    return Call(n, (what, seconds, str(log)), 1, f"m{n}", None, {}, deadline_s)


def collect(runner: ProcessRunner, n: int, timeout_s: float) -> dict[int, tuple[Outcome, float]]:
    """Poll until ``n`` outcomes came back: call id -> (outcome, when, monotonic)."""
    got: dict[int, tuple[Outcome, float]] = {}
    give_up = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < give_up:
        for outcome in runner.poll(0.02):
            assert outcome.call_id not in got, f"two outcomes for call {outcome.call_id}"
            got[outcome.call_id] = (outcome, time.monotonic())
    return got


def ran(log: Path) -> list[tuple[str, int]]:
    if not log.exists():
        return []
    return [(m, int(p)) for m, p in (line.split() for line in log.read_text().splitlines())]


def warm_up(runner: ProcessRunner, log: Path, first: int, count: int) -> None:
    """Quick calls first, so the runner has seen quick calls and sends deep batches
    (rounds of them: on a loaded machine one call descheduled for long looks slow)."""
    for round_ in range(10):
        start = first + round_ * count
        for n in range(start, start + count):
            runner.submit(call(n, "ok", 0, log))
        assert len(collect(runner, count, 30)) == count
        if runner.pace.allowed() > 10:
            return
    raise AssertionError(f"calls stay slow: depth {runner.pace.allowed()}")


def test_calls_queued_behind_a_hang_run_elsewhere_long_before_its_deadline(
    runner_of: object, tmp_path: Path
) -> None:
    log = tmp_path / "ran.log"
    runner: ProcessRunner = runner_of(2)  # type: ignore[operator]
    warm_up(runner, log, 1000, 20)
    deadline_s = 3.0
    before = list(range(62, 66))  # done just before the hang: their outcomes still unsent
    for n in before:
        runner.submit(call(n, "ok", 0, log))
    runner.submit(call(1, "hang", 0, log, deadline_s))
    for n in range(2, 62):
        runner.submit(call(n, "ok", 0.002, log))
    quick = [*before, *range(2, 62)]
    sent = time.monotonic()
    runner.poll(0)  # the batches go out: the hang and half the quick calls in one child
    hang_child = next(s.process.pid for s in runner._slots if 1 in s.queue)
    hang_slot = next(s for s in runner._slots if 1 in s.queue)
    hang_index = runner._slots.index(hang_slot)
    hang_sends: list[float] = []  # how long its call had run at each send to it
    real_send = hang_slot.conn.send_bytes  # how a batch goes out: pickled once, sent

    def counting_send(data: bytes) -> None:
        started = runner._running[hang_index * _RUNNING_FIELDS + _STARTED]
        hang_sends.append(time.monotonic() - started if started > 0 else 0.0)
        real_send(data)

    hang_slot.conn.send_bytes = counting_send  # type: ignore[method-assign]
    behind = [n for s in runner._slots if 1 in s.queue for n in s.queue if n != 1]
    assert len(behind) >= 10, behind  # many calls were queued behind the hang

    got = collect(runner, len(quick) + 1, 30)
    # nothing was sent to the hanging child once its call had run long (a hang never
    # reads its pipe), though it had the shortest queue once its calls were taken back
    assert [ran_s for ran_s in hang_sends if ran_s > REVOKE_AFTER_S] == []
    assert sorted(got) == sorted([1, *quick])
    hang, hang_at = got[1]
    assert hang.status == "timeout"
    assert deadline_s <= hang.duration_s < deadline_s + 1.0, hang
    for n in quick:
        outcome, at = got[n]
        assert outcome.status == "ok", outcome
        # taken back from the hanging child and run by the other, long before the kill
        assert at - sent < deadline_s / 2, (n, at - sent)
        assert at < hang_at
    runs = [m for m, _pid in ran(log) if m != "m1" and int(m[1:]) < 1000]
    assert sorted(runs) == sorted(f"m{n}" for n in quick)  # each exactly once
    # the ones queued behind the hang ran in the other child
    assert hang_child not in {pid for m, pid in ran(log) if int(m[1:]) < 62}


def test_a_child_killed_mid_batch_loses_no_call_and_reruns_none(
    runner_of: object, tmp_path: Path
) -> None:
    log = tmp_path / "ran.log"
    runner: ProcessRunner = runner_of(1)  # type: ignore[operator]
    warm_up(runner, log, 1000, 20)
    calls = list(range(1, 41))
    for n in calls:
        runner.submit(call(n, "ok", 0.01, log))
    runner.poll(0)
    [slot] = runner._slots
    assert len(slot.queue) >= 10  # a batch of many calls in the child's hands
    victim = slot.process.pid
    assert victim is not None
    got: dict[int, tuple[Outcome, float]] = {}
    while len(ran(log)) < 20 + 8:  # some of the batch done, some of it not started
        for outcome in runner.poll(0.005):
            got[outcome.call_id] = (outcome, 0.0)
    os.kill(victim, signal.SIGKILL)
    rest = collect(runner, len(calls) - len(got), 30)
    assert not set(rest) & set(got), "two outcomes for one call"
    got.update(rest)
    assert sorted(got) == calls  # nothing lost
    statuses = {n: o.status for n, (o, _at) in got.items()}
    crashed = [n for n, s in statuses.items() if s == "crashed"]
    assert len(crashed) <= 1, statuses  # only the call it was running when it died
    assert set(statuses.values()) <= {"ok", "crashed"}
    runs = [m for m, _pid in ran(log) if int(m[1:]) < 1000]
    assert len(runs) == len(set(runs)), "a call ran twice"
    finished = {f"m{n}" for n, s in statuses.items() if s == "ok"}
    assert finished <= set(runs)  # an "ok" is a call that really ran
    assert set(runs) - finished <= {f"m{n}" for n in crashed}
    # the calls it had not started ran in its replacement
    assert {pid for _m, pid in ran(log)[-5:]} != {victim}


def test_a_call_past_its_start_by_comes_back_stale_and_does_not_run(
    runner_of: object, tmp_path: Path
) -> None:
    log = tmp_path / "ran.log"
    runner: ProcessRunner = runner_of(1)  # type: ignore[operator]
    late = Call(1, ("ok", 0, str(log)), 1, "m1", None, {}, 30.0, start_by=time.time() - 1)
    runner.submit(late)
    runner.submit(call(2, "ok", 0, log))
    runner.submit(Call(3, ("ok", 0, str(log)), 1, "m3", None, {}, 30.0, start_by=math.inf))
    got = collect(runner, 3, 30)
    assert {n: o.status for n, (o, _at) in got.items()} == {1: "stale", 2: "ok", 3: "ok"}
    assert sorted(m for m, _pid in ran(log)) == ["m2", "m3"]


def _one_child_runs(
    handler: str, requests: list[Any], deadline_s: float
) -> tuple[dict[int, Any], list[Any], float]:
    """Run ``requests`` (call ids from 1) in one child of ``handler``: the outcomes
    collected, the events it emitted, and the seconds from the first submit."""
    events: list[Any] = []
    runner = ProcessRunner(handler, concurrency=1, execution_id="t", emit=events.append)
    runner.start()
    try:
        started = time.monotonic()
        for n, request in enumerate(requests, 1):
            runner.submit(Call(n, request, 1, f"m{n}", None, {}, deadline_s))
        got = collect(runner, len(requests), 60)
        took = time.monotonic() - started
    finally:
        runner.abort()
    return got, events, took


def test_a_chatty_handler_with_big_requests_never_stalls_the_pipe(tmp_path: Path) -> None:
    """The parent's write of a batch must never wait on a child that is itself waiting
    for the parent to read its log records: each call logs 3 WARNING lines of ~500
    bytes and carries an 8 KB field, so both directions of the pipe fill up (with a 2 or
    4 KB field the old code did not stall here: the batches it sent were read in time)."""
    from tests.runner_chatty import LINES_PER_CALL

    deadline_s = 5.0
    count = 1200
    got, events, took = _one_child_runs(
        "tests.runner_chatty:chatty", [("p" * 8192, 500)] * count, deadline_s
    )
    statuses = {n: o.status for n, (o, _at) in got.items()}
    assert sorted(statuses) == list(range(1, count + 1))
    assert [n for n, s in statuses.items() if s != "ok"] == [], statuses
    assert len(events) == LINES_PER_CALL * count  # every log record reached the parent
    # a circular wait ends only when the watchdog kills the child at the deadline
    assert took < deadline_s, took


def test_a_handler_logging_from_its_own_threads_keeps_the_pipe_readable() -> None:
    """Records of 100 KB (more than the pipe holds: a write waits partway) logged from
    three threads at once: each reaches the parent whole, and every call ends "ok"."""
    from tests.runner_chatty import THREADS

    count = 60
    got, events, _took = _one_child_runs(
        "tests.runner_chatty:chatty_threads", [100_000] * count, 10.0
    )
    assert sorted(got) == list(range(1, count + 1))
    assert [n for n, (o, _at) in got.items() if o.status != "ok"] == []
    assert len(events) == THREADS * count
    assert all(e.message.endswith("t" * 100_000) for e in events)


def test_the_parent_decodes_whole_messages_and_keeps_a_partial_one() -> None:
    """What a child writes arrives in pieces: several messages in one read, one message
    over several reads (more than a read's chunk), a closed pipe read as the end."""
    import multiprocessing
    import socket as socket_

    from steadyq.runner import _READ_CHUNK, _arrived, _close_pipe, _Slot

    parent, child = multiprocessing.Pipe(duplex=True)
    slot = _Slot(
        process=None,  # type: ignore[arg-type]
        conn=parent,
        ring=range(0),
        lock=None,
        inlet=socket_.socket(fileno=os.dup(parent.fileno())),
    )
    try:
        assert _arrived(slot) == []  # nothing there: no wait
        child.send(("done", [1, 0.5], []))
        child.send(("log", "x"))
        assert _arrived(slot) == [("done", [1, 0.5], []), ("log", "x")]
        big = ("log", "y" * (3 * _READ_CHUNK))
        child.send(big)
        child.send(("done", [2, 0.1], []))
        got: list[object] = []
        while len(got) < 2:
            got += _arrived(slot)
        assert got == [big, ("done", [2, 0.1], [])]
        # a message cut in two: nothing until it is whole
        data = multiprocessing.reduction.ForkingPickler.dumps(("done", [3, 0.2], []))
        framed = len(data).to_bytes(4, "big") + bytes(data)
        os.write(child.fileno(), framed[:7])
        assert _arrived(slot) == []
        os.write(child.fileno(), framed[7:])
        assert _arrived(slot) == [("done", [3, 0.2], [])]
        assert not slot.ended
        child.close()
        assert _arrived(slot) == []
        assert slot.ended
    finally:
        _close_pipe(slot)


def test_quick_calls_go_to_one_child_and_slower_ones_to_all(
    runner_of: object, tmp_path: Path
) -> None:
    """A batch that one child runs within ``BUNDLE_S`` goes to one child (a second would
    cost a message and a wake-up each way), and the poll that sends it waits for it
    (its outcomes come back from that very poll); calls slow enough to matter are
    spread."""
    log = tmp_path / "ran.log"
    runner: ProcessRunner = runner_of(2)  # type: ignore[operator]
    sends: list[int] = []  # the slot index of each batch sent

    def counting(index: int, real: Any) -> Any:
        def send_bytes(data: bytes) -> None:
            sends.append(index)
            real(data)

        return send_bytes

    for index, slot in enumerate(runner._slots):
        slot.conn.send_bytes = counting(index, slot.conn.send_bytes)  # type: ignore[method-assign]
    bundled = []
    for round_ in range(10):  # a loaded machine can make a call look slow: retry
        first = 1000 + round_ * 100
        for n in range(first, first + 100):
            runner.submit(call(n, "noop", 0, log))
        sends.clear()
        early = runner.poll(0)
        bundled.append((len(sends), len(early)))
        assert len(early) + len(collect(runner, 100 - len(early), 30)) == 100
        if len(sends) == 1 and len(early) == 100:  # one batch, waited for
            break
    assert bundled[-1] == (1, 100), bundled
    # calls of 5 ms: 40 of them would take 200 ms in one child, so both get some
    for n in range(1, 5):
        runner.submit(call(n, "ok", 0.005, log))
    assert len(collect(runner, 4, 30)) == 4
    for n in range(5, 45):
        runner.submit(call(n, "ok", 0.005, log))
    sends.clear()
    early = runner.poll(0)
    assert sorted(sends) == [0, 1], sends
    held = sorted(len(s.queue) for s in runner._slots)  # each up to ~50 ms of them
    assert held[0] >= 5 and held[1] - held[0] <= 1, held
    assert len(early) + len(collect(runner, 40 - len(early), 30)) == 40
