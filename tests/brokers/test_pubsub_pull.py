"""PubSubQueue.pull and settle on a stand-in subscriber: no emulator.

What the one-pass pull and settle must keep: publish order (ids as numbers, a message
pulled twice in one batch), steadyq's attributes kept out of a delivery's attributes,
the replay count read from them, the durable attempt count in each delivery, which
settlements ack, nack or dead-letter, which counts are forgotten, and a moved count
reported as a lost lease.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from google.pubsub_v1.types import PullResponse

from steadyq.brokers.base import Settlement
from steadyq.brokers.pubsub import A_REPLAYS, PubSubQueue, _Names
from steadyq.telemetry.store_memory import MemoryStore

SUB = "projects/p/subscriptions/s"


class _Subscriber:
    """Answers each pull with the next prepared response (then nothing); records the
    acks and ack-deadline changes asked for."""

    def __init__(self, responses: list[Any]) -> None:
        self.responses = list(responses)
        self.acked: list[str] = []
        self.modified: list[tuple[int, list[str]]] = []

    def pull(self, **_: Any) -> Any:
        raw = self.responses.pop(0) if self.responses else PullResponse.pb()()
        return PullResponse.wrap(raw)

    def acknowledge(self, *, request: Any, **_: Any) -> None:
        self.acked += list(request.ack_ids)

    def modify_ack_deadline(self, *, request: Any, **_: Any) -> None:
        self.modified.append((request.ack_deadline_seconds, list(request.ack_ids)))


def _response(*messages: tuple[str, int, int, dict[str, str]], delivery_attempt: int = 0) -> Any:
    """(message id, publish seconds, nanos, attributes) each; ack id ``ack-<id>-<n>``;
    ``delivery_attempt`` as Pub/Sub fills it with a dead-letter policy (0: none)."""
    response = PullResponse.pb()()
    for n, (message_id, seconds, nanos, attributes) in enumerate(messages):
        m = response.received_messages.add()
        m.ack_id = f"ack-{message_id}-{n}"
        m.delivery_attempt = delivery_attempt
        m.message.message_id = message_id
        m.message.data = f"body {message_id}".encode()
        m.message.publish_time.seconds = seconds
        m.message.publish_time.nanos = nanos
        m.message.attributes.update(attributes)
    return response


def _queue(*responses: Any) -> tuple[PubSubQueue, _Subscriber, MemoryStore]:
    store = MemoryStore()
    queue = PubSubQueue("p", "s", store=store)
    subscriber = _Subscriber(list(responses))
    queue._clients = (None, subscriber)
    queue._names = _Names("p", "projects/p/topics/t", SUB, "projects/p/topics/t-dlq", "x", 600)
    queue._pruned = True
    return queue, subscriber, store


def test_pull_keeps_publish_order_and_tells_a_message_pulled_twice_apart() -> None:
    queue, _, _ = _queue(
        _response(
            ("10", 5, 0, {}),
            ("9", 5, 0, {}),  # same instant: the id as a number decides
            ("7", 4, 900, {}),
            ("10", 5, 0, {}),  # the same message twice in one pull
            ("3", 6, 0, {}),
        )
    )
    got = queue.pull(10, 60)
    assert [d.message_id for d in got] == ["7", "9", "10", "10", "3"]
    # both copies are deliveries of their own, in the order received
    assert [d.lease_token.split(" ")[1] for d in got if d.message_id == "10"] == [
        "ack-10-0",
        "ack-10-3",
    ]
    assert got[0].published_at == pytest.approx(4.0000009)
    # a message named twice in one pull is counted once (AttemptCounter's contract)
    assert {d.attempt for d in got} == {1}


def test_pull_keeps_user_attributes_and_reads_the_replay_count() -> None:
    queue, _, _ = _queue(
        _response(
            ("1", 1, 0, {"tenant": "a", "trace": "t1"}),
            ("2", 1, 1, {"tenant": "b", A_REPLAYS: "2", "steadyq_reason": "x"}),
            ("3", 1, 2, {}),
            ("4", 1, 3, {A_REPLAYS: "not a number"}),
        )
    )
    one, two, three, four = queue.pull(10, 60)
    assert (one.attributes, one.replays) == ({"tenant": "a", "trace": "t1"}, 0)
    assert (two.attributes, two.replays) == ({"tenant": "b"}, 2)
    assert (three.attributes, three.replays) == ({}, 0)
    assert (four.attributes, four.replays) == ({}, 0)
    assert one.body == b"body 1"


def test_settle_acks_nacks_and_forgets_in_one_pass() -> None:
    queue, subscriber, store = _queue(
        _response(("1", 1, 0, {}), ("2", 1, 1, {}), ("3", 1, 2, {}), ("4", 1, 3, {}))
    )
    d1, d2, d3, d4 = queue.pull(10, 600)  # the ack deadline: no lease call
    store.count_attempts(["s/4"])  # someone pulled message 4 again since: its lease is lost
    result = queue.settle(
        [
            Settlement.ack(d1),
            Settlement.nack(d2, 30, error="boom", ran=True),
            Settlement.nack(d3, 0),
            Settlement.ack(d4),
        ]
    )
    assert [s.delivery.message_id for s in result.applied] == ["1", "2", "3"]
    assert [s.delivery.message_id for s in result.lost] == ["4"]
    assert subscriber.acked == ["ack-1-0"]
    assert sorted(subscriber.modified) == [(0, ["ack-3-2"]), (30, ["ack-2-1"])]
    queue._forget_settled()
    counts = store.attempts_of(["s/1", "s/2", "s/3", "s/4"])
    assert counts == {"s/2": 1, "s/3": 1, "s/4": 2}  # the acked one is forgotten
    again = queue.settle([Settlement.ack(d2)])  # a settlement settles its lease once
    assert [s.delivery.message_id for s in again.applied] == ["2"]


def test_a_first_delivery_told_by_pubsub_writes_no_count_until_it_has_one_to_keep() -> None:
    """delivery_attempt 1 (a dead-letter policy): no count raised at pull, none to drop
    at ack; a nack with an error or a run starts the count, so the next delivery (2)
    has them; a delivery Pub/Sub says is a redelivery is counted as before."""
    queue, _, store = _queue(
        _response(("1", 1, 0, {}), ("2", 1, 1, {}), ("3", 1, 2, {}), delivery_attempt=1),
        _response(("2", 1, 1, {}), ("3", 1, 2, {}), delivery_attempt=2),
    )
    d1, d2, d3 = queue.pull(10, 600)
    assert [(d.attempt, d.runs, d.last_error) for d in (d1, d2, d3)] == [(1, 0, None)] * 3
    assert store.attempts_of(["s/1", "s/2", "s/3"]) == {}, "nothing written at pull"
    result = queue.settle(
        [Settlement.ack(d1), Settlement.nack(d2, 0, error="boom", ran=True), Settlement.nack(d3, 0)]
    )
    assert len(result.applied) == 3 and not result.lost
    assert queue._forget == [], "an uncounted delivery has no count to drop"
    assert store.attempts_of(["s/1", "s/2", "s/3"]) == {"s/2": 1}, "the run is kept"
    e2, e3 = queue.pull(10, 600)
    assert (e2.attempt, e2.runs, e2.last_error) == (2, 1, "boom")
    # its worker died, or it was nacked with nothing to note: Pub/Sub's count says 2
    assert (e3.attempt, e3.runs, e3.last_error) == (2, 0, None)
    assert store.attempts_of(["s/2", "s/3"]) == {"s/2": 2, "s/3": 1}
    queue.settle([Settlement.ack(e2), Settlement.ack(e3)])
    assert sorted(queue._forget) == ["s/2", "s/3"]


def test_an_uncounted_first_delivery_near_its_lease_end_counted_since_is_a_lost_lease() -> None:
    queue, subscriber, store = _queue(
        _response(("1", 1, 0, {}), ("2", 1, 1, {}), delivery_attempt=1)
    )
    d1, d2 = queue.pull(10, 3)  # a lease shorter than the margin: always looked up
    store.count_attempts(["s/2"])  # pulled again since (its delivery_attempt was 2)
    result = queue.settle([Settlement.ack(d1), Settlement.ack(d2)])
    assert [s.delivery.message_id for s in result.applied] == ["1"]
    assert [s.delivery.message_id for s in result.lost] == ["2"]
    assert subscriber.acked == ["ack-1-0"]


def test_an_uncounted_first_delivery_well_inside_its_lease_is_settled_without_a_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queue, subscriber, store = _queue(
        _response(("1", 1, 0, {}), delivery_attempt=1),
        _response(("2", 1, 0, {}), delivery_attempt=2),
    )
    asked: list[list[str]] = []
    read = store.attempts_of

    def attempts_of(keys: list[str]) -> dict[str, int]:
        asked.append(list(keys))
        return read(keys)

    monkeypatch.setattr(store, "attempts_of", attempts_of)
    [d1] = queue.pull(10, 600)
    assert queue.settle([Settlement.ack(d1)]).applied
    assert asked == [], "nobody else can hold it while its lease runs"
    [d2] = queue.pull(10, 600)  # a redelivery has a count: always looked up
    assert queue.settle([Settlement.ack(d2)]).applied
    assert asked == [["s/2"]]
    assert subscriber.acked == ["ack-1-0", "ack-2-0"]


def test_a_first_delivery_nacked_with_an_error_is_counted_before_pubsub_hears() -> None:
    """The nack's count exists before the nack reaches Pub/Sub: a redelivery pulled the
    moment after (here: from inside the nack call) finds it and raises it to 2, so its
    own settlement is not taken for a lost lease."""
    queue, subscriber, store = _queue(
        _response(("1", 1, 0, {}), delivery_attempt=1),
        _response(("1", 1, 0, {}), delivery_attempt=2),
    )
    [d1] = queue.pull(10, 600)
    again: list[Any] = []
    nack = subscriber.modify_ack_deadline

    def modify_ack_deadline(*, request: Any, **kwargs: Any) -> None:
        nack(request=request, **kwargs)
        again.extend(queue.pull(10, 600))  # another thread's pull, right after the nack

    subscriber.modify_ack_deadline = modify_ack_deadline  # type: ignore[method-assign]
    assert queue.settle([Settlement.nack(d1, 0, error="boom", ran=True)]).applied
    [d2] = again
    assert (d2.attempt, d2.lease_token.split(" ")[0]) == (2, "2")
    assert store.attempts_of(["s/1"]) == {"s/1": 2}
    result = queue.settle([Settlement.ack(d2)])
    assert result.applied and not result.lost


class _SlowSubscriber(_Subscriber):
    """A subscriber ``rtt_s`` away: each pull answers after that long, with up to 10
    fresh messages of ``stock``."""

    def __init__(self, stock: int, rtt_s: float) -> None:
        super().__init__([])
        self.left = list(range(1, stock + 1))
        self.rtt_s = rtt_s
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def pull(self, **_: Any) -> Any:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            taken, self.left = self.left[:10], self.left[10:]
        time.sleep(self.rtt_s)
        with self._lock:
            self.in_flight -= 1
        return PullResponse.wrap(_response(*((str(i), i, 0, {}) for i in taken)))


def _drain_with_read_ahead(queue: PubSubQueue, work_s: float) -> list[str]:
    """A worker's pattern: pull, ask for the next batch ahead, work on this one."""
    seen: list[str] = []
    while got := queue.pull(10, 600):
        seen += [d.message_id for d in got]
        queue.read_ahead(10)
        time.sleep(work_s)
    return seen


