"""The terminal views of a running watch.

On a terminal the watch shows a live view (time to the next checkpoint, every
criterion's state, the latest figures); otherwise it prints one plain line per
checkpoint, alert and verdict.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from steadyq._terminal import safe
from steadyq.durations import format_duration, rfc3339
from steadyq.watch.observer import WatchObserver

if TYPE_CHECKING:
    from rich.live import Live

    from steadyq.watch.run import CheckpointRecord, Watch, WatchResult

__all__ = ["LiveView", "PlainView", "view_for"]

_STYLE = {"pass": "green", "fail": "bold red", "no_data": "yellow", "pending": "dim"}
_VERDICT_STYLE = {"PASSED": "bold green", "FAILED": "bold red", "INCONCLUSIVE": "bold yellow"}
_SHOWN = (
    ("executions", "executions.total"),
    ("succeeded", "executions.succeeded"),
    ("timed out", "executions.timed_out"),
    ("other failures", "executions.failed"),
    ("longest run", "executions.duration_s.max"),
    ("messages ok", "messages.succeeded"),
    ("rejected", "messages.rejected"),
    ("dead-lettered", "messages.dead_lettered"),
    ("queue ready", "queue.ready"),
    ("oldest unacked", "queue.oldest_unacked_age_s"),
)


def _safe(value: object, limit: int | None = 160) -> Text:
    """:func:`steadyq._terminal.safe`, cut shorter for the live view."""
    return safe(value, limit)


def _value(values: Mapping[str, Any], name: str) -> str:
    from steadyq.watch.judge import unit_of
    from steadyq.watch.reports import _num

    return _num(values.get(name), unit_of(name))


def _when(epoch: float) -> str:
    return rfc3339(epoch)[:19].replace("T", " ") + "Z"


class PlainView(WatchObserver):
    """One line per event of the run; for logs, pipes and CI."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._announced: int | None = None

    def started(self, watch: Watch) -> None:
        run = watch.state
        how = "resumed" if watch.resumed else ("replay" if watch.replay else "new")
        self.console.print(
            Text("watch ")
            + _safe(watch.plan.name)
            + Text(
                f": run {run.run_id} ({how}), window {_when(run.window_start)} →"
                f" {_when(run.window_end)}, {len(run.checkpoints)}/{len(watch.times)}"
                f" checkpoints taken; reports in {watch.report_dir}"
            )
        )

    def waiting(self, watch: Watch, next_at: float, now: float) -> None:
        index = len(watch.state.checkpoints)
        if self._announced != index:
            self._announced = index
            self.console.print(
                f"next checkpoint {index + 1}/{len(watch.times)} at {_when(next_at)}"
                f" (in {format_duration(max(0.0, next_at - now))})"
            )

    def checkpoint(self, watch: Watch, record: CheckpointRecord) -> None:
        from steadyq.watch.reports import checkpoint_status

        status = checkpoint_status(record.criteria)
        counts: dict[str, int] = {}
        for r in record.criteria:
            counts[r.status] = counts.get(r.status, 0) + 1
        summary = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(counts.items()))
        line = Text(f"checkpoint {record.index + 1}/{len(watch.times)} at {_when(record.at)}: ")
        line += Text(status.replace("_", " "), style=_STYLE.get(status, ""))
        line += Text(f" (criteria: {summary})")
        self.console.print(line)
        for r in record.criteria:
            if r.observed == "fail":
                tag = " [dry run]" if r.dry_run else (" [critical]" if r.critical else "")
                self.console.print(
                    Text("  ✗ ", style="red")
                    + _safe(r.name)
                    + Text(tag)
                    + Text(": ")
                    + _safe(r.reason)
                )

    def source_failed(self, watch: Watch, error: Exception, retry_in_s: float) -> None:
        self.console.print(
            Text("source unavailable, retrying in ", style="yellow")
            + Text(format_duration(retry_in_s) + ": ")
            + _safe(error, 400)
        )

    def alert(
        self, watch: Watch, alert: Mapping[str, Any], deliveries: list[dict[str, Any]]
    ) -> None:
        self.console.print(Text("ALERT ", style="bold red") + _safe(alert.get("message"), 400))
        for d in deliveries:
            style = "green" if d.get("ok") else "red"
            self.console.print(
                Text(f"  {d.get('channel')}: ", style=style) + _safe(d.get("detail"))
            )

    def finished(self, watch: Watch, result: WatchResult) -> None:
        if result.verdict is None:
            self.console.print(Text("stopped: ", style="yellow") + _safe(result.reason, None))
        else:
            self.console.print(
                Text("verdict: ")
                + Text(result.verdict.value, style=_VERDICT_STYLE[result.verdict.value])
                + Text(f" ({result.verdict.decision}): ")
                + _safe(result.reason, 600)
            )
        where = ", ".join(str(p) for p in result.report_paths.values())
        self.console.print(f"reports: {where}")


class LiveView(PlainView):
    """A live, redrawn view on a terminal; events also scroll above it."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self._live: Live | None = None
        self._watch: Watch | None = None
        self._now = time.time()

    def _render(self) -> RenderableType:
        watch = self._watch
        if watch is None:
            return Text("")
        run = watch.state
        head = Text("watch ", style="bold") + _safe(watch.plan.name)
        done = len(run.checkpoints)
        if run.verdict is None and done < len(watch.times):
            next_at = watch.times[done]
            head += Text(
                f"  checkpoint {done + 1}/{len(watch.times)} at {_when(next_at)},"
                f" in {format_duration(max(0.0, next_at - self._now))}"
            )
        elif run.verdict is not None:
            head += Text("  ") + Text(run.verdict.value, style=_VERDICT_STYLE[run.verdict.value])
        criteria = Table(expand=False, show_edge=False)
        for column in ("criterion", "status", "value", "reason"):
            criteria.add_column(column, overflow="fold" if column == "reason" else "ellipsis")
        results = run.checkpoints[-1].criteria if run.checkpoints else []
        from steadyq.watch.judge import fmt, pending, unit_of

        for r in results or pending(watch.plan):
            criteria.add_row(
                _safe(r.name, 40),
                Text(r.status.replace("_", " "), style=_STYLE.get(r.status, "")),
                fmt(r.value, unit_of(r.measure)),
                _safe(r.reason, 120),
            )
        figures = Table(show_header=False, show_edge=False, box=None)
        if run.checkpoints:
            values = run.checkpoints[-1].values()
            for label, name in _SHOWN:
                figures.add_row(label, _value(values, name))
        return Group(head, criteria, figures)

    def started(self, watch: Watch) -> None:
        from rich.live import Live

        super().started(watch)
        self._watch = watch
        self._now = watch.clock()
        # redrawn when the watch wakes up, not by a thread: the watch's clock is injected
        self._live = Live(self._render(), console=self.console, auto_refresh=False, transient=True)
        self._live.start(refresh=True)

    def waiting(self, watch: Watch, next_at: float, now: float) -> None:
        self._now = now
        if self._live is not None:
            self._live.update(self._render(), refresh=True)

    def checkpoint(self, watch: Watch, record: CheckpointRecord) -> None:
        super().checkpoint(watch, record)
        self._now = watch.clock()
        if self._live is not None:
            self._live.update(self._render(), refresh=True)

    def finished(self, watch: Watch, result: WatchResult) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
        self.console.print(self._render())
        super().finished(watch, result)


def view_for(console: Console) -> WatchObserver:
    """The live view on a terminal, plain lines otherwise."""
    return LiveView(console) if console.is_terminal else PlainView(console)
