"""Pub/Sub leases as users meet them: DLQ reads that block nobody, setup defaults that
agree with the worker's lease, and exactly-once subscriptions whose refused acks are
lost leases, never acks believed done."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from steadyq.brokers.base import DlqFilter, Settlement
from steadyq.brokers.memory import MemoryStore
from steadyq.brokers.pubsub import (
    DEFAULT_ACK_DEADLINE_S,
    EXACTLY_ONCE_REASON,
    PubSubQueue,
    ack_id_failures,
    setup,
)
from steadyq.cli import app
from steadyq.errors import LeaseLost
from tests.brokers.conftest import PROJECT

runner = CliRunner()


def _subscription(name: str) -> Any:
    from google.cloud import pubsub_v1

    client = pubsub_v1.SubscriberClient()
    try:
        return client.get_subscription(subscription=client.subscription_path(PROJECT, name))
    finally:
        client.close()


def _dead_lettered(sub: str, n: int) -> list[str]:
    """Publish n messages on ``sub``'s topic and dead-letter them all; their ids."""
    q = PubSubQueue(PROJECT, sub, store=MemoryStore())
    ids = q.publish_batch([(f"m{i}".encode(), None) for i in range(n)])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        got += q.pull(n - len(got), 60)
    q.settle([Settlement.dead_letter(d, "why", "because") for d in got])
    q.close()
    assert sorted(d.message_id for d in got) == sorted(ids)
    return ids


# -- DLQ commands block nobody ------------------------------------------------------


def test_dlq_reads_back_to_back_each_see_every_letter_and_a_replay_right_after_too(
    pubsub_host: str, unique: Callable[[str], str], tmp_path: Path
) -> None:
    topic, sub = unique("topic"), unique("sub")
    setup(PROJECT, topic, sub)
    ids = _dead_lettered(sub, 150)  # more than one pull of 100
    url, store = f"pubsub://{PROJECT}/{sub}", ["--store", f"sqlite:///{tmp_path}/s.db"]
    for _ in range(2):
        listed = runner.invoke(app, ["dlq", "ls", "--url", url, *store, "--json", "--limit", "500"])
        assert listed.exit_code == 0, listed.output
        assert sorted(x["message_id"] for x in json.loads(listed.stdout)) == sorted(ids)
    shown = runner.invoke(app, ["dlq", "show", "--url", url, *store, ids[-1]])
    assert shown.exit_code == 0 and ids[-1] in shown.output, shown.output
    q = PubSubQueue(PROJECT, sub, store=MemoryStore())
    replayed = q.dlq_replay(DlqFilter())
    assert sorted(letter.message_id for letter, _ in replayed) == sorted(ids)
    assert all(new_id for _, new_id in replayed)
    assert q.dlq_list() == []
    q.close()


def test_a_dlq_reader_that_dies_mid_scan_holds_the_letters_ten_seconds_at_most(
    pubsub_host: str, unique: Callable[[str], str]
) -> None:
    topic, sub = unique("topic"), unique("sub")
    setup(PROJECT, topic, sub)
    assert _subscription(f"{topic}-dlq-sub").ack_deadline_seconds == 10
    ids = _dead_lettered(sub, 3)
    dying = PubSubQueue(PROJECT, sub, store=MemoryStore())
    scan = dying._dead_letters.scan()
    assert len(scan.__enter__()) == 3  # read, then never given back: as if killed
    started = time.monotonic()
    other = PubSubQueue(PROJECT, sub, store=MemoryStore())
    seen: list[str] = []
    while time.monotonic() - started < 40 and not seen:
        seen = [x.message_id for x in other.dlq_list()]
        time.sleep(0.5)
    waited = time.monotonic() - started
    assert sorted(seen) == sorted(ids)
    assert waited < 20, f"the dead reader held the letters {waited:.0f} s"
    other.close()
    dying.close()


# -- setup and lease defaults agree ---------------------------------------------------


def test_setup_defaults_to_the_workers_lease_and_says_what_it_chose(
    pubsub_host: str, unique: Callable[[str], str]
) -> None:
    topic, sub = unique("topic"), unique("sub")
    args = ["pubsub", "setup", "--project", PROJECT, "--topic", topic, "--subscription", sub]
    made = runner.invoke(app, args)
    assert made.exit_code == 0, made.output
    text = " ".join(made.output.split())
    assert f"ack deadline {DEFAULT_ACK_DEADLINE_S} s" in text
    assert f"max delivery attempts 5 -> {topic}-dlq" in text
    assert "retention 7 d" in text and "note:" not in text
    assert _subscription(sub).ack_deadline_seconds == DEFAULT_ACK_DEADLINE_S

    # the worker's default lease (a 600 s --deadline plus slack) needs no lease call
    q = PubSubQueue(PROJECT, sub, store=MemoryStore())
    calls: list[int] = []
    q._transport.lease = lambda ack_ids, deadline_s: calls.append(deadline_s)  # type: ignore[method-assign]
    q.publish(b"x")
    from steadyq import WorkerOptions

    [d] = q.pull(100, WorkerOptions().effective_lease_s)
    assert calls == [], "the worker's default lease is the subscription's ack deadline"
    assert d.leased_until - time.time() > DEFAULT_ACK_DEADLINE_S - 10
    q.ack(d)
    q.close()

    other = runner.invoke(app, [*args, "--ack-deadline", "60"])
    assert other.exit_code == 0, other.output
    text = " ".join(other.output.split())
    assert "differs: ack deadline 600 s, not 60 s" in text and "left as it is" in text


