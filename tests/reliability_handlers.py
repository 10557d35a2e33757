"""Handlers for tests/test_reliability.py, loaded by workers as ``tests.reliability_handlers:NAME``.

Each handler finds its scratch folder in the message attribute ``dir`` (so the same
handler works in-process, in a forked handler child and in a ``steadyq worker``
subprocess) and leaves evidence there as whole lines appended with ``O_APPEND``:
one ``os.write`` per line, so lines from concurrent processes never interleave.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import Field, StrictInt, StrictStr

from steadyq import PermanentError, Request
from steadyq.handlers import with_schema
from steadyq.runner import HandlerContext


class Job(Request):
    """What ``mixed`` accepts: a topic, and a grade if any (so schema_invalid can happen)."""

    topic: StrictStr = Field(min_length=1)
    grade_level: StrictInt | None = Field(default=None, ge=1, le=12)


BARRIER_TIMEOUT_S = 20.0


def _worker_pid() -> int:
    """The worker this handler child runs for: its parent, or its parent's parent when
    the parent is the worker's forkserver."""
    parent = os.getppid()
    try:
        cmdline = Path(f"/proc/{parent}/cmdline").read_bytes()
        if b"multiprocessing.forkserver" in cmdline:
            stat = Path(f"/proc/{parent}/stat").read_text()
            return int(stat[stat.rindex(")") + 2 :].split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return parent


def _dir(ctx: HandlerContext) -> Path:
    return Path(ctx.attributes["dir"])


def append_line(path: Path, line: str) -> None:
    """Append one line atomically (a single write on an O_APPEND descriptor)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def _block(seconds: float) -> None:
    """Block without using the CPU; the test (or the runner) kills us long before."""
    threading.Event().wait(seconds)


# -- test 1: kill -9 of the worker ----------------------------------------------------


def slow_then_ok(request: Any, ctx: HandlerContext) -> None:
    """Topic ``block`` on attempt 1: say who we are, then block. Anything else succeeds.

    Writes ``blocked.pid`` (``<handler pid> <worker pid>``) so the test can kill both,
    and ``ok.log`` lines ``<message_id> <attempt> <pid>`` for each success.
    """
    folder = _dir(ctx)
    if request.topic == "block" and ctx.attempt == 1:
        tmp = folder / f"blocked.pid.{os.getpid()}"
        tmp.write_text(f"{os.getpid()} {os.getppid()}\n", encoding="ascii")
        os.replace(tmp, folder / "blocked.pid")
        _block(90)
        raise RuntimeError("slow_then_ok: the test should have killed this process")
    append_line(folder / "ok.log", f"{ctx.message_id} {ctx.attempt} {os.getpid()}")


# -- test 2: a handler that hangs forever -------------------------------------------


def hang_or_ok(request: Any, ctx: HandlerContext) -> None:
    """Topic ``hang`` blocks forever (after noting its pid in ``hang.log``); others succeed."""
    folder = _dir(ctx)
    if request.topic == "hang":
        append_line(folder / "hang.log", f"{ctx.message_id} {ctx.attempt} {os.getpid()}")
        while True:
            _block(3600)
    append_line(folder / "ok.log", f"{ctx.message_id} {ctx.attempt} {os.getpid()}")


# -- test 3: a handler that kills its own process ------------------------------------


def suicide_or_ok(request: Any, ctx: HandlerContext) -> None:
    """Topic ``suicide`` SIGKILLs its own process (after noting its pid); others succeed."""
    folder = _dir(ctx)
    if request.topic == "suicide":
        append_line(folder / "suicide.log", f"{ctx.message_id} {ctx.attempt} {os.getpid()}")
        os.kill(os.getpid(), signal.SIGKILL)
    append_line(folder / "ok.log", f"{ctx.message_id} {ctx.attempt} {os.getpid()}")


# -- test 4: two workers on one file -------------------------------------------------

_barrier_passed = False


def _barrier(folder: Path) -> None:
    """Once per handler process: wait until handler processes of two workers exist.

    Each handler process registers its worker (its parent) and waits, bounded, until
    a second worker has registered too, so that both workers provably hold
    deliveries at the same time. On timeout it goes on; the test then reports
    that only one worker did any work.
    """
    global _barrier_passed
    if _barrier_passed:
        return
    _barrier_passed = True
    workers = folder / "workers"
    workers.mkdir(exist_ok=True)
    (workers / str(_worker_pid())).touch()
    end = time.monotonic() + BARRIER_TIMEOUT_S
    while len(os.listdir(workers)) < 2 and time.monotonic() < end:
        time.sleep(0.005)


def record_overlap(request: Any, ctx: HandlerContext) -> None:
    """Record ``<message_id> <attempt> <pid> <worker pid> <start_ns> <end_ns>`` around a nap.

    Times are ``time.monotonic_ns()`` (CLOCK_MONOTONIC: one clock for every process
    on the host), so records from different processes can be compared.
    """
    folder = _dir(ctx)
    _barrier(folder)
    start = time.monotonic_ns()
    time.sleep(0.004)
    end = time.monotonic_ns()
    append_line(
        folder / "calls.log",
        f"{ctx.message_id} {ctx.attempt} {os.getpid()} {_worker_pid()} {start} {end}",
    )


# -- test 5: 10,000 mixed messages -----------------------------------------------------


@with_schema(Job)
def mixed(request: Any, ctx: HandlerContext) -> None:
    """Behaviour by topic.

    ``ok``: succeed. ``transient-K``: fail attempts 1..K with an ordinary error, then
    succeed. ``permanent``: raise :class:`PermanentError` with reason ``bad_topic``.
    """
    topic: str = request.topic
    if topic.startswith("transient-"):
        if ctx.attempt <= int(topic.removeprefix("transient-")):
            raise ConnectionError(f"transient failure on attempt {ctx.attempt}")
        return
    if topic == "permanent":
        raise PermanentError("this topic can never be served", reason="bad_topic")
    if topic != "ok":
        raise AssertionError(f"mixed: unexpected topic {topic!r}")


# -- extra: a retry that is ready at once -------------------------------------------


def slow_flaky(request: Any, ctx: HandlerContext) -> None:
    """Take 0.2 s, then fail attempt 1 and succeed on later attempts.

    Slow enough that the outcome reaches the worker in a later loop turn than the
    pull that delivered the message.
    """
    time.sleep(0.2)
    if ctx.attempt == 1:
        raise ConnectionError("transient failure on attempt 1")


# -- extra: a request that runs longer than the lease ---------------------------------


def sleepy(request: Any, ctx: HandlerContext) -> None:
    """Topic ``sleep-S`` sleeps S seconds; notes each call in ``calls.log``."""
    folder = _dir(ctx)
    append_line(folder / "calls.log", f"{ctx.message_id} {ctx.attempt} {os.getpid()} start")
    topic: str = request.topic
    if topic.startswith("sleep-"):
        time.sleep(float(topic.removeprefix("sleep-")))
    append_line(folder / "calls.log", f"{ctx.message_id} {ctx.attempt} {os.getpid()} end")


def slow_fail_once(request: Any, ctx: HandlerContext) -> None:
    """Topic ``sleep-S``: take S seconds; the very first call in the folder then fails.

    Notes ``<message_id> <attempt> <pid> start|ok|fail`` in ``calls.log``.
    """
    folder = _dir(ctx)
    append_line(folder / "calls.log", f"{ctx.message_id} {ctx.attempt} {os.getpid()} start")
    time.sleep(float(request.topic.removeprefix("sleep-")))
    try:
        os.close(os.open(folder / "failed-once", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        append_line(folder / "calls.log", f"{ctx.message_id} {ctx.attempt} {os.getpid()} ok")
        return
    append_line(folder / "calls.log", f"{ctx.message_id} {ctx.attempt} {os.getpid()} fail")
    raise ConnectionError("the first call fails")


# -- exactly once per request (tests/faults/test_exactly_once.py) ----------------------


def hold_until_released(request: Any, ctx: HandlerContext) -> None:
    """Note each run in ``runs.log`` (``<request_id> <message_id> <pid>``). Topic ``hold``
    then blocks until the test creates ``release``; ``hold-fail`` does too, then raises.
    Anything else succeeds at once."""
    folder = _dir(ctx)
    append_line(folder / "runs.log", f"{ctx.request_id} {ctx.message_id} {os.getpid()}")
    if request.topic in ("hold", "hold-fail"):
        end = time.monotonic() + 60
        while not (folder / "release").exists() and time.monotonic() < end:
            _block(0.02)
        if request.topic == "hold-fail":
            raise RuntimeError("hold-fail: failed on purpose")


def note_start(request: Any, ctx: HandlerContext) -> None:
    """Note ``<request_id> <wall clock start> <pid>`` in ``starts.log``, then work a few ms."""
    append_line(_dir(ctx) / "starts.log", f"{ctx.request_id} {time.time():.6f} {os.getpid()}")
    _block(0.005 + (hash(ctx.message_id) % 10) / 1000)