@pytest.mark.parametrize(("rtt_s", "work_s"), [(0.06, 0.005), (0.0, 0.08)])
def test_read_ahead_keeps_more_pulls_in_flight_only_while_the_worker_waits_for_them(
    rtt_s: float, work_s: float
) -> None:
    """A round trip longer than the work on a batch left the worker idle for most of
    it with one pull ahead (session 10, 10 ms RTT: 19 of every 26 ms): the read-ahead
    deepens while the worker waits, up to MAX_READ_AHEAD, and stays one deep when it
    does not; either way every message is delivered once."""
    from steadyq.brokers import pubsub

    queue, _, _ = _queue()
    subscriber = _SlowSubscriber(200, rtt_s)
    queue._clients = (None, subscriber)
    seen = _drain_with_read_ahead(queue, work_s)
    assert sorted(seen, key=int) == [str(i) for i in range(1, 201)], "each once"
    depth = queue._transport.ahead_depth
    if rtt_s > work_s:
        assert subscriber.most_in_flight == pubsub.MAX_READ_AHEAD
    else:
        assert subscriber.most_in_flight == 1 and depth == 1
    queue.close()


def test_read_ahead_stays_one_deep_for_a_worker_too_slow_to_take_more_in_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Messages held ahead that the worker does not take within READ_AHEAD_FRESH_S go
    back, and Pub/Sub counts each give-back as a delivery: a worker whose pace would
    not take another pull's worth within a quarter of it waits rather than hold more."""
    from steadyq.brokers import pubsub

    monkeypatch.setattr(pubsub, "READ_AHEAD_FRESH_S", 0.2)  # ~150 msg/s takes 7 in 50 ms
    queue, _, _ = _queue()
    subscriber = _SlowSubscriber(100, 0.06)
    queue._clients = (None, subscriber)
    seen = _drain_with_read_ahead(queue, 0.005)
    assert sorted(seen, key=int) == [str(i) for i in range(1, 101)]
    assert subscriber.most_in_flight == 1 and queue._transport.ahead_depth == 1
    queue.close()


def test_what_is_read_ahead_goes_back_at_close_however_deep() -> None:
    queue, _, _ = _queue()
    subscriber = _SlowSubscriber(100, 0.02)
    queue._clients = (None, subscriber)
    queue._transport.ahead_depth = 3
    queue.read_ahead(10)
    assert len(queue._transport._ahead) == 3
    queue.close()
    returned = [a for deadline, ids in subscriber.modified if deadline == 0 for a in ids]
    assert sorted(returned, key=lambda a: int(a.split("-")[1])) == [
        f"ack-{i}-{n}" for i, n in zip(range(1, 31), [*range(10)] * 3, strict=True)
    ]
