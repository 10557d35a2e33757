"""The exit codes of every ``steadyq`` command, and the one way an error becomes one.

Two families share the small numbers, because their commands answer different
questions (docs/cli.md, "Exit codes", is the table a user reads; a test keeps it equal
to these enums):

* :class:`ExitCode`: every command but ``watch PLAN`` and ``demo`` (and the worker's
  own :class:`~steadyq.ExecutionResult`), where 0 is "done" and the others say what
  kind of thing went wrong;
* :class:`VerdictCode`: ``watch PLAN`` and ``demo``, whose 0, 1 and 2 are the verdict,
  so that anything keeping them from judging exits 3 and is never read as one.

:func:`code_for` is the one mapping from steadyq's error tree (:mod:`steadyq.errors`)
to a code; :func:`fail` prints the one readable ``error:`` line and exits, and
:func:`exits_on_error` wraps a command body in both. Nothing here imports the command
line library until a command fails, so the watch library may use the codes.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator
from typing import NoReturn

from steadyq.errors import (
    AlreadyRunning,
    BackendError,
    ConfigError,
    HandlerLoadError,
    MissingExtra,
    NotFound,
    SteadyqError,
    missing_extra,
)


class ExitCode(enum.IntEnum):
    """Exit codes of the commands (``worker``, ``publish``, ``dlq …``, ``schema``, …)."""

    #: done: a listing printed, messages published; a worker drained, stopped by a
    #: first signal, or reached its time budget
    OK = 0
    #: an unexpected error, or ``dlq replay`` refused every letter it selected
    ERROR = 1
    #: bad input: a flag, a setting, a URL, an id that does not exist, a file or
    #: folder that cannot be read or written, a missing optional extra
    USAGE = 2
    #: the queue or the store cannot be opened or failed (or a command that only looks
    #: found no steadyq database); a worker: it stayed down past --backend-outage
    BACKEND_UNAVAILABLE = 3
    #: the handler (``--handler module:function``) cannot be imported or started
    HANDLER_UNLOADABLE = 4
    #: the worker got a second signal: in-flight work was nacked and it left
    INTERRUPTED = 5
    #: Ctrl-C outside a worker's own signal handling (128 + SIGINT, as a shell says)
    CANCELLED = 130


class VerdictCode(enum.IntEnum):
    """Exit codes of ``watch PLAN`` and ``demo``: the verdict, or why there is none."""

    #: the criteria held: proceed
    PASSED = 0
    #: a criterion failed (or a risk triggered an early stop): investigate
    FAILED = 1
    #: not enough evidence for either
    INCONCLUSIVE = 2
    #: nothing was judged: a bad plan or option, a store that cannot be opened, a
    #: report folder that cannot be written, another live watch of the plan
    CANNOT_RUN = 3
    #: interrupted; start the watch again to resume it
    INTERRUPTED = 130


def verdict_code(verdict: str) -> VerdictCode:
    """The exit code of a verdict (``PASSED``, ``FAILED``, ``INCONCLUSIVE``)."""
    try:
        return VerdictCode[str(verdict)]
    except KeyError:
        raise ValueError(f"{verdict!r} is not a verdict") from None


# the one mapping, most specific first: the first class an error is an instance of wins
COMMAND_CODES: tuple[tuple[type[BaseException], ExitCode], ...] = (
    (HandlerLoadError, ExitCode.HANDLER_UNLOADABLE),
    (ConfigError, ExitCode.USAGE),  # MissingExtra included
    (NotFound, ExitCode.USAGE),
    (BackendError, ExitCode.BACKEND_UNAVAILABLE),  # BackendUnavailable included
    (KeyboardInterrupt, ExitCode.CANCELLED),
    (SteadyqError, ExitCode.ERROR),
    # a file or folder the command was given cannot be read or written, most likely
    (OSError, ExitCode.USAGE),
)
VERDICT_CODES: tuple[tuple[type[BaseException], VerdictCode], ...] = (
    (KeyboardInterrupt, VerdictCode.INTERRUPTED),
    (AlreadyRunning, VerdictCode.CANNOT_RUN),
    (SteadyqError, VerdictCode.CANNOT_RUN),
    # the report folder or the demo's folder cannot be written, most likely
    (OSError, VerdictCode.CANNOT_RUN),
)


def code_for(exc: BaseException, *, verdict: bool = False) -> int:
    """The exit code for ``exc``: of a verdict command (``watch``, ``demo``) when
    ``verdict``, else of any other command; :attr:`ExitCode.ERROR` (or
    :attr:`VerdictCode.CANNOT_RUN`) for an error outside the table."""
    table: tuple[tuple[type[BaseException], int], ...] = VERDICT_CODES if verdict else COMMAND_CODES
    for kind, code in table:
        if isinstance(exc, kind):
            return int(code)
    return int(VerdictCode.CANNOT_RUN if verdict else ExitCode.ERROR)


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: MESSAGE`` on stderr (each line escaped: it may quote a message,
    a file or a URL) and end the command with ``code``."""
    import typer
    from rich.console import Console
    from rich.text import Text

    from steadyq._terminal import safe

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    err.print(
        Text("error: ", style="bold red")
        + Text("\n").join(safe(line, None) for line in str(message).split("\n"))
    )
    raise typer.Exit(code)


def message_of(exc: BaseException) -> str:
    """What the ``error:`` line says about ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    if isinstance(exc, OSError) and not isinstance(exc, SteadyqError):
        text = exc.strerror or str(exc)
        return f"{text}: {exc.filename}" if exc.filename else text
    return str(exc) or type(exc).__name__


@contextlib.contextmanager
def exits_on_error(*, verdict: bool = False) -> Iterator[None]:
    """Run a command body: a steadyq error, an ``OSError`` or Ctrl-C becomes one
    ``error:`` line and its exit code (:func:`code_for`), never a traceback.

    An optional driver that is not installed (``ModuleNotFoundError`` for a module of
    a steadyq extra) is said as :class:`~steadyq.errors.MissingExtra`: the line names
    the ``pip install 'steadyq[…]'`` that fixes it.
    """
    try:
        yield
    except ModuleNotFoundError as exc:
        extra = missing_extra(exc)
        if extra is None:
            raise
        fail(str(extra), code_for(extra, verdict=verdict))
    except (SteadyqError, OSError, KeyboardInterrupt) as exc:
        fail(message_of(exc), code_for(exc, verdict=verdict))


__all__ = [
    "COMMAND_CODES",
    "VERDICT_CODES",
    "ExitCode",
    "MissingExtra",
    "VerdictCode",
    "code_for",
    "exits_on_error",
    "fail",
    "message_of",
    "verdict_code",
]
