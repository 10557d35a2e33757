"""The queue contract suite: every backend must pass every test here.

A backend's test module subclasses :class:`QueueContract` and provides a
``make_queue`` fixture returning a factory ``(clock) -> Queue``. Times come from
the injected clock, so lease expiry and delays are tested without sleeping.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from steadyq.brokers.base import DlqFilter, Queue, Settlement
from steadyq.errors import LeaseLost, NotFound
from steadyq.telemetry.events import MESSAGE_SUCCEEDED, Event
from steadyq.telemetry.store import EventFilter
from tests.conftest import FakeClock

MakeQueue = Callable[[FakeClock], Queue]


class QueueContract:
    @pytest.fixture
    def q(self, make_queue: MakeQueue, clock: FakeClock) -> Queue:
        return make_queue(clock)

    # -- publish and pull -------------------------------------------------------

    def test_publish_then_pull_returns_bytes_and_attributes(self, q: Queue) -> None:
        mid = q.publish(b"\x00\xffbody", {"source": "smoke"})
        [d] = q.pull(10, 30)
        assert (d.message_id, d.body, dict(d.attributes), d.attempt) == (
            mid,
            b"\x00\xffbody",
            {"source": "smoke"},
            1,
        )

    def test_publish_rejects_non_bytes(self, q: Queue) -> None:
        with pytest.raises(TypeError):
            q.publish("text")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            q.publish(b"x", {"k": 1})  # type: ignore[dict-item]

    def test_publish_batch_keeps_order(self, q: Queue) -> None:
        ids = q.publish_batch([(f"m{i}".encode(), None) for i in range(20)])
        assert len(set(ids)) == 20
        got = q.pull(20, 30)
        assert [d.body for d in got] == [f"m{i}".encode() for i in range(20)]

    def test_pull_respects_max_and_validates(self, q: Queue) -> None:
        q.publish_batch([(b"x", None)] * 5)
        assert len(q.pull(3, 30)) == 3
        assert len(q.pull(10, 30)) == 2
        assert q.pull(10, 30) == []
        with pytest.raises(ValueError):
            q.pull(0, 30)
        with pytest.raises(ValueError):
            q.pull(1, 0)

    def test_leased_message_is_invisible_until_lease_expires(
        self, q: Queue, clock: FakeClock
    ) -> None:
        q.publish(b"x")
        [first] = q.pull(1, 30)
        assert q.pull(1, 30) == []
        clock.advance(29)
        assert q.pull(1, 30) == []
        clock.advance(2)
        [again] = q.pull(1, 30)
        assert again.message_id == first.message_id
        assert again.attempt == 2

    # -- settling -----------------------------------------------------------------

    def test_ack_removes_message(self, q: Queue, clock: FakeClock) -> None:
        q.publish(b"x")
        [d] = q.pull(1, 30)
        q.ack(d)
        clock.advance(60)
        assert q.pull(1, 30) == []
        assert q.stats().ready == 0

    def test_nack_with_delay_redelivers_later_with_attempt_raised(
        self, q: Queue, clock: FakeClock
    ) -> None:
        q.publish(b"x")
        [d] = q.pull(1, 30)
        q.nack(d, 10, error="boom")
        assert q.pull(1, 30) == []
        assert q.stats().delayed == 1
        clock.advance(10)
        [again] = q.pull(1, 30)
        assert again.attempt == 2
        assert again.last_error == "boom"

    def test_settling_after_someone_else_leased_raises_lease_lost(
        self, q: Queue, clock: FakeClock
    ) -> None:
        q.publish(b"x")
        [old] = q.pull(1, 5)
        clock.advance(6)
        [new] = q.pull(1, 5)
        for settle in (q.ack, q.nack):
            with pytest.raises(LeaseLost):
                settle(old)
        with pytest.raises(LeaseLost):
            q.dead_letter(old, "why")
        with pytest.raises(LeaseLost):
            q.extend(old, 30)
        q.ack(new)
        assert q.stats().ready == 0

    def test_expired_but_untaken_lease_can_still_be_acked(self, q: Queue, clock: FakeClock) -> None:
        q.publish(b"x")
        [d] = q.pull(1, 5)
        clock.advance(10)
        q.ack(d)
        assert q.pull(1, 5) == []

    def test_settle_batch_reports_lost_and_applies_the_rest(
        self, q: Queue, clock: FakeClock
    ) -> None:
        q.publish_batch([(b"a", None), (b"b", None)])
        [a] = q.pull(1, 100)
        [b] = q.pull(1, 5)
        clock.advance(6)
        [b_again] = q.pull(2, 5)
        assert b_again.message_id == b.message_id
        result = q.settle([Settlement.ack(a), Settlement.ack(b)])
        assert [s.delivery.message_id for s in result.applied] == [a.message_id]
        assert [s.delivery.message_id for s in result.lost] == [b.message_id]

    def test_extend_keeps_the_lease(self, q: Queue, clock: FakeClock) -> None:
        q.publish(b"x")
        [d] = q.pull(1, 5)
        clock.advance(4)
        d = q.extend(d, 5)
        clock.advance(4)
        assert q.pull(1, 5) == []
        q.ack(d)

    def test_events_ride_with_the_settlement_when_colocated(self, q: Queue) -> None:
        store = q.colocated_store
        if store is None:
            pytest.skip("this queue has no colocated store")
        q.publish(b"x")
        [d] = q.pull(1, 5)
        event = Event(
            kind=MESSAGE_SUCCEEDED,
            timestamp=1.0,
            message_id=d.message_id,
            request_id="6f9619ff-8b86-d011-b42d-00c04fc964ff",
        )
        q.ack(d, [event])
        [stored] = store.events(EventFilter(kinds=(MESSAGE_SUCCEEDED,)))
        assert stored.message_id == d.message_id
        assert store.completed(["6f9619ff-8b86-d011-b42d-00c04fc964ff", "other"]) == {
            "6f9619ff-8b86-d011-b42d-00c04fc964ff"
        }

    def test_lost_settlement_writes_no_events(self, q: Queue, clock: FakeClock) -> None:
        store = q.colocated_store
        if store is None:
            pytest.skip("this queue has no colocated store")
        q.publish(b"x")
        [old] = q.pull(1, 1)
        clock.advance(2)
        q.pull(1, 1)
        q.settle([Settlement.ack(old, [Event(kind=MESSAGE_SUCCEEDED, timestamp=1.0)])])
        assert store.events(EventFilter(kinds=(MESSAGE_SUCCEEDED,))) == []

    # -- dead letters -------------------------------------------------------------

    def test_dead_letter_keeps_everything(self, q: Queue, clock: FakeClock) -> None:
        mid = q.publish(b"\xff raw", {"a": "b"})
        q.pull(1, 1)
        clock.advance(2)
        [d] = q.pull(1, 1)
        q.dead_letter(d, "payload_not_utf8", "not UTF-8")
        assert q.pull(1, 30) == []
        letter = q.dlq_get(mid)
        assert (letter.reason, letter.detail, letter.attempts, letter.payload) == (
            "payload_not_utf8",
            "not UTF-8",
            2,
            b"\xff raw",
        )
        assert dict(letter.attributes) == {"a": "b"}
        assert letter.dead_lettered_at == clock.now
        stats = q.stats()
        assert (stats.ready, stats.in_flight, stats.delayed, stats.dead_lettered) == (0, 0, 0, 1)

    def test_dlq_get_unknown_raises_not_found(self, q: Queue) -> None:
        with pytest.raises(NotFound):
            q.dlq_get("no-such-id")

    def _dead(self, q: Queue, clock: FakeClock, reasons: list[str]) -> list[str]:
        ids = []
        for reason in reasons:
            ids.append(q.publish(reason.encode()))
            [d] = q.pull(1, 5)
            q.dead_letter(d, reason, "")
            clock.advance(10)
        return ids

    def test_dlq_list_filters(self, q: Queue, clock: FakeClock) -> None:
        start = clock.now
        ids = self._dead(q, clock, ["a", "b", "a"])
        assert [d.message_id for d in q.dlq_list()] == ids
        assert [d.message_id for d in q.dlq_list(DlqFilter(reason="a"))] == [ids[0], ids[2]]
        assert [d.message_id for d in q.dlq_list(DlqFilter(since=start + 5))] == ids[1:]
        assert [d.message_id for d in q.dlq_list(DlqFilter(before=start + 5))] == ids[:1]
        assert [d.message_id for d in q.dlq_list(DlqFilter(limit=2))] == ids[:2]
        assert [d.message_id for d in q.dlq_list(DlqFilter(message_ids=(ids[1],)))] == [ids[1]]

    def test_replay_resets_attempts_raises_counter_and_guards_loops(
        self, q: Queue, clock: FakeClock
    ) -> None:
        [mid] = self._dead(q, clock, ["r"])
        for round_ in range(1, 4):
            [(letter, new_id)] = q.dlq_replay(DlqFilter(), max_replays=3)
            assert new_id is not None and letter.replays == round_ - 1
            assert q.dlq_list() == []
            [d] = q.pull(1, 5)
            assert (d.attempt, d.replays, d.body) == (1, round_, b"r")
            q.dead_letter(d, "r", "again")
        [(letter, new_id)] = q.dlq_replay(DlqFilter(), max_replays=3)
        assert new_id is None and letter.replays == 3
        assert len(q.dlq_list()) == 1, "a refused letter stays in the DLQ"
        assert q.pull(1, 5) == []
        assert mid

    def test_replay_dry_run_changes_nothing(self, q: Queue, clock: FakeClock) -> None:
        self._dead(q, clock, ["a", "b"])
        done = q.dlq_replay(DlqFilter(reason="a"), dry_run=True)
        assert [(letter.reason, new) for letter, new in done] == [("a", None)]
        assert len(q.dlq_list()) == 2
        assert q.pull(5, 5) == []

    def test_purge_by_age_and_reason(self, q: Queue, clock: FakeClock) -> None:
        start = clock.now
        self._dead(q, clock, ["old", "old", "new"])
        assert q.dlq_purge(DlqFilter(before=start + 15)) == 2
        assert [d.reason for d in q.dlq_list()] == ["new"]
        assert q.dlq_purge(DlqFilter(reason="nope")) == 0
        assert q.dlq_purge(DlqFilter()) == 1
        assert q.stats().dead_lettered == 0

    # -- stats ----------------------------------------------------------------------

    def test_stats_counts_each_state_and_oldest_age(self, q: Queue, clock: FakeClock) -> None:
        q.publish_batch([(b"x", None)] * 4)
        clock.advance(100)
        leased = q.pull(2, 30)
        q.nack(leased[0], 60)
        stats = q.stats()
        assert (stats.ready, stats.in_flight, stats.delayed) == (2, 1, 1)
        assert stats.oldest_unacked_age_s == pytest.approx(100)
        assert q.stats().to_dict()["dead_lettered"] == 0
