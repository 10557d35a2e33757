"""A complete in-process queue, for unit tests and embedding, with a colocated
:class:`~steadyq.telemetry.store_memory.MemoryStore`.

It keeps every promise of the contract except durability: it lives and dies with
the process. Thread-safe.
"""

from __future__ import annotations

import heapq
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Sequence
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
    dlq_cut,
)
from steadyq.errors import LeaseLost, NotFound
from steadyq.telemetry.events import Event
from steadyq.telemetry.store_memory import MemoryStore


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

    def dlq_expire(self, older_than_s: float, now: float | None = None) -> int:
        cut = dlq_cut(older_than_s, self.clock() if now is None else now)
        return 0 if cut is None else self.dlq_purge(DlqFilter(before=cut))
