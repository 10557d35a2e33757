"""Running handlers: in supervised child processes with hard deadlines, or inline.

The process runner keeps ``concurrency`` children. Each child loads the handler
once and runs one call at a time, from the calls the parent sent it: in batches, at
most one pipe message per child per loop pass (quick calls to as few children as run
them within ``BUNDLE_S``), the outcomes coming back in batches too. A call
that outlives its deadline gets its child killed (SIGKILL) and replaced: blocking code,
a C extension stuck in a loop or a deadlock cannot hang the worker. A child that dies
by itself (segfault, ``os._exit``, the OOM killer) is reported the same way.

A batch may be deep (as many quick calls as fit in ~50 ms) because calls a child has
not started can be taken back: each sent call has a position on a board shared with
the child, which the child marks started under its own lock; when a child's current
call runs long, the parent marks the ones queued behind it taken back, under the same
lock, and gives them to the other children. When a child dies the board tells, for
each call it held, whether it had not started it (it runs elsewhere), was running it
(the outcome) or had finished it without reporting (rebuilt from the board).

Deadlines are enforced by a watchdog thread in the parent, not by the worker's loop:
each child writes when it really starts a call (and that call's deadline) into memory
it shares with the parent, and the watchdog kills a child whose call has run past its
deadline within ``WATCHDOG_TICK_S``, whatever the loop is doing (backing off an outage,
waiting on a busy database, starting a replacement child). The loop only collects the
outcome when it next polls.

Children are started by ``forkserver`` (``spawn`` where there is none), never forked
from the worker itself: the worker has threads (the committer, a Pub/Sub client's), and
a process forked from a threaded one may inherit a lock some other thread held.
What a child runs (the call and outcome types, loading and invoking the handler, the
child's loop) is in :mod:`steadyq.runner_child`: the forkserver preloads that module and
the handler's, not this one, so a worker's start compiles and runs only what the
children need (see ``docs/benchmarks-process-runner.md``, session 8).

A call also carries ``start_by``, the last wall-clock moment it may start: its
message's lease (and its request's claim) must outlast the whole deadline. The
worker moves it on as it extends leases. A call whose moment has passed when a
child gets to it is not run but reported ``stale``: its worker was frozen (SIGSTOP,
a paused VM) or stalled while it waited, and its message may already be someone
else's. Children read each queued call's ``start_by`` from memory they share with
their parent, so the check costs no round trip.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import pickle
import select
import signal
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Protocol

from steadyq.errors import HandlerLoadError
from steadyq.runner_child import (
    _CALL,
    _DEADLINE,
    _DONE_OK,
    _DONE_STALE,
    _FREE,
    _OWNER,
    _POSITION_FIELDS,
    _QUEUED,
    _RAN,
    _RUNNING_FIELDS,
    _START_BY,
    _STARTED,
    _STARTED_CALL,
    _STATE,
    _TAKEN,
    FLUSH_S,
    MAX_RESULT_BYTES,
    MAX_TRACEBACK_CHARS,
    Call,
    Handler,
    HandlerContext,
    Outcome,
    Status,
    _child_main,
    _handler_logger,
    _path,
    _wire_into,
    load_handler,
    run_call,
)
from steadyq.telemetry.events import Event

__all__ = [
    "FLUSH_S",
    "MAX_RESULT_BYTES",
    "MAX_TRACEBACK_CHARS",
    "Call",
    "Handler",
    "HandlerContext",
    "InlineRunner",
    "Outcome",
    "Pace",
    "ProcessRunner",
    "Runner",
    "Status",
    "default_start_method",
    "load_handler",
    "run_call",
]

# how often a handler process's start is tried before the execution gives up on it
START_TRIES = 4


WATCHDOG_TICK_S = 0.05  # how often the watchdog looks at the running calls


def default_start_method() -> str:
    """forkserver where the platform has it, else spawn: never a plain fork."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def _context(call: Call, execution_id: str, logger: logging.Logger) -> HandlerContext:
    return HandlerContext(
        attempt=call.attempt,
        deadline_at=time.time() + call.deadline_s,
        execution_id=execution_id,
        message_id=call.message_id,
        request_id=call.request_id,
        attributes=call.attributes,
        logger=logger,
        artifacts_dir=_path(call.artifacts_dir),
    )


