"""The event vocabulary every part of steadyq speaks.

Workers write events; the watch, the reports and the CLI read them. The same
events go to stdout as JSON lines with Cloud Logging's field names (see
:mod:`steadyq.telemetry.logs`). The names are a public interface: add kinds, never
rename them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Final, TypeVar

_T = TypeVar("_T")


class _Factory:
    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()  # the default that stands for a field's default factory

EXECUTION_STARTED: Final = "execution.started"
EXECUTION_READY: Final = "execution.ready"
EXECUTION_FINISHED: Final = "execution.finished"
MESSAGE_PUBLISHED: Final = "message.published"
MESSAGE_RECEIVED: Final = "message.received"
MESSAGE_REJECTED: Final = "message.rejected"
MESSAGE_SUCCEEDED: Final = "message.succeeded"
MESSAGE_FAILED: Final = "message.failed"
MESSAGE_TIMED_OUT: Final = "message.timed_out"
MESSAGE_DEAD_LETTERED: Final = "message.dead_lettered"
MESSAGE_DUPLICATE: Final = "message.duplicate"
LOG: Final = "log"

KINDS: Final = (
    EXECUTION_STARTED,
    EXECUTION_READY,
    EXECUTION_FINISHED,
    MESSAGE_PUBLISHED,
    MESSAGE_RECEIVED,
    MESSAGE_REJECTED,
    MESSAGE_SUCCEEDED,
    MESSAGE_FAILED,
    MESSAGE_TIMED_OUT,
    MESSAGE_DEAD_LETTERED,
    MESSAGE_DUPLICATE,
    LOG,
)

# Cloud Logging's LogSeverity names, in order.
SEVERITIES: Final = ("DEBUG", "INFO", "NOTICE", "WARNING", "ERROR", "CRITICAL", "ALERT")
SEVERITY_RANK: Final = {name: rank for rank, name in enumerate(SEVERITIES)}

# The terminal outcomes of one delivery; every delivery ends in exactly one of
# these or is retried (message.failed / message.timed_out followed by a nack).
TERMINAL_KINDS: Final = (
    MESSAGE_SUCCEEDED,
    MESSAGE_REJECTED,
    MESSAGE_DEAD_LETTERED,
    MESSAGE_DUPLICATE,
)


def severity_rank(name: str) -> int:
    """Rank of a Cloud Logging severity name; unknown names rank as DEFAULT (below DEBUG)."""
    return SEVERITY_RANK.get(name.upper(), -1)


def storable_text(text: str) -> str:
    """``text`` as every store can hold it: a lone surrogate (what ``surrogateescape``
    leaves of an undecodable byte, in a handler's error or log line) becomes ``?``,
    since UTF-8 cannot encode it and SQLite's driver refuses the whole write."""
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def quick_init(cls: type[_T]) -> type[_T]:
    """``cls`` (a frozen dataclass with slots) with a quicker ``__init__`` of the same
    signature and effect.

    A frozen dataclass's own ``__init__`` stores each field through
    ``object.__setattr__`` looked up anew per field: for the few objects made per
    message (events, deliveries, settlements, ledger changes) that was a tenth of the
    worker's CPU. This one stores through the slots' own setters, held by the
    function. The class stays what it was: frozen, the same fields, equality, hash,
    repr and pickling.
    """
    params: list[str] = []
    body: list[str] = []
    env: dict[str, Any] = {"MISSING": _FACTORY}
    for n, f in enumerate(fields(cls)):  # type: ignore[arg-type]
        if not f.init:
            raise TypeError(f"{cls.__name__}.{f.name}: quick_init needs init fields only")
        env[f"set{n}"] = getattr(cls, f.name).__set__
        if f.default is not MISSING:
            env[f"default{n}"] = f.default
            params.append(f"{f.name}=default{n}")
            body.append(f"    set{n}(self, {f.name})")
        elif f.default_factory is not MISSING:
            env[f"factory{n}"] = f.default_factory
            params.append(f"{f.name}=MISSING")
            body.append(f"    set{n}(self, factory{n}() if {f.name} is MISSING else {f.name})")
        else:
            params.append(f.name)
            body.append(f"    set{n}(self, {f.name})")
    if hasattr(cls, "__post_init__"):
        raise TypeError(f"{cls.__name__}: quick_init does not run __post_init__")
    names = ", ".join(env)
    source = (
        f"def make({names}):\n"
        f"  def __init__(self, {', '.join(params)}):\n"
        + "\n".join("  " + line for line in body)
        + "\n  return __init__\n"
    )
    scope: dict[str, Any] = {}
    exec(source, {}, scope)  # the text is built above from the class's own fields
    init = scope["make"](**env)
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = dict(cls.__init__.__annotations__)
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


@quick_init
@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened, with the labels that tie it to an execution and a message.

    ``timestamp`` is epoch seconds. ``message`` is human text. ``data`` holds
    kind-specific figures (an execution's status, a dead letter's detail ...); it
    must be JSON-serialisable.
    """

    kind: str
    timestamp: float
    severity: str = "INFO"
    message: str = ""
    execution_id: str | None = None
    message_id: str | None = None
    request_id: str | None = None
    attempt: int | None = None
    reason: str | None = None
    duration_ms: float | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The documented ``--json`` shape of an event."""
        from steadyq.durations import rfc3339

        return {
            "timestamp": rfc3339(self.timestamp),
            "kind": self.kind,
            "severity": self.severity,
            "message": self.message,
            "execution_id": self.execution_id,
            "message_id": self.message_id,
            "request_id": self.request_id,
            "attempt": self.attempt,
            "reason": self.reason,
            "duration_ms": self.duration_ms,
            "data": dict(self.data),
        }


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events to read; every field narrows the set. Times are epoch seconds
    (``since`` included, ``until`` excluded)."""

    kinds: tuple[str, ...] | None = None
    since: float | None = None
    until: float | None = None
    min_severity: str | None = None
    execution_id: str | None = None
    message_id: str | None = None
    request_id: str | None = None
    limit: int | None = None
    newest_first: bool = False
