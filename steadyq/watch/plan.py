"""The watch plan: a TOML file that says what to watch, how long, and what counts as stable.

Layout (every key is documented in ``docs/watch.md``)::

    name = "uuid-fix-24h"
    start = 2026-11-04T12:00:00Z          # optional, default: when the watch starts
    window = "24h"
    checkpoint_every = "4h"
    purpose = "Confirm that invalid request ids no longer hang executions"

    [baseline]                            # optional: the "before" of the before/after table
    start = 2026-11-03T12:00:00Z
    end = 2026-11-04T12:00:00Z

    [[criteria]]
    name = "no execution timed out"
    measure = "executions.timed_out"
    max = 0
    critical = true

    [[risks]]
    name = "DLQ filling up"
    probability = "low"
    impact = "medium"
    mitigation = "dlq stats; replay after a fix"
    measure = "messages.dead_lettered"
    max = 50

    [alerts]
    notify_command = ["notify-send", "steadyq watch"]
    webhook = "https://hooks.example.com/steadyq"

A plan is checked completely before anything runs; every problem is reported with the
file and line of the key (or table) that holds it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import tomllib
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from steadyq.config import _key_line
from steadyq.durations import parse_duration, rfc3339
from steadyq.errors import ConfigError

NoDataPolicy = Literal["pass", "fail", "inconclusive"]
Scope = Literal["checkpoint", "cumulative"]

MAX_CHECKPOINTS = 1000
_RELATIVE = re.compile(r"^\s*([+-]?)\s*(\d+(?:\.\d+)?)\s*(%?)\s*$")


def _instant(value: object) -> object:
    """An RFC 3339 time (TOML datetime or string) as epoch seconds; naive means UTC."""
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    if isinstance(value, datetime):
        stamp = value
    elif isinstance(value, date):
        raise ValueError("give a date and a time, e.g. 2026-11-04T12:00:00Z")
    elif isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"not an RFC 3339 time: {value!r} (e.g. 2026-11-04T12:00:00Z)"
            ) from None
    else:
        raise ValueError("expected an RFC 3339 time such as 2026-11-04T12:00:00Z")
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()


def _duration(value: object) -> object:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            return parse_duration(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
    return value


@dataclass(frozen=True, slots=True)
class RelativeBound:
    """A bound written against the baseline: ``+10%``, ``-5%`` or an absolute ``+3``."""

    text: str
    delta: float
    percent: bool

    @classmethod
    def parse(cls, value: str | float | int) -> RelativeBound:
        """Read ``"+10%"``, ``"-5%"``, ``"+3"`` or a number (an absolute difference)."""
        if isinstance(value, bool):
            raise ValueError("expected a change such as '+10%', '-5%' or '+3'")
        if isinstance(value, int | float):
            return cls(f"{value:+g}", float(value), False)
        match = _RELATIVE.match(value)
        if match is None:
            raise ValueError(f"not a change against the baseline: {value!r} (use '+10%' or '+3')")
        sign, number, percent = match.groups()
        delta = float(number) * (-1.0 if sign == "-" else 1.0)
        return cls(value.strip(), delta, bool(percent))

    def apply(self, baseline: float) -> float:
        """The bound this change gives for a baseline value."""
        if self.percent:
            return baseline * (1.0 + self.delta / 100.0)
        return baseline + self.delta


class Criterion(BaseModel):
    """One success criterion: a measure and its bound(s), judged at every checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    measure: str
    max: float | None = None
    min: float | None = None
    max_vs_baseline: str | float | None = None
    min_vs_baseline: str | float | None = None
    critical: bool = False
    no_data: NoDataPolicy | None = None
    dry_run: bool = False
    scope: Scope = "cumulative"
    description: str | None = None

    @field_validator("max_vs_baseline", "min_vs_baseline")
    @classmethod
    def _relative(cls, value: str | float | None) -> str | float | None:
        if value is not None:
            RelativeBound.parse(value)
        return value

    @property
    def no_data_policy(self) -> NoDataPolicy:
        """The policy in force: as written, else ``fail`` for a critical one, else inconclusive."""
        if self.no_data is not None:
            return self.no_data
        return "fail" if self.critical else "inconclusive"

    @property
    def relative_max(self) -> RelativeBound | None:
        return None if self.max_vs_baseline is None else RelativeBound.parse(self.max_vs_baseline)

    @property
    def relative_min(self) -> RelativeBound | None:
        return None if self.min_vs_baseline is None else RelativeBound.parse(self.min_vs_baseline)

    @property
    def uses_baseline(self) -> bool:
        return self.max_vs_baseline is not None or self.min_vs_baseline is not None