class Pace:
    """How many quick calls may be batched without holding up anything for long.

    Tracks the slowest recent call (decaying, so one slow call is forgotten after a
    few dozen quick ones) and allows as many calls at once as fit in ``budget_s``,
    between ``low`` and ``high``. A runner batches only while handlers are quick, so
    a rejection or a settlement never waits long behind a batch.
    """

    def __init__(self, *, low: int, high: int, budget_s: float) -> None:
        self.low, self.high, self.budget_s = low, max(low, high), budget_s
        self._recent_s: float | None = None

    def observe(self, duration_s: float) -> None:
        recent = self._recent_s
        self._recent_s = duration_s if recent is None else max(duration_s, recent * 0.9)

    def allowed(self) -> int:
        if self._recent_s is None:
            return self.low
        fits = int(self.budget_s / max(self._recent_s, 1e-6))
        return max(self.low, min(self.high, fits))


class Runner(Protocol):
    """What the worker needs from a runner."""

    kind: str
    concurrency: int

    def start(self) -> None: ...
    def capacity(self) -> int: ...
    def submit(self, call: Call) -> None: ...
    def renew(self, call_id: int, start_by: float) -> None: ...
    def poll(self, timeout_s: float) -> list[Outcome]: ...
    def running(self) -> int: ...
    def abort(self) -> list[int]: ...
    def close(self) -> None: ...


class InlineRunner:
    """Runs handlers in the worker's own process: fastest, for trusted quick handlers.

    The deadline is soft: a handler sees it in ``ctx`` but nothing stops it; an
    overrun is logged at WARNING. A handler that blocks forever blocks the worker.
    """

    kind = "inline"

    def __init__(
        self,
        handler: str | Handler,
        *,
        execution_id: str,
        emit: Callable[[Event], None],
        log_level: int = logging.WARNING,
    ) -> None:
        self.concurrency = 1
        self._log_level = log_level
        self._spec = handler
        self._execution_id = execution_id
        self._emit = emit
        self._done: list[Outcome] = []
        self._handler: Handler | None = None
        # calls run inside submit(), so a batch holds the loop for the sum of its
        # calls: batch only while they all fit in a few milliseconds
        self.pace = Pace(low=1, high=100, budget_s=0.005)

    def start(self) -> None:
        self._handler = load_handler(self._spec)
        self._logger, self._hook = _handler_logger(self._emit, self._log_level)

    def capacity(self) -> int:
        return self.pace.allowed()

    def submit(self, call: Call) -> None:
        assert self._handler is not None, "start() first"
        if time.time() > call.start_by:
            self._done.append(Outcome(call.call_id, "stale", 0.0))
            return
        self._hook.labels = {
            "execution_id": self._execution_id,
            "message_id": call.message_id,
            "request_id": call.request_id,
            "attempt": call.attempt,
        }
        outcome = run_call(self._handler, call, _context(call, self._execution_id, self._logger))
        if outcome.duration_s > call.deadline_s:
            self._logger.warning(
                "handler overran its soft deadline: %.1fs > %.1fs (inline runner cannot stop it)",
                outcome.duration_s,
                call.deadline_s,
            )
        self.pace.observe(outcome.duration_s)
        self._done.append(outcome)

    def renew(self, call_id: int, start_by: float) -> None:
        pass  # an inline call starts as it is submitted

    def poll(self, timeout_s: float) -> list[Outcome]:
        done, self._done = self._done, []
        return done

    def running(self) -> int:
        return len(self._done)

    def abort(self) -> list[int]:
        return []

    def close(self) -> None:
        pass


# a call queued behind one that has run this long (or four times the slowest recent
# call, if longer) is taken back from its child and given to another
REVOKE_AFTER_S = 0.05
MAX_DEPTH = 128  # the most calls a child holds at once (quick handlers)
# quick calls that one child runs within this long all go to that child (``_dispatch``)
BUNDLE_S = 0.002
# how long a poll that has just sent quick calls waits for them (``_catch_up``)
CATCH_UP_S = 0.003


