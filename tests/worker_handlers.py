"""Handlers used by the worker tests (importable by child processes)."""

from __future__ import annotations

import os
import time
from typing import Any

from steadyq import PermanentError
from steadyq.runner import HandlerContext

CALLS_FILE_ENV = "STEADYQ_TEST_CALLS"


def _note(request: Any, ctx: HandlerContext) -> None:
    path = os.environ.get(CALLS_FILE_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{ctx.message_id} {ctx.attempt} {request.topic}\n")


def by_topic(request: Any, ctx: HandlerContext) -> None:
    """Behaviour picked by the request's topic: ok, flaky, broken, permanent, warn, hang."""
    _note(request, ctx)
    topic = request.topic
    if topic == "flaky" and ctx.attempt < 2:
        raise ConnectionError("transient: try again")
    if topic == "broken":
        raise ValueError("always broken")
    if topic == "permanent":
        raise PermanentError("topic refused", reason="topic_refused")
    if topic == "warn":
        ctx.logger.warning("careful with %s", topic)
    if topic == "hang":
        time.sleep(3600)
    if topic == "exit":
        os._exit(3)
    if topic == "slow":
        time.sleep(0.3)


def chatty(request: Any, ctx: HandlerContext) -> None:
    """Logs at INFO, as the README's example handler does."""
    ctx.logger.info("chatty says: working on %s (attempt %d)", request.request_id, ctx.attempt)


STARTS_FILE_ENV = "STEADYQ_TEST_STARTS"


def hang_noting_start(request: Any, ctx: HandlerContext) -> None:
    """Writes ``pid wall-clock-start`` to $STEADYQ_TEST_STARTS, then hangs."""
    with open(os.environ[STARTS_FILE_ENV], "a", encoding="utf-8") as fh:
        fh.write(f"{os.getpid()} {time.time()}\n")
    time.sleep(3600)


def sleep_then_hang(request: Any, ctx: HandlerContext) -> None:
    """Topic "first" takes 0.8 s; any other hangs, noting its start as above."""
    if request.topic == "first":
        time.sleep(0.8)
        return
    hang_noting_start(request, ctx)


def environment(request: Any, ctx: HandlerContext) -> dict[str, str | None]:
    """What this process sees of $STEADYQ_TEST_WHO."""
    return {"who": os.environ.get("STEADYQ_TEST_WHO")}


def odd_text(request: Any, ctx: HandlerContext) -> None:
    """Log and fail with a lone surrogate in the text (an undecodable byte kept by
    ``surrogateescape``), which UTF-8 cannot encode."""
    ctx.logger.warning("careful: \udcff in a log record")
    raise ValueError(f"bad byte in {request.topic!s}: \udcff")


FREEZE_COUNTS: list[int] = []  # what frozen_heap saw, call by call (inline runner only)


def frozen_heap(request: Any, ctx: HandlerContext) -> None:
    """Notes how many objects the garbage collector holds frozen while it runs."""
    import gc

    FREEZE_COUNTS.append(gc.get_freeze_count())
