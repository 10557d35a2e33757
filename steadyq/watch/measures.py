"""The measures catalogue, and the engine that reads it from the event store.

A :class:`Snapshotter` walks a watch window checkpoint by checkpoint. Each
:meth:`~Snapshotter.advance` reads only the events of the new interval and returns
the interval's figures and the cumulative ones; the cumulative figures are the
interval aggregates merged (counts add, minimum and maximum merge, percentiles come
from kept samples or a mergeable sketch, error patterns and per-request failures
merge), so a checkpoint costs in proportion to its interval, never to the history.
``docs/measures.md`` documents every name, its unit, and its no-data rule.

The rules that make interval and cumulative figures agree:

* an execution belongs to the interval in which it *ends*: when it finishes, or, if it
  has not finished by then, when its time budget (``max_runtime_s`` from its
  ``execution.started`` data, else the snapshotter's) runs out — a worker killed by
  its platform never writes ``execution.finished``, so it is counted ``timed_out``
  at its deadline, once;
* ``executions.running`` is a gauge: started before ``until`` and not ended by then;
* a rejection is "redelivered" when its ``message_id`` was already rejected earlier in
  the window (an attempt number above 1 alone is not enough: a poison message left
  over from before the fix arrives with the old worker's attempts on it);
* a request counts in ``requests.failed_in_multiple_executions`` in the interval in
  which it fails in its second distinct execution of the window;
* counts are 0 (never None) when the store could be read and nothing happened;
  statistics of an empty set (a duration with no execution ended, a percentile with no
  sample, a success rate with nothing finished) are None, which the judge treats as
  no data.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from steadyq.brokers.base import Queue
from steadyq.gate import REASONS
from steadyq.telemetry import events as ev
from steadyq.telemetry.store import (
    FAILED,
    INTERRUPTED,
    SUCCEEDED,
    TIMED_OUT,
    EventStore,
)
from steadyq.watch.sources.store import ExecutionRow, Reader, positive, reader_for

__all__ = [
    "MEASURES",
    "QUEUE_MEASURES",
    "Figures",
    "Measure",
    "Snapshotter",
    "Value",
    "is_measure",
    "sample_queue",
]

Value = float | int | None

COUNT: Final = "count"
RATIO: Final = "ratio"
SECONDS: Final = "seconds"
MS: Final = "ms"
GAUGE: Final = "gauge"


@dataclass(frozen=True)
class Measure:
    """One entry of the catalogue. ``kind`` is count, ratio, seconds, ms or gauge."""

    name: str
    unit: str
    description: str
    kind: str


def _catalogue() -> dict[str, Measure]:
    rows: list[tuple[str, str, str, str]] = [
        ("executions.total", "count", COUNT, "executions ended in the scope plus those running"),
        ("executions.succeeded", "count", COUNT, "executions that ended with status succeeded"),
        ("executions.failed", "count", COUNT, "executions that ended failed (or unknown status)"),
        (
            "executions.timed_out",
            "count",
            COUNT,
            "executions that ended timed_out, or ran past their max_runtime_s without"
            " finishing (killed by the platform)",
        ),
        ("executions.interrupted", "count", COUNT, "executions stopped by a second signal"),
        (
            "executions.running",
            "count",
            GAUGE,
            "executions started before the checkpoint and not ended at it",
        ),
        (
            "executions.success_rate",
            "ratio",
            RATIO,
            "succeeded / ended executions, 0..1; no data when none ended",
        ),
        ("executions.duration_s.avg", "s", SECONDS, "mean run time of ended executions"),
        ("executions.duration_s.min", "s", SECONDS, "shortest run time of ended executions"),
        ("executions.duration_s.max", "s", SECONDS, "longest run time of ended executions"),
        (
            "executions.duration_s.p95",
            "s",
            SECONDS,
            "95th percentile (nearest rank) of ended executions' run times",
        ),
        ("executions.startup_s.avg", "s", SECONDS, "mean time from started to ready"),
        ("executions.startup_s.max", "s", SECONDS, "longest time from started to ready"),
        ("messages.received", "count", COUNT, "deliveries pulled (message.received)"),
        ("messages.succeeded", "count", COUNT, "handler successes (message.succeeded)"),
        ("messages.failed", "count", COUNT, "failed handler attempts (message.failed)"),
        ("messages.timed_out", "count", COUNT, "handler attempts past their hard deadline"),
        ("messages.rejected", "count", COUNT, "deliveries the gate refused (all reasons)"),
        (
            "messages.rejected.redelivered",
            "count",
            COUNT,
            "rejections of a message already rejected earlier in the window: a"
            " rejection that did not stick",
        ),
        (
            "messages.rejection_latency_ms.p99",
            "ms",
            MS,
            "99th percentile of the gate's time to reject (within 1 %)",
        ),
        ("messages.dead_lettered", "count", COUNT, "messages dead-lettered by the handler path"),
        (
            "messages.to_dlq",
            "count",
            COUNT,
            "messages that entered the dead-letter queue: rejected plus dead-lettered",
        ),
        ("messages.duplicate", "count", COUNT, "deliveries of an already completed request"),
        (
            "requests.failed_in_multiple_executions",
            "count",
            COUNT,
            "request_ids that failed, timed out or were dead-lettered in two or more"
            " distinct executions of the window",
        ),
        ("logs.warnings", "count", COUNT, "events of severity WARNING and above"),
        ("errors.patterns", "count", COUNT, "distinct error templates (Drain3) in the scope"),
        (
            "errors.new_patterns",
            "count",
            COUNT,
            "error templates in the scope that no baseline template matches; no data"
            " without a baseline",
        ),
        ("queue.ready", "count", GAUGE, "messages deliverable now, sampled at the checkpoint"),
        ("queue.in_flight", "count", GAUGE, "messages leased, sampled at the checkpoint"),
        ("queue.delayed", "count", GAUGE, "messages waiting out a retry delay"),
        (
            "queue.oldest_unacked_age_s",
            "s",
            GAUGE,
            "age of the oldest message still in the queue, sampled at the checkpoint",
        ),
        ("dlq.size", "count", GAUGE, "messages in the dead-letter queue at the checkpoint"),
    ]
    for reason in REASONS:
        rows.append(
            (f"messages.rejected.{reason}", "count", COUNT, f"rejections with reason {reason}")
        )
    return {name: Measure(name, unit, description, kind) for name, unit, kind, description in rows}


MEASURES: Final[dict[str, Measure]] = _catalogue()

# Filled by the watch from sample_queue() at each checkpoint; the snapshotter leaves None.
QUEUE_MEASURES: Final = (
    "queue.ready",
    "queue.in_flight",
    "queue.delayed",
    "queue.oldest_unacked_age_s",
    "dlq.size",
)


def is_measure(name: str) -> bool:
    """Whether ``name`` is in the catalogue (per-reason rejections included)."""
    return name in MEASURES


def sample_queue(queue: Queue) -> dict[str, float | int | None]:
    """The queue measures now; None where the backend has no figure.

    Raises:
        BackendError: the queue could not be read.
    """
    stats = queue.stats()
    return {
        "queue.ready": stats.ready,
        "queue.in_flight": stats.in_flight,
        "queue.delayed": stats.delayed,
        "queue.oldest_unacked_age_s": stats.oldest_unacked_age_s,
        "dlq.size": stats.dead_lettered,
    }


@dataclass
class Figures:
    """Every catalogue measure over ``[start, end)`` (epoch seconds); None means no data."""

    start: float
    end: float
    values: dict[str, Value]
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "end": self.end,
            "values": dict(self.values),
            "details": json.loads(json.dumps(self.details)),
        }


# -- mergeable pieces -------------------------------------------------------------

_ENDED_STATUSES: Final = (SUCCEEDED, FAILED, TIMED_OUT, INTERRUPTED)
_MINED_CHARS: Final = 1000  # Drain3 tokenises the head of very long texts only
_EXAMPLE_CHARS: Final = 2000
_MAX_DURATION_POINTS: Final = 2000
_MAX_LISTED: Final = 100


def _nearest_rank(percent: int, count: int) -> int:
    """1-based nearest rank of a percentile, in integers (no float rounding surprises)."""
    return max(1, (percent * count + 99) // 100)


class _Sketch:
    """A mergeable log-bucket histogram (DDSketch) with 1 % relative accuracy.

    Rejections can number in the hundreds of thousands over a window; keeping every
    latency would make each cumulative percentile cost the whole history.
    """

    _ALPHA: Final = 0.01
    _GAMMA: Final = (1 + _ALPHA) / (1 - _ALPHA)
    _LOG_GAMMA: Final = math.log(_GAMMA)

    __slots__ = ("bins", "count", "maximum", "minimum", "zeros")

    def __init__(self) -> None:
        self.bins: Counter[int] = Counter()
        self.zeros = 0
        self.count = 0
        self.minimum = math.inf
        self.maximum = -math.inf

    def add(self, value: float) -> None:
        self.count += 1
        self.minimum = min(self.minimum, value)
        self.maximum = max(self.maximum, value)
        if value <= 0.0:
            self.zeros += 1
        else:
            self.bins[math.ceil(math.log(value) / self._LOG_GAMMA)] += 1

    def merge(self, other: _Sketch) -> None:
        self.bins.update(other.bins)
        self.zeros += other.zeros
        self.count += other.count
        self.minimum = min(self.minimum, other.minimum)
        self.maximum = max(self.maximum, other.maximum)

    def quantile(self, percent: int) -> float | None:
        if self.count == 0:
            return None
        rank = _nearest_rank(percent, self.count)
        if rank <= self.zeros:
            return max(self.minimum, 0.0)
        seen = self.zeros
        for index in sorted(self.bins):
            seen += self.bins[index]
            if seen >= rank:
                estimate = 2 * self._GAMMA**index / (self._GAMMA + 1)
                return min(max(estimate, self.minimum), self.maximum)
        return self.maximum  # pragma: no cover - the bins add up to count


@dataclass(slots=True)
class _Pattern:
    count: int
    example: str


@dataclass(slots=True)
class _Aggregate:
    """What one interval contributed; aggregates merge into the cumulative one."""

    kinds: Counter[str] = field(default_factory=Counter)
    warnings: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    redelivered: int = 0
    rejected_late_attempt: int = 0
    latency: _Sketch = field(default_factory=_Sketch)
    dead_lettered_by_reason: Counter[str] = field(default_factory=Counter)
    failures_by_reason: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    durations: list[tuple[float, float, str]] = field(default_factory=list)
    startups: list[float] = field(default_factory=list)
    patterns: dict[int, _Pattern] = field(default_factory=dict)
    repeated_requests: int = 0
    repeated_examples: list[str] = field(default_factory=list)
    running: int = 0

    def merge(self, other: _Aggregate) -> None:
        self.kinds.update(other.kinds)
        self.warnings += other.warnings
        self.rejected_by_reason.update(other.rejected_by_reason)
        self.redelivered += other.redelivered
        self.rejected_late_attempt += other.rejected_late_attempt
        self.latency.merge(other.latency)
        self.dead_lettered_by_reason.update(other.dead_lettered_by_reason)
        self.failures_by_reason.update(other.failures_by_reason)
        self.statuses.update(other.statuses)
        self.durations.extend(other.durations)
        self.startups.extend(other.startups)
        for cluster_id, pattern in other.patterns.items():
            mine = self.patterns.get(cluster_id)
            if mine is None:
                self.patterns[cluster_id] = _Pattern(pattern.count, pattern.example)
            else:
                mine.count += pattern.count
        self.repeated_requests += other.repeated_requests
        room = _MAX_LISTED - len(self.repeated_examples)
        self.repeated_examples.extend(other.repeated_examples[: max(0, room)])
        self.running = other.running  # a gauge: the latest interval's value


# -- error patterns -------------------------------------------------------------------

# Masks keep ids and numbers out of templates, so "timeout after 31 s on <UUID>" and
# "timeout after 29 s on <UUID>" are one pattern however Drain3's tree routes them.
_MASKS: Final = (
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "UUID"),
    (r"(?<![0-9A-Za-z])(?:0x)?[0-9a-fA-F]{12,}(?![0-9A-Za-z])", "HEX"),
    (r"(?<![0-9A-Za-z.])[-+]?\d+(?:\.\d+)?(?![0-9A-Za-z])", "NUM"),
)


class _PatternMiner:
    """One Drain3 miner per watch: the baseline's texts first, then the window's.

    A window text that joins a cluster formed by the baseline matches a baseline
    template; a cluster created after the baseline was mined is a new pattern.
    """

    def __init__(self) -> None:
        from drain3 import TemplateMiner
        from drain3.masking import MaskingInstruction
        from drain3.template_miner_config import TemplateMinerConfig

        config = TemplateMinerConfig()
        config.masking_instructions = [MaskingInstruction(p, name) for p, name in _MASKS]
        config.profiling_enabled = False
        self._miner = TemplateMiner(config=config)
        self._baseline: frozenset[int] | None = None

    def feed(self, texts: Iterable[tuple[str, int]]) -> dict[int, _Pattern]:
        found: dict[int, _Pattern] = {}
        for text, count in texts:
            result = self._miner.add_log_message(text[:_MINED_CHARS])
            cluster_id = int(result["cluster_id"])
            pattern = found.get(cluster_id)
            if pattern is None:
                found[cluster_id] = _Pattern(count, text[:_EXAMPLE_CHARS])
            else:
                pattern.count += count
        return found

    def close_baseline(self) -> None:
        self._baseline = frozenset(int(c.cluster_id) for c in self._miner.drain.clusters)

    @property
    def has_baseline(self) -> bool:
        return self._baseline is not None

    def is_new(self, cluster_id: int) -> bool:
        return self._baseline is not None and cluster_id not in self._baseline

    def template(self, cluster_id: int) -> str:
        cluster = self._miner.drain.id_to_cluster.get(cluster_id)
        return str(cluster.get_template()) if cluster is not None else ""


# -- one window's state ---------------------------------------------------------------


class _Window:
    """State that spans a window's intervals: it decides what counts once per window."""

    def __init__(self, reader: Reader, start: float, default_budget: float | None) -> None:
        self._reader = reader
        self._default_budget = default_budget
        self.start = start
        self.until = start
        self._rejected: set[int] = set()  # hashes of rejected message ids
        self._failed_in: dict[str, str | frozenset[str]] = {}  # request_id -> execution id(s)
        self._open: dict[str, ExecutionRow] | None = None

    def _budget(self, row: ExecutionRow) -> float | None:
        return row.max_runtime_s if row.max_runtime_s is not None else self._default_budget

    def _end(self, row: ExecutionRow, until: float) -> tuple[float, float, str] | None:
        """(ended_at, duration_s, status) when ``row`` ended before ``until``."""
        budget = self._budget(row)
        deadline = math.inf if budget is None else row.started_at + budget
        finished = row.finished_at
        if finished is not None and finished < until and finished <= deadline:
            status = row.status if row.status in _ENDED_STATUSES else FAILED
            return finished, finished - row.started_at, status
        if deadline < until:
            assert budget is not None
            return deadline, budget, TIMED_OUT
        return None

    def collect(self, until: float, miner: _PatternMiner) -> _Aggregate:
        """The aggregate of ``[self.until, until)``. The window's state changes only when
        it returns, so a read that fails half-way can be retried without counting twice."""
        reader, a, b = self._reader, self.until, until
        agg = _Aggregate()
        rejected: set[int] = set()
        failed_in: dict[str, str | frozenset[str]] = {}
        with reader.session():
            agg.kinds.update(reader.kind_counts(a, b))
            agg.warnings = reader.warnings(a, b)
            for reason, message_id, attempt, duration_ms in reader.rejections(a, b):
                agg.rejected_by_reason[reason or "unknown"] += 1
                if duration_ms is not None:
                    agg.latency.add(float(duration_ms))
                if attempt is not None and attempt > 1:
                    agg.rejected_late_attempt += 1
                if message_id is not None:
                    key = hash(message_id)
                    if key in self._rejected or key in rejected:
                        agg.redelivered += 1
                    else:
                        rejected.add(key)
            for kind, reason, request_id, execution_id in reader.failures(a, b):
                if kind == ev.MESSAGE_DEAD_LETTERED:
                    agg.dead_lettered_by_reason[reason or "unknown"] += 1
                else:
                    agg.failures_by_reason[reason or "unknown"] += 1
                if request_id is not None and execution_id is not None:
                    self._failed(request_id, execution_id, agg, failed_in)
            agg.startups.extend(reader.startups(a, b))
            still_open = self._executions(a, b, agg)
            agg.patterns = miner.feed(reader.texts(a, b))
        self._rejected |= rejected
        self._failed_in.update(failed_in)
        self._open = still_open
        self.until = until
        return agg

    def _failed(
        self,
        request_id: str,
        execution_id: str,
        agg: _Aggregate,
        staged: dict[str, str | frozenset[str]],
    ) -> None:
        seen = staged.get(request_id) or self._failed_in.get(request_id)
        if seen is None:
            staged[request_id] = execution_id  # most requests fail in one execution only
        elif isinstance(seen, str):
            if seen != execution_id:
                staged[request_id] = frozenset((seen, execution_id))
                agg.repeated_requests += 1
                if len(agg.repeated_examples) < _MAX_LISTED:
                    agg.repeated_examples.append(request_id)
        elif execution_id not in seen:
            staged[request_id] = seen | {execution_id}

    def executions_of(self, request_id: str) -> int:
        seen = self._failed_in.get(request_id)
        return 0 if seen is None else 1 if isinstance(seen, str) else len(seen)

    def _executions(self, a: float, b: float, agg: _Aggregate) -> dict[str, ExecutionRow]:
        """Count the executions that end in ``[a, b)``; return those still open at ``b``."""
        reader = self._reader
        if self._open is None:
            opened = reader.executions_open_at(a)
            rows = {r.execution_id: r for r in opened if self._end(r, a) is None}
        else:
            # rows change as executions finish: read the open ones again
            rows = dict(self._open)
            rows.update((r.execution_id, r) for r in reader.executions_by_id(list(rows)))
        rows.update((r.execution_id, r) for r in reader.executions_started(a, b))
        still_open: dict[str, ExecutionRow] = {}
        for execution_id, row in rows.items():
            ended = self._end(row, b)
            if ended is None:
                still_open[execution_id] = row
            else:
                agg.statuses[ended[2]] += 1
                agg.durations.append(ended)
        agg.running = len(still_open)
        return still_open