@dataclass(slots=True)
class _Slot:
    process: BaseProcess
    conn: Connection
    ring: range  # this slot's positions in the shared board
    lock: Any  # taken by the child to start a call, by the parent to take calls back
    # the parent's end of the pipe again, read without waiting (``_arrived``); the
    # bytes of a message not yet whole; whether the child's end is closed
    inlet: socket.socket | None = None
    unread: bytearray = field(default_factory=bytearray)
    ended: bool = False
    # calls sent and not yet reported: call id -> (position, call), in sending order
    queue: dict[int, tuple[int, Call]] = field(default_factory=dict)
    free: list[int] = field(default_factory=list)  # positions no call holds
    sent_at: float = 0.0  # monotonic: the last batch sent
    pidfd: int | None = None  # signals reach this very process, never a reused pid
    killed: tuple[int, float] | None = None  # by the watchdog: (call id, its run time)
    terminated_at: float | None = None  # SIGTERM sent (``kill_grace_s``), monotonic


@contextlib.contextmanager
def _without_main(payload: object) -> Iterator[None]:
    """Start a child without the parent's ``__main__`` script.

    A child started fresh (forkserver, spawn) imports the parent's main script again
    unless told otherwise: a script that runs a worker without the ``if __name__ ==
    "__main__"`` idiom would run again in every child, and a console script costs its
    imports (the whole CLI) at each child start. A child needs none of it: it runs
    ``_child_main`` and imports its handler by module name. So while the child is
    started the main module is shown without its file and its module name (``python -m
    pkg.mod``), unless the handler lives there.
    """
    main = sys.modules.get("__main__")
    own = isinstance(payload, str) or getattr(payload, "__module__", None) != "__main__"
    if main is None or not own:
        yield
        return
    hidden: dict[str, Any] = {
        name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__
    }
    for name in hidden:
        if name == "__file__":
            del main.__file__
        else:
            main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.update(hidden)


def _open_pidfd(pid: int | None) -> int | None:
    opener = getattr(os, "pidfd_open", None)
    if opener is None or pid is None:
        return None
    try:
        fd: int = opener(pid)
    except OSError:
        return None
    return fd


def _ready(
    process: BaseProcess,
    parent_conn: Connection,
    ring: range,
    lock: Any,
    emit: Callable[[Event], None],
) -> _Slot:
    """Wait until a launched child has loaded the handler.

    Raises:
        HandlerLoadError: it could not, or did not say so within 60 s.
    """
    deadline = time.monotonic() + 60
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not parent_conn.poll(left):
            process.kill()
            raise HandlerLoadError("a handler process did not start within 60 s")
        try:
            message = parent_conn.recv()
        except EOFError:
            process.join(5)
            raise HandlerLoadError(
                f"a handler process died while starting (exit code {process.exitcode})"
            ) from None
        if message[0] == "ready":
            pidfd = _open_pidfd(process.pid)
            inlet = socket.socket(fileno=os.dup(parent_conn.fileno()))
            return _Slot(
                process, parent_conn, ring, lock, inlet, free=list(reversed(ring)), pidfd=pidfd
            )
        if message[0] == "fatal":
            process.join(5)
            raise HandlerLoadError(message[1])
        if message[0] == "log":
            emit(message[1])


def _signal(slot: _Slot, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, OSError):
        if slot.pidfd is not None:
            signal.pidfd_send_signal(slot.pidfd, signum)
        elif slot.process.pid is not None:
            os.kill(slot.process.pid, signum)


_READ_CHUNK = 1 << 16


