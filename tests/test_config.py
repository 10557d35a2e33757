from __future__ import annotations

from pathlib import Path

import pytest

from steadyq.config import load_settings
from steadyq.durations import format_duration, parse_duration, parse_time_or_age
from steadyq.errors import ConfigError


def test_layers_flags_over_env_over_file(tmp_path: Path) -> None:
    (tmp_path / "steadyq.toml").write_text(
        'url = "sqlite:///file.db"\n[worker]\nconcurrency = 3\ndeadline_s = "2m"\n'
        "max_attempts = 7\n"
    )
    env = {"STEADYQ_URL": "sqlite:///env.db", "STEADYQ_WORKER_CONCURRENCY": "5"}
    s = load_settings(cwd=tmp_path, environ=env, overrides={"worker": {"max_attempts": 9}})
    assert s.url == "sqlite:///env.db"
    assert s.worker.concurrency == 5
    assert s.worker.deadline_s == 120
    assert s.worker.max_attempts == 9
    s = load_settings(cwd=tmp_path, environ=env, overrides={"url": "sqlite:///flag.db"})
    assert s.url == "sqlite:///flag.db"


def test_defaults_without_a_file(tmp_path: Path) -> None:
    s = load_settings(cwd=tmp_path, environ={})
    assert s.url == "sqlite:///steadyq.db"
    assert (s.worker.deadline_s, s.worker.max_attempts, s.worker.runner) == (600, 5, "process")
    assert (s.worker.retry_min_s, s.worker.retry_max_s) == (10, 600)


def test_unknown_key_is_refused_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "steadyq.toml"
    path.write_text('url = "sqlite:///x.db"\n\n[worker]\ndeadline = 5\n')
    with pytest.raises(ConfigError, match=r"steadyq.toml:4: worker.deadline: unknown key"):
        load_settings(path, environ={})


def test_bad_values_and_bad_toml(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[worker]\nconcurrency = 0\n")
    with pytest.raises(ConfigError, match="concurrency"):
        load_settings(path, environ={})
    path.write_text("[worker\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_settings(path, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", environ={})
    with pytest.raises(ConfigError, match=r"STEADYQ_WORKER_DEADLINE_S='soon' \(environment\)"):
        load_settings(environ={"STEADYQ_WORKER_DEADLINE_S": "soon"}, cwd=tmp_path)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90),
        ("10m", 600),
        ("4h", 14400),
        ("7d", 604800),
        ("1h30m", 5400),
        ("2.5", 2.5),
        (" 250ms ", 0.25),
        (30, 30),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10x", "-5", "5m-", "m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_time_or_age_and_format() -> None:
    assert parse_time_or_age("24h", now=100000.0) == 100000.0 - 86400
    assert parse_time_or_age("1970-01-02T00:00:00Z", now=0) == 86400
    with pytest.raises(ConfigError):
        parse_time_or_age("yesterday", now=0)
    assert format_duration(0.5) == "500ms"
    assert format_duration(3725) == "1h2m"
    # the unit is chosen after rounding: never "1000ms" or "60s"
    assert [format_duration(v) for v in (0.9996, 9.96, 59.7, 3599.7)] == ["1.0s", "10s", "1m", "1h"]


# -- one source for the worker's settings: WorkerOptions ---------------------------------

# a value other than the default for every setting: (as typed in a flag or a variable,
# as written in steadyq.toml, what the WorkerOptions field then holds)
SAMPLES: dict[str, tuple[str, str, object]] = {
    "handler": ("steadyq.handlers:record", '"steadyq.handlers:record"', "steadyq.handlers:record"),
    "schema": ("steadyq:Request", '"steadyq:Request"', "steadyq.gate:Request"),
    "allow_unknown_fields": ("true", "true", True),
    "runner": ("inline", '"inline"', "inline"),
    "concurrency": ("3", "3", 3),
    "deadline_s": ("90s", '"90s"', 90.0),
    "max_runtime_s": ("1h", '"1h"', 3600.0),
    "drain": ("true", "true", True),
    "max_attempts": ("7", "7", 7),
    "retry_min_s": ("5s", '"5s"', 5.0),
    "retry_max_s": ("2m", '"2m"', 120.0),
    "dlq_retention_s": ("3d", '"3d"', 259200.0),
    "telemetry_retention_s": ("30d", '"30d"', 2592000.0),
    "lease_s": ("45", "45", 45.0),
    "batch_size": ("16", "16", 16),
    "prefetch": ("2", "2", 2),
    "max_bytes": ("2048", "2048", 2048),
    "artifacts_dir": ("out", '"out"', "out"),
    "backend_outage_s": ("1m", '"1m"', 60.0),
    "log_level": ("info", '"info"', 20),
}