# -- figures ----------------------------------------------------------------------------


def _avg(samples: Sequence[float]) -> float | None:
    return math.fsum(samples) / len(samples) if samples else None


def _thin(points: list[tuple[float, float, str]]) -> list[list[Any]]:
    """At most _MAX_DURATION_POINTS points for a chart; the longest run is always kept."""
    ordered = sorted(points)
    if len(ordered) > _MAX_DURATION_POINTS:
        longest = max(ordered, key=lambda p: p[1])
        step = math.ceil(len(ordered) / (_MAX_DURATION_POINTS - 1))
        ordered = sorted({*ordered[::step], longest})
    return [[at, round(duration, 3), status] for at, duration, status in ordered]


def _pattern_rows(
    patterns: Iterable[tuple[int, _Pattern]], miner: _PatternMiner
) -> list[dict[str, Any]]:
    ranked = sorted(
        ((miner.template(cid), p) for cid, p in patterns), key=lambda t: (-t[1].count, t[0])
    )
    return [
        {"template": template, "count": p.count, "example": p.example}
        for template, p in ranked[:_MAX_LISTED]
    ]


def _figures(
    start: float,
    end: float,
    agg: _Aggregate,
    miner: _PatternMiner,
    window: _Window,
    *,
    baseline: bool = False,
) -> Figures:
    statuses = agg.statuses
    ended = sum(statuses.values())
    failed = ended - statuses[SUCCEEDED] - statuses[TIMED_OUT] - statuses[INTERRUPTED]
    durations = sorted(d for _, d, _ in agg.durations)
    new = [(cid, p) for cid, p in agg.patterns.items() if miner.is_new(cid)]
    values: dict[str, Value] = dict.fromkeys(MEASURES)
    values.update(
        {
            "executions.total": ended + agg.running,
            "executions.succeeded": statuses[SUCCEEDED],
            "executions.failed": failed,
            "executions.timed_out": statuses[TIMED_OUT],
            "executions.interrupted": statuses[INTERRUPTED],
            "executions.running": agg.running,
            "executions.success_rate": statuses[SUCCEEDED] / ended if ended else None,
            "executions.duration_s.avg": _avg(durations),
            "executions.duration_s.min": durations[0] if durations else None,
            "executions.duration_s.max": durations[-1] if durations else None,
            "executions.duration_s.p95": (
                durations[_nearest_rank(95, len(durations)) - 1] if durations else None
            ),
            "executions.startup_s.avg": _avg(agg.startups),
            "executions.startup_s.max": max(agg.startups) if agg.startups else None,
            "messages.received": agg.kinds[ev.MESSAGE_RECEIVED],
            "messages.succeeded": agg.kinds[ev.MESSAGE_SUCCEEDED],
            "messages.failed": agg.kinds[ev.MESSAGE_FAILED],
            "messages.timed_out": agg.kinds[ev.MESSAGE_TIMED_OUT],
            "messages.rejected": agg.kinds[ev.MESSAGE_REJECTED],
            "messages.rejected.redelivered": agg.redelivered,
            "messages.rejection_latency_ms.p99": agg.latency.quantile(99),
            "messages.dead_lettered": agg.kinds[ev.MESSAGE_DEAD_LETTERED],
            "messages.to_dlq": (
                agg.kinds[ev.MESSAGE_REJECTED] + agg.kinds[ev.MESSAGE_DEAD_LETTERED]
            ),
            "messages.duplicate": agg.kinds[ev.MESSAGE_DUPLICATE],
            "requests.failed_in_multiple_executions": agg.repeated_requests,
            "logs.warnings": agg.warnings,
            "errors.patterns": len(agg.patterns),
            "errors.new_patterns": (len(new) if miner.has_baseline and not baseline else None),
        }
    )
    for reason in REASONS:
        values[f"messages.rejected.{reason}"] = agg.rejected_by_reason[reason]
    details: dict[str, Any] = {
        "executions_by_status": dict(statuses),
        "rejected_by_reason": dict(agg.rejected_by_reason),
        "rejected_on_a_later_attempt": agg.rejected_late_attempt,
        "dead_lettered_by_reason": dict(agg.dead_lettered_by_reason),
        "failures_by_reason": dict(agg.failures_by_reason),
        "patterns": _pattern_rows(agg.patterns.items(), miner),
        "new_patterns": [] if baseline else _pattern_rows(new, miner),
        "durations": _thin(agg.durations),
        "failed_requests": [
            {"request_id": rid, "executions": window.executions_of(rid)}
            for rid in agg.repeated_examples
        ],
    }
    return Figures(start=start, end=end, values=values, details=details)


