"""The EventStore contract suite: every store must pass every test here.

The contract in prose is docs/store.md. Stores are listed once, in
``tests/stores/test_contract.py``'s ``STORES``: a name and a *factory*. A factory
is a context manager that sets up an empty database for one test and yields an
``open`` function; each call of ``open()`` returns a store object on that database
(a new connection where the backend has connections; the memory store returns its
one object). On leaving, the factory closes what it opened and drops the database.

Adding a store is adding one line to ``STORES``::

    STORES = {..., "postgres": postgres_store}

with ``postgres_store(tmp_path)`` a ``@contextmanager`` that creates a schema of its
own (a unique name), yields ``lambda: PostgresStore(...)`` and drops the schema; a
factory whose service is absent calls ``tests.conftest.require_service(False, why)``
(skips locally, fails under ``CI=true``).

Times: the store's own clock is the wall clock (claims lapse by it), so tests write
events at fixed epoch times and pass ``now`` where a method takes one.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from steadyq.errors import ConfigError
from steadyq.gate import REASONS
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event, EventFilter
from steadyq.telemetry.reader import Reader, StoreReader
from steadyq.telemetry.store import (
    CLAIM_BUSY,
    CLAIM_COMPLETED,
    CLAIMED,
    EventStore,
    PruneCounts,
    RequestRecord,
)

Open = Callable[[], EventStore]
StoreFactory = Callable[[Path], AbstractContextManager[Open]]

GATE_REASON = REASONS[0]
T0 = 1_700_000_000.0  # events are written at T0 + n (in the past: claims use the wall clock)


def rid() -> str:
    return str(uuid.uuid4())


def e(kind: str, at: float, **fields: Any) -> Event:
    return Event(kind=kind, timestamp=T0 + at, **fields)


def row(store: EventStore, request_id: str) -> RequestRecord:
    [found] = store.requests(request_id=request_id)
    return found


class StoreContract:
    """Subclasses provide ``store_factory`` (a fixture returning a StoreFactory)."""

    @pytest.fixture
    def opener(self, store_factory: StoreFactory, tmp_path: Path) -> Iterator[Open]:
        with store_factory(tmp_path) as open_:
            yield open_

    @pytest.fixture
    def store(self, opener: Open) -> EventStore:
        return opener()

    # -- events ---------------------------------------------------------------------

    def test_events_round_trip_every_field_oldest_first(self, store: EventStore) -> None:
        full = e(
            ev.MESSAGE_FAILED,
            2,
            severity="ERROR",
            message="boom <b>",
            execution_id="x1",
            message_id="m1",
            request_id="r1",
            attempt=2,
            reason="handler_error",
            duration_ms=12.5,
            data={"nested": {"a": [1, "two"]}, "n": 3},
        )
        bare = e(ev.LOG, 1)
        store.write([full, bare])
        assert store.events() == [bare, full]
        assert store.events(EventFilter(newest_first=True)) == [full, bare]

    def test_event_filters_narrow_and_combine(self, store: EventStore) -> None:
        batch = [
            e(ev.MESSAGE_RECEIVED, 1, execution_id="x1", message_id="1", request_id="a"),
            e(ev.LOG, 2, severity="WARNING", execution_id="x1", message="careful"),
            e(ev.MESSAGE_FAILED, 3, severity="ERROR", execution_id="x2", message_id="2"),
            e(ev.MESSAGE_SUCCEEDED, 4, execution_id="x2", message_id="1", request_id="a"),
            e(ev.LOG, 5, severity="DEBUG"),
        ]
        store.write(batch)

        def at(where: EventFilter) -> list[float]:
            return [x.timestamp - T0 for x in store.events(where)]

        assert at(EventFilter(kinds=(ev.LOG,))) == [2, 5]
        assert at(EventFilter(since=T0 + 2, until=T0 + 4)) == [2, 3], "since in, until out"
        assert at(EventFilter(min_severity="WARNING")) == [2, 3]
        assert at(EventFilter(execution_id="x2")) == [3, 4]
        assert at(EventFilter(message_id="1")) == [1, 4]
        assert at(EventFilter(request_id="a")) == [1, 4]
        assert at(EventFilter(limit=2)) == [1, 2]
        assert at(EventFilter(limit=2, newest_first=True)) == [5, 4]
        assert at(EventFilter(kinds=(ev.LOG, ev.MESSAGE_FAILED), min_severity="ERROR")) == [3]
        assert at(EventFilter(kinds=())) == []

    def test_events_at_the_same_time_keep_their_write_order(self, store: EventStore) -> None:
        store.write([e(ev.LOG, 1, message="a"), e(ev.LOG, 1, message="b")])
        store.write([e(ev.LOG, 1, message="c"), e(ev.LOG, 0, message="first")])
        assert [x.message for x in store.events()] == ["first", "a", "b", "c"]
        newest = store.events(EventFilter(newest_first=True))
        assert [x.message for x in newest] == ["c", "b", "a", "first"]

    def test_writes_from_another_store_object_are_seen(self, opener: Open) -> None:
        first, second = opener(), opener()
        first.write([e(ev.LOG, 1, message="from the first")])
        assert [x.message for x in second.events()] == ["from the first"]

    # -- executions -----------------------------------------------------------------

    def test_execution_moves_started_ready_finished(self, store: EventStore) -> None:
        start = {"host": "h1", "max_runtime_s": 600, "counts": {}}
        store.write([e(ev.EXECUTION_STARTED, 10, execution_id="x", data=start)])
        [running] = store.executions(now=T0 + 11)
        assert (running.status, running.ready_at, running.finished_at) == ("running", None, None)
        store.write([e(ev.EXECUTION_READY, 12, execution_id="x")])
        finish = {"status": "succeeded", "counts": {"succeeded": 3}}
        store.write([e(ev.EXECUTION_FINISHED, 40, execution_id="x", data=finish)])
        [done] = store.executions(now=T0 + 50)
        assert done.status == "succeeded"
        assert (done.startup_s, done.duration_s) == (2.0, 30.0)
        assert done.data["host"] == "h1" and done.data["counts"] == {"succeeded": 3}
        assert done.data["max_runtime_s"] == 600, "the finish's data merges into the start's"

    def test_execution_start_once_and_orphans_ignored(self, store: EventStore) -> None:
        store.write([e(ev.EXECUTION_STARTED, 1, execution_id="x", data={"host": "a"})])
        store.write([e(ev.EXECUTION_STARTED, 5, execution_id="x", data={"host": "b"})])
        store.write([e(ev.EXECUTION_READY, 2, execution_id="nobody")])
        store.write([e(ev.EXECUTION_FINISHED, 3, execution_id="nobody2", data={})])
        [only] = store.executions(now=T0 + 6)
        assert (only.execution_id, only.started_at, only.data["host"]) == ("x", T0 + 1, "a")

    def test_executions_since_limit_newest_first(self, store: EventStore) -> None:
        store.write([e(ev.EXECUTION_STARTED, n, execution_id=f"x{n}", data={}) for n in (3, 1, 2)])
        assert [x.execution_id for x in store.executions(now=T0 + 9)] == ["x3", "x2", "x1"]
        assert [x.execution_id for x in store.executions(since=T0 + 2, now=T0 + 9)] == [
            "x3",
            "x2",
        ]
        assert [x.execution_id for x in store.executions(limit=1, now=T0 + 9)] == ["x3"]

    def test_a_running_execution_past_its_budget_reads_timed_out(self, store: EventStore) -> None:
        store.write([e(ev.EXECUTION_STARTED, 0, execution_id="x", data={"max_runtime_s": 60})])
        [inside] = store.executions(now=T0 + 60)
        assert inside.status == "running"
        [past] = store.executions(now=T0 + 61)
        assert (past.status, past.finished_at) == ("timed_out", T0 + 60)

    # -- the ledger: one rule, every store ------------------------------------------

    def test_ledger_pending_processing_completed_is_final(self, store: EventStore) -> None:
        r = rid()
        store.write([e(ev.MESSAGE_PUBLISHED, 1, request_id=r, message_id="m1")])
        assert row(store, r).status == "pending"
        asked = {"request": {"modalities": ["video"], "o": {"a": 1}}}
        store.write([e(ev.MESSAGE_RECEIVED, 2, request_id=r, attempt=1, data=asked)])
        first = row(store, r)
        assert (first.status, first.started_at, first.attempts) == ("processing", T0 + 2, 1)
        store.write([e(ev.MESSAGE_FAILED, 3, request_id=r, attempt=1, message="boom")])
        assert (row(store, r).status, row(store, r).error) == ("pending", "boom")
        store.write([e(ev.MESSAGE_RECEIVED, 4, request_id=r, attempt=2, execution_id="x2")])
        result = {"ledger": {"artifacts": {"video": "a.mp4"}, "o": {"b": 2}, "gone": None}}
        store.write(
            [
                e(
                    ev.MESSAGE_SUCCEEDED,
                    5,
                    request_id=r,
                    attempt=2,
                    duration_ms=1500.0,
                    data={"result": result},
                )
            ]
        )
        # later moves of any kind, in later writes, change nothing
        store.write(
            [
                e(ev.MESSAGE_RECEIVED, 6, request_id=r, attempt=3, data=asked),
                e(ev.MESSAGE_DEAD_LETTERED, 7, request_id=r, reason="max_attempts_exceeded"),
                e(ev.MESSAGE_PUBLISHED, 8, request_id=r),
            ]
        )
        final = row(store, r)
        assert final == RequestRecord(
            request_id=r,
            status="completed",
            updated_at=T0 + 5,
            message_id="m1",
            execution_id="x2",
            attempts=2,
            fields={
                "modalities": ["video"],
                "o": {"a": 1, "b": 2},
                "artifacts": {"video": "a.mp4"},
            },
            duration_s=1.5,
            error="boom",
            created_at=T0 + 1,
            started_at=T0 + 4,
            completed_at=T0 + 5,
            failed_at=None,
        )
        assert store.completed([r]) == {r}

    def test_ledger_failed_by_rejection_or_dead_letter(self, store: EventStore) -> None:
        rejected, dead = rid(), rid()
        store.write(
            [
                e(ev.MESSAGE_REJECTED, 1, request_id=rejected, reason="schema", message="no topic"),
                e(ev.MESSAGE_RECEIVED, 1, request_id=dead, attempt=3),
                e(ev.MESSAGE_DEAD_LETTERED, 2, request_id=dead, reason="max_attempts_exceeded"),
            ]
        )
        a, b = row(store, rejected), row(store, dead)
        assert (a.status, a.error, a.failed_at) == ("failed", "schema: no topic", T0 + 1)
        assert (b.status, b.error, b.failed_at) == ("failed", "max_attempts_exceeded", T0 + 2)
        assert b.started_at == T0 + 1
        # failed is not final: a replayed copy may still complete it
        store.write([e(ev.MESSAGE_SUCCEEDED, 3, request_id=dead)])
        assert row(store, dead).status == "completed" and row(store, dead).failed_at == T0 + 2

    def test_ledger_ignores_events_without_a_request_or_that_move_none(
        self, store: EventStore
    ) -> None:
        r = rid()
        store.write(
            [
                e(ev.MESSAGE_RECEIVED, 1, message_id="m"),  # no request id
                e(ev.MESSAGE_DUPLICATE, 2, request_id=r),
                e(ev.LOG, 3, request_id=r, severity="ERROR", message="x"),
            ]
        )
        assert store.requests() == []

    def test_ledger_fields_json_cannot_hold_are_left_out(self, store: EventStore) -> None:
        r = rid()
        request = {"modalities": ("text",), "when": Path("a/b"), "gone": None}
        store.write([e(ev.MESSAGE_RECEIVED, 1, request_id=r, data={"request": request})])
        bad = {"ledger": {"score": float("nan")}}
        store.write([e(ev.MESSAGE_SUCCEEDED, 2, request_id=r, data={"result": bad})])
        assert row(store, r).status == "completed"
        assert row(store, r).fields == {"modalities": ["text"], "when": "a/b"}

    def test_one_write_composes_like_one_write_each(self, opener: Open) -> None:
        """Several moves of one request in one write end as writing them one by one,
        and as the rule applied in memory (compose_ledger over no stored rows)."""
        from steadyq.telemetry.store import compose_ledger, ledger_update

        rng = random.Random(7)
        together = opener()
        rids = [rid() for _ in range(6)]
        at = 1000.0
        batches = []
        for _ in range(40):
            batch = []
            for _ in range(rng.randint(1, 12)):
                at += 1
                batch.append(_random_event(rng, rng.choice(rids), at))
            batches.append(batch)
            together.write(batch)
        expected: dict[str, RequestRecord] = {}
        for batch in batches:
            for event in batch:
                moves = [m for m in [ledger_update(event)] if m is not None]
                expected.update(compose_ledger(moves, lambda ids: expected))
        got = {r.request_id: r for r in together.requests()}
        assert got == expected
        assert any(r.status == "completed" for r in got.values())

    def test_completed_stays_final_against_a_concurrent_writer(self, opener: Open) -> None:
        """Two store objects write moves of the same requests at once; whichever
        commits first, a request that completed stays completed, as completed."""
        a, b = opener(), opener()
        ids = [rid() for _ in range(40)]
        errors: list[BaseException] = []

        def churn() -> None:
            try:
                for n in range(3):
                    for r in ids:
                        a.write(
                            [
                                e(ev.MESSAGE_RECEIVED, 10 + n, request_id=r, attempt=n + 2),
                                e(ev.MESSAGE_FAILED, 10 + n, request_id=r, message="late"),
                            ]
                        )
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        worker = threading.Thread(target=churn)
        worker.start()
        for r in ids:
            b.write([e(ev.MESSAGE_SUCCEEDED, 5, request_id=r, attempt=1, execution_id="b")])
        worker.join(timeout=120)
        assert not worker.is_alive() and not errors, errors
        for r in ids:
            final = row(b, r)
            assert (final.status, final.completed_at, final.attempts) == (
                "completed",
                T0 + 5,
                1,
            ), final
        assert b.completed(ids) == set(ids)

    def test_requests_filter_and_order(self, store: EventStore) -> None:
        x, y, z = "x" + rid(), "y" + rid(), "z" + rid()
        store.write(
            [
                e(ev.MESSAGE_PUBLISHED, 1, request_id=x),
                e(ev.MESSAGE_SUCCEEDED, 3, request_id=y),
                e(ev.MESSAGE_SUCCEEDED, 3, request_id=z),
            ]
        )
        assert [r.request_id for r in store.requests()] == [y, z, x], "newest, then by id"
        assert [r.request_id for r in store.requests(status="pending")] == [x]
        assert [r.request_id for r in store.requests(since=T0 + 2)] == [y, z]
        assert [r.request_id for r in store.requests(limit=1)] == [y]
        assert [r.request_id for r in store.requests(request_id=x)] == [x]

    def test_completed_answers_for_many_ids_at_once(self, store: EventStore) -> None:
        done = [rid() for _ in range(1200)]
        store.write([e(ev.MESSAGE_SUCCEEDED, 1, request_id=r) for r in done])
        store.write([e(ev.MESSAGE_RECEIVED, 1, request_id="open")])
        asked = [*done, *done[:5], "open", "never-seen"]
        assert store.completed(asked) == set(done)
        assert store.completed([]) == set()
        assert store.completed(iter(["open"])) == set()

    def test_outcomes_of_is_each_messages_final_outcome(self, store: EventStore) -> None:
        store.write(
            [
                e(ev.MESSAGE_RECEIVED, 1, message_id="1"),
                e(ev.MESSAGE_FAILED, 2, message_id="1"),
                e(ev.MESSAGE_SUCCEEDED, 3, message_id="1", request_id="r1"),
                e(ev.MESSAGE_DUPLICATE, 4, message_id="2"),
                e(ev.MESSAGE_REJECTED, 5, message_id="3", reason="schema"),
                e(ev.MESSAGE_DEAD_LETTERED, 6, message_id="4"),
                e(ev.MESSAGE_TIMED_OUT, 7, message_id="5"),  # retried: no outcome yet
            ]
        )
        found = store.outcomes_of(["1", "2", "3", "4", "5", "6", "1"])
        assert {m: x.kind for m, x in found.items()} == {
            "1": ev.MESSAGE_SUCCEEDED,
            "2": ev.MESSAGE_DUPLICATE,
            "3": ev.MESSAGE_REJECTED,
            "4": ev.MESSAGE_DEAD_LETTERED,
        }
        assert found["1"].request_id == "r1" and found["3"].reason == "schema"
        assert store.outcomes_of([]) == {}

    # -- claims ---------------------------------------------------------------------

    def test_claim_busy_completed_and_again_by_its_owner(self, store: EventStore) -> None:
        free, done = rid(), rid()
        store.write([e(ev.MESSAGE_SUCCEEDED, 1, request_id=done)])
        later = time.time() + 600
        assert store.claim([free, done, free], "x1", later) == {
            free: CLAIMED,
            done: CLAIM_COMPLETED,
        }
        assert store.claim([free], "x1", later) == {free: CLAIMED}, "its owner again"
        assert store.claim([free], "x2", later) == {free: CLAIM_BUSY}
        assert store.claim([], "x2", later) == {}

    def test_a_lapsed_claim_is_free_and_extend_keeps_it(self, store: EventStore) -> None:
        lapsed, held = rid(), rid()
        store.claim([lapsed, held], "x1", time.time() - 1)
        store.extend_claims([held], "x1", time.time() + 600)
        store.extend_claims([lapsed], "x9", time.time() + 600)  # not x9's: left alone
        assert store.claim([lapsed, held], "x2", time.time() + 600) == {
            lapsed: CLAIMED,
            held: CLAIM_BUSY,
        }

    def test_release_by_its_owner_only(self, store: EventStore) -> None:
        r = rid()
        store.claim([r], "x1", time.time() + 600)
        store.release_claims([r], "x2")
        assert store.claim([r], "x2", time.time() + 600) == {r: CLAIM_BUSY}
        store.release_claims([r], "x1")
        assert store.claim([r], "x2", time.time() + 600) == {r: CLAIMED}

    def test_outcome_events_release_their_executions_claims(self, store: EventStore) -> None:
        retried, succeeded, foreign, received = rid(), rid(), rid(), rid()
        until = time.time() + 600
        store.claim([retried, succeeded, foreign, received], "x1", until)
        store.write(
            [
                e(ev.MESSAGE_FAILED, 1, request_id=retried, execution_id="x1"),
                e(ev.MESSAGE_SUCCEEDED, 1, request_id=succeeded, execution_id="x1"),
                e(ev.MESSAGE_SUCCEEDED, 1, request_id=foreign, execution_id="x7"),
                e(ev.MESSAGE_RECEIVED, 1, request_id=received, execution_id="x1"),
            ]
        )
        assert store.claim([retried, succeeded, received], "x2", until) == {
            retried: CLAIMED,
            succeeded: CLAIM_COMPLETED,
            received: CLAIM_BUSY,  # a received event decides nothing
        }
        assert store.claim([foreign], "x2", until) == {foreign: CLAIM_COMPLETED}
        store.write([e(ev.MESSAGE_DEAD_LETTERED, 2, request_id=received, execution_id="x1")])
        assert store.claim([received], "x2", until) == {received: CLAIMED}

    # -- retention ------------------------------------------------------------------

    def test_prune_drops_old_finished_telemetry_and_keeps_the_rest(self, store: EventStore) -> None:
        old_done, old_failed, old_pending, new_done = rid(), rid(), rid(), rid()
        store.write(
            [
                e(ev.MESSAGE_SUCCEEDED, 10, request_id=old_done),
                e(ev.MESSAGE_REJECTED, 10, request_id=old_failed, reason="schema"),
                e(ev.MESSAGE_PUBLISHED, 10, request_id=old_pending),
                e(ev.EXECUTION_STARTED, 10, execution_id="finished", data={}),
                e(ev.EXECUTION_FINISHED, 20, execution_id="finished", data={"status": "failed"}),
                e(ev.EXECUTION_STARTED, 10, execution_id="killed", data={"max_runtime_s": 30}),
                e(ev.EXECUTION_STARTED, 10, execution_id="long", data={"max_runtime_s": 9000}),
                e(ev.EXECUTION_STARTED, 10, execution_id="no-budget", data={}),
                e(ev.EXECUTION_STARTED, 105, execution_id="recent", data={}),
                e(ev.EXECUTION_FINISHED, 106, execution_id="recent", data={"status": "succeeded"}),
                e(ev.MESSAGE_SUCCEEDED, 150, request_id=new_done),
            ]
        )
        now = T0 + 200  # cut at T0 + 100
        store.claim(["lapsed"], "x1", now - 150)
        store.claim(["live"], "x1", time.time() + 600)
        expected = PruneCounts(events=8, requests=2, executions=2, claims=1)
        assert store.prune(100, now=now, dry_run=True) == expected
        assert len(store.events()) == 11, "a dry run drops nothing"
        assert store.prune(100, now=now) == expected
        assert [x.timestamp - T0 for x in store.events()] == [105, 106, 150]
        assert {r.request_id for r in store.requests()} == {old_pending, new_done}
        kept = {x.execution_id for x in store.executions(now=T0 + 101)}
        assert kept == {"long", "no-budget", "recent"}
        assert store.claim(["lapsed", "live"], "x2", time.time() + 600) == {
            "lapsed": CLAIMED,
            "live": CLAIM_BUSY,
        }
        assert store.prune(100, now=now) == PruneCounts()

    def test_prune_refuses_a_cut_that_is_not_positive(self, store: EventStore) -> None:
        for bad in (0, -1, float("nan")):
            with pytest.raises(ValueError):
                store.prune(bad)

    def test_prune_takes_more_than_one_chunk(self, store: EventStore) -> None:
        store.write([e(ev.LOG, n / 1000) for n in range(12_000)])
        store.write([e(ev.LOG, 50)])
        assert store.prune(10, now=T0 + 30).events == 12_000
        assert len(store.events()) == 1

    # -- what other parts ask of a store --------------------------------------------

    def test_its_watch_reader_agrees_with_the_generic_one(self, store: EventStore) -> None:
        store.write(
            [
                e(ev.EXECUTION_STARTED, 0, execution_id="x", data={"max_runtime_s": 100}),
                e(ev.EXECUTION_READY, 2, execution_id="x"),
                e(ev.MESSAGE_RECEIVED, 3, message_id="1", request_id="a"),
                e(ev.MESSAGE_REJECTED, 4, message_id="2", reason=GATE_REASON, duration_ms=0.5),
                e(ev.LOG, 4, severity="WARNING", reason=GATE_REASON, message="refused"),
                e(ev.MESSAGE_FAILED, 5, severity="ERROR", message="boom", request_id="a"),
                e(ev.LOG, 6, severity="ERROR", message="boom"),
                e(ev.MESSAGE_SUCCEEDED, 7, message_id="1", request_id="a"),
                e(ev.EXECUTION_FINISHED, 8, execution_id="x", data={"status": "succeeded"}),
            ]
        )
        own = store.watch_reader()
        assert isinstance(own, Reader)
        generic = StoreReader(store)
        a, b = T0, T0 + 10

        def figures(reader: Reader) -> tuple[Any, ...]:
            with reader.session():
                return (
                    reader.kind_counts(a, b),
                    reader.warnings(a, b),
                    list(reader.rejections(a, b)),
                    list(reader.failures(a, b)),
                    list(reader.texts(a, b)),
                    list(reader.startups(a, b)),
                    reader.executions_started(a, b),
                    reader.executions_open_at(T0 + 5),
                    reader.executions_by_id(["x", "nobody"]),
                )

        mine = figures(own)
        assert mine == figures(generic)
        assert mine[1] == 3 and mine[4] == [("boom", 2)]

    def test_sqlite_store_is_itself_or_a_config_error(self, store: EventStore) -> None:
        try:
            same = store.sqlite_store("this test")
        except ConfigError as exc:
            assert "this test" in str(exc) and "sqlite" in str(exc).lower()
        else:
            assert same is store


_KINDS = (
    ev.MESSAGE_PUBLISHED,
    ev.MESSAGE_RECEIVED,
    ev.MESSAGE_FAILED,
    ev.MESSAGE_TIMED_OUT,
    ev.MESSAGE_SUCCEEDED,
    ev.MESSAGE_REJECTED,
    ev.MESSAGE_DEAD_LETTERED,
    ev.MESSAGE_DUPLICATE,
)


def _random_event(rng: random.Random, request_id: str, at: float) -> Event:
    kind = rng.choice(_KINDS)
    data: dict[str, Any] = {}
    if kind in (ev.MESSAGE_PUBLISHED, ev.MESSAGE_RECEIVED) and rng.random() < 0.7:
        asked = rng.choice([["text"], ["video"], ["text", "video"]])
        data = {"request": {"modalities": asked, "o": {"a": rng.choice([1, None])}}}
    if kind == ev.MESSAGE_SUCCEEDED and rng.random() < 0.7:
        ledger = {"modalities": ("text",), "artifacts": {"text": f"a/{request_id}.md"}}
        data = {"result": {"ledger": {**ledger, "o": {"b": rng.choice([2, None])}}}}
    return Event(
        kind,
        at,
        message=rng.choice(["", "boom"]),
        execution_id=rng.choice([None, "e1", "e2"]),
        message_id=rng.choice([None, "1", "2"]),
        request_id=request_id,
        attempt=rng.choice([None, 1, 2, 3]),
        reason=rng.choice([None, "handler_error"]),
        duration_ms=rng.choice([None, 12.5]),
        data=data,
    )