# -- exactly-once delivery ---------------------------------------------------------------


def test_setup_exactly_once_and_a_refused_ack_is_a_lost_lease(
    pubsub_host: str, unique: Callable[[str], str]
) -> None:
    topic, sub = unique("topic"), unique("sub")
    made = runner.invoke(
        app,
        ["pubsub", "setup", "--project", PROJECT, "--topic", topic, "--subscription", sub,
         "--exactly-once", "--min-backoff", "0", "--max-backoff", "0"],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    assert "exactly-once delivery" in made.output
    assert _subscription(sub).enable_exactly_once_delivery

    # two workers that do not share a store: only the server can tell the lease is gone
    first = PubSubQueue(PROJECT, sub, store=MemoryStore())
    second = PubSubQueue(PROJECT, sub, store=MemoryStore())
    expired_id, kept_id = first.publish_batch([(b"expires", None), (b"kept", None)])
    [expired] = first.pull(1, 1)
    [kept] = first.pull(1, 60)
    assert (expired.message_id, kept.message_id) == (expired_id, kept_id)
    again: list[Any] = []
    deadline = time.monotonic() + 30
    while not again and time.monotonic() < deadline:
        again = second.pull(10, 60)  # once the 1 s lease lapses, delivered again here
    assert [d.message_id for d in again] == [expired_id]

    with pytest.raises(LeaseLost):
        first.extend(expired, 30)
    result = first.settle([Settlement.ack(expired), Settlement.ack(kept)])
    assert [s.delivery.message_id for s in result.lost] == [expired_id]
    assert [s.delivery.message_id for s in result.applied] == [kept_id]
    second.ack(again[0])  # the live lease acks
    with pytest.raises(LeaseLost):
        first.nack(expired)  # a modack of the stale ack id is refused too
    with pytest.raises(LeaseLost):
        first.nack(kept)  # acked already: the server refuses to give it back
    assert first.pull(10, 60) == [], "the kept ack was applied"
    first.close()
    second.close()


def _refusal(metadata: dict[str, str]) -> Exception:
    from google.api_core import exceptions as gexc
    from google.rpc.error_details_pb2 import ErrorInfo

    info = ErrorInfo(reason=EXACTLY_ONCE_REASON, domain="pubsub.googleapis.com", metadata=metadata)
    return gexc.InvalidArgument("", error_info=info)


def test_ack_failures_are_read_from_googles_error_info() -> None:
    from google.api_core import exceptions as gexc

    refused = _refusal({"a1": "PERMANENT_FAILURE_INVALID_ACK_ID", "a2": "TRANSIENT_FAILURE_X"})
    assert ack_id_failures(refused) == {
        "a1": "PERMANENT_FAILURE_INVALID_ACK_ID",
        "a2": "TRANSIENT_FAILURE_X",
    }
    assert ack_id_failures(gexc.InvalidArgument("Invalid ack id (ack_id=x)")) is None
    assert ack_id_failures(gexc.ServiceUnavailable("down")) is None
    assert ack_id_failures(ValueError("x")) is None
    from google.cloud.pubsub_v1.subscriber.exceptions import AcknowledgeError, AcknowledgeStatus

    assert ack_id_failures(AcknowledgeError(AcknowledgeStatus.INVALID_ACK_ID, info=None)) == {}


def test_transient_refusals_are_asked_again_and_permanent_ones_are_lost() -> None:
    from google.api_core import exceptions as gexc

    class Subscriber:
        """Answers acknowledge as an exactly-once subscription would."""

        def __init__(self, answers: list[Exception | None]) -> None:
            self.answers = answers
            self.asked: list[list[str]] = []

        def acknowledge(self, *, request: Any, retry: Any, timeout: float) -> None:
            self.asked.append(list(request.ack_ids))
            answer = self.answers.pop(0)
            if answer is not None:
                raise answer

    q = PubSubQueue(PROJECT, "sub-x", store=MemoryStore())
    fake = Subscriber(
        [
            _refusal({"a": "PERMANENT_FAILURE_INVALID_ACK_ID", "b": "TRANSIENT_FAILURE_UNORDERED"}),
            None,  # b goes through the second time
        ]
    )
    q._clients = (None, fake)
    assert q._transport.ack("projects/p/subscriptions/sub-x", ["a", "b", "c"]) == {"a"}
    assert fake.asked == [["a", "b", "c"], ["b"]]

    always = _refusal({"b": "TRANSIENT_FAILURE_UNORDERED"})
    fake = Subscriber([always, always, always])
    q._clients = (None, fake)
    assert q._transport.ack("projects/p/subscriptions/sub-x", ["b", "c"]) == {"b"}, (
        "never believed done"
    )
    assert fake.asked == [["b", "c"], ["b"], ["b"]]

    # refused without naming the ack ids: none of them is taken as done
    fake = Subscriber([gexc.InvalidArgument("", error_info=_info_without_ids())])
    q._clients = (None, fake)
    assert q._transport.ack("projects/p/subscriptions/sub-x", ["d", "e"]) == {"d", "e"}
    q._clients = None


def _info_without_ids() -> Any:
    from google.rpc.error_details_pb2 import ErrorInfo

    return ErrorInfo(reason=EXACTLY_ONCE_REASON, domain="pubsub.googleapis.com")


def _pull_all(q: PubSubQueue, n: int) -> list[Any]:
    """Pull until ``n`` deliveries came (or 30 s passed)."""
    got: list[Any] = []
    deadline = time.monotonic() + 30
    while len(got) < n and time.monotonic() < deadline:
        got += q.pull(n - len(got), 60)
    return got


def _settle_halves_at_once(
    q: PubSubQueue, got: list[Any], makes: list[Callable[[Any], Settlement]]
) -> list[Any]:
    """Settle the two halves of ``got`` on two threads that start together, the first
    half's settlements made by ``makes[0]``, the second's by ``makes[1]``; their results."""
    import threading

    half = len(got) // 2
    results: list[Any] = []
    go = threading.Barrier(2)

    def settle(batch: list[Any], make: Callable[[Any], Settlement]) -> None:
        go.wait()
        results.append(q.settle([make(d) for d in batch]))

    threads = [
        threading.Thread(target=settle, args=(batch, make))
        for batch, make in zip([got[:half], got[half:]], makes, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_two_threads_settle_one_queue_at_once(
    pubsub_host: str, unique: Callable[[str], str]
) -> None:
    """A worker may settle rejections beside the commit in flight: nothing is lost."""
    topic, sub = unique("topic"), unique("sub")
    setup(PROJECT, topic, sub, min_backoff_s=0, max_backoff_s=0)
    store = MemoryStore()
    q = PubSubQueue(PROJECT, sub, store=store)
    ids = q.publish_batch([(f"m{i}".encode(), None) for i in range(200)])
    got = _pull_all(q, 200)
    results = _settle_halves_at_once(
        q, got, [Settlement.ack, lambda d: Settlement.dead_letter(d, "why")]
    )
    assert sorted(len(r.applied) for r in results) == [100, 100]
    assert all(not r.lost for r in results)
    # first deliveries by Pub/Sub's count (a dead-letter policy): nothing to drop
    assert q._forget == []
    assert store.attempts_of([f"{sub}/{m}" for m in ids]) == {}
    assert len(q.dlq_list()) == 100
    assert q.pull(10, 60) == []
    q.close()


def test_two_threads_settle_counted_deliveries_at_once(
    pubsub_host: str, unique: Callable[[str], str]
) -> None:
    """The same with deliveries steadyq counted (a subscription without a dead-letter
    policy): each settled count is to be dropped once, whichever thread settled it."""

    from steadyq.brokers import pubsub

    publisher, subscriber = pubsub.clients()
    topic, sub = unique("topic"), unique("sub")
    with pubsub.clients_closed(publisher, subscriber):
        topic_path = publisher.create_topic(name=publisher.topic_path(PROJECT, topic)).name
        subscriber.create_subscription(
            name=subscriber.subscription_path(PROJECT, sub), topic=topic_path
        )
    store = MemoryStore()
    q = PubSubQueue(PROJECT, sub, store=store, dlq_topic=f"{topic}-dlq")
    ids = q.publish_batch([(f"m{i}".encode(), None) for i in range(200)])
    got = _pull_all(q, 200)
    assert store.attempts_of([f"{sub}/{m}" for m in ids]) == dict.fromkeys(
        (f"{sub}/{m}" for m in ids), 1
    )
    results = _settle_halves_at_once(q, got, [Settlement.ack, Settlement.ack])
    assert sorted(len(r.applied) for r in results) == [100, 100]
    assert all(not r.lost for r in results)
    assert sorted(q._forget) == sorted(f"{sub}/{m}" for m in ids), "every count to drop, once"
    q._forget_settled()
    assert store.attempts_of([f"{sub}/{m}" for m in ids]) == {}
    assert pubsub.FORGET_BATCH > 200  # so the counts above were still waiting in bulk
    q.close()
