"""The attempt counts a store keeps for brokers that keep none durably (Pub/Sub)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from steadyq.brokers import open_store
from steadyq.brokers.memory import MemoryStore
from steadyq.config import load_settings
from steadyq.telemetry.store import AttemptCount, EventStore


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EventStore]:
    made = MemoryStore() if request.param == "memory" else open_store(f"sqlite:///{tmp_path}/s.db")
    yield made
    made.close()


def test_counts_rise_per_pull_keep_the_last_error_and_can_be_forgotten(store: EventStore) -> None:
    assert store.count_attempts(["s/1", "s/2"]) == {"s/1": AttemptCount(1), "s/2": AttemptCount(1)}
    store.settle_attempts({"s/1": "boom", "s/2": None})
    assert store.count_attempts(["s/1"]) == {"s/1": AttemptCount(2, "boom")}
    assert store.attempts_of(["s/1", "s/2", "s/3"]) == {"s/1": 2, "s/2": 1}
    store.settle_attempts({}, ["s/1"])
    assert store.attempts_of(["s/1", "s/2"]) == {"s/2": 1}
    assert store.count_attempts(["s/1"]) == {"s/1": AttemptCount(1)}


def test_counts_untouched_for_long_are_pruned(store: EventStore) -> None:
    import time

    store.count_attempts(["s/a", "s/b"])
    assert store.prune_attempts(86400) == 0, "nothing is a day old yet"
    assert store.prune_attempts(86400, now=time.time() + 2 * 86400) == 2
    assert store.attempts_of(["s/a", "s/b"]) == {}
    store.count_attempts(["s/fresh"])
    assert store.prune_attempts(86400) == 0
    assert store.attempts_of(["s/fresh"]) == {"s/fresh": 1}


def test_sqlite_counts_survive_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/s.db"
    first = open_store(url)
    first.count_attempts(["sub/42"])
    first.close()
    again = open_store(url)
    assert again.count_attempts(["sub/42"]) == {"sub/42": AttemptCount(2)}
    again.close()


def test_store_setting_from_file_env_and_flag(tmp_path: Path) -> None:
    (tmp_path / "steadyq.toml").write_text('store = "sqlite:///from-file.db"\n')
    assert load_settings(cwd=tmp_path, environ={}).store == "sqlite:///from-file.db"
    env = {"STEADYQ_STORE": "sqlite:///from-env.db"}
    assert load_settings(cwd=tmp_path, environ=env).store == "sqlite:///from-env.db"
    flag = load_settings(cwd=tmp_path, environ=env, overrides={"store": "sqlite:///flag.db"})
    assert flag.store == "sqlite:///flag.db"
    assert load_settings(cwd=tmp_path / "none", environ={}).store is None