class Snapshotter:
    """Figures for a watch window, one checkpoint at a time.

    ``window_start`` opens the window; each :meth:`advance` closes an interval.
    ``baseline`` is the ``(start, end)`` of the before-the-fix window, mined for error
    patterns before anything in the watch window. ``max_runtime_s`` is the time budget
    assumed for executions whose ``execution.started`` data does not state one.
    Reads raise :class:`~steadyq.errors.BackendError` when the store fails.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        window_start: float,
        baseline: tuple[float, float] | None = None,
        max_runtime_s: float | None = None,
    ) -> None:
        if baseline is not None and not baseline[0] < baseline[1]:
            raise ValueError(f"baseline start must come before its end: {baseline!r}")
        self._reader = reader_for(store)
        self._baseline_span = baseline
        self._max_runtime_s = positive(max_runtime_s)
        self._miner = _PatternMiner()
        self._window = _Window(self._reader, window_start, self._max_runtime_s)
        self._cumulative = _Aggregate()
        self._baseline_figures: Figures | None = None
        self.window_start = window_start

    @property
    def until(self) -> float:
        """The end of the last interval (``window_start`` before the first advance)."""
        return self._window.until

    def baseline_figures(self) -> Figures | None:
        """Figures over the baseline window; None without one. Computed once."""
        if self._baseline_span is None:
            return None
        if self._baseline_figures is None:
            start, end = self._baseline_span
            window = _Window(self._reader, start, self._max_runtime_s)
            agg = window.collect(end, self._miner)
            self._miner.close_baseline()
            self._baseline_figures = _figures(start, end, agg, self._miner, window, baseline=True)
        return self._baseline_figures

    def advance(self, until: float) -> tuple[Figures, Figures]:
        """(figures of ``[previous until, until)``, figures of ``[window_start, until)``)."""
        start = self._window.until
        if until <= start:
            raise ValueError(f"advance({until}) does not move past {start}")
        self.baseline_figures()  # the baseline's templates must be mined first
        interval = self._window.collect(until, self._miner)
        self._cumulative.merge(interval)
        return (
            _figures(start, until, interval, self._miner, self._window),
            _figures(self.window_start, until, self._cumulative, self._miner, self._window),
        )
