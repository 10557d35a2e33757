"""The AttemptCounter contract suite (steadyq.telemetry.attempts): every counter,
every store included, must pass it. Counters come from the same factories as the
store suite (tests/stores/test_contract.py ``STORES``): a store is a counter."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from steadyq.telemetry.attempts import AttemptCount, AttemptCounter
from tests.stores.contract import Open, StoreFactory


class AttemptCounterContract:
    @pytest.fixture
    def opener(self, store_factory: StoreFactory, tmp_path: Path) -> Iterator[Open]:
        with store_factory(tmp_path) as open_:
            yield open_

    @pytest.fixture
    def counter(self, opener: Open) -> AttemptCounter:
        return opener()

    def test_counts_rise_per_pull_keep_the_last_error_and_can_be_forgotten(
        self, counter: AttemptCounter
    ) -> None:
        assert counter.count_attempts(["s/1", "s/2"]) == {
            "s/1": AttemptCount(1),
            "s/2": AttemptCount(1),
        }
        counter.settle_attempts({"s/1": "boom", "s/2": None})
        assert counter.count_attempts(["s/1"]) == {"s/1": AttemptCount(2, "boom")}
        counter.settle_attempts({"s/1": None})
        assert counter.count_attempts(["s/1"]) == {"s/1": AttemptCount(3, "boom")}, (
            "no error keeps the one noted"
        )
        assert counter.attempts_of(["s/1", "s/2", "s/3"]) == {"s/1": 3, "s/2": 1}
        counter.settle_attempts({}, ["s/1"])
        assert counter.attempts_of(["s/1", "s/2"]) == {"s/2": 1}
        assert counter.count_attempts(["s/1"]) == {"s/1": AttemptCount(1)}, "counts afresh"

    def test_a_key_named_twice_counts_once(self, counter: AttemptCounter) -> None:
        assert counter.count_attempts(["k", "k"]) == {"k": AttemptCount(1)}
        assert counter.attempts_of(["k", "k"]) == {"k": 1}

    def test_handler_runs_are_counted_apart_from_deliveries(self, counter: AttemptCounter) -> None:
        counter.count_attempts(["a", "b"])
        counter.settle_attempts({"a": "transient"}, ran=["a"])
        counter.settle_attempts({}, ran=["a", "never-counted"])
        assert counter.count_attempts(["a", "b"]) == {
            "a": AttemptCount(2, "transient", 2),
            "b": AttemptCount(2),
        }
        assert counter.attempts_of(["never-counted"]) == {}, "unknown keys are left alone"

    def test_counts_untouched_for_long_are_pruned(self, counter: AttemptCounter) -> None:
        counter.count_attempts(["s/a", "s/b"])
        assert counter.prune_attempts(86400) == 0, "nothing is a day old yet"
        assert counter.prune_attempts(86400, now=time.time() + 2 * 86400) == 2
        assert counter.attempts_of(["s/a", "s/b"]) == {}
        counter.count_attempts(["s/fresh"])
        assert counter.prune_attempts(86400) == 0
        assert counter.attempts_of(["s/fresh"]) == {"s/fresh": 1}

    def test_many_keys_at_once(self, counter: AttemptCounter) -> None:
        keys = [f"sub/{n}" for n in range(1200)]
        counted = counter.count_attempts(keys)
        assert len(counted) == 1200 and set(counted.values()) == {AttemptCount(1)}
        assert counter.attempts_of(keys) == dict.fromkeys(keys, 1)

    def test_another_object_on_the_same_database_sees_the_counts(self, opener: Open) -> None:
        first, second = opener(), opener()
        first.count_attempts(["sub/42"])
        assert second.count_attempts(["sub/42"]) == {"sub/42": AttemptCount(2)}
