"""Prometheus metrics: a worker's own (from its events) and a store's view (from SQL).

Both speak the same names, documented in ``docs/dashboard.md``. ``prometheus_client``
is an optional dependency (``steadyq[dashboard]``) and is imported only here; import
this module only when metrics are asked for.

* :class:`WorkerMetrics` is fed every event a running worker emits (the worker's
  ``sink`` callback) and is served on ``steadyq worker --metrics-port``.
* :class:`StoreCollector` reads a SQLite or PostgreSQL store's events and executions
  tables incrementally (by event id: a scrape reads only the events written since the
  last one) and the queue's live counts; ``steadyq dashboard`` serves it on ``/metrics``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from steadyq._sql import Holes, id_marks, is_sqlite, sqlite_spelled
from steadyq.brokers.base import Queue, QueueStats
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event

#: Upper bounds (seconds) of the handler duration histogram: a fast gate-style
#: handler up to the incident's 30-minute task timeout.
DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)

#: The outcome label of each message event kind.
OUTCOMES = {
    ev.MESSAGE_SUCCEEDED: "succeeded",
    ev.MESSAGE_REJECTED: "rejected",
    ev.MESSAGE_DEAD_LETTERED: "dead_lettered",
    ev.MESSAGE_DUPLICATE: "duplicate",
    ev.MESSAGE_FAILED: "failed",
    ev.MESSAGE_TIMED_OUT: "timed_out",
}
_TIMED_KINDS = (ev.MESSAGE_SUCCEEDED, ev.MESSAGE_FAILED, ev.MESSAGE_TIMED_OUT)
#: The worker logs the start of a backend outage once, with this text first.
OUTAGE_PREFIX = "backend unavailable"

_HELP = {
    "messages": "Settled or retried deliveries, by outcome and reason.",
    "attempts": "Delivery attempts (messages pulled, retries included).",
    "duration": "Handler time of an attempt (succeeded, failed or timed out).",
    "executions": "Finished executions, by status.",
    "running": "Executions started and not finished.",
    "outages": "Backend outages a worker backed off from.",
    "ready": "Messages deliverable now.",
    "in_flight": "Messages leased to a worker and not yet settled.",
    "delayed": "Messages waiting out a retry delay.",
    "dead": "Messages in the dead-letter queue.",
    "oldest": "Age of the oldest message still in the queue.",
}


def _is_outage(event: Event) -> bool:
    return event.kind == ev.LOG and event.message.startswith(OUTAGE_PREFIX)


def queue_families(stats: QueueStats | None) -> Iterator[Metric]:
    """Gauges of a queue's counts; a figure the backend cannot give is left out."""
    figures: list[tuple[str, str, float | int | None]] = [
        ("steadyq_queue_ready_messages", _HELP["ready"], None),
        ("steadyq_queue_in_flight_messages", _HELP["in_flight"], None),
        ("steadyq_queue_delayed_messages", _HELP["delayed"], None),
        ("steadyq_queue_dead_lettered_messages", _HELP["dead"], None),
        ("steadyq_queue_oldest_unacked_age_seconds", _HELP["oldest"], None),
    ]
    if stats is not None:
        values = (
            stats.ready,
            stats.in_flight,
            stats.delayed,
            stats.dead_lettered,
            stats.oldest_unacked_age_s,
        )
        figures = [(n, h, v) for (n, h, _), v in zip(figures, values, strict=True)]
    for name, text, value in figures:
        family = GaugeMetricFamily(name, text)
        if value is not None:
            family.add_metric([], float(value))
        yield family


