"""A worker's live status line on a terminal.

The worker hands every event to its sink and keeps its own ``counts``; this reads
both and nothing else, so watching progress cannot change what the worker does. What
is left in the queue comes from a second, read-only handle on the queue, asked every
few seconds on a thread of its own: a slow backend (Cloud Monitoring for Pub/Sub)
delays the figure, never the worker.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from steadyq._terminal import safe
from steadyq.brokers.base import QueueStats
from steadyq.durations import format_duration
from steadyq.telemetry.events import LOG, Event, severity_rank

#: the outcomes that take a message off the queue (retried ones come back)
SETTLED = ("succeeded", "rejected", "dead_lettered", "duplicate")
RATE_WINDOW_S = 10.0
_WORKER_NOTICE = severity_rank("NOTICE")


def _left(stats: QueueStats) -> int | None:
    parts = (stats.ready, stats.delayed, stats.in_flight)
    if stats.ready is None:
        return None
    return sum(p for p in parts if p is not None)


class StatusLine:
    """What the line says, computed from counts and the latest queue stats.

    ``clock`` is monotonic seconds, injected so the rate and the ETA are testable.
    """

    def __init__(
        self,
        counts: Mapping[str, int],
        *,
        drain: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.counts = counts
        self.drain = drain
        self.left: int | None = None
        self._clock = clock
        self._samples: deque[tuple[float, int]] = deque()

    def settled(self) -> int:
        return sum(int(self.counts.get(k, 0)) for k in SETTLED)

    def rate(self) -> float | None:
        """Messages settled per second over the last few seconds."""
        now, settled = self._clock(), self.settled()
        self._samples.append((now, settled))
        while len(self._samples) > 2 and now - self._samples[1][0] >= RATE_WINDOW_S:
            self._samples.popleft()
        first_t, first_n = self._samples[0]
        if now - first_t < 0.5:
            return None
        return (settled - first_n) / (now - first_t)

    def text(self) -> Text:
        c = self.counts
        line = Text()
        parts = [
            ("received", "", int(c.get("received", 0))),
            ("succeeded", "green", int(c.get("succeeded", 0))),
            ("rejected", "yellow", int(c.get("rejected", 0))),
            ("retried", "yellow", int(c.get("retried", 0))),
            ("dead-lettered", "red", int(c.get("dead_lettered", 0))),
        ]
        if c.get("duplicate"):
            parts.append(("duplicate", "", int(c["duplicate"])))
        for index, (name, style, value) in enumerate(parts):
            if index:
                line.append(" · ", style="dim")
            line.append(f"{name} ")
            line.append(str(value), style=style or "bold")
        rate = self.rate()
        line.append(" · ", style="dim")
        line.append("—/s" if rate is None else f"{rate:.1f}/s")
        if self.left is not None:
            line.append(" · ", style="dim")
            line.append(f"{self.left} left in the queue")
            if self.drain and rate:
                line.append(f" · ETA {format_duration(self.left / rate)}")
        return line


class TerminalProgress:
    """A sink for the worker that keeps a live status line at the bottom of the
    terminal and prints log records at or above ``min_severity`` above it."""

    def __init__(
        self,
        console: Console,
        *,
        drain: bool,
        min_severity: str = "WARNING",
        queue_stats: Callable[[], QueueStats] | None = None,
        stats_every_s: float = 2.0,
    ) -> None:
        self.console = console
        self.status = StatusLine(Counter(), drain=drain)
        self._min_rank = severity_rank(min_severity)
        self._queue_stats = queue_stats
        self._stats_every_s = stats_every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live = Live(
            _Renderable(self.status),
            console=console,
            refresh_per_second=4,
            transient=True,
            redirect_stdout=False,
            redirect_stderr=False,
        )

    def follow(self, counts: Mapping[str, int]) -> None:
        """Read the worker's own counts (its ``counts`` attribute)."""
        self.status.counts = counts

    def __call__(self, event: Event) -> None:
        if event.kind != LOG:
            return
        rank = severity_rank(event.severity)
        # a handler's record has its logger's name; the worker's own records (an outage
        # and its end, at NOTICE) are shown whatever the level
        from_handler = "logger" in event.data
        if rank < self._min_rank and (from_handler or rank < _WORKER_NOTICE):
            return
        line = Text(time.strftime("%H:%M:%S ", time.localtime(event.timestamp)), style="dim")
        style = "red" if severity_rank(event.severity) >= severity_rank("ERROR") else "yellow"
        line.append(f"{event.severity:<8} ", style=style if event.severity != "INFO" else "")
        line.append(safe(event.message, 2000))
        if event.request_id and event.request_id not in (event.message or ""):
            line.append(f"  request {event.request_id}", style="dim")
        self._live.console.print(line)

    def __enter__(self) -> TerminalProgress:
        self._live.start()
        if self._queue_stats is not None:
            self._thread = threading.Thread(
                target=self._poll_stats, name="steadyq-progress", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._live.stop()

    def _poll_stats(self) -> None:
        assert self._queue_stats is not None
        while not self._stop.is_set():
            # a figure the backend cannot give now is shown as unknown, never as an error
            try:
                self.status.left = _left(self._queue_stats())
            except Exception:
                self.status.left = None
            self._stop.wait(self._stats_every_s)


class _Renderable:
    def __init__(self, status: StatusLine) -> None:
        self._status = status

    def __rich__(self) -> Any:
        with contextlib.suppress(Exception):  # a render must never break the worker
            return Group(self._status.text())
        return Text("")
