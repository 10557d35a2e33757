"""A chatty handler for tests/test_process_runner.py: every call logs a few long
WARNING lines (each stored as an event, so each crosses the child's pipe)."""

from __future__ import annotations

from typing import Any

from steadyq.runner import HandlerContext

LINES_PER_CALL = 3


def chatty(request: Any, ctx: HandlerContext) -> None:
    """``request`` is (padding, line length): the padding only makes the call big."""
    _padding, length = request
    for line in range(LINES_PER_CALL):
        ctx.logger.warning("line %d of %s: %s", line, ctx.message_id, "w" * length)


THREADS = 3


def chatty_threads(request: Any, ctx: HandlerContext) -> None:
    """Log ``request`` (a line length) from THREADS threads of the handler's own at
    once: long lines cross the pipe in more than one write each."""
    import threading

    def say(name: int) -> None:
        ctx.logger.warning("thread %d of %s: %s", name, ctx.message_id, "t" * request)

    threads = [threading.Thread(target=say, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
