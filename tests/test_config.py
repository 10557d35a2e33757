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
