"""A complete in-process queue and store, for unit tests and embedding.

It keeps every promise of the contract except durability: it lives and dies with
the process. Thread-safe.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from steadyq.brokers.base import (
    Attributes,
    DeadLetter,
    Delivery,
    DlqFilter,
    Queue,
    QueueStats,
    Settlement,
    SettleResult,
    check_publish_args,
    check_pull_args,
)
from steadyq.errors import LeaseLost, NotFound
from steadyq.telemetry.events import Event, severity_rank
from steadyq.telemetry.store import (
    CLAIM_BUSY,
    CLAIM_COMPLETED,
    CLAIMED,
    COMPLETED,
    FINAL_OUTCOME_KINDS,
    RUNNING,
    AttemptCount,
    EventFilter,
    EventStore,
    ExecutionRecord,
    RequestRecord,
    apply_ledger_change,
    claim_releases,
    execution_updates,
    ledger_update,
)


@dataclass(slots=True)
class _Message:
    seq: int
    body: bytes
    attributes: dict[str, str]
    published_at: float
    visible_at: float
    attempts: int = 0
    lease_token: str | None = None
    replays: int = 0
    last_error: str | None = None
    runs: int = 0


class MemoryStore(EventStore):
    """Events, executions and the ledger in memory."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._events: list[Event] = []
        self._executions: dict[str, ExecutionRecord] = {}
        self._ledger: dict[str, RequestRecord] = {}
        self._attempts: dict[str, AttemptCount] = {}
        self._attempted_at: dict[str, float] = {}  # when each count was last raised
        self._claims: dict[str, tuple[str, float]] = {}  # request_id -> (owner, until)

    def write(self, events: Sequence[Event]) -> None:
        with self._lock:
            for request_id, owner in claim_releases(events):
                if self._claims.get(request_id, ("", 0.0))[0] == owner:
                    del self._claims[request_id]
            for event in events:
                self._events.append(event)
                change = execution_updates(event)
                if change is not None and event.execution_id is not None:
                    self._apply_execution(event.execution_id, *change)
                moved = ledger_update(event)
                if moved is not None:
                    row = apply_ledger_change(self._ledger.get(moved.request_id), moved)
                    if row is not None:
                        self._ledger[moved.request_id] = row

    def _apply_execution(self, execution_id: str, what: str, values: dict[str, object]) -> None:
        current = self._executions.get(execution_id)
        if what == "start":
            if current is None:
                self._executions[execution_id] = ExecutionRecord(
                    execution_id,
                    RUNNING,
                    float(values["started_at"]),  # type: ignore[arg-type]
                    data=dict(values["data"]),  # type: ignore[call-overload]
                )
        elif current is not None and what == "ready":
            self._executions[execution_id] = replace(
                current,
                ready_at=values["ready_at"],  # type: ignore[arg-type]
            )
        elif current is not None:
            self._executions[execution_id] = replace(
                current,
                finished_at=values["finished_at"],  # type: ignore[arg-type]
                status=str(values["status"]),
                data={**current.data, **values["data"]},  # type: ignore[dict-item]
            )

    def events(self, where: EventFilter | None = None) -> list[Event]:
        where = where or EventFilter()
        rank = None if where.min_severity is None else severity_rank(where.min_severity)
        with self._lock:
            found = [
                e
                for e in self._events
                if (where.kinds is None or e.kind in where.kinds)
                and (where.since is None or e.timestamp >= where.since)
                and (where.until is None or e.timestamp < where.until)
                and (rank is None or severity_rank(e.severity) >= rank)
                and (where.execution_id is None or e.execution_id == where.execution_id)
                and (where.message_id is None or e.message_id == where.message_id)
                and (where.request_id is None or e.request_id == where.request_id)
            ]
        found.sort(key=lambda e: e.timestamp, reverse=where.newest_first)
        return found if where.limit is None else found[: where.limit]

    def executions(
        self, *, since: float | None = None, limit: int | None = None, now: float | None = None
    ) -> list[ExecutionRecord]:
        with self._lock:
            rows = [r for r in self._executions.values() if since is None or r.started_at >= since]
        at = time.time() if now is None else now
        rows = [r.as_of(at) for r in rows]
        rows.sort(key=lambda r: r.started_at, reverse=True)
        return rows if limit is None else rows[:limit]

    def outcomes_of(self, message_ids: Sequence[str]) -> dict[str, Event]:
        wanted = set(message_ids)
        with self._lock:
            return {
                e.message_id: e
                for e in self._events
                if e.message_id in wanted and e.kind in FINAL_OUTCOME_KINDS
            }

    def claim(self, request_ids: Sequence[str], owner: str, until: float) -> dict[str, str]:
        now = time.time()
        found: dict[str, str] = {}
        with self._lock:
            for r in request_ids:
                row = self._ledger.get(r)
                held = self._claims.get(r)
                if row is not None and row.status == COMPLETED:
                    found[r] = CLAIM_COMPLETED
                elif held is not None and held[0] != owner and held[1] > now:
                    found[r] = CLAIM_BUSY
                else:
                    self._claims[r] = (owner, until)
                    found[r] = CLAIMED
        return found

    def extend_claims(self, request_ids: Sequence[str], owner: str, until: float) -> None:
        with self._lock:
            for r in request_ids:
                if self._claims.get(r, ("", 0.0))[0] == owner:
                    self._claims[r] = (owner, until)

    def release_claims(self, request_ids: Sequence[str], owner: str) -> None:
        with self._lock:
            for r in request_ids:
                if self._claims.get(r, ("", 0.0))[0] == owner:
                    del self._claims[r]

    def completed(self, request_ids: Iterable[str]) -> set[str]:
        with self._lock:
            return {
                r
                for r in request_ids
                if (row := self._ledger.get(r)) is not None and row.status == COMPLETED
            }

    def requests(
        self,
        *,
        status: str | None = None,
        request_id: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[RequestRecord]:
        with self._lock:
            rows = [
                r
                for r in self._ledger.values()
                if (status is None or r.status == status)
                and (request_id is None or r.request_id == request_id)
                and (since is None or r.updated_at >= since)
            ]
        rows.sort(key=lambda r: (-r.updated_at, r.request_id))
        return rows if limit is None else rows[:limit]

    def count_attempts(self, keys: Sequence[str]) -> dict[str, AttemptCount]:
        now = time.time()
        with self._lock:
            for key in dict.fromkeys(keys):
                seen = self._attempts.get(key, AttemptCount(0))
                self._attempts[key] = seen._replace(attempts=seen.attempts + 1)
                self._attempted_at[key] = now
            return {key: self._attempts[key] for key in keys}

    def prune_attempts(self, older_than_s: float, *, now: float | None = None) -> int:
        before = (time.time() if now is None else now) - older_than_s
        with self._lock:
            stale = [k for k, at in self._attempted_at.items() if at < before]
            for key in stale:
                self._attempts.pop(key, None)
                self._attempted_at.pop(key, None)
            return len(stale)

    def attempts_of(self, keys: Sequence[str]) -> dict[str, int]:
        with self._lock:
            return {k: self._attempts[k].attempts for k in keys if k in self._attempts}

    def settle_attempts(
        self,
        errors: Mapping[str, str | None],
        forget: Sequence[str] = (),
        ran: Sequence[str] = (),
    ) -> None:
        with self._lock:
            for key, error in errors.items():
                if error is not None and key in self._attempts:
                    self._attempts[key] = self._attempts[key]._replace(last_error=error)
            for key in ran:
                if key in self._attempts:
                    seen = self._attempts[key]
                    self._attempts[key] = seen._replace(runs=seen.runs + 1)
            for key in forget:
                self._attempts.pop(key, None)
                self._attempted_at.pop(key, None)


class MemoryQueue(Queue):
    """The queue contract in memory, with a colocated :class:`MemoryStore`."""

    scheme = "memory"

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.RLock()
        self._seq = itertools.count(1)
        self._messages: dict[int, _Message] = {}
        # (visible_at, seq) of every message, with stale entries skipped on pull: a pull
        # costs O(k log n), not a sort of the whole queue
        self._due: list[tuple[float, int]] = []
        self._dead: dict[str, DeadLetter] = {}
        self._store = MemoryStore()

    def _schedule(self, m: _Message, visible_at: float) -> None:
        m.visible_at = visible_at
        heapq.heappush(self._due, (visible_at, m.seq))

    @property
    def colocated_store(self) -> MemoryStore:
        return self._store

    def publish(self, body: bytes, attributes: Attributes | None = None) -> str:
        return self.publish_batch([(body, attributes)])[0]

    def publish_batch(self, items: Iterable[tuple[bytes, Attributes | None]]) -> list[str]:
        checked = [(bytes(b), check_publish_args(b, a)) for b, a in items]
        now = self.clock()
        with self._lock:
            ids = []
            for body, attrs in checked:
                seq = next(self._seq)
                self._messages[seq] = m = _Message(seq, body, attrs, now, now)
                self._schedule(m, now)
                ids.append(str(seq))
            return ids

    def pull(self, max_messages: int, lease_s: float) -> list[Delivery]:
        check_pull_args(max_messages, lease_s)
        now = self.clock()
        token = secrets.token_hex(8)
        until = now + lease_s
        with self._lock:
            ready: dict[int, _Message] = {}
            due = self._due
            while due and len(ready) < max_messages and due[0][0] <= now:
                at, seq = heapq.heappop(due)
                m = self._messages.get(seq)
                if m is not None and m.visible_at == at:
                    ready[seq] = m
            out = []
            for m in sorted(ready.values(), key=lambda m: m.seq):
                m.attempts += 1
                m.lease_token = token
                self._schedule(m, until)
                out.append(
                    Delivery(
                        str(m.seq),
                        m.body,
                        dict(m.attributes),
                        m.attempts,
                        m.published_at,
                        token,
                        until,
                        m.replays,
                        m.last_error,
                        m.runs,
                    )
                )
            return out

    def _held(self, delivery: Delivery) -> _Message | None:
        m = self._messages.get(int(delivery.message_id))
        return m if m is not None and m.lease_token == delivery.lease_token else None

    def settle(
        self, settlements: Sequence[Settlement], *, events: Sequence[Event] = ()
    ) -> SettleResult:
        """Settle; ``events`` are written first, whatever happens to the settlements."""
        now = self.clock()
        applied: list[Settlement] = []
        lost: list[Settlement] = []
        with self._lock:
            if events:
                self._store.write(events)
            for item in settlements:
                m = self._held(item.delivery)
                if m is None:
                    lost.append(item)
                    continue
                if item.action == "ack":
                    del self._messages[m.seq]
                elif item.action == "nack":
                    m.lease_token = None
                    self._schedule(m, now + max(0.0, item.delay_s))
                    if item.detail is not None:
                        m.last_error = item.detail
                    m.runs += item.ran
                else:
                    del self._messages[m.seq]
                    self._dead[str(m.seq)] = DeadLetter(
                        message_id=str(m.seq),
                        request_id=item.request_id,
                        reason=item.reason or "unspecified",
                        detail=item.detail or "",
                        attempts=m.attempts,
                        payload=m.body,
                        attributes=dict(m.attributes),
                        published_at=m.published_at,
                        dead_lettered_at=now,
                        replays=m.replays,
                    )
                applied.append(item)
                if item.events:
                    self._store.write(item.events)
        return SettleResult(tuple(applied), tuple(lost))

    def extend(self, delivery: Delivery, lease_s: float) -> Delivery:
        check_pull_args(1, lease_s)
        until = self.clock() + lease_s
        with self._lock:
            m = self._held(delivery)
            if m is None:
                raise LeaseLost(f"message {delivery.message_id} was leased again")
            self._schedule(m, until)
        return replace(delivery, leased_until=until)

    def stats(self) -> QueueStats:
        now = self.clock()
        with self._lock:
            msgs = list(self._messages.values())
            dead = len(self._dead)
        return QueueStats(
            ready=sum(m.visible_at <= now for m in msgs),
            in_flight=sum(m.visible_at > now and m.lease_token is not None for m in msgs),
            delayed=sum(m.visible_at > now and m.lease_token is None for m in msgs),
            dead_lettered=dead,
            oldest_unacked_age_s=(
                max(0.0, now - min(m.published_at for m in msgs)) if msgs else None
            ),
        )

    def dlq_list(self, where: DlqFilter | None = None) -> list[DeadLetter]:
        where = where or DlqFilter()
        with self._lock:
            letters = sorted(
                (d for d in self._dead.values() if where.matches(d)),
                key=lambda d: (d.dead_lettered_at, d.message_id),
            )
        return letters if where.limit is None else letters[: where.limit]

    def dlq_get(self, message_id: str) -> DeadLetter:
        with self._lock:
            try:
                return self._dead[message_id]
            except KeyError:
                raise NotFound(f"no dead letter with message id {message_id!r}") from None

    def dlq_replay(
        self, where: DlqFilter, *, max_replays: int = 3, dry_run: bool = False
    ) -> list[tuple[DeadLetter, str | None]]:
        now = self.clock()
        out: list[tuple[DeadLetter, str | None]] = []
        with self._lock:
            for letter in self.dlq_list(where):
                if dry_run or letter.replays >= max_replays:
                    out.append((letter, None))
                    continue
                seq = next(self._seq)
                self._messages[seq] = m = _Message(
                    seq,
                    letter.payload,
                    dict(letter.attributes),
                    now,
                    now,
                    replays=letter.replays + 1,
                )
                self._schedule(m, now)
                del self._dead[letter.message_id]
                out.append((letter, str(seq)))
        return out

    def dlq_purge(self, where: DlqFilter) -> int:
        with self._lock:
            doomed = self.dlq_list(where)
            for letter in doomed:
                del self._dead[letter.message_id]
        return len(doomed)
