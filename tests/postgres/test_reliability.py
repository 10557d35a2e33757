"""The reliability tests SQLite passes, on PostgreSQL: worker processes killed with
SIGKILL mid-handler and at random (four workers on one database), hanging and
self-killing handlers, copies of one request pulled by different workers, frozen
workers. Each runs against a fresh schema: the modules' ``url_for`` is pointed at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from steadyq.brokers import open_queue, open_store
from steadyq.brokers.base import Queue
from steadyq.telemetry.store import EventFilter
from tests import test_reliability as reliability
from tests.faults import test_exactly_once as exactly_once
from tests.faults import test_kill_run as kill_run

pytestmark = pytest.mark.slow

test_kill_9_of_worker_mid_handler_redelivers_and_loses_nothing = (
    reliability.test_kill_9_of_worker_mid_handler_redelivers_and_loses_nothing
)
test_handler_that_kills_its_process_reaches_dlq_and_worker_keeps_going = (
    reliability.test_handler_that_kills_its_process_reaches_dlq_and_worker_keeps_going
)
test_two_worker_processes_never_run_one_delivery_at_once = (
    reliability.test_two_worker_processes_never_run_one_delivery_at_once
)
test_ten_thousand_mixed_messages_each_end_in_exactly_one_outcome = (
    reliability.test_ten_thousand_mixed_messages_each_end_in_exactly_one_outcome
)
test_a_copy_pulled_while_the_first_runs_elsewhere_waits_for_its_outcome = (
    exactly_once.test_a_copy_pulled_while_the_first_runs_elsewhere_waits_for_its_outcome
)
test_a_frozen_worker_does_not_run_what_another_completed_meanwhile = (
    exactly_once.test_a_frozen_worker_does_not_run_what_another_completed_meanwhile
)
test_random_kills_lose_nothing_and_never_rerun_a_completed_request = (
    kill_run.test_random_kills_lose_nothing_and_never_rerun_a_completed_request
)


@pytest.fixture(autouse=True)
def _on_postgres(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for module in (reliability, exactly_once, kill_run):
        monkeypatch.setattr(module, "url_for", lambda tmp_path: pg_url)
    monkeypatch.setattr(kill_run, "WORKERS", 4)  # the fleet: four on one database
    yield pg_url
    store = open_store(pg_url, read_only=True)
    try:
        assert store.events(EventFilter(limit=1)), "the test ran on PostgreSQL"
    finally:
        store.close()


@pytest.fixture
def queue(_on_postgres: str) -> Iterator[Queue]:
    q = open_queue(_on_postgres)
    yield q
    q.close()


@pytest.fixture(params=[False, True], ids=["first_succeeds", "first_fails"])
def first_fails(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)
