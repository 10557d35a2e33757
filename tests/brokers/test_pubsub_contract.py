"""The queue contract, and what only Pub/Sub has, against Google's Pub/Sub emulator."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from steadyq.brokers import open_queue, store_for
from steadyq.brokers.base import Delivery, DlqFilter, Queue, Settlement
from steadyq.brokers.pubsub import A_REASON, A_SOURCE, PubSubQueue, monitoring_stats, setup
from steadyq.errors import BackendUnavailable, ConfigError
from steadyq.telemetry.store_memory import MemoryStore
from tests.brokers.conftest import PROJECT
from tests.brokers.contract import MakeQueue, QueueContract
from tests.conftest import FakeClock


def make_resources(host: str, unique: Callable[[str], str]) -> tuple[str, str]:
    """A fresh topic and subscription (with their DLQ) on the emulator at ``host``."""
    topic, sub = unique("topic"), unique("sub")
    setup(PROJECT, topic, sub)
    return topic, sub


class TestPubSubQueue(QueueContract):
    @pytest.fixture
    def make_queue(self, pubsub_host: str, unique: Callable[[str], str]) -> Iterator[MakeQueue]:
        opened: list[Queue] = []

        def make(clock: FakeClock) -> Queue:
            _, sub = make_resources(pubsub_host, unique)
            q = PubSubQueue(PROJECT, sub, store=MemoryStore(), clock=clock)
            opened.append(q)
            return q

        yield make
        for q in opened:
            q.close()


@pytest.fixture
def pair(pubsub_host: str, unique: Callable[[str], str]) -> Iterator[tuple[Queue, Queue]]:
    """(queue on the topic, queue on the subscription), with a SQLite store."""
    topic, sub = make_resources(pubsub_host, unique)
    publisher = open_queue(f"pubsub://{PROJECT}/{topic}")
    consumer = open_queue(f"pubsub://{PROJECT}/{sub}")
    yield publisher, consumer
    publisher.close()
    consumer.close()


def test_topic_url_publishes_and_subscription_url_pulls(
    pair: tuple[Queue, Queue], tmp_path: object
) -> None:
    publisher, consumer = pair
    store_for(consumer, f"sqlite:///{tmp_path}/store.db")
    mid = publisher.publish(b"hello", {"k": "v"})
    [d] = consumer.pull(10, 30)
    assert (d.message_id, d.body, dict(d.attributes)) == (mid, b"hello", {"k": "v"})
    with pytest.raises(ConfigError, match="is a topic"):
        publisher.pull(1, 30)
    consumer.ack(d)


def _redelivered_after_death(first: Any, d1: Any, sub: str, url: str) -> None:
    """``first`` dies holding ``d1``'s 1 s lease; a new queue object on the same store
    gets it again, counted as the second delivery, and acks it."""
    first.close()  # as if the worker died holding the lease
    second = open_queue(f"pubsub://{PROJECT}/{sub}")
    store_for(second, url)
    time.sleep(2)  # the server's lease of 1 s lapses
    [d2] = second.pull(1, 30)
    assert (d2.message_id, d2.attempt) == (d1.message_id, 2)
    second.ack(d2)
    second.close()


def test_attempts_are_durable_in_the_store_across_queue_objects(
    pubsub_host: str, unique: Callable[[str], str], tmp_path: object
) -> None:
    _, sub = make_resources(pubsub_host, unique)
    url = f"sqlite:///{tmp_path}/store.db"
    first = open_queue(f"pubsub://{PROJECT}/{sub}")
    store_for(first, url)
    first.publish(b"x")
    [d1] = first.pull(1, 1)
    _redelivered_after_death(first, d1, sub, url)


def test_a_message_whose_workers_keep_dying_counts_up_though_its_first_delivery_was_not(
    pubsub_host: str, unique: Callable[[str], str], tmp_path: object
) -> None:
    """Under a dead-letter policy the first delivery writes no count; each worker that
    dies holding the message still raises its attempt (Pub/Sub's delivery_attempt, and
    steadyq's own count from the second delivery on, one behind), so the worker's
    max-deliveries cap is reached as before."""
    topic, sub = unique("topic"), unique("sub")
    setup(PROJECT, topic, sub, min_backoff_s=0, max_backoff_s=0)  # redelivered at once
    url = f"sqlite:///{tmp_path}/store.db"
    key = None
    seen: list[tuple[int, dict[str, int]]] = []
    for life in range(4):
        q = open_queue(f"pubsub://{PROJECT}/{sub}")
        store = store_for(q, url)
        if life == 0:
            q.publish(b"poison")
        got: list[Delivery] = []
        deadline = time.monotonic() + 15
        while not got and time.monotonic() < deadline:  # the dead worker's 1 s lease lapses
            got = q.pull(1, 1)
            time.sleep(0 if got else 0.2)
        [d] = got
        key = f"{sub}/{d.message_id}"
        seen.append((d.attempt, store.attempts_of([key])))
        q.close()  # dies holding the lease: no settle
    assert seen == [(1, {}), (2, {key: 1}), (3, {key: 2}), (4, {key: 3})]


def test_attempts_without_a_dead_letter_policy_are_steadyqs_own_count(
    pubsub_host: str, unique: Callable[[str], str], tmp_path: object
) -> None:
    """No dead-letter policy: Pub/Sub tells no delivery attempt (0), so every delivery
    is counted in the store, the first one too, and a worker that died shows."""
    from steadyq.brokers.pubsub import clients, clients_closed

    topic, sub = unique("topic"), unique("sub")
    publisher, subscriber = clients()
    with clients_closed(publisher, subscriber):
        path = publisher.create_topic(name=publisher.topic_path(PROJECT, topic)).name
        subscriber.create_subscription(name=subscriber.subscription_path(PROJECT, sub), topic=path)
    url = f"sqlite:///{tmp_path}/store.db"
    first = open_queue(f"pubsub://{PROJECT}/{sub}")
    store = store_for(first, url)
    first.publish(b"x")
    [d1] = first.pull(1, 1)
    assert d1.attempt == 1
    assert store.attempts_of([f"{sub}/{d1.message_id}"]) == {f"{sub}/{d1.message_id}": 1}
    _redelivered_after_death(first, d1, sub, url)


def test_dead_letter_carries_reason_and_source_and_is_confirmed_before_ack(
    pubsub_host: str, unique: Callable[[str], str]
) -> None:
    from google.cloud import pubsub_v1

    topic, sub = make_resources(pubsub_host, unique)
    q = PubSubQueue(PROJECT, sub, store=MemoryStore())
    q.publish(b"\xffbad")
    [d] = q.pull(1, 30)
    q.settle([Settlement.dead_letter(d, "payload_not_utf8", "not UTF-8")])
    subscriber = pubsub_v1.SubscriberClient()
    response = subscriber.pull(
        subscription=subscriber.subscription_path(PROJECT, f"{topic}-dlq-sub"),
        max_messages=10,
        return_immediately=True,
    )
    [m] = response.received_messages
    assert m.message.data == b"\xffbad"
    assert m.message.attributes[A_REASON] == "payload_not_utf8"
    assert m.message.attributes[A_SOURCE].endswith(f"/subscriptions/{sub}")
    subscriber.modify_ack_deadline(
        subscription=subscriber.subscription_path(PROJECT, f"{topic}-dlq-sub"),
        ack_ids=[m.ack_id],
        ack_deadline_seconds=0,
    )
    subscriber.close()
    assert [x.reason for x in q.dlq_list()] == ["payload_not_utf8"]
    q.close()


def test_dead_letter_is_not_acked_when_the_dlq_publish_fails(
    pubsub_host: str, unique: Callable[[str], str]
) -> None:
    from google.cloud import pubsub_v1

    topic, sub = make_resources(pubsub_host, unique)
    q = PubSubQueue(PROJECT, sub, store=MemoryStore())
    q.publish(b"x")
    [d] = q.pull(1, 1)
    publisher = pubsub_v1.PublisherClient()
    publisher.delete_topic(topic=publisher.topic_path(PROJECT, f"{topic}-dlq"))
    with pytest.raises(BackendUnavailable):
        q.dead_letter(d, "why")
    time.sleep(2)  # the server's lease of 1 s lapses
    [again] = q.pull(1, 30)
    assert (again.message_id, again.attempt) == (d.message_id, 2), "still there, not acked"
    q.close()


def test_nack_delay_is_capped_at_600_and_stats_say_no_backlog_on_the_emulator(
    pubsub_host: str, unique: Callable[[str], str]
) -> None:
    _, sub = make_resources(pubsub_host, unique)
    q = PubSubQueue(PROJECT, sub, store=MemoryStore())
    q.publish(b"x")
    [d] = q.pull(1, 30)
    q.nack(d, 3600)
    assert q.pull(1, 30) == []
    stats = q.stats()
    assert (stats.ready, stats.in_flight, stats.delayed, stats.dead_lettered) == (None,) * 4
    assert "emulator" in stats.notes[0]
    q.close()


def test_pull_more_than_one_batch_uses_several_pulls(
    pubsub_host: str, unique: Callable[[str], str]
) -> None:
    _, sub = make_resources(pubsub_host, unique)
    q = PubSubQueue(PROJECT, sub, store=MemoryStore())
    ids = q.publish_batch([(f"m{i}".encode(), None) for i in range(350)])
    got = q.pull(1000, 30)
    assert sorted(d.message_id for d in got) == sorted(ids)
    assert len({d.message_id for d in got}) == 350
    result = q.settle([Settlement.ack(d) for d in got])
    assert len(result.applied) == 350
    assert q.pull(10, 30) == []
    q.close()


def test_missing_subscription_is_an_outage_not_a_crash(pubsub_host: str) -> None:
    q = PubSubQueue(PROJECT, "no-such-name", store=MemoryStore())
    with pytest.raises(BackendUnavailable, match="steadyq pubsub setup"):
        q.pull(1, 30)
    q.close()


def test_bad_urls_are_config_errors() -> None:
    for url in ("pubsub://", "pubsub://proj", "pubsub://proj/a/b", "pubsub://p/s?x=1"):
        with pytest.raises(ConfigError):
            PubSubQueue.from_url(url)


def test_topic_named_in_the_url_needs_no_lookup(
    pubsub_host: str, unique: Callable[[str], str]
) -> None:
    topic, sub = make_resources(pubsub_host, unique)
    q = PubSubQueue.from_url(f"pubsub://{PROJECT}/{sub}?topic={topic}", store=MemoryStore())
    q.publish(b"x")
    [d] = q.pull(1, 30)
    q.dead_letter(d, "why", "because")
    assert [(x.message_id, x.reason) for x in q.dlq_list()] == [(d.message_id, "why")]
    [(_, new_id)] = q.dlq_replay(DlqFilter())
    [again] = q.pull(1, 30)
    assert (again.message_id, again.replays, again.body) == (new_id, 1, b"x")
    q.ack(again)
    q.close()


def _fetched(q: PubSubQueue) -> None:
    """Wait for the read-ahead pull to come back."""
    assert q._transport._ahead, "a pull was started ahead"
    for _, _, fetching in q._transport._ahead:
        fetching.result(timeout=30)


def test_read_ahead_is_delivered_by_the_next_pull_and_counted_only_then(
    pubsub_host: str, unique: Callable[[str], str]
) -> None:
    _, sub = make_resources(pubsub_host, unique)
    store = MemoryStore()
    q = PubSubQueue(PROJECT, sub, store=store)
    ids = q.publish_batch([(f"m{i}".encode(), None) for i in range(5)])
    q.read_ahead(10)
    _fetched(q)
    assert store.attempts_of([f"{sub}/{m}" for m in ids]) == {}, "fetched is not delivered"
    got = q.pull(10, 30)
    assert sorted(d.message_id for d in got) == sorted(ids)
    assert {d.attempt for d in got} == {1}
    q.settle([Settlement.ack(d) for d in got])
    assert q.pull(10, 30) == []
    q.close()


def _pull_all(q: Queue, n: int, timeout_s: float = 15.0) -> list[Delivery]:
    got: list[Delivery] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        got += q.pull(n - len(got), 30)
    return got


def test_read_ahead_not_pulled_goes_back_at_close_without_a_steadyq_attempt(
    pubsub_host: str, unique: Callable[[str], str]
) -> None:
    _, sub = make_resources(pubsub_host, unique)
    store = MemoryStore()
    q = PubSubQueue(PROJECT, sub, store=store)
    ids = q.publish_batch([(f"m{i}".encode(), None) for i in range(3)])
    q.read_ahead(3)
    _fetched(q)
    q.close()
    assert store.attempts_of([f"{sub}/{m}" for m in ids]) == {}
    other = PubSubQueue(PROJECT, sub, store=store)
    started = time.monotonic()
    got = _pull_all(other, 3)
    assert time.monotonic() - started < 5, "given back at once, not at the ack deadline"
    assert sorted(d.message_id for d in got) == sorted(ids)
    # Pub/Sub counted the fetch as a delivery (its delivery_attempt), steadyq did not
    assert {d.attempt for d in got} == {2}
    assert {a for a in store.attempts_of([f"{sub}/{m}" for m in ids]).values()} == {1}
    other.close()


def test_surplus_read_ahead_waits_for_the_next_pull_and_stale_goes_back(
    pubsub_host: str, unique: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import steadyq.brokers.pubsub as pubsub

    topic, sub = unique("topic"), unique("sub")
    setup(PROJECT, topic, sub, min_backoff_s=0, max_backoff_s=0)
    q = PubSubQueue(PROJECT, sub, store=MemoryStore())
    ids = q.publish_batch([(f"m{i}".encode(), None) for i in range(4)])
    q.read_ahead(4)
    _fetched(q)
    first = q.pull(1, 30)  # fewer than were fetched: the rest stays ahead, undelivered
    second = q.pull(10, 30)
    assert len(first) == 1 and len(second) == 3
    assert sorted(d.message_id for d in first + second) == sorted(ids)
    assert {d.attempt for d in first + second} == {1}
    q.settle([Settlement.ack(d) for d in first + second])

    monkeypatch.setattr(pubsub, "READ_AHEAD_FRESH_S", 0.0)
    ids = q.publish_batch([(f"n{i}".encode(), None) for i in range(3)])
    q.read_ahead(3)
    _fetched(q)
    again = _pull_all(q, 3)  # the read-ahead is stale: given back, then pulled afresh
    assert sorted(d.message_id for d in again) == sorted(ids)
    q.settle([Settlement.ack(d) for d in again])
    q.close()


def test_first_pull_drops_attempt_counts_no_message_can_still_need(
    pubsub_host: str, unique: Callable[[str], str]
) -> None:
    _, sub = make_resources(pubsub_host, unique)
    store = MemoryStore()
    store.count_attempts([f"{sub}/gone-long-ago", f"{sub}/recent"])
    store._attempted_at[f"{sub}/gone-long-ago"] = time.time() - 40 * 86400
    q = PubSubQueue(PROJECT, sub, store=store)
    q.publish(b"x")
    [d] = q.pull(1, 30)
    assert store.attempts_of([f"{sub}/gone-long-ago", f"{sub}/recent"]) == {f"{sub}/recent": 1}
    q.ack(d)
    q.close()


def test_stats_on_real_pubsub_read_cloud_monitoring(
    pubsub_host: str, unique: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Monitoring path with Google's own types; only the RPC is answered here (no
    test ever reaches Google): the queries asked, and the newest point of each read."""
    from google.cloud import monitoring_v3

    _, sub = make_resources(pubsub_host, unique)
    q = PubSubQueue(PROJECT, sub, store=MemoryStore())
    q._resolve()  # names from the emulator, figures from "Monitoring" below
    asked: list[str] = []
    answers = {"num_undelivered_messages": [42, 40], "oldest_unacked_message_age": [17]}

    class Monitoring:
        def list_time_series(
            self, *, request: monitoring_v3.ListTimeSeriesRequest
        ) -> list[monitoring_v3.TimeSeries]:
            flt = request.filter
            asked.append(flt)
            assert request.name == f"projects/{PROJECT}"
            assert request.interval.end_time.timestamp() > request.interval.start_time.timestamp()
            assert request.view == monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL
            if "-dlq-sub" in flt:
                return []  # no figure yet for the DLQ subscription
            metric = flt.split("subscription/")[1].split('"')[0]
            values = [monitoring_v3.TypedValue(int64_value=v) for v in answers[metric]]
            return [monitoring_v3.TimeSeries(points=[monitoring_v3.Point(value=v) for v in values])]

    monkeypatch.setattr(monitoring_v3, "MetricServiceClient", Monitoring)
    stats = monitoring_stats(q._resolve())
    assert (stats.ready, stats.oldest_unacked_age_s, stats.dead_lettered) == (42, 17.0, None)
    assert (stats.in_flight, stats.delayed) == (None, None)
    assert "Cloud Monitoring" in stats.notes[0]
    assert len(asked) == 3
    assert all('resource.labels.subscription_id = "' in f for f in asked)
    assert sum(f'"{sub}"' in f for f in asked) == 2

    import sys

    import google.cloud

    # as without the extra installed
    monkeypatch.setitem(sys.modules, "google.cloud.monitoring_v3", None)
    monkeypatch.delattr(google.cloud, "monitoring_v3")
    without = monitoring_stats(q._resolve())
    assert without.ready is None and "steadyq[monitoring]" in without.notes[0]
    q.close()
