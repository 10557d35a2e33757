"""The telemetry store in memory, for unit tests and embedding.

It keeps every promise of the store contract (docs/store.md) except durability: it
lives and dies with the process. Thread-safe. ``MemoryQueue`` colocates one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from steadyq.telemetry.events import Event, EventFilter, severity_rank
from steadyq.telemetry.store import (
    CLAIM_BUSY,
    CLAIM_COMPLETED,
    CLAIMED,
    COMPLETED,
    FINAL_OUTCOME_KINDS,
    FINISHED_REQUEST_STATUSES,
    RUNNING,
    AttemptCount,
    EventStore,
    ExecutionRecord,
    PruneCounts,
    RequestRecord,
    claim_releases,
    compose_ledger,
    execution_updates,
    ledger_update,
    prune_cut,
)


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
            moves = (m for m in map(ledger_update, events) if m is not None)
            self._ledger.update(compose_ledger(moves, self._rows))

    def _rows(self, ids: Sequence[str]) -> dict[str, RequestRecord]:
        return {r: self._ledger[r] for r in ids if r in self._ledger}

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
        found.sort(key=lambda e: e.timestamp)  # stable: ties stay in write order
        if where.newest_first:
            found.reverse()  # newest first, ties newest-written first (as SQLite's id DESC)
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

    def prune(
        self, older_than_s: float, *, now: float | None = None, dry_run: bool = False
    ) -> PruneCounts:
        cut = prune_cut(older_than_s, now)
        with self._lock:
            events = [i for i, e in enumerate(self._events) if e.timestamp < cut]
            requests = [
                r.request_id
                for r in self._ledger.values()
                if r.status in FINISHED_REQUEST_STATUSES and r.updated_at < cut
            ]
            executions = [
                x.execution_id
                for x in self._executions.values()
                if (ended := x.as_of(cut).finished_at) is not None and ended < cut
            ]
            claims = [r for r, (_owner, until) in self._claims.items() if until < cut]
            counts = PruneCounts(len(events), len(requests), len(executions), len(claims))
            if dry_run:
                return counts
            gone = set(events)
            self._events = [e for i, e in enumerate(self._events) if i not in gone]
            for r in requests:
                del self._ledger[r]
            for x in executions:
                del self._executions[x]
            for r in claims:
                del self._claims[r]
        return counts
