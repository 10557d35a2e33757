"""The queue contract suite: every backend must pass every test here.

A backend's test module subclasses :class:`QueueContract` and provides a
``make_queue`` fixture returning a factory ``(clock) -> Queue``. Times come from
the injected clock, so lease expiry and delays are tested without sleeping.

Two capability flags of the queue shape what a test may expect (a test never
skips for them):

* ``clock_driven`` False (Pub/Sub): the broker's server keeps lease and delay time,
  so :meth:`QueueContract.wait` also waits for real. Leases and delays here are
  therefore a few seconds, which any backend must handle the same way.
* ``counts_backlog`` False: ``stats()`` may not know ready / in-flight / delayed /
  dead-lettered counts; it must then say so in ``notes``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from steadyq.brokers.base import Delivery, DlqFilter, Queue, Settlement
from steadyq.errors import LeaseLost, NotFound
from steadyq.telemetry.events import MESSAGE_SUCCEEDED, Event
from steadyq.telemetry.store import EventFilter
from tests.conftest import FakeClock

MakeQueue = Callable[[FakeClock], Queue]


class QueueContract:
    @pytest.fixture
    def q(self, make_queue: MakeQueue, clock: FakeClock) -> Queue:
        return make_queue(clock)

    @staticmethod
    def wait(q: Queue, clock: FakeClock, seconds: float) -> None:
        """Let ``seconds`` pass for the queue's leases and delays."""
        clock.advance(seconds)
        if not q.clock_driven:
            time.sleep(seconds)

    @staticmethod
    def counts(q: Queue) -> tuple[int | None, int | None, int | None] | None:
        """(ready, in_flight, delayed), or None when the queue has no such figures
        (it must say so in ``notes``)."""
        stats = q.stats()
        if q.counts_backlog:
            return stats.ready, stats.in_flight, stats.delayed
        assert stats.notes, "a queue without backlog figures says why in stats().notes"
        return None

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

    def test_read_ahead_delivers_nothing_by_itself(self, q: Queue) -> None:
        ids = q.publish_batch([(f"m{i}".encode(), None) for i in range(6)])
        q.read_ahead(4)  # a hint: whatever it fetched, only pulls deliver
        first = q.pull(2, 30)
        q.read_ahead(4)
        rest = q.pull(10, 30)
        got = first + rest
        assert len(first) == 2
        assert sorted(d.message_id for d in got) == sorted(ids)
        assert {d.attempt for d in got} == {1}
        assert q.pull(10, 30) == []

    def test_leased_message_is_invisible_until_lease_expires(
        self, q: Queue, clock: FakeClock
    ) -> None:
        q.publish(b"x")
        [first] = q.pull(1, 2)
        assert q.pull(1, 2) == []
        self.wait(q, clock, 1)
        assert q.pull(1, 2) == []
        self.wait(q, clock, 2)
        [again] = q.pull(1, 2)
        assert again.message_id == first.message_id
        assert again.attempt == 2

    # -- settling -----------------------------------------------------------------

    def test_ack_removes_message(self, q: Queue, clock: FakeClock) -> None:
        q.publish(b"x")
        [d] = q.pull(1, 30)
        q.ack(d)
        clock.advance(60)
        assert q.pull(1, 30) == []
        assert self.counts(q) in (None, (0, 0, 0))

    def test_nack_with_delay_redelivers_later_with_attempt_raised(
        self, q: Queue, clock: FakeClock
    ) -> None:
        q.publish(b"x")
        [d] = q.pull(1, 30)
        q.nack(d, 2, error="boom")
        assert q.pull(1, 30) == []
        assert self.counts(q) in (None, (0, 0, 1))
        self.wait(q, clock, 3)
        [again] = q.pull(1, 30)
        assert again.attempt == 2
        assert again.last_error == "boom"

    def test_runs_count_only_nacks_of_a_handler_run(self, q: Queue, clock: FakeClock) -> None:
        def next_delivery(lease_s: float) -> Delivery:
            for _ in range(80):  # a network queue redelivers a nack within moments
                got = q.pull(1, lease_s)
                if got:
                    return got[0]
                self.wait(q, clock, 0.5)
            raise AssertionError("not delivered again")

        q.publish(b"x")
        [d] = q.pull(1, 30)
        assert d.runs == 0
        q.settle([Settlement.nack(d, 0, error="ValueError: boom", ran=True)])
        d = next_delivery(30)
        assert (d.attempt, d.runs, d.last_error) == (2, 1, "ValueError: boom")
        q.settle([Settlement.nack(d, 0)])  # given back without a run
        d = next_delivery(30)
        assert (d.attempt, d.runs) == (3, 1)

    def test_settling_after_someone_else_leased_raises_lease_lost(
        self, q: Queue, clock: FakeClock
    ) -> None:
        q.publish(b"x")
        [old] = q.pull(1, 1)
        self.wait(q, clock, 2)
        [new] = q.pull(1, 30)
        for settle in (q.ack, q.nack):
            with pytest.raises(LeaseLost):
                settle(old)
        with pytest.raises(LeaseLost):
            q.dead_letter(old, "why")
        with pytest.raises(LeaseLost):
            q.extend(old, 30)
        q.ack(new)
        assert self.counts(q) in (None, (0, 0, 0))
        assert q.pull(1, 5) == []

    def test_expired_but_untaken_lease_can_still_be_acked(self, q: Queue, clock: FakeClock) -> None:
        q.publish(b"x")
        [d] = q.pull(1, 1)
        self.wait(q, clock, 2)
        q.ack(d)
        assert q.pull(1, 5) == []

    def test_settle_batch_reports_lost_and_applies_the_rest(
        self, q: Queue, clock: FakeClock
    ) -> None:
        q.publish_batch([(b"a", None), (b"b", None)])
        [a] = q.pull(1, 100)
        [b] = q.pull(1, 1)
        self.wait(q, clock, 2)
        [b_again] = q.pull(2, 30)
        assert b_again.message_id == b.message_id
        result = q.settle([Settlement.ack(a), Settlement.ack(b)])
        assert [s.delivery.message_id for s in result.applied] == [a.message_id]
        assert [s.delivery.message_id for s in result.lost] == [b.message_id]

    def test_extend_keeps_the_lease(self, q: Queue, clock: FakeClock) -> None:
        q.publish(b"x")
        [d] = q.pull(1, 3)
        self.wait(q, clock, 2)
        d = q.extend(d, 3)
        self.wait(q, clock, 2)
        assert q.pull(1, 5) == [], "without the extension the lease would have expired"
        q.ack(d)

    def test_events_ride_with_the_settlement_when_colocated(self, q: Queue) -> None:
        store = q.colocated_store
        q.publish(b"x")
        [d] = q.pull(1, 5)
        event = Event(
            kind=MESSAGE_SUCCEEDED,
            timestamp=1.0,
            message_id=d.message_id,
            request_id="6f9619ff-8b86-d011-b42d-00c04fc964ff",
        )
        q.ack(d, [event])
        if store is None:
            # no store of its own: the events are the caller's to write; the ack holds
            assert q.pull(1, 5) == []
            return
        [stored] = store.events(EventFilter(kinds=(MESSAGE_SUCCEEDED,)))
        assert stored.message_id == d.message_id
        assert store.completed(["6f9619ff-8b86-d011-b42d-00c04fc964ff", "other"]) == {
            "6f9619ff-8b86-d011-b42d-00c04fc964ff"
        }

    def test_lost_settlement_writes_no_events(self, q: Queue, clock: FakeClock) -> None:
        store = q.colocated_store
        q.publish(b"x")
        [old] = q.pull(1, 1)
        self.wait(q, clock, 2)
        [new] = q.pull(1, 30)
        result = q.settle([Settlement.ack(old, [Event(kind=MESSAGE_SUCCEEDED, timestamp=1.0)])])
        assert [s.delivery.message_id for s in result.lost] == [new.message_id]
        if store is not None:
            assert store.events(EventFilter(kinds=(MESSAGE_SUCCEEDED,))) == []

    # -- dead letters -------------------------------------------------------------

    def test_dead_letter_keeps_everything(self, q: Queue, clock: FakeClock) -> None:
        mid = q.publish(b"\xff raw", {"a": "b"})
        q.pull(1, 1)
        self.wait(q, clock, 2)
        [d] = q.pull(1, 30)
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
        assert self.counts(q) in (None, (0, 0, 0))
        assert q.stats().dead_lettered in ((1,) if q.counts_backlog else (1, None))

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
        assert q.dlq_list() == []
        assert q.stats().dead_lettered in ((0,) if q.counts_backlog else (0, None))

    # -- stats ----------------------------------------------------------------------

    def test_stats_counts_each_state_and_oldest_age(self, q: Queue, clock: FakeClock) -> None:
        q.publish_batch([(b"x", None)] * 4)
        clock.advance(100)
        leased = q.pull(2, 30)
        q.nack(leased[0], 60)
        if self.counts(q) is None:
            assert q.stats().to_dict()["notes"], "no figures, and it says why"
            return
        stats = q.stats()
        assert (stats.ready, stats.in_flight, stats.delayed) == (2, 1, 1)
        assert stats.oldest_unacked_age_s == pytest.approx(100)
        assert q.stats().to_dict()["dead_lettered"] == 0
