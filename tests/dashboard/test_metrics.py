"""/metrics and --metrics-port, read with prometheus-client's own parser; the store's
metrics on a SQLite store and on a PostgreSQL one (``db_url`` is each backend's)."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from steadyq import RetryPolicy, Worker, WorkerOptions
from steadyq.brokers import store_for
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import EventFilter
from steadyq.worker_metrics import serving_metrics
from tests.dashboard.conftest import body, client_for, drain, uncommitted_event


@pytest.fixture
def db_url(backend_url: str) -> str:
    return backend_url


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


def _publish_mix(view: Any) -> None:
    for _ in range(3):
        view.queue.publish(body())
    view.queue.publish(body(request_id="test-smoke-001"))
    view.queue.publish(b"not json")
    view.queue.publish(body("permanent"))


def _store_count(view: Any, kind: str, reason: str | None = None) -> int:
    found = view.store.events(EventFilter(kinds=(kind,)))
    return sum(1 for e in found if reason is None or e.reason == reason)


def test_the_dashboard_metrics_match_the_store(view: Any) -> None:
    _publish_mix(view)
    drain(view.queue)
    client = client_for(view)
    got = samples(client.get("/metrics").text)
    outcome = "steadyq_messages_total"
    assert got[(outcome, (("outcome", "succeeded"), ("reason", "")))] == _store_count(
        view, ev.MESSAGE_SUCCEEDED
    )
    for reason in ("request_id_invalid", "payload_not_json"):
        key = (outcome, (("outcome", "rejected"), ("reason", reason)))
        assert got[key] == _store_count(view, ev.MESSAGE_REJECTED, reason) == 1
    assert got[(outcome, (("outcome", "dead_lettered"), ("reason", "topic_refused")))] == 1
    assert got[("steadyq_delivery_attempts_total", ())] == _store_count(view, ev.MESSAGE_RECEIVED)
    assert got[("steadyq_executions_total", (("status", "succeeded"),))] == 1
    assert got[("steadyq_executions_running", ())] == 0
    stats = view.queue.stats()
    assert got[("steadyq_queue_dead_lettered_messages", ())] == stats.dead_lettered == 3
    assert got[("steadyq_queue_ready_messages", ())] == 0
    histogram = "steadyq_handler_duration_seconds"
    assert got[(histogram + "_count", (("outcome", "succeeded"),))] == 3
    assert got[(histogram + "_bucket", (("le", "+Inf"), ("outcome", "succeeded")))] == 3

    # a second scrape reads only what was added since, and adds it
    view.queue.publish(body())
    drain(view.queue)
    again = samples(client.get("/metrics").text)
    assert again[(outcome, (("outcome", "succeeded"), ("reason", "")))] == 4
    assert again[("steadyq_executions_total", (("status", "succeeded"),))] == 2


def test_an_outage_is_counted_once(view: Any) -> None:
    view.store.write(
        [Event(ev.LOG, 1.0, severity="ERROR", message="backend unavailable, backing off: x")]
    )
    got = samples(client_for(view).get("/metrics").text)
    assert got[("steadyq_backend_outages_total", ())] == 1


def test_the_worker_serves_its_own_metrics(view: Any, db_url: str) -> None:
    _publish_mix(view)
    options = WorkerOptions(
        handler="tests.worker_handlers:by_topic",
        runner="inline",
        drain=True,
        retry=RetryPolicy(0.0, 0.0, 2),
        idle_poll_s=0.01,
    )
    with serving_metrics(db_url, None, "127.0.0.1", 0) as (sink, port):
        result = Worker(view.queue, store_for(view.queue), options, sink=sink).run()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
            text = r.read().decode()
    got = samples(text)
    outcome = "steadyq_messages_total"
    assert got[(outcome, (("outcome", "succeeded"), ("reason", "")))] == result.counts["succeeded"]
    rejected = sum(v for (n, labels), v in got.items() if n == outcome and
                   ("outcome", "rejected") in labels)  # fmt: skip
    assert rejected == result.counts["rejected"] == 2
    assert got[("steadyq_executions_total", (("status", "succeeded"),))] == 1
    assert got[("steadyq_executions_running", ())] == 0
    assert got[("steadyq_delivery_attempts_total", ())] == result.counts["received"]
    assert got[("steadyq_queue_dead_lettered_messages", ())] == 3
    # the same names as the dashboard's: one dashboard and many workers read alike
    dashboard = {n for n, _ in samples(client_for(view).get("/metrics").text)}
    assert {n for n, _ in got if n.startswith("steadyq_")} <= dashboard | {
        "steadyq_messages_created",
        "steadyq_delivery_attempts_created",
        "steadyq_executions_created",
        "steadyq_backend_outages_created",
        "steadyq_handler_duration_seconds_created",
    }


def test_metrics_text_is_generated_without_a_scrape_server(view: Any) -> None:
    from steadyq.metrics import WorkerMetrics

    metrics = WorkerMetrics()
    metrics(Event(ev.MESSAGE_TIMED_OUT, 1.0, reason="deadline_exceeded", duration_ms=2500))
    got = samples(generate_latest(metrics.registry).decode())
    assert (
        got[("steadyq_messages_total", (("outcome", "timed_out"), ("reason", "deadline_exceeded")))]
        == 1
    )
    assert got[("steadyq_handler_duration_seconds_sum", (("outcome", "timed_out"),))] == 2.5


def test_an_event_committed_below_one_already_read_is_counted(pg_view: Any) -> None:
    # PostgreSQL: ids are taken at insert, commits come in any order
    view = pg_view
    client = client_for(view)
    rejected = ("steadyq_messages_total", (("outcome", "rejected"), ("reason", "late")))
    with uncommitted_event(view, ev.MESSAGE_REJECTED):
        view.store.write([Event(ev.MESSAGE_REJECTED, 1.0, reason="late")])
        assert samples(client.get("/metrics").text)[rejected] == 1
    assert samples(client.get("/metrics").text)[rejected] == 2
    assert samples(client.get("/metrics").text)[rejected] == 2  # counted once


def test_holes_are_watched_until_they_settle() -> None:
    from steadyq._sql import Holes

    now = [0.0]
    holes = Holes(True, settle_s=10.0, widest=5, clock=lambda: now[0])
    holes.passed(0, [1, 3, 4], upto=6)  # 2, 5 and 6 not there yet
    holes.passed(6, [20])  # a gap wider than 5 ids: final
    assert holes.pending() == [2, 5, 6]
    holes.filled([5])
    now[0] = 11.0
    assert holes.pending() == []
    untracked = Holes(False)
    untracked.passed(0, [1, 9])
    assert untracked.pending() == []