def option_value(options: object, path: str) -> object:
    value = options
    for part in path.split("."):
        value = getattr(value, part)
    if isinstance(value, type):
        return f"{value.__module__}:{value.__name__}"
    return value


def test_every_worker_option_is_a_setting_or_said_not_to_be() -> None:
    import dataclasses

    from steadyq.config import NOT_SETTINGS, WORKER_SETTINGS
    from steadyq.policy import RetryPolicy
    from steadyq.worker import WorkerOptions

    covered = {s.option.split(".")[0] for s in WORKER_SETTINGS}
    fields = {f.name for f in dataclasses.fields(WorkerOptions)}
    assert fields - covered - set(NOT_SETTINGS) == set(), "a WorkerOptions field no one sets"
    assert not covered & set(NOT_SETTINGS) and set(NOT_SETTINGS) <= fields
    # a field made of fields (the retry policy) is covered field by field
    retry = {s.option.removeprefix("retry.") for s in WORKER_SETTINGS if "." in s.option}
    assert retry == {f.name for f in dataclasses.fields(RetryPolicy)}
    assert set(SAMPLES) == {s.key for s in WORKER_SETTINGS}, "a sample for each setting"
    assert len({s.cli_flag for s in WORKER_SETTINGS}) == len(WORKER_SETTINGS)


def test_the_defaults_are_the_options_own() -> None:
    from steadyq.config import WorkerSettings, worker_options
    from steadyq.worker import WorkerOptions

    assert worker_options(WorkerSettings()) == WorkerOptions()


def test_every_setting_is_a_variable_and_a_file_key(tmp_path: Path) -> None:
    from steadyq.config import WORKER_SETTINGS, worker_options

    environ = {s.variable: SAMPLES[s.key][0] for s in WORKER_SETTINGS}
    assert all(name.startswith("STEADYQ_WORKER_") for name in environ)
    from_env = worker_options(load_settings(environ=environ, cwd=tmp_path).worker)
    (tmp_path / "steadyq.toml").write_text(
        "[worker]\n" + "".join(f"{s.key} = {SAMPLES[s.key][1]}\n" for s in WORKER_SETTINGS)
    )
    from_file = worker_options(load_settings(environ={}, cwd=tmp_path).worker)
    for s in WORKER_SETTINGS:
        expected = SAMPLES[s.key][2]
        assert option_value(from_env, s.option) == expected, s.variable
        assert option_value(from_file, s.option) == expected, s.key


def test_settings_that_contradict_each_other_are_refused() -> None:
    from steadyq.config import load_settings, worker_options

    ws = load_settings(environ={}, overrides={"worker": {"deadline_s": "10m"}}).worker
    with pytest.raises(ConfigError, match="--max-runtime 5m is not longer than --deadline"):
        worker_options(ws.model_copy(update={"max_runtime_s": 300.0}))
    with pytest.raises(ConfigError, match="not a pydantic model"):
        worker_options(ws.model_copy(update={"request_schema": "steadyq.config:Setting"}))
    # a longest retry delay below the shortest means no growth, as before
    options = worker_options(ws.model_copy(update={"retry_min_s": 30.0, "retry_max_s": 5.0}))
    assert (options.retry.min_backoff_s, options.retry.max_backoff_s) == (30.0, 30.0)


def test_the_documented_file_shows_every_setting() -> None:
    from steadyq.config import WORKER_SETTINGS

    doc = (Path(__file__).parents[1] / "docs" / "cli.md").read_text()
    block = doc.split("```toml", 1)[1].split("```", 1)[0]
    keys = {line.split("=")[0].strip() for line in block.splitlines() if "=" in line}
    assert {s.key for s in WORKER_SETTINGS} <= keys