class Risk(BaseModel):
    """A risk the team keeps in view; with a measure and bound the watch checks it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    probability: str = "unknown"
    impact: str = "unknown"
    mitigation: str = ""
    measure: str | None = None
    max: float | None = None
    min: float | None = None
    description: str | None = None


class BaselineWindow(BaseModel):
    """The "before" window: figures from it fill the before/after table and relative bounds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start: float
    end: float

    _instants = field_validator("start", "end", mode="before")(_instant)


class Alerts(BaseModel):
    """Where alerts go besides the terminal."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    notify_command: str | list[str] | None = None
    webhook: str | None = None
    timeout_s: float = Field(default=10.0, gt=0, le=300)

    _timeout = field_validator("timeout_s", mode="before")(_duration)


class Plan(BaseModel):
    """A validated watch plan. Times are epoch seconds, durations seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    start: float | None = None
    window: float = Field(gt=0)
    checkpoint_every: float = Field(gt=0)
    purpose: str | None = None
    description: str | None = None
    max_runtime_s: float | None = Field(default=None, gt=0)
    baseline: BaselineWindow | None = None
    criteria: list[Criterion] = Field(default_factory=list)
    risks: list[Risk] = Field(default_factory=list)
    alerts: Alerts = Field(default_factory=Alerts)

    _start = field_validator("start", mode="before")(_instant)
    _durations = field_validator("window", "checkpoint_every", "max_runtime_s", mode="before")(
        _duration
    )

    def checkpoint_times(self, start: float) -> list[float]:
        """When each checkpoint falls for a window opening at ``start``; the last is its end."""
        count = math.ceil(self.window / self.checkpoint_every - 1e-9)
        times = [start + self.checkpoint_every * k for k in range(1, count)]
        times.append(start + self.window)
        return times

    def identity_hash(self) -> str:
        """What decides a run's results; a resumed run must have the same one.

        Covers name, start, window, checkpoints, runtime budget, baseline, criteria and
        risks; not purpose, description or alerts, which can change without
        invalidating checkpoints already judged.
        """
        data = self.model_dump(exclude={"purpose", "description", "alerts"}, mode="json")
        raw = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:16]

    def to_doc(self) -> dict[str, Any]:
        """The plan as the reports show it (times in RFC 3339)."""
        data = self.model_dump(mode="json")
        data["start"] = None if self.start is None else rfc3339(self.start)
        data["window_s"] = data.pop("window")
        data["checkpoint_every_s"] = data.pop("checkpoint_every")
        if self.baseline is not None:
            data["baseline"] = {
                "start": rfc3339(self.baseline.start),
                "end": rfc3339(self.baseline.end),
            }
        if self.alerts.webhook is not None:  # its path often holds a token: keep it out
            parts = urlsplit(self.alerts.webhook)
            data["alerts"]["webhook"] = f"{parts.scheme}://{parts.netloc}/…"
        for criterion, doc in zip(self.criteria, data["criteria"], strict=True):
            doc["no_data"] = criterion.no_data_policy
        data["hash"] = self.identity_hash()
        return data


# -- loading and checking ----------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"-]+)\s*\]\]?")


def _sections(text: str) -> list[tuple[str, int, int, int]]:
    """Tables of a TOML text: (name, occurrence, first line, last line), top level first."""
    lines = text.splitlines()
    found: list[tuple[str, int, int, int]] = []
    seen: dict[str, int] = {}
    current, occurrence, begin = "", 0, 1
    for number, line in enumerate(lines, start=1):
        match = _HEADER.match(line)
        if match is None:
            continue
        found.append((current, occurrence, begin, number - 1))
        current = match.group(2).strip('"')
        occurrence = seen.get(current, 0)
        seen[current] = occurrence + 1
        begin = number
    found.append((current, occurrence, begin, len(lines)))
    return found


