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

The worker's settings have one source: :data:`WORKER_SETTINGS`, one row per user-facing
field of :class:`~steadyq.worker.WorkerOptions`, whose defaults are the options' own.
:class:`WorkerSettings` (the ``[worker]`` table and its variables) is made from it, the
worker command's flags too, and :func:`worker_options` turns settings into options.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from steadyq.durations import parse_duration
from steadyq.errors import ConfigError
from steadyq.policy import RetryPolicy
from steadyq.worker import WorkerOptions

DEFAULT_URL = "sqlite:///steadyq.db"
CONFIG_FILE = "steadyq.toml"
ENV_PREFIX = "STEADYQ_"

# -- the worker's settings: one table, the defaults from WorkerOptions ----------------

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def _load_model(spec: str | None) -> type[BaseModel] | None:
    """``module:Class`` to the pydantic model it names."""
    if not spec:
        return None
    from steadyq.errors import HandlerLoadError
    from steadyq.runner import load_handler

    try:
        loaded = load_handler(spec)  # resolves any module:attribute
    except HandlerLoadError as exc:
        raise ConfigError(f"--schema: {exc}") from None
    if not (isinstance(loaded, type) and issubclass(loaded, BaseModel)):
        raise ConfigError(f"schema {spec!r} is not a pydantic model")
    return loaded


@dataclasses.dataclass(frozen=True, slots=True)
class Setting:
    """One user-facing field of :class:`~steadyq.worker.WorkerOptions`: a key under
    ``[worker]`` in ``steadyq.toml``, a variable ``STEADYQ_WORKER_<KEY>`` and a flag of
    ``steadyq worker``. Its default is the option's own; a new option is one row here."""

    key: str  # the file key; the variable is STEADYQ_WORKER_<KEY upper-cased>
    option: str  # the WorkerOptions field it sets; "retry.max_attempts": a RetryPolicy field
    type: Any  # what the setting holds once validated
    help: str  # the flag's help
    flag: str = ""  # default: --KEY without its _s unit, _ as -
    off_flag: str = ""  # a boolean's other flag (--forever for --drain)
    duration: bool = False  # seconds, or a duration string (90s, 10m)
    limits: Mapping[str, float] = dataclasses.field(default_factory=dict)  # ge, gt, le
    # the option's value from the setting's, and back (for the default); default: as is
    to_option: Callable[[Any], Any] | None = None
    from_option: Callable[[Any], Any] | None = None
    attr: str = ""  # the model's attribute, when pydantic owns the key's name (schema)

    @property
    def name(self) -> str:
        """The attribute of :class:`WorkerSettings` that holds it."""
        return self.attr or self.key

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.key.removesuffix("_s").replace("_", "-")

    @property
    def variable(self) -> str:
        return f"{ENV_PREFIX}WORKER_{self.key.upper()}"


WORKER_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "handler",
        "handler",
        str | None,
        "Handler as module:callable, called as handler(request, ctx); required"
        " (the content workload: steadyq.content:handle).",
    ),
    Setting(
        "schema",
        "schema",
        str | None,
        "Request model as module:Class (a pydantic model with a request_id field);"
        " default: the handler's own request_schema, else steadyq.Request.",
        attr="request_schema",
        to_option=_load_model,
        from_option=lambda model: None if model is None else f"{model.__module__}:{model.__name__}",
    ),
    Setting(
        "allow_unknown_fields",
        "allow_unknown_fields",
        bool,
        "Ignore fields the request model does not know instead of rejecting the"
        " message as schema_invalid (default: refuse).",
        flag="--allow-unknown-fields",
        off_flag="--refuse-unknown-fields",
    ),
    Setting(
        "runner",
        "runner",
        Literal["process", "inline"],
        "'process' (default): each call in a supervised child with a hard deadline. "
        "'inline': in the worker process, soft deadline only; for trusted fast handlers.",
    ),
    Setting(
        "concurrency",
        "concurrency",
        int,
        "Handler processes (default: cores).",
        limits={"ge": 1, "le": 256},
    ),
    Setting(
        "deadline_s",
        "deadline_s",
        float,
        "Hard deadline of one call, e.g. 600 or 10m.",
        duration=True,
        limits={"gt": 0},
    ),
    Setting(
        "max_runtime_s",
        "max_runtime_s",
        float | None,
        "Time budget of this execution, e.g. 1800 or 30m; stops pulling in time.",
        duration=True,
        limits={"gt": 0},
    ),
    Setting(
        "drain",
        "drain",
        bool,
        "Exit when nothing is ready or in flight.",
        off_flag="--forever",
    ),
    Setting(
        "max_attempts",
        "retry.max_attempts",
        int,
        "Handler runs before the DLQ.",
        limits={"ge": 1, "le": 1000},
    ),
    Setting(
        "retry_min_s",
        "retry.min_backoff_s",
        float,
        "Shortest retry delay (10s).",
        duration=True,
        limits={"ge": 0},
    ),
    Setting(
        "retry_max_s",
        "retry.max_backoff_s",
        float,
        "Longest retry delay (10m).",
        duration=True,
        limits={"ge": 0},
    ),
    Setting(
        "dlq_retention_s",
        "dlq_retention_s",
        float,
        "Delete dead letters older than this (7d); 0 keeps them.",
        duration=True,
        limits={"ge": 0},
    ),
    Setting(
        "telemetry_retention_s",
        "telemetry_retention_s",
        float,
        "Prune events and finished ledger rows older than this; 0 (default) keeps them.",
        duration=True,
        limits={"ge": 0},
    ),
    Setting(
        "lease_s",
        "lease_s",
        float | None,
        "Lease per pull (default: deadline plus a margin).",
        duration=True,
        limits={"gt": 0},
    ),
    Setting(
        "batch_size",
        "batch_size",
        int | None,
        "Messages asked for per pull (default: the queue's own, 64; Pub/Sub 100).",
        limits={"ge": 1, "le": 1000},
    ),
    Setting(
        "prefetch",
        "prefetch",
        int,
        "Calls queued per handler process beyond the one running.",
        limits={"ge": 1, "le": 100},
    ),
    Setting(
        "max_bytes",
        "max_bytes",
        int,
        "Largest message body the gate accepts, in bytes (10 MiB).",
        limits={"ge": 1},
    ),
    Setting(
        "artifacts_dir",
        "artifacts_dir",
        str,
        "Folder where handlers write their outputs (./artifacts).",
        flag="--artifacts",
    ),
    Setting(
        "backend_outage_s",
        "backend_outage_s",
        float,
        "How long the queue or store may stay down (full disk, read-only file,"
        " locked) before the execution gives up with exit code 3 (5m).",
        duration=True,
        limits={"gt": 0},
    ),
    Setting(
        "log_level",
        "log_level",
        Literal[LOG_LEVELS],
        "Lowest severity of the handlers' log records shown, e.g. INFO to see"
        " ctx.logger.info(); the store keeps WARNING and above.",
        to_option=logging.getLevelName,
        from_option=logging.getLevelName,
    ),
)

