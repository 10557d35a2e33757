"""What a handler child needs, and nothing more: the call and its outcome, loading
and invoking the handler, and the child's side of the process runner's hand-off.

The process runner's forkserver imports this module (not :mod:`steadyq.runner`) and
the handler's module before it forks the children: every line here is compiled and run
once per worker start, inside its startup. The parent's side (the runners, the
watchdog, the dispatch and take-back of calls) is in :mod:`steadyq.runner`, which
re-exports the public names below.

The board and the ``running`` array are memory the child shares with its parent; see
:mod:`steadyq.runner` for what they hold and who writes what.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import json
import logging
import math
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal

from steadyq.errors import HandlerLoadError, PermanentError
from steadyq.telemetry.events import Event, storable_text
from steadyq.telemetry.logs import EventLogHandler

Handler = Callable[[Any, "HandlerContext"], object]
Status = Literal["ok", "permanent", "error", "timeout", "crashed", "stale"]


@dataclass(slots=True)
class HandlerContext:
    """What a handler knows about the call it is running.

    ``deadline_at`` is epoch seconds; past it a process-run handler is killed.
    Log through ``logger``: records of WARNING and above are stored as events,
    labelled with this call's execution, message and request. Write outputs under
    ``artifacts_dir`` (the worker's ``--artifacts``).
    """

    attempt: int
    deadline_at: float
    execution_id: str
    message_id: str
    request_id: str | None
    attributes: dict[str, str]
    logger: logging.Logger
    artifacts_dir: Path = Path("artifacts")

    def time_left(self) -> float:
        """Seconds until the deadline (never negative)."""
        return max(0.0, self.deadline_at - time.time())


@dataclass(frozen=True, slots=True)
class Call:
    """One handler invocation for one delivery."""

    call_id: int
    request: Any
    attempt: int
    message_id: str
    request_id: str | None
    attributes: dict[str, str]
    deadline_s: float
    artifacts_dir: str = "artifacts"
    start_by: float = math.inf  # wall clock; see the module's docstring


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a call ended. ``error`` is ``Type: text`` for errors and crashes;
    ``traceback`` the handler's traceback (its last ``MAX_TRACEBACK_CHARS``) when it
    raised."""

    call_id: int
    status: Status
    duration_s: float
    error: str | None = None
    reason: str | None = None
    result: dict[str, Any] | None = None
    traceback: str | None = None


def load_handler(spec: str | Handler) -> Handler:
    """Resolve ``module:callable`` to a callable.

    Raises:
        HandlerLoadError: the spec has no colon, the module cannot be imported, has no
            such attribute, or the attribute is not callable.
    """
    if callable(spec):
        return spec
    text = spec.strip()
    module_name, sep, attr = text.partition(":")
    if not sep:
        # 'mypkg.jobs' could be a module or a function in 'mypkg': guessing would
        # import the wrong thing, so say what is missing
        raise HandlerLoadError(
            f"{spec!r} has no colon and function name: write it as 'module:function',"
            f" e.g. '{text or 'mypkg.jobs'}:handle'"
        )
    if not module_name or not attr:
        raise HandlerLoadError(f"{spec!r} must look like 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise HandlerLoadError(
            f"cannot import handler module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise HandlerLoadError(f"module {module_name!r} has no {attr!r}") from None
    if not callable(target):
        raise HandlerLoadError(f"handler {spec!r} is not callable")
    handler: Handler = target
    return handler


def _error_text(exc: BaseException) -> str:
    text = storable_text(f"{type(exc).__name__}: {exc}")
    return text if len(text) <= 2000 else text[:1999] + "…"


MAX_TRACEBACK_CHARS = 8000


def _traceback_text(exc: BaseException) -> str:
    """The traceback of ``exc``, its innermost frames kept when it is too long."""
    text = storable_text("".join(traceback.format_exception(exc)).rstrip())
    if len(text) <= MAX_TRACEBACK_CHARS:
        return text
    return "… (earlier frames cut)\n" + text[-(MAX_TRACEBACK_CHARS - 24) :]


def run_call(handler: Handler, call: Call, ctx: HandlerContext) -> Outcome:
    """Run one call in this process and classify how it ended."""
    return _invoke(handler, call.call_id, call.request, ctx)


def _invoke(handler: Handler, call_id: int, request: Any, ctx: HandlerContext) -> Outcome:
    """:func:`run_call` for a call known by its id and request (a handler child has
    no :class:`Call`: it gets the fields)."""
    start = time.perf_counter()
    try:
        returned = handler(request, ctx)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt from a handler fail the call
        return _failed(exc, call_id, time.perf_counter() - start)
    return Outcome(call_id, "ok", time.perf_counter() - start, result=_result(returned, ctx))


def _failed(exc: BaseException, call_id: int, duration_s: float) -> Outcome:
    """The outcome of a call whose handler raised ``exc``, from inside its ``except``
    block (a KeyboardInterrupt outside a handler child is raised again)."""
    if isinstance(exc, PermanentError):
        return Outcome(
            call_id, "permanent", duration_s, _error_text(exc), storable_text(exc.reason)
        )
    if isinstance(exc, KeyboardInterrupt) and not _IN_CHILD:
        raise exc
    return Outcome(call_id, "error", duration_s, _error_text(exc), traceback=_traceback_text(exc))


MAX_RESULT_BYTES = 64 * 1024


def _result(value: object, ctx: HandlerContext) -> dict[str, Any] | None:
    """A handler's return value as it will be recorded: a JSON object of modest size.

    Anything else (``None``, a non-dict, something JSON cannot hold, a huge dict) is
    not recorded; the call still succeeded, so only a debug line says why.
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        ctx.logger.debug("handler returned %s; only a dict is recorded", type(value).__name__)
        return None
    try:
        size = len(json.dumps(value))
    except (TypeError, ValueError) as exc:
        ctx.logger.debug("handler result is not JSON-serialisable: %s", exc)
        return None
    if size > MAX_RESULT_BYTES:
        ctx.logger.debug(
            "handler result is %d bytes; results over %d are not recorded", size, MAX_RESULT_BYTES
        )
        return None
    return value


_IN_CHILD = False  # set in a handler child: there a KeyboardInterrupt fails the call
# one slot's record in the shared ``running`` array: when its call started (monotonic;
# 0: none running), that call's deadline, its id
_STARTED, _DEADLINE, _CALL = 0, 1, 2
_RUNNING_FIELDS = 3


def _handler_logger(
    emit: Callable[[Event], None], level: int = logging.WARNING
) -> tuple[logging.Logger, EventLogHandler]:
    logger = logging.getLogger("steadyq.handler")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    for old in list(logger.handlers):
        if isinstance(old, EventLogHandler):
            logger.removeHandler(old)
    hook = EventLogHandler(emit, clock=time.time, level=level)
    logger.addHandler(hook)
    return logger, hook


@functools.lru_cache(maxsize=16)
def _path(text: str) -> Path:
    return Path(text)


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (kill -9 of the worker).

    Without it a handler stuck in a loop would outlive its worker as an orphan,
    holding CPU and memory that nobody will ever collect.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


def _release_forkserver() -> None:
    """Let the forkserver exit with the worker.

    A child of the forkserver holds a pipe that keeps the server alive for as long as
    any of its clients lives: with it, a worker killed by SIGKILL would leave the server
    waiting for the handler child and the child (whose parent is the server) waiting
    for the server to die. Closed, the server exits with the worker and its children
    follow (``PR_SET_PDEATHSIG``).
    """
    with contextlib.suppress(Exception):
        from multiprocessing import forkserver

        server: Any = getattr(forkserver, "_forkserver", None)
        fd = getattr(server, "_forkserver_alive_fd", None)
        if isinstance(fd, int):
            server._forkserver_alive_fd = None
            os.close(fd)


# one position's record in the shared ``board``: a call sent to a child and not yet
# reported. Its start_by (wall clock), the id of the call that holds it, its state,
# and its run time once done. A position is given to a new call only after the one
# before it was reported or taken back.
_START_BY, _OWNER, _STATE, _RAN = 0, 1, 2, 3
_POSITION_FIELDS = 4
# a position's states: the parent writes QUEUED (when it sends the call) and TAKEN
# (when it takes a call back); the child writes the others. QUEUED -> STARTED and
# QUEUED -> TAKEN happen only under the child's lock, so exactly one of them wins.
_FREE, _QUEUED, _STARTED_CALL, _TAKEN, _DONE_OK, _DONE_STALE, _DONE_OTHER = range(7)
# a child sends the outcomes it holds when it has nothing left to run, or when the
# oldest has waited this long, or at once when one carries more than "ok"
FLUSH_S = 0.002


def _child_main(
    conn: Connection,
    handler: str | Handler,
    execution_id: str,
    board: Any,
    lock: Any,
    log_level: int = logging.WARNING,
    running: Any = None,
    slot: int = 0,
    environ: dict[str, str] | None = None,
) -> None:
    global _IN_CHILD
    _IN_CHILD = True
    _release_forkserver()
    if environ is not None:
        # a forkserver child inherits the server's environment, set when it started:
        # see the worker's as it is now
        os.environ.clear()
        os.environ.update(environ)
    _die_with_parent()
    # the parent decides when children stop: a signal to the whole process group
    # (Ctrl-C, `timeout`, systemd, a container's init) must drain, not kill calls
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        fn = load_handler(handler)
    except HandlerLoadError as exc:
        conn.send(("fatal", str(exc)))
        return
    outbox = _Outbox(conn)
    logger, hook = _handler_logger(lambda event: outbox.send(("log", event)), log_level)
    try:
        outbox.send(("ready", os.getpid()))
    except OSError:
        return  # the worker is gone (killed while this child started): nothing to do
    inbox = _drain_in_background(conn)
    with contextlib.suppress(EOFError, OSError):  # the worker is gone
        _child_loop(outbox, inbox, fn, execution_id, board, lock, hook, logger, running, slot)


class _Outbox:
    """A child's writes to its pipe, one message at a time: a handler that logs from
    threads of its own while the child sends outcomes must not interleave two
    messages' bytes on the pipe (the worker could no longer read it)."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()

    def send(self, message: Any) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)  # outside the lock
        with self._lock:
            self._conn.send_bytes(data)


def _drain_in_background(conn: Connection) -> queue.SimpleQueue[Any]:
    """Read everything the parent sends, as it arrives, on a thread of its own.

    The pipe carries both ways at once: the parent's batches in, log records and
    outcomes out, each a blocking write. If the child read its pipe only between calls,
    a chatty handler with big requests could fill both directions: the parent blocked
    writing a batch, the child blocked writing a log record the parent is not reading
    (until the watchdog killed an innocent call at its deadline). Drained at once, the
    parent's writes complete whatever the main thread is doing. Messages keep their
    order; the end of the pipe (or an error reading it) comes last, as an exception for
    the main thread to raise. The thread takes no signals: they go to the main thread,
    where a handler's own signal handlers and interrupted calls expect them.
    """
    inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()

    def drain() -> None:
        try:
            while True:
                message = conn.recv()
                inbox.put(message)
                if message[0] == "stop":
                    return
        except BaseException as exc:  # EOFError: the worker is gone
            inbox.put(("gone", exc))

    reader = threading.Thread(target=drain, name="steadyq-inbox", daemon=True)
    masked = hasattr(signal, "pthread_sigmask")
    if masked:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        reader.start()  # it keeps the mask it starts with: every signal blocked
    finally:
        if masked:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
    return inbox


def _child_loop(
    conn: _Outbox,
    inbox: queue.SimpleQueue[Any],
    fn: Handler,
    execution_id: str,
    board: Any,
    lock: Any,
    hook: EventLogHandler,
    logger: logging.Logger,
    running: Any,
    slot: int,
) -> None:
    """Run the calls the parent sends, in batches, and send back their outcomes.

    Before a call starts, under the lock, the child checks that its position still
    holds it (the parent may have taken it back) and that its ``start_by`` has not
    passed, then marks it started; after it ends the child writes how (``_DONE_OK``
    with its run time, which is all an "ok" without a result says) so that a death
    before the outcome is sent loses nothing the parent cannot rebuild.

    A batch is one flat list, ``_WIRE_FIELDS`` items a call (see :func:`_wire_into`);
    the outcomes go back as ``("done", plain, others)``: ``plain`` is flat too, a call
    id and a run time for each "ok" without a result, ``others`` the whole outcomes.
    """
    todo: list[Any] = []
    at = 0
    plain: list[Any] = []  # call id, run time, call id, run time, ...
    others: list[Outcome] = []
    oldest = 0.0
    record = slot * _RUNNING_FIELDS
    acquire, release = lock.acquire, lock.release  # the C methods, not the context manager
    path_of, context, failed, as_result = _path, HandlerContext, _failed, _result
    perf, setattr_ = time.perf_counter, object.__setattr__
    monotonic, wall = time.monotonic, time.time
    while True:
        if at >= len(todo):
            if plain or others:
                conn.send(("done", plain, others))
                plain, others = [], []
            message = inbox.get()  # what the parent sent, in order (see _drain_in_background)
            if message[0] == "stop":
                return
            if message[0] == "gone":
                raise message[1]
            todo, at = message[1], 0
            continue
        (
            position,
            call_id,
            model,
            request,
            fields_set,
            extra,
            attempt,
            message_id,
            request_id,
            attributes,
            deadline_s,
            artifacts_dir,
        ) = todo[at : at + _WIRE_FIELDS]
        at += _WIRE_FIELDS
        base = position * _POSITION_FIELDS
        acquire()
        try:
            if board[base + _OWNER] != call_id or board[base + _STATE] != _QUEUED:
                continue  # taken back: the parent runs it elsewhere
            stale = wall() > board[base + _START_BY]
            if stale:
                board[base + _STATE] = _DONE_STALE
            else:
                board[base + _STATE] = _STARTED_CALL
                if running is not None:  # the watchdog's view: this call, from now
                    running[record + _CALL] = call_id
                    running[record + _DEADLINE] = deadline_s
                    running[record + _STARTED] = monotonic()
        finally:
            release()
        first = not plain and not others  # the oldest unsent outcome's wait starts now
        if stale:
            others.append(Outcome(call_id, "stale", 0.0))
        else:
            hook.labels = {
                "execution_id": execution_id,
                "message_id": message_id,
                "request_id": request_id,
                "attempt": attempt,
            }
            if model is not None:  # a pydantic model sent as its state: see _wire_into
                values, request = request, model.__new__(model)
                setattr_(request, "__pydantic_fields_set__", fields_set)
                setattr_(request, "__pydantic_extra__", extra)
                setattr_(request, "__pydantic_private__", None)
                setattr_(request, "__dict__", values)
            ctx = context(
                attempt,
                wall() + deadline_s,
                execution_id,
                message_id,
                request_id,
                attributes,
                logger,
                path_of(artifacts_dir),
            )
            # _invoke, inline: most calls end "ok" without a result, and for them
            # no Outcome is made here (the parent makes it from the call id and time)
            outcome = None
            began = perf()
            try:
                returned = fn(request, ctx)
            except BaseException as exc:
                outcome = failed(exc, call_id, perf() - began)
            else:
                ran = perf() - began
                if returned is not None:
                    result = as_result(returned, ctx)
                    if result is not None:
                        outcome = Outcome(call_id, "ok", ran, result=result)
            if running is not None:
                running[record + _STARTED] = 0.0
            if outcome is not None:
                board[base + _RAN] = outcome.duration_s
                board[base + _STATE] = _DONE_OTHER
                others.append(outcome)  # sent at once, with the quick ones before it
                conn.send(("done", plain, others))
                plain, others = [], []
                continue
            # all of an "ok" without a result is on the board: a death before it is
            # sent loses nothing
            board[base + _RAN] = ran
            board[base + _STATE] = _DONE_OK
            plain += (call_id, ran)
        now = monotonic()
        if first:
            oldest = now
        elif now - oldest >= FLUSH_S:
            conn.send(("done", plain, others))
            plain, others = [], []


_WIRE_FIELDS = 12  # items a call takes in a batch


def _wire_into(batch: list[Any], position: int, call: Call) -> None:
    """Append a call to a batch as sent to a child: its fields, flat (a list of plain
    values pickles at a fraction of a dataclass's cost, and unpickles without a tuple
    a call). Its start_by is not sent: the child reads it from the board.

    A request that is a plain pydantic model (see :func:`_plain_model`) goes as its
    class, field values, fields set and extra, rebuilt in the child as pydantic's own
    ``__setstate__`` does: pickling the model itself runs pydantic's ``__getstate__``
    and ``__setstate__`` in Python, about three times the cost in the worker and half
    again in the child. Any other request goes whole, after a None."""
    request = call.request
    model = type(request)
    plain = _PLAIN_MODELS.get(model)
    if plain is None:
        plain = _PLAIN_MODELS[model] = _plain_model(request)
    if plain and not request.__pydantic_private__:
        batch += (
            position,
            call.call_id,
            model,
            request.__dict__,
            request.__pydantic_fields_set__,
            request.__pydantic_extra__,
        )
    else:
        batch += (position, call.call_id, None, request, None, None)
    batch += (
        call.attempt,
        call.message_id,
        call.request_id,
        call.attributes,
        call.deadline_s,
        call.artifacts_dir,
    )


# request class -> whether it pickles as a plain pydantic model (``_wire_into``)
_PLAIN_MODELS: dict[type, bool] = {}
# what pydantic's BaseModel.__getstate__ holds; a model whose state holds anything
# else (another pydantic version) is sent whole
_MODEL_STATE = frozenset(
    ("__dict__", "__pydantic_extra__", "__pydantic_fields_set__", "__pydantic_private__")
)


def _plain_model(request: Any) -> bool:
    """Whether ``request`` is a pydantic model that pickles as pydantic's BaseModel
    does (its own ``__getstate__``, ``__setstate__`` and ``__reduce_ex__`` untouched),
    with the state :func:`_wire_into` rebuilds. pydantic is not imported for this: a
    request can only be a model if it is loaded already."""
    pydantic = sys.modules.get("pydantic")
    base = getattr(pydantic, "BaseModel", None)
    if base is None or not isinstance(request, base):
        return False
    cls = type(request)
    if (
        cls.__getstate__ is not base.__getstate__
        or cls.__setstate__ is not base.__setstate__
        or cls.__reduce_ex__ is not base.__reduce_ex__
        or cls.__reduce__ is not base.__reduce__
    ):
        return False
    try:
        state = request.__getstate__()
    except Exception:
        return False
    return isinstance(state, dict) and frozenset(state) == _MODEL_STATE