def locate(text: str, loc: tuple[str | int, ...]) -> int | None:
    """The line of the key or table at ``loc`` (``("criteria", 2, "max")``) in a TOML text."""
    if not text:
        return None
    table, index, key = "", 0, None
    parts = list(loc)
    if parts and isinstance(parts[0], str) and len(parts) >= 2:
        if isinstance(parts[1], int):
            table, index = parts[0], parts[1]
            key = parts[2] if len(parts) > 2 and isinstance(parts[2], str) else None
        else:
            table, key = parts[0], str(parts[1])
    elif parts:
        key = str(parts[0])
    lines = text.splitlines()
    for name, occurrence, begin, end in _sections(text):
        if name != table or occurrence != index:
            continue
        if key is None:
            return begin if table else None
        body = "\n".join(lines[begin - 1 : end])
        line = _key_line(body, key)
        if line is not None:
            return begin + line - 1
        return begin if table else None
    if table:  # an inline table or array: point at its key at top level
        return _key_line(text, table)
    return None


def _where(loc: tuple[str | int, ...], plan_data: dict[str, Any]) -> str:
    """``criteria[2] 'no timeouts'.max`` for a location inside the plan."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part + 1}]"
            item: Any = plan_data.get(str(loc[0]), [])
            if isinstance(item, list) and part < len(item) and isinstance(item[part], dict):
                name = item[part].get("name")
                if isinstance(name, str):
                    out += f" {name!r}"
        else:
            out += ("." if out else "") + part
    return out or "plan"


_MODELS: dict[str, type[BaseModel]] = {
    "": Plan,
    "criteria": Criterion,
    "risks": Risk,
    "baseline": BaselineWindow,
    "alerts": Alerts,
}


def _suggest(key: str, loc: tuple[str | int, ...]) -> str:
    table = str(loc[0]) if len(loc) > 1 else ""
    model = _MODELS.get(table, Plan)
    close = difflib.get_close_matches(key, list(model.model_fields), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _measure_problem(name: str) -> str | None:
    from steadyq.watch.measures import MEASURES, is_measure

    if is_measure(name):
        return None
    close = difflib.get_close_matches(name, list(MEASURES), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else "; see docs/watch.md for the catalogue"
    return f"unknown measure {name!r}{hint}"


def _semantic_problems(plan: Plan) -> list[tuple[tuple[str | int, ...], str]]:
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if plan.window < plan.checkpoint_every:
        problems.append(
            (
                ("window",),
                f"the window ({plan.window:g} s) is shorter than checkpoint_every"
                f" ({plan.checkpoint_every:g} s)",
            )
        )
    elif plan.window / plan.checkpoint_every > MAX_CHECKPOINTS:
        problems.append(
            (("checkpoint_every",), f"more than {MAX_CHECKPOINTS} checkpoints in the window")
        )
    if plan.baseline is not None:
        if plan.baseline.end <= plan.baseline.start:
            problems.append((("baseline", "end"), "the baseline must end after it starts"))
        elif plan.start is not None and plan.baseline.end > plan.start:
            problems.append(
                (("baseline", "end"), "the baseline must end before the watch window starts")
            )
    if not plan.criteria:
        problems.append(((), "a plan needs at least one [[criteria]] table"))
    names: set[str] = set()
    for i, c in enumerate(plan.criteria):
        if c.name in names:
            problems.append((("criteria", i, "name"), f"criterion name {c.name!r} is used twice"))
        names.add(c.name)
        problem = _measure_problem(c.measure)
        if problem:
            problems.append((("criteria", i, "measure"), problem))
        if c.max is None and c.min is None and not c.uses_baseline:
            problems.append(
                (
                    ("criteria", i),
                    "no bound: give max, min, max_vs_baseline or min_vs_baseline",
                )
            )
        if c.uses_baseline and plan.baseline is None:
            key = "max_vs_baseline" if c.max_vs_baseline is not None else "min_vs_baseline"
            problems.append(
                (("criteria", i, key), "a bound relative to the baseline needs a [baseline] table")
            )
        if c.max is not None and c.min is not None and c.min > c.max:
            problems.append((("criteria", i, "min"), f"min ({c.min:g}) is above max ({c.max:g})"))
    for i, r in enumerate(plan.risks):
        if r.measure is not None:
            problem = _measure_problem(r.measure)
            if problem:
                problems.append((("risks", i, "measure"), problem))
            if r.max is None and r.min is None:
                problems.append((("risks", i, "measure"), "a watched risk needs max or min"))
        elif r.max is not None or r.min is not None:
            problems.append((("risks", i), "a bound on a risk needs a measure"))
    if plan.alerts.webhook is not None:
        parts = urlsplit(plan.alerts.webhook)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            problems.append((("alerts", "webhook"), "the webhook must be an http(s):// URL"))
    command = plan.alerts.notify_command
    if command is not None and not (command if isinstance(command, list) else command.strip()):
        problems.append((("alerts", "notify_command"), "the notify command is empty"))
    return problems


def parse_plan(text: str, *, source: str = "<plan>") -> Plan:
    """Parse and check a plan from TOML text; ``source`` names it in error messages.

    Raises:
        ConfigError: the text is not TOML, or the plan has problems; the message lists
            every one as ``source:line: where: what``.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not a valid TOML plan: {exc}") from None
    return plan_from_dict(data, text=text, source=source)