def _arrived(slot: _Slot) -> list[Any]:
    """The messages from a child that are whole in its pipe, without waiting: reads
    what is there (never blocking), decodes every complete message and keeps the rest
    of a partial one for the next time. One or two system calls, where a
    ``Connection`` polls, then reads the length, then the message, one at a time.
    Sets ``slot.ended`` when the child's end is closed."""
    unread, inlet = slot.unread, slot.inlet
    assert inlet is not None
    while True:
        try:
            data = inlet.recv(_READ_CHUNK, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            slot.ended = True
            break
        if not data:
            slot.ended = True
            break
        unread += data
        if len(data) < _READ_CHUNK:
            break
    # the frames are multiprocessing's: a 4-byte signed big-endian length (-1 and an
    # 8-byte one for a message over 2 GiB), then the pickle
    messages: list[Any] = []
    at, size = 0, len(unread)
    while size - at >= 4:
        length = int.from_bytes(unread[at : at + 4], "big", signed=True)
        head = 4
        if length == -1:
            if size - at < 12:
                break
            length = int.from_bytes(unread[at + 4 : at + 12], "big")
            head = 12
        end = at + head + length
        if end > size:
            break
        messages.append(pickle.loads(unread[at + head : end]))
        at = end
    if at:
        del unread[:at]
    return messages


def _fate(
    board: Any, position: int, call: Call, slot: _Slot, killed: Any, started: float
) -> Outcome | None:
    """What a call held by a dead child became, from the board: None if it never
    started (it runs elsewhere)."""
    base = position * _POSITION_FIELDS
    state, code = board[base + _STATE], slot.process.exitcode
    if state == _QUEUED:
        return None
    if state == _DONE_OK:
        return Outcome(call.call_id, "ok", board[base + _RAN])
    if state == _DONE_STALE:
        return Outcome(call.call_id, "stale", 0.0)
    if state == _STARTED_CALL and killed is not None and killed[0] == call.call_id:
        elapsed = killed[1]
        error = f"DeadlineExceeded: killed after {elapsed:.1f}s (deadline {call.deadline_s:g}s)"
        return Outcome(call.call_id, "timeout", elapsed, error)
    if state == _STARTED_CALL:
        elapsed = time.monotonic() - (started if started > 0 else slot.sent_at)
        return Outcome(call.call_id, "crashed", elapsed, _exit_text(code))
    # it ended with more than "ok" and the child died before that reached the parent
    text = _exit_text(code) + ", after the call ended, before it was reported"
    return Outcome(call.call_id, "crashed", board[base + _RAN], text)


class _Children:
    """The process runner's children: starting them (all at once), replacing one,
    the watchdog that kills a call at its deadline, stopping them. What they are sent
    and what comes back is :class:`ProcessRunner`'s."""

    def __init__(
        self,
        handler: str | Handler,
        *,
        concurrency: int,
        execution_id: str,
        emit: Callable[[Event], None],
        ring_size: int,
        start_method: str | None,
        kill_grace_s: float,
        log_level: int,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.concurrency = concurrency
        self._spec = handler
        self._execution_id = execution_id
        self._emit = emit
        self.start_method = start_method or default_start_method()
        self._mp: Any = multiprocessing.get_context(self.start_method)
        self._slots: list[_Slot] = []
        self._kill_grace_s = kill_grace_s
        self._log_level = log_level
        self._payload: str | Handler = handler
        self._ring_size = ring_size  # positions on the board per child
        self._board: Any = self._mp.RawArray("d", concurrency * ring_size * _POSITION_FIELDS)
        # what each child runs, written by the child: read by the watchdog
        self._running: Any = self._mp.RawArray("d", concurrency * _RUNNING_FIELDS)
        self._lock = threading.Lock()  # the slots list and their processes, for the watchdog
        # one poll object for every child's pipe and sentinel (rebuilt when a child is
        # replaced): fd -> (slot index, is the sentinel)
        self._poller: Any = None
        self._fds: dict[int, tuple[int, bool]] = {}
        self._watching = threading.Event()
        self._watchdog: threading.Thread | None = None

    def start(self) -> None:
        """Start the children and wait until each has loaded the handler, then the
        watchdog that enforces their deadlines.

        Raises:
            HandlerLoadError: the handler cannot be loaded (checked in this process
                first, then in the first child); nothing is left running.
        """
        fn = load_handler(self._spec)  # fail fast (and let fork share the import)
        if self.start_method == "fork":
            self._payload = fn
        elif not isinstance(self._spec, str):
            try:
                pickle.dumps(self._spec)
            except Exception as exc:
                raise HandlerLoadError(
                    f"handler processes are started fresh ({self.start_method}): name the"
                    f" handler as 'module:function' ({type(exc).__name__}: {exc})"
                ) from None
        if self.start_method == "forkserver":
            # the server imports these once; each child is forked from it with them loaded
            modules = ["steadyq.runner_child"]
            if isinstance(self._spec, str):
                modules.append(self._spec.partition(":")[0].strip())
            self._mp.set_forkserver_preload(modules)
        # all children load the handler at once: startup is one child's, not the sum
        launched: list[tuple[BaseProcess, Connection, range, Any]] = []
        try:
            for index in range(self.concurrency):
                launched.append(self._launch(index))
            for launch in launched:
                self._slots.append(_ready(*launch, self._emit))
        except BaseException:
            self.abort()
            for process, conn, _ring, _lock in launched[len(self._slots) :]:
                with contextlib.suppress(Exception):
                    process.kill()
                    process.join(5)
                    conn.close()
            raise
        self._watchdog = threading.Thread(target=self._watch, name="steadyq-deadlines", daemon=True)
        self._watchdog.start()

    def _spawn(self, index: int) -> _Slot:
        return _ready(*self._launch(index), self._emit)

    def _launch(self, index: int) -> tuple[BaseProcess, Connection, range, Any]:
        """Start the child of slot ``index`` (not waiting for it to be ready)."""
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()  # a forked child must not inherit unflushed output
        parent_conn, child_conn = self._mp.Pipe(duplex=True)
        ring = range(index * self._ring_size, (index + 1) * self._ring_size)
        for position in ring:
            self._board[position * _POSITION_FIELDS + _STATE] = _FREE
        self._running[index * _RUNNING_FIELDS + _STARTED] = 0.0
        lock = self._mp.Lock()  # a new one: a killed child may have died holding the old
        for attempt in range(START_TRIES):
            process = self._mp.Process(
                target=_child_main,
                args=(
                    child_conn,
                    self._payload,
                    self._execution_id,
                    self._board,
                    lock,
                    self._log_level,
                    self._running,
                    index,
                    None if self.start_method == "fork" else dict(os.environ),
                ),
                name="steadyq-handler",
                daemon=True,
            )
            try:
                if self.start_method == "fork":
                    process.start()
                else:
                    with _without_main(self._payload):
                        process.start()
                break
            except (EOFError, OSError) as exc:
                # the forkserver died (killed, OOM) between the check that it runs and
                # the request for a child: the next start launches a new server
                if attempt == START_TRIES - 1:
                    child_conn.close()
                    parent_conn.close()
                    raise HandlerLoadError(
                        f"could not start a handler process ({type(exc).__name__}: {exc})"
                    ) from None
                time.sleep(0.05 * (attempt + 1))
        child_conn.close()
        return process, parent_conn, ring, lock

    # -- the watchdog --------------------------------------------------------------

    def _watch(self) -> None:
        while not self._watching.wait(WATCHDOG_TICK_S):
            self.enforce_deadlines()

    def enforce_deadlines(self) -> None:
        """Kill every child whose call has run past its deadline (the watchdog's
        tick; the outcome is reported by the next ``poll``)."""
        with self._lock:
            now = time.monotonic()
            for index, slot in enumerate(self._slots):
                record = index * _RUNNING_FIELDS
                started = self._running[record + _STARTED]
                if started <= 0 or slot.killed is not None:
                    continue
                elapsed = now - started
                if elapsed < self._running[record + _DEADLINE]:
                    continue
                if self._kill_grace_s > 0:
                    if slot.terminated_at is None:
                        slot.terminated_at = now
                        _signal(slot, signal.SIGTERM)
                        continue
                    if now - slot.terminated_at < self._kill_grace_s:
                        continue
                slot.killed = (int(self._running[record + _CALL]), elapsed)
                _signal(slot, signal.SIGKILL)

    def _kill(self, slot: _Slot) -> None:
        if self._kill_grace_s > 0:
            slot.process.terminate()
            slot.process.join(self._kill_grace_s)
        if slot.process.is_alive():
            slot.process.kill()
        slot.process.join(10)

    def _drop(self, slot: _Slot) -> None:
        """A slot's child is gone or going: the watchdog no longer signals it."""
        with self._lock:
            slot.killed = slot.killed or (0, 0.0)
            if slot.pidfd is not None:
                os.close(slot.pidfd)
                slot.pidfd = None

    def abort(self) -> list[int]:
        """Kill every child now; return the ids of the calls they held."""
        self._watching.set()
        lost = [i for s in self._slots for i in s.queue]
        for slot in self._slots:
            slot.queue.clear()
            self._drop(slot)
            self._kill(slot)
            _close_pipe(slot)
        self._poller = None
        with self._lock:
            self._slots.clear()
        return lost

    def close(self) -> None:
        self._watching.set()
        if self._watchdog is not None:
            self._watchdog.join(5)
            self._watchdog = None
        for slot in self._slots:
            with contextlib.suppress(Exception):
                slot.conn.send(("stop",))
        for slot in self._slots:
            self._drop(slot)
            slot.process.join(5)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(5)
            _close_pipe(slot)
        self._poller = None
        with self._lock:
            self._slots.clear()


class ProcessRunner(_Children):
    """Runs each call in a supervised child process with a hard deadline."""

    kind = "process"

    def __init__(
        self,
        handler: str | Handler,
        *,
        concurrency: int,
        execution_id: str,
        emit: Callable[[Event], None],
        prefetch: int = 4,
        start_method: str | None = None,
        kill_grace_s: float = 0.0,
        log_level: int = logging.WARNING,
    ) -> None:
        # each child holds at least ``prefetch`` calls so it never idles on the
        # parent's loop, and as many quick ones as run in about 50 ms (up to
        # MAX_DEPTH): calls a child has not started are taken back when the one it
        # runs takes long, so a hang delays none of them until its deadline
        self.pace = Pace(low=max(1, prefetch), high=max(prefetch, MAX_DEPTH), budget_s=0.05)
        super().__init__(
            handler,
            concurrency=concurrency,
            execution_id=execution_id,
            emit=emit,
            ring_size=self.pace.high,
            start_method=start_method,
            kill_grace_s=kill_grace_s,
            log_level=log_level,
        )
        self._pending: deque[Call] = deque()
        self._done: list[Outcome] = []
        self._position: dict[int, int] = {}  # call id -> its position while sent
        self._call_start_by: dict[int, float] = {}  # call id -> start_by, while held

    # -- calls -----------------------------------------------------------------------

    def capacity(self) -> int:
        return self.concurrency * self.pace.allowed() - self.running()

    def running(self) -> int:
        return sum(len(s.queue) for s in self._slots) + len(self._pending) + len(self._done)

    def submit(self, call: Call) -> None:
        # sent by the next poll(), with the rest of the loop's pass: one message a child
        self._call_start_by[call.call_id] = call.start_by
        self._pending.append(call)

    def renew(self, call_id: int, start_by: float) -> None:
        if call_id in self._call_start_by:
            self._call_start_by[call_id] = start_by
            position = self._position.get(call_id)
            if position is not None:
                self._board[position * _POSITION_FIELDS + _START_BY] = start_by

    def _revoke_after_s(self) -> float:
        recent = self.pace._recent_s or 0.0
        return max(REVOKE_AFTER_S, 4 * recent)

    def _stuck_since(self, index: int, slot: _Slot) -> float | None:
        """When the call the child of slot ``index`` runs started (monotonic), if it
        has calls queued behind it; None if it has none or runs nothing."""
        if len(slot.queue) < 2:
            return None
        started: float = self._running[index * _RUNNING_FIELDS + _STARTED]
        return started if started > 0 else None

    def _dispatch(self) -> list[_Slot]:
        """Send the pending calls, one message per child, to the children that are
        not held up by a long call, the ones holding fewest first, up to the depth.
        Returns the children it sent to if they were sent quick calls (see below).

        Quick calls go to as few children as run them soon: when the slowest recent
        call says all the calls held and pending run within ``BUNDLE_S`` in one child,
        the child holding fewest gets them all (up to the depth); a second child would
        end them at most that much sooner, for a pipe message and a wake-up each way.
        Otherwise every open child is filled up to about the same level."""
        if not self._pending:
            return []
        depth = self.pace.allowed()
        late = time.monotonic() - self._revoke_after_s()
        open_: list[_Slot] = []
        for index, slot in enumerate(self._slots):
            # a child whose call has run long gets nothing, even with nothing queued:
            # what it was sent would only wait behind the long call, to be taken back
            started = self._running[index * _RUNNING_FIELDS + _STARTED]
            gone = slot.killed is not None or slot.terminated_at is not None
            if not gone and (started <= 0 or started > late):
                open_.append(slot)
        if not open_:
            return []
        open_.sort(key=lambda s: len(s.queue))
        held = sum(len(s.queue) for s in open_)
        board, pending, start_by = self._board, self._pending, self._call_start_by
        positions = self._position
        recent = self.pace._recent_s
        quick = recent is not None and recent * (held + len(pending)) <= BUNDLE_S
        level = depth if quick else min(depth, -(-(held + len(pending)) // len(open_)))
        sent: list[_Slot] = []
        for slot in open_:
            count = min(level - len(slot.queue), len(pending))
            if count <= 0:
                continue
            batch: list[Any] = []
            queue, free = slot.queue, slot.free
            for _ in range(count):
                call = pending.popleft()
                call_id = call.call_id
                position = free.pop()
                base = position * _POSITION_FIELDS
                board[base + _START_BY] = start_by.get(call_id, math.inf)
                board[base + _OWNER] = call_id
                board[base + _STATE] = _QUEUED
                positions[call_id] = position
                queue[call_id] = (position, call)
                _wire_into(batch, position, call)
            slot.sent_at = time.monotonic()
            data = pickle.dumps(("calls", batch), pickle.HIGHEST_PROTOCOL)
            # a dead child fails the send; poll() notices its sentinel and replays
            with contextlib.suppress(BrokenPipeError, OSError):
                slot.conn.send_bytes(data)
            sent.append(slot)
            if not pending:
                break
        return sent if quick else []

    def _take_back(self) -> None:
        """Take back the calls not yet started from each child whose current call has
        run long (a hang, or a slow call among quick ones): they go to other children."""
        late = time.monotonic() - self._revoke_after_s()
        for index, slot in enumerate(self._slots):
            since = self._stuck_since(index, slot)
            if since is None or since > late:
                continue
            if not slot.lock.acquire(timeout=0.01):
                continue  # the child is stopped or died holding it: its death replays them
            taken: list[Call] = []
            ended: list[Outcome] = []
            try:
                for position, call in slot.queue.values():
                    base = position * _POSITION_FIELDS
                    state = self._board[base + _STATE]
                    if state == _QUEUED:
                        self._board[base + _STATE] = _TAKEN
                        taken.append(call)
                    elif state in (_DONE_OK, _DONE_STALE):
                        # ended just before the long call began, its outcome still in
                        # the child: reported from the board now, not at the call's end
                        ok = state == _DONE_OK
                        ran = self._board[base + _RAN] if ok else 0.0
                        ended.append(Outcome(call.call_id, "ok" if ok else "stale", ran))
            finally:
                slot.lock.release()
            for call_id in [c.call_id for c in taken] + [o.call_id for o in ended]:
                position, _call = slot.queue.pop(call_id)
                slot.free.append(position)
                self._position.pop(call_id, None)
            for outcome in ended:
                self._finish(outcome)  # the child's own report of it is ignored
            self._pending.extendleft(reversed(taken))

    def _next_revoke_in(self, timeout_s: float) -> float:
        after = self._revoke_after_s()
        now = time.monotonic()
        for index, slot in enumerate(self._slots):
            since = self._stuck_since(index, slot)
            if since is not None:
                timeout_s = min(timeout_s, max(0.0, since + after - now) + 0.001)
        return timeout_s

    def poll(self, timeout_s: float) -> list[Outcome]:
        quick = self._dispatch()
        poller = self._poller or self._watch_pipes()
        if quick and timeout_s <= 0:
            self._catch_up(poller, quick)
        wait_ms = 0
        if not self._done and timeout_s > 0:
            # a child the watchdog kills wakes this wait through its sentinel
            wait_ms = math.ceil(self._next_revoke_in(timeout_s) * 1000)
        ready = poller.poll(wait_ms)
        if ready:
            fds, dead = self._fds, []
            for fd, _events in ready:
                index, is_sentinel = fds[fd]
                if is_sentinel:
                    dead.append(index)
                else:
                    self._collect(index, self._slots[index])
            for index in dead:
                slot = self._slots[index]
                if not slot.process.is_alive():
                    self._collect(index, slot)  # what it wrote before it died
                    self._replace(index, slot)
        self._take_back()
        self._dispatch()  # what was taken back or is left: not waited for
        done, self._done = self._done, []
        return done

    def _catch_up(self, poller: Any, sent_to: list[_Slot]) -> None:
        """Wait (at most ``CATCH_UP_S``) for the quick calls just sent to come back.

        Their outcomes then go into the commit that records their arrival: a request's
        ledger row is written once, "completed", instead of "processing" in this pass's
        commit and read back and rewritten in the next one; and fewer calls are in
        flight between passes. For a batch of quick calls that saves the worker more
        than the wait costs (a wake-up each way and the child's run of the batch, about
        half a millisecond for 64 no-op calls). A call that turns out slow costs one
        wait of ``CATCH_UP_S``; a child's death ends the wait (the rest of ``poll``
        settles it)."""
        end = time.monotonic() + CATCH_UP_S
        fds = self._fds
        while any(slot.queue for slot in sent_to):
            left = end - time.monotonic()
            if left <= 0:
                return
            for fd, _events in poller.poll(math.ceil(left * 1000)):
                index, is_sentinel = fds[fd]
                if is_sentinel:
                    return
                self._collect(index, self._slots[index])

    def _watch_pipes(self) -> Any:
        """A poll object for every child's pipe (while it is open) and sentinel."""
        poller = select.poll()
        self._fds = {}
        for index, slot in enumerate(self._slots):
            for fd, is_sentinel in ((slot.conn.fileno(), False), (slot.process.sentinel, True)):
                if is_sentinel or not slot.ended:
                    poller.register(fd, select.POLLIN)
                    self._fds[fd] = (index, is_sentinel)
        self._poller = poller
        return poller

    def _finish(self, outcome: Outcome) -> None:
        self._position.pop(outcome.call_id, None)
        self._call_start_by.pop(outcome.call_id, None)
        if outcome.status != "stale":
            self.pace.observe(outcome.duration_s)
        self._done.append(outcome)

    def _collect(self, index: int, slot: _Slot) -> None:
        """Take in what the child of slot ``index`` sent (its log records, outcomes)."""
        for message in _arrived(slot):
            if message[0] == "done":
                self._plain_outcomes(slot, message[1])
                for outcome in message[2]:
                    held = slot.queue.pop(outcome.call_id, None)
                    if held is not None:
                        slot.free.append(held[0])
                        self._finish(outcome)
            elif message[0] == "log":
                self._emit(message[1])
        if slot.ended and self._poller is not None:
            # a closed pipe reads as ready for ever: only the sentinel is watched now
            fd = slot.conn.fileno()
            if fd in self._fds:
                self._poller.unregister(fd)
                del self._fds[fd]

    def _plain_outcomes(self, slot: _Slot, plain: list[Any]) -> None:
        """:meth:`_finish` for the "ok"s without a result of one message (a call id
        and a run time each, flat), in one loop: they are most of the outcomes."""
        queue, free, done = slot.queue, slot.free, self._done
        positions, start_by = self._position, self._call_start_by
        recent = self.pace._recent_s
        for i in range(0, len(plain), 2):
            call_id = plain[i]
            held = queue.pop(call_id, None)
            if held is None:
                continue  # reported from the board already (``_take_back``)
            free.append(held[0])
            positions.pop(call_id, None)
            start_by.pop(call_id, None)
            ran = plain[i + 1]
            # Pace.observe, inline
            recent = ran if recent is None or ran > recent * 0.9 else recent * 0.9
            done.append(Outcome(call_id, "ok", ran))
        self.pace._recent_s = recent

    def _replace(self, index: int, slot: _Slot) -> None:
        """The child of slot ``index`` is dead: settle what it held, start another.

        What each held call became is on the board: one the child had started is the
        outcome (a timeout if the watchdog killed it, else a crash); one it finished
        without sending is rebuilt; one it had not started runs elsewhere.
        """
        killed = slot.killed
        self._drop(slot)
        started = self._running[index * _RUNNING_FIELDS + _STARTED]
        replay: list[Call] = []
        for call_id, (position, call) in slot.queue.items():
            outcome = _fate(self._board, position, call, slot, killed, started)
            if outcome is None:
                replay.append(call)
                self._position.pop(call_id, None)
            else:
                self._finish(outcome)
        slot.queue.clear()
        self._pending.extendleft(reversed(replay))
        self._poller = None  # its pipe and sentinel go; the replacement's are watched
        _close_pipe(slot)
        slot.process.join(1)
        replacement = self._spawn(index)
        with self._lock:
            self._slots[index] = replacement

    def abort(self) -> list[int]:
        """Kill every child now; return the ids of calls that had not finished."""
        lost = super().abort() + [c.call_id for c in self._pending]
        self._pending.clear()
        self._position.clear()
        self._call_start_by.clear()
        return lost


def _close_pipe(slot: _Slot) -> None:
    if slot.inlet is not None:
        slot.inlet.close()
    slot.conn.close()


def _exit_text(code: int | None) -> str:
    if code is None:
        return "WorkerLost: handler process vanished"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"WorkerLost: handler process killed by {name}{hint}"
    return f"WorkerLost: handler process exited with code {code}"