# WorkerOptions fields that are deliberately not settings, and why
NOT_SETTINGS: Mapping[str, str] = {
    "idle_poll_s": "how often an idle worker asks the queue again; a knob for tests",
    "max_deliveries": "a backstop derived from max_attempts (at least 10, three per run)",
}


def _option_default(path: str) -> tuple[Any, Callable[[], Any] | None]:
    """The default (or default factory) of a WorkerOptions field, or of a field of a
    dataclass field (``retry.max_attempts``)."""
    owner: Any = WorkerOptions
    *parents, last = path.split(".")
    for part in parents:
        [f] = [f for f in dataclasses.fields(owner) if f.name == part]
        owner = f.default_factory if f.default is dataclasses.MISSING else type(f.default)
    [f] = [f for f in dataclasses.fields(owner) if f.name == last]
    if f.default is not dataclasses.MISSING:
        return f.default, None
    assert f.default_factory is not dataclasses.MISSING, path
    return None, f.default_factory


def _field_of(setting: Setting) -> tuple[Any, Any]:
    default, factory = _option_default(setting.option)
    convert = setting.from_option
    limits: dict[str, Any] = dict(setting.limits)
    if factory is not None:
        made = factory if convert is None else (lambda: convert(factory()))
        return setting.type, Field(default_factory=made, alias=setting.key, **limits)
    value = default if convert is None else convert(default)
    return setting.type, Field(default=value, alias=setting.key, **limits)


class _WorkerSettingsBase(BaseModel):
    """Settings of ``steadyq worker``; field names carry their units."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    if TYPE_CHECKING:  # the fields are made from WORKER_SETTINGS

        def __getattr__(self, name: str) -> Any: ...

    @field_validator(
        *(s.name for s in WORKER_SETTINGS if s.duration), mode="before", check_fields=False
    )
    @classmethod
    def _duration(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return parse_duration(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("log_level", mode="before", check_fields=False)
    @classmethod
    def _level(cls, value: object) -> object:
        if isinstance(value, str) and value.upper() in LOG_LEVELS:
            return value.upper()
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}")


if TYPE_CHECKING:
    WorkerSettings = _WorkerSettingsBase
else:
    WorkerSettings = create_model(
        "WorkerSettings",
        __base__=_WorkerSettingsBase,
        __module__=__name__,
        **{s.name: _field_of(s) for s in WORKER_SETTINGS},
    )
    WorkerSettings.__doc__ = _WorkerSettingsBase.__doc__


def worker_options(worker: WorkerSettings, **fields: Any) -> WorkerOptions:
    """The :class:`~steadyq.worker.WorkerOptions` that ``worker`` settings mean
    (``fields``: options that are not settings, e.g. ``idle_poll_s``).

    Raises:
        ConfigError: the settings contradict each other, or ``schema`` is not a
            pydantic model.
    """
    values: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for s in WORKER_SETTINGS:
        value = getattr(worker, s.name)
        if s.to_option is not None:
            value = s.to_option(value)
        parent, _, child = s.option.rpartition(".")
        if parent:
            nested.setdefault(parent, {})[child] = value
        else:
            values[s.option] = value
    if worker.max_runtime_s is not None and worker.max_runtime_s <= worker.deadline_s:
        from steadyq.durations import format_duration

        raise ConfigError(
            f"--max-runtime {format_duration(worker.max_runtime_s)} is not longer than"
            f" --deadline {format_duration(worker.deadline_s)}: the execution stops pulling"
            " when its budget could not fit one more deadline, so it would run nothing;"
            " give a longer --max-runtime or a shorter --deadline"
        )
    retry = nested.pop("retry")
    # a longest delay below the shortest means no growth, not an error
    retry["max_backoff_s"] = max(retry["max_backoff_s"], retry["min_backoff_s"])
    try:
        values["retry"] = RetryPolicy(**retry)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    assert not nested, nested
    return WorkerOptions(**values, **fields)


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
    for s in WORKER_SETTINGS:
        if key in (s.key, s.name):
            return s.cli_flag
    return "--" + key.replace("_", "-")


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
