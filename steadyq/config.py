"""Typed settings from defaults, ``steadyq.toml``, ``STEADYQ_*`` variables and flags.

Later layers win: flags over environment over file over defaults. File layout::

    url = "sqlite:///steadyq.db"

    [worker]
    handler = "steadyq.content:handle"
    runner = "process"          # or "inline"
    concurrency = 2
    deadline_s = "10m"          # seconds, or a duration string
    max_runtime_s = "30m"
    max_attempts = 5
    retry_min_s = 10
    retry_max_s = 600

A queue without a store of its own (``pubsub://``) keeps its telemetry in
``store = "sqlite:///steadyq.db"`` (the default).

Environment: ``STEADYQ_URL``, ``STEADYQ_STORE`` and ``STEADYQ_WORKER_<FIELD>`` (e.g.
``STEADYQ_WORKER_DEADLINE_S=120``).
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from steadyq.durations import parse_duration
from steadyq.errors import ConfigError
from steadyq.gate import DEFAULT_MAX_BYTES

DEFAULT_URL = "sqlite:///steadyq.db"
CONFIG_FILE = "steadyq.toml"
ENV_PREFIX = "STEADYQ_"


def _cores() -> int:
    return os.cpu_count() or 1


class WorkerSettings(BaseModel):
    """Settings of ``steadyq worker``; field names carry their units."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    handler: str | None = None  # required to run a worker: there is no default workload
    request_schema: str | None = Field(default=None, alias="schema")
    runner: Literal["process", "inline"] = "process"
    concurrency: int = Field(default_factory=_cores, ge=1, le=256)
    deadline_s: float = Field(default=600.0, gt=0)
    max_runtime_s: float | None = Field(default=None, gt=0)
    max_attempts: int = Field(default=5, ge=1, le=1000)
    retry_min_s: float = Field(default=10.0, ge=0)
    retry_max_s: float = Field(default=600.0, ge=0)
    lease_s: float | None = Field(default=None, gt=0)
    batch_size: int | None = Field(default=None, ge=1, le=1000)  # None: the queue's own batch
    prefetch: int = Field(default=4, ge=1, le=100)
    max_bytes: int = Field(default=DEFAULT_MAX_BYTES, ge=1)
    allow_unknown_fields: bool = False
    drain: bool = False
    artifacts_dir: str = "artifacts"
    # how long the queue or store may stay down before the execution gives up (exit 3)
    backend_outage_s: float = Field(default=300.0, gt=0)

    @field_validator(
        "deadline_s",
        "max_runtime_s",
        "retry_min_s",
        "retry_max_s",
        "lease_s",
        "backend_outage_s",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return parse_duration(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value


class Settings(BaseModel):
    """Everything steadyq reads from its configuration."""

    model_config = ConfigDict(extra="forbid")

    url: str = DEFAULT_URL
    # telemetry store for a queue that has none of its own (pubsub://); None: the
    # queue's colocated store, else sqlite:///steadyq.db
    store: str | None = None
    worker: WorkerSettings = Field(default_factory=WorkerSettings)


def _key_line(text: str, key: str) -> int | None:
    pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=", re.MULTILINE)
    match = pattern.search(text)
    return None if match is None else text.count("\n", 0, match.start()) + 1


def _read_file(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    layer: dict[str, Any] = {}
    if f"{ENV_PREFIX}URL" in environ:
        layer["url"] = environ[f"{ENV_PREFIX}URL"]
    if f"{ENV_PREFIX}STORE" in environ:
        layer["store"] = environ[f"{ENV_PREFIX}STORE"]
    worker: dict[str, Any] = {}
    for name, info in WorkerSettings.model_fields.items():
        key = f"{ENV_PREFIX}WORKER_{(info.alias or name).upper()}"
        if key in environ:
            worker[info.alias or name] = environ[key]
    if worker:
        layer["worker"] = worker
    return layer


def _setting_variables() -> dict[str, tuple[str, ...]]:
    """Each ``STEADYQ_*`` variable steadyq reads as a setting, and the setting's path."""
    names: dict[str, tuple[str, ...]] = {
        f"{ENV_PREFIX}URL": ("url",),
        f"{ENV_PREFIX}STORE": ("store",),
    }
    for name, info in WorkerSettings.model_fields.items():
        key = info.alias or name
        names[f"{ENV_PREFIX}WORKER_{key.upper()}"] = ("worker", key)
    return names


# STEADYQ_* variables that are not settings: what steadyq hands an alert command, the
# dashboard's token, and knobs of the tests, the benchmarks and the content fonts
_NOT_SETTINGS = ("STEADYQ_ALERT_", "STEADYQ_TEST_", "STEADYQ_BENCH_", "STEADYQ_EMULATOR_")
_OTHER_VARIABLES = ("STEADYQ_FONT_DIR", "STEADYQ_DASHBOARD_TOKEN")


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """A warning for each ``STEADYQ_*`` variable that steadyq does not read (a typo is
    otherwise silently ignored), with the closest name it does read."""
    import difflib

    environ = os.environ if environ is None else environ
    known = _setting_variables()
    notes = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known or name in _OTHER_VARIABLES:
            continue
        if name.startswith(_NOT_SETTINGS):
            continue
        # compare what follows the prefix, which every name shares
        tails = {k.removeprefix(ENV_PREFIX): k for k in known}
        close = difflib.get_close_matches(
            name.removeprefix(ENV_PREFIX), list(tails), n=1, cutoff=0.7
        )
        hint = (
            f"did you mean {tails[close[0]]}?"
            if close
            else f"steadyq reads {ENV_PREFIX}URL, {ENV_PREFIX}STORE and"
            f" {ENV_PREFIX}WORKER_<KEY> (e.g. {ENV_PREFIX}WORKER_DEADLINE_S)"
        )
        notes.append(f"{name} is not a steadyq setting and is ignored; {hint}")
    return notes


def _flag_of(key: str) -> str:
    """The command-line flag of a setting (``deadline_s`` is ``--deadline``)."""
    flag = {"artifacts_dir": "artifacts", "request_schema": "schema"}.get(key, key)
    return "--" + flag.removesuffix("_s").replace("_", "-")


def _lookup(layer: Mapping[str, Any], loc: tuple[Any, ...]) -> Any:
    value: Any = layer
    for part in loc:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping):
            out[key] = _merge(out.get(key) or {}, value)
        elif value is not None:
            out[key] = value
    return out


def load_settings(
    config: str | Path | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """Build settings: defaults < file < environment < ``overrides`` (None values skipped).

    ``config`` names the file; without it ``steadyq.toml`` in ``cwd`` is used if present.

    Raises:
        ConfigError: the file is unreadable, not TOML, or holds an unknown key or a bad
            value (the message names the key and its line).
    """
    environ = os.environ if environ is None else environ
    path: Path | None
    if config is not None:
        path = Path(config)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
    else:
        candidate = (cwd or Path.cwd()) / CONFIG_FILE
        path = candidate if candidate.exists() else None
    data: dict[str, Any] = {}
    text = ""
    if path is not None:
        data, text = _read_file(path)
    env = _env_layer(environ)
    merged = _merge(_merge(data, env), overrides or {})
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        variables = {loc: name for name, loc in _setting_variables().items()}
        problems = []
        for err in exc.errors(include_url=False):
            loc = tuple(str(p) for p in err["loc"])
            key = ".".join(str(p) for p in loc)
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            msg = msg.removeprefix("Value error, ")
            # blame the layer the value came from: a flag, a variable, or the file
            if _lookup(overrides or {}, loc) is not None:
                problems.append(f"{_flag_of(str(loc[-1]))}: {msg}")
            elif _lookup(env, loc) is not None and loc in variables:
                problems.append(f"{variables[loc]}={_lookup(env, loc)!r} (environment): {msg}")
            else:
                line = _key_line(text, str(loc[-1])) if text else None
                where = f"{path}:{line}: " if line is not None else ""
                problems.append(f"{where}{key}: {msg}")
        raise ConfigError("bad settings: " + "; ".join(problems)) from None
