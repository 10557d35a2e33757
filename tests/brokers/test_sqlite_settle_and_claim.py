"""SqliteQueue.settle_and_claim: a pass's settlements and the claims of the next pulled
batch in one transaction, doing exactly what settle() then store.claim() do."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import steadyq.brokers.sqlite as sqlite_queue_module
from steadyq.brokers.base import Settlement
from steadyq.brokers.sqlite import SqliteQueue
from steadyq.errors import BackendError
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import CLAIM_BUSY, CLAIM_COMPLETED, CLAIMED, COMPLETED, EventFilter

OWNER = "exec-a"
OTHER = "exec-b"


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[SqliteQueue]:
    q = SqliteQueue.from_url(f"sqlite:///{tmp_path / 'q.db'}")
    yield q
    q.close()


def succeeded(message_id: str, request_id: str, owner: str = OWNER) -> Event:
    return Event(
        kind=ev.MESSAGE_SUCCEEDED,
        timestamp=time.time(),
        execution_id=owner,
        message_id=message_id,
        request_id=request_id,
        attempt=1,
    )


def test_settles_and_claims_as_the_two_calls_would(queue: SqliteQueue) -> None:
    store = queue.colocated_store
    queue.publish_batch([(b"a", None), (b"b", None), (b"c", None)])
    first, second, third = queue.pull(3, 30)
    until = time.time() + 60
    # r-busy is another execution's; r-done completes in this very call; r-new is free
    assert store.claim(["r-busy"], OTHER, until) == {"r-busy": CLAIMED}
    assert store.claim(["r-done"], OWNER, until) == {"r-done": CLAIMED}
    received = Event(kind=ev.MESSAGE_RECEIVED, timestamp=time.time(), execution_id=OWNER,
                     message_id=third.message_id)  # fmt: skip
    result, found = queue.settle_and_claim(
        [
            Settlement.ack(first, [succeeded(first.message_id, "r-done")]),
            Settlement.nack(second, 0.0),
        ],
        ["r-new", "r-busy", "r-done", "r-new"],
        OWNER,
        until,
        events=[received],
    )
    assert [s.delivery.message_id for s in result.applied] == [first.message_id, second.message_id]
    assert result.lost == ()
    # the claim sees what the settlements recorded: r-done's success came first
    assert found == {"r-new": CLAIMED, "r-busy": CLAIM_BUSY, "r-done": CLAIM_COMPLETED}
    assert store.requests(request_id="r-done")[0].status == COMPLETED
    kinds = [e.kind for e in store.events(EventFilter())]
    assert kinds == [ev.MESSAGE_RECEIVED, ev.MESSAGE_SUCCEEDED]
    stats = queue.stats()
    assert (stats.ready, stats.in_flight) == (1, 1)  # the nacked one is ready, c still leased
    # r-new is this owner's now: another execution finds it busy
    assert store.claim(["r-new"], OTHER, until) == {"r-new": CLAIM_BUSY}


def test_an_outcome_in_the_call_frees_its_claim_for_the_claim_after_it(
    queue: SqliteQueue,
) -> None:
    store = queue.colocated_store
    queue.publish(b"a")
    (d,) = queue.pull(1, 30)
    until = time.time() + 60
    store.claim(["r1"], OTHER, until)
    failed = Event(kind=ev.MESSAGE_FAILED, timestamp=time.time(), execution_id=OTHER,
                   message_id=d.message_id, request_id="r1", attempt=1)  # fmt: skip
    # OTHER's failure (its outcome) releases its claim, so this owner gets it
    _, found = queue.settle_and_claim(
        [Settlement.nack(d, 0.0, events=[failed])], ["r1"], OWNER, until
    )
    assert found == {"r1": CLAIMED}


def test_a_lost_lease_is_reported_and_the_claims_still_taken(queue: SqliteQueue) -> None:
    queue.publish(b"a")
    (stale,) = queue.pull(1, 0.001)
    time.sleep(0.01)
    (fresh,) = queue.pull(1, 30)  # another consumer took it
    result, found = queue.settle_and_claim(
        [Settlement.ack(stale, [succeeded(stale.message_id, "r1")])],
        ["r2"],
        OWNER,
        time.time() + 60,
    )
    assert result.applied == () and len(result.lost) == 1
    assert found == {"r2": CLAIMED}
    # the lost settlement's events are not written: r1 is not completed
    assert queue.colocated_store.requests(request_id="r1") == []
    assert queue.stats().in_flight == 1 and fresh.message_id == stale.message_id


def test_nothing_to_settle_writes_the_events_and_claims(queue: SqliteQueue) -> None:
    note = Event(kind="log", timestamp=time.time(), severity="WARNING", message="x")
    result, found = queue.settle_and_claim([], ["r1"], OWNER, time.time() + 60, events=[note])
    assert result.applied == () and result.lost == ()
    assert found == {"r1": CLAIMED}
    assert [e.message for e in queue.colocated_store.events(EventFilter())] == ["x"]


def test_a_failure_settles_writes_and_claims_nothing(
    queue: SqliteQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = queue.colocated_store
    queue.publish(b"a")
    (d,) = queue.pull(1, 30)

    def broken(*args: object) -> dict[str, str]:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(sqlite_queue_module, "claim_in", broken)
    with pytest.raises(BackendError):
        queue.settle_and_claim(
            [Settlement.ack(d, [succeeded(d.message_id, "r1")])], ["r2"], OWNER, time.time() + 60
        )
    monkeypatch.undo()
    assert queue.stats().in_flight == 1  # not acked
    assert store.events(EventFilter()) == []
    assert store.requests() == []
    # nothing claimed: another execution may take r2
    assert store.claim(["r2"], OTHER, time.time() + 60) == {"r2": CLAIMED}
    # and the same call succeeds once the cause is gone
    result, found = queue.settle_and_claim(
        [Settlement.ack(d, [succeeded(d.message_id, "r1")])], ["r3"], OWNER, time.time() + 60
    )
    assert len(result.applied) == 1 and found == {"r3": CLAIMED}