class _QueueGauges(Collector):
    def __init__(self, stats: Callable[[], QueueStats | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        yield from queue_families(self._stats())


class WorkerMetrics:
    """A running worker's metrics, kept from the events it emits.

    Pass :meth:`observe` (or the object itself) as, or inside, the worker's sink.
    ``queue_stats`` is called at each scrape for the queue gauges; it returns None
    (gauges left empty) when the queue cannot answer.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        queue_stats: Callable[[], QueueStats | None] | None = None,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.messages = Counter(
            "steadyq_messages", _HELP["messages"], ["outcome", "reason"], registry=r
        )
        self.attempts = Counter("steadyq_delivery_attempts", _HELP["attempts"], registry=r)
        self.duration = Histogram(
            "steadyq_handler_duration_seconds",
            _HELP["duration"],
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.executions = Counter("steadyq_executions", _HELP["executions"], ["status"], registry=r)
        self.running = Gauge("steadyq_executions_running", _HELP["running"], registry=r)
        self.outages = Counter("steadyq_backend_outages", _HELP["outages"], registry=r)
        if queue_stats is not None:
            r.register(_QueueGauges(queue_stats))

    def observe(self, event: Event) -> None:
        kind = event.kind
        outcome = OUTCOMES.get(kind)
        if outcome is not None:
            self.messages.labels(outcome, event.reason or "").inc()
            if kind in _TIMED_KINDS and event.duration_ms is not None:
                self.duration.labels(outcome).observe(event.duration_ms / 1000.0)
        elif kind == ev.MESSAGE_RECEIVED:
            self.attempts.inc()
        elif kind == ev.EXECUTION_STARTED:
            self.running.inc()
        elif kind == ev.EXECUTION_FINISHED:
            self.running.dec()
            self.executions.labels(str(event.data.get("status", "failed"))).inc()
        elif _is_outage(event):
            self.outages.inc()

    __call__ = observe


class _Totals:
    """Running totals of a store's events, advanced by event id."""

    def __init__(self) -> None:
        self.last_id = 0
        self.messages: dict[tuple[str, str], int] = {}
        self.attempts = 0
        self.outages = 0
        # per outcome: bucket counts (non-cumulative, one per bound plus +Inf), sum
        self.buckets: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}


_TIMED_KIND_SQL = ",".join(f"'{k}'" for k in _TIMED_KINDS)
# a duration's bucket: the number of bounds below it (CASE, not a sum of comparisons:
# PostgreSQL does not add booleans)
_BUCKET_SQL = " + ".join(
    f"CASE WHEN duration_ms > {b * 1000:g} THEN 1 ELSE 0 END" for b in DURATION_BUCKETS
)


class StoreCollector(Collector):
    """The store's view in Prometheus terms: totals over the whole history.

    ``db`` is the store's :class:`~steadyq._sqlite.SqliteDatabase` or
    :class:`~steadyq._postgres.PostgresDatabase`; the statements are written once, in
    SQLite's spelling (:func:`~steadyq._sql.sqlite_spelled`). The first scrape reads
    every message event once (on a 10 M-event store: seconds); each later one reads
    only the events added since, by the primary key. ``queue_stats`` gives the queue
    gauges.
    """

    def __init__(self, db: Any, queue_stats: Callable[[], QueueStats | None]) -> None:
        self._db = db
        self._queue_stats = queue_stats
        self._totals = _Totals()
        self._lock = threading.Lock()
        self._holes = Holes(not is_sqlite(db))

    def refresh(self, batch: int = 200_000) -> None:
        """Read the events written since the last refresh into the totals, by id
        ranges of at most ``batch`` ids (a transaction each), and on PostgreSQL the
        events committed since below ids already read (:class:`~steadyq._sql.Holes`)."""
        with self._lock:
            t = self._totals
            with sqlite_spelled(self._db) as conn:
                # two statements: SQLite answers min() or max() from the key's ends only
                # when the aggregate is alone in its statement
                top = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]
                low = conn.execute("SELECT coalesce(min(id), 1) - 1 FROM events").fetchone()[0]
            # a store pruned before the first read: start at its oldest event (a few
            # ids missing below it may be events not committed yet: read as holes)
            if int(low) - t.last_id > self._holes.widest:
                t.last_id = int(low)
            while t.last_id < top:
                high = min(t.last_id + batch, int(top))
                with sqlite_spelled(self._db, snapshot=True) as conn:
                    seen = self._add(conn, "id > ? AND id <= ?", (t.last_id, high))
                    if self._holes.tracked and seen < high - t.last_id:
                        ids = conn.execute(
                            "SELECT id FROM events WHERE id > ? AND id <= ? ORDER BY id",
                            (t.last_id, high),
                        )
                        self._holes.passed(t.last_id, [int(r[0]) for r in ids], upto=high)
                t.last_id = high
            late = self._holes.pending()
            for at in range(0, len(late), 500):
                chunk = late[at : at + 500]
                with sqlite_spelled(self._db, snapshot=True) as conn:
                    marks = id_marks(chunk)
                    found = [
                        int(r[0])
                        for r in conn.execute(f"SELECT id FROM events WHERE id IN ({marks})", chunk)
                    ]
                    if found:
                        self._add(conn, f"id IN ({id_marks(found)})", found)
                self._holes.filled(found)

    def _add(self, conn: Any, ids: str, params: Sequence[Any]) -> int:
        """Add the events that ``ids`` (a condition on ``id`` alone) selects to the
        totals; how many events there were.

        One pass over the rows by the primary key, grouped in SQL: no condition on
        ``kind``, which would let PostgreSQL's planner (without statistics, its
        autovacuum off) AND in the ``(kind, ts)`` index over every event of the kind.
        """
        t = self._totals
        rows = conn.execute(
            f"SELECT kind, coalesce(reason, ''), CASE WHEN kind IN ({_TIMED_KIND_SQL})"
            f" AND duration_ms IS NOT NULL THEN {_BUCKET_SQL} END, count(*), sum(duration_ms),"
            f" sum(CASE WHEN kind = '{ev.LOG}' AND message LIKE ? THEN 1 ELSE 0 END)"
            f" FROM events WHERE {ids} GROUP BY 1, 2, 3",
            (OUTAGE_PREFIX + "%", *params),
        )
        seen = 0
        for kind, reason, index, n, total_ms, outages in rows:
            seen += int(n)
            t.outages += int(outages or 0)
            if kind == ev.MESSAGE_RECEIVED:
                t.attempts += int(n)
            outcome = OUTCOMES.get(kind)
            if outcome is None:
                continue
            key = (outcome, reason)
            t.messages[key] = t.messages.get(key, 0) + int(n)
            if index is not None:
                counts = t.buckets.setdefault(outcome, [0] * (len(DURATION_BUCKETS) + 1))
                counts[int(index)] += int(n)
                t.sums[outcome] = t.sums.get(outcome, 0.0) + float(total_ms) / 1000.0
        return seen

    def collect(self) -> Iterator[Metric]:
        self.refresh()
        t = self._totals
        messages = CounterMetricFamily(
            "steadyq_messages", _HELP["messages"], labels=["outcome", "reason"]
        )
        for (outcome, reason), n in sorted(t.messages.items()):
            messages.add_metric([outcome, reason], n)
        yield messages
        yield CounterMetricFamily("steadyq_delivery_attempts", _HELP["attempts"], value=t.attempts)
        duration = HistogramMetricFamily(
            "steadyq_handler_duration_seconds", _HELP["duration"], labels=["outcome"]
        )
        for outcome, counts in sorted(t.buckets.items()):
            cumulative, running = [], 0
            for bound, n in zip((*DURATION_BUCKETS, float("inf")), counts, strict=True):
                running += n
                cumulative.append(("+Inf" if bound == float("inf") else f"{bound:g}", running))
            duration.add_metric([outcome], cumulative, sum_value=t.sums.get(outcome, 0.0))
        yield duration
        executions = CounterMetricFamily(
            "steadyq_executions", _HELP["executions"], labels=["status"]
        )
        running = 0
        with sqlite_spelled(self._db) as conn:
            rows = conn.execute("SELECT status, count(*) FROM executions GROUP BY status")
            for status, n in rows:
                if status == "running":
                    running = int(n)
                else:
                    executions.add_metric([str(status)], int(n))
        yield executions
        yield GaugeMetricFamily("steadyq_executions_running", _HELP["running"], value=running)
        yield CounterMetricFamily("steadyq_backend_outages", _HELP["outages"], value=t.outages)
        yield from queue_families(self._queue_stats())


def safe_stats(queue: Queue) -> Callable[[], QueueStats | None]:
    """A ``queue_stats`` callable that answers None instead of raising."""
    from steadyq.errors import BackendError

    def stats() -> QueueStats | None:
        try:
            return queue.stats()
        except BackendError:
            return None

    return stats