def plan_from_dict(data: dict[str, Any], *, text: str = "", source: str = "<plan>") -> Plan:
    """Check a plan given as a dict (as TOML would give it); see :func:`parse_plan`.

    Raises:
        ConfigError: the plan has problems.
    """
    found: list[tuple[tuple[str | int, ...], str]] = []
    plan: Plan | None = None
    try:
        plan = Plan.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            loc = _clean_loc(tuple(err["loc"]), extra=err["type"] == "extra_forbidden")
            if err["type"] == "extra_forbidden":
                key = str(loc[-1])
                msg = f"unknown key{_suggest(key, loc)}"
            elif err["type"] == "missing":
                msg = "required key is missing"
            else:
                msg = str(err["msg"]).removeprefix("Value error, ")
            found.append((loc, msg))
    if plan is not None:
        found.extend(_semantic_problems(plan))
    if not found:
        assert plan is not None
        return plan
    lines = []
    for loc, msg in found:
        line = locate(text, loc) if text else None
        # a missing key has no line of its own: point at its table
        if line is None and len(loc) > 1 and text:
            line = locate(text, loc[:-1])
        where = f"{source}:{line}" if line is not None else source
        lines.append(f"{where}: {_where(loc, data)}: {msg}")
    if len(lines) == 1:
        raise ConfigError("bad plan: " + lines[0])
    raise ConfigError("bad plan:\n  " + "\n  ".join(lines))


def _clean_loc(loc: tuple[Any, ...], *, extra: bool) -> tuple[str | int, ...]:
    """Keep the keys and indexes of a pydantic location; drop the type tags unions add."""
    model: type[BaseModel] | None = Plan
    out: list[str | int] = []
    for part in loc:
        if isinstance(part, int):
            out.append(part)
            continue
        if model is not None and part in model.model_fields:
            out.append(part)
            model = _MODELS.get(part) if not out[:-1] else None
            continue
        if extra and model is not None:
            out.append(str(part))
        break
    return tuple(out)


def load_plan(path: str | Path) -> Plan:
    """Read and check the plan in a TOML file.

    Raises:
        ConfigError: the file is unreadable or the plan has problems (with file:line).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no such plan file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    return parse_plan(text, source=str(path))


__all__ = [
    "Alerts",
    "BaselineWindow",
    "Criterion",
    "Plan",
    "RelativeBound",
    "Risk",
    "load_plan",
    "parse_plan",
    "plan_from_dict",
]
