"""The run of a watch: live (sleeping until each checkpoint), resumed, or replayed.

At every checkpoint the run takes a snapshot of the store (the interval since the last
checkpoint and the window so far), samples the queue when the checkpoint is *now*,
judges every criterion, checks the risks, persists all of it in one transaction,
rewrites the three reports and sends alerts.

State lives in the store's database (:mod:`steadyq.watch.state`). A live run is
keyed by its plan's ``name``: a watch started again with the same plan resumes the
unfinished run (the same window, none of its checkpoints taken twice or lost); a watch
started with a *changed* plan while a run is unfinished is refused, unless ``fresh``
abandons the old run. Replays never resume: each is a run of its own.

The clock and the sleep are injected, so a 24-hour plan runs in seconds under test.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import secrets
import shlex
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steadyq._signals import stop_signals
from steadyq.durations import format_duration, rfc3339
from steadyq.errors import BackendError, ConfigError
from steadyq.exit_codes import VerdictCode, verdict_code
from steadyq.telemetry.store import EventStore
from steadyq.watch import judge as jd
from steadyq.watch.judge import CriterionResult, Decision, Verdict
from steadyq.watch.measures import QUEUE_MEASURES, Figures, Snapshotter, sample_queue
from steadyq.watch.observer import WatchObserver
from steadyq.watch.plan import Alerts, Plan, load_plan
from steadyq.watch.state import (
    ABANDONED,
    HEARTBEAT_S,
    INTERRUPTED,
    RUNNING,
    CheckpointRecord,
    RunState,
    WatchState,
)

if TYPE_CHECKING:
    from rich.console import Console

    from steadyq.brokers.base import Queue
    from steadyq.watch.sources.base import PlatformSource


def queue_sample_tolerance_s(checkpoint_every_s: float) -> float:
    """How late a checkpoint may be taken and still sample the queue as its own state."""
    return max(30.0, 0.05 * checkpoint_every_s)


# -- alerts --------------------------------------------------------------------------------


def alert_env(alert: Mapping[str, Any]) -> dict[str, str]:
    """The environment variables a notify command receives besides the JSON on stdin."""
    return {
        "STEADYQ_ALERT_KIND": str(alert.get("kind", "")),
        "STEADYQ_ALERT_PLAN": str(alert.get("plan", "")),
        "STEADYQ_ALERT_RUN": str(alert.get("run_id", "")),
        "STEADYQ_ALERT_CHECKPOINT": str(alert.get("checkpoint", "")),
        "STEADYQ_ALERT_VERDICT": str(alert.get("verdict") or ""),
        "STEADYQ_ALERT_MESSAGE": _one_line(str(alert.get("message", "")), 1000),
        "STEADYQ_ALERT_REPORT": str(alert.get("report") or ""),
    }


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_notify_command(
    command: str | list[str], alert: Mapping[str, Any], timeout_s: float
) -> dict[str, Any]:
    """Run the notify command with the alert as JSON on stdin; never raises."""
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    body = json.dumps(alert, ensure_ascii=True, default=str).encode("ascii")
    env = {**os.environ, **alert_env(alert)}
    try:
        proc = subprocess.run(
            argv, input=body, env=env, capture_output=True, timeout=timeout_s, check=False
        )
    except subprocess.TimeoutExpired:
        return {"channel": "command", "ok": False, "detail": f"timed out after {timeout_s:g} s"}
    except OSError as exc:
        return {"channel": "command", "ok": False, "detail": f"cannot run {argv[0]!r}: {exc}"}
    if proc.returncode != 0:
        tail = _one_line(proc.stderr.decode("utf-8", "replace"), 300)
        return {
            "channel": "command",
            "ok": False,
            "detail": f"exited {proc.returncode}" + (f": {tail}" if tail else ""),
        }
    return {"channel": "command", "ok": True, "detail": "exited 0"}


def post_webhook(url: str, alert: Mapping[str, Any], timeout_s: float) -> dict[str, Any]:
    """POST the alert as JSON to ``url``; never raises."""
    body = json.dumps(alert, ensure_ascii=True, default=str).encode("ascii")
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "steadyq-watch"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return {"channel": "webhook", "ok": False, "detail": f"HTTP {exc.code}"}
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return {"channel": "webhook", "ok": False, "detail": f"cannot POST: {reason}"}
    return {"channel": "webhook", "ok": 200 <= status < 300, "detail": f"HTTP {status}"}


def deliver(alert: Mapping[str, Any], config: Alerts) -> list[dict[str, Any]]:
    """Send one alert to every configured channel; failures are returned, not raised."""
    out: list[dict[str, Any]] = []
    if config.notify_command is not None:
        out.append(run_notify_command(config.notify_command, alert, config.timeout_s))
    if config.webhook is not None:
        out.append(post_webhook(config.webhook, alert, config.timeout_s))
    return out


# -- observing a run -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WatchResult:
    """How a run ended. ``verdict`` is None when it was interrupted (it can be resumed)."""

    verdict: Verdict | None
    exit_code: int
    reason: str
    run_id: str
    checkpoints_taken: int
    checkpoints_planned: int
    ended_early: bool
    report_paths: dict[str, Path]
    report: dict[str, Any]


class _Stop(Exception):
    """Raised inside the run loop when a stop was requested."""


class Watch:
    """One watch of one plan over one store.

    Args:
        plan: the checked plan.
        store: the telemetry store the measures read.
        queue: sampled at each checkpoint taken on time (None: queue measures have no data).
        report_dir: where the three reports are rewritten after every checkpoint.
        clock: epoch seconds now; sleep: waits that many seconds (both injected in tests).
        replay: evaluate a window already over, every checkpoint at once.
        fresh: abandon an unfinished run of this plan instead of resuming it.
        state: where runs are kept (default: beside the store).
        tick_s: how often a live run wakes while waiting (view refresh, signals).
        settle_s: how long after a checkpoint's instant a live run waits before reading,
            so that events written just before it are committed.
        source: a platform source synced into ``store`` before every checkpoint (see
            :mod:`steadyq.watch.sources.base`); its queue figures replace ``queue``'s.
        backoff_s: (first, longest) wait between tries of a source that is unavailable.
    """

    def __init__(
        self,
        plan: Plan,
        store: EventStore,
        queue: Queue | None = None,
        *,
        report_dir: str | Path = "reports",
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        replay: bool = False,
        fresh: bool = False,
        state: WatchState | None = None,
        observer: WatchObserver | None = None,
        tick_s: float = 1.0,
        settle_s: float = 1.0,
        source: PlatformSource | None = None,
        backoff_s: tuple[float, float] = (5.0, 300.0),
    ) -> None:
        self.plan = plan
        self.source = source
        self.backoff_s = backoff_s
        if source is not None:
            settle_s = max(settle_s, source.settle_s)
        self.store = store
        self.queue = queue
        self.report_dir = Path(report_dir)
        self.clock = clock
        self.sleep = sleep
        self.replay = replay
        self.fresh = fresh
        self.state_db = state or WatchState.for_store(store)
        self.observer = observer or WatchObserver()
        self.tick_s = max(0.01, tick_s)
        self.settle_s = 0.0 if replay else max(0.0, settle_s)
        self._stop = threading.Event()
        self.run_state: RunState | None = None
        self.times: list[float] = []
        self.resumed = False
        # who runs a live watch: host, pid and a token (two watches in one process differ)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._beat = time.monotonic()

    @property
    def mode(self) -> str:
        return "replay" if self.replay else "live"

    @property
    def state(self) -> RunState:
        if self.run_state is None:
            raise RuntimeError("the watch has not started")
        return self.run_state

    def request_stop(self) -> None:
        """Ask a live run to stop at its next wake-up; its state stays resumable."""
        self._stop.set()

    # -- setting up --

    def _begin(self) -> RunState:
        """The run to continue (resumed) or a new one; checks come before any change."""
        now = self.clock()
        plan = self.plan
        default_start = now - plan.window if self.replay else now
        start = plan.start if plan.start is not None else default_start
        if self.replay and start + plan.window > now + 1e-6:
            raise ConfigError(
                f"--replay needs a window that is over; this one ends at"
                f" {rfc3339(start + plan.window)}, in"
                f" {format_duration(start + plan.window - now)} (run it live instead)"
            )
        existing = None if self.replay else self.state_db.open_run(plan.name, "live")
        if existing is not None and not self.fresh:
            if existing.plan_hash == plan.identity_hash():
                self.resumed = True
                return existing
            raise ConfigError(
                f"plan {plan.name!r} changed while its run {existing.run_id} is"
                f" unfinished ({len(existing.checkpoints)} checkpoints taken, plan"
                f" hash {existing.plan_hash}, now {plan.identity_hash()}); restore the"
                " plan to resume that run, rename the plan, or start over with --fresh"
            )
        if plan.baseline is not None and plan.baseline.end > start + 1e-6:
            raise ConfigError("the baseline must end before the watch window starts")
        if existing is not None:  # --fresh
            self.state_db.set_status(existing, ABANDONED, now)
        return RunState(
            run_id=_run_id(plan.name, now),
            plan_name=plan.name,
            plan_hash=plan.identity_hash(),
            mode=self.mode,
            status=RUNNING,
            window_start=start,
            window_end=start + plan.window,
            baseline=None,
            created_at=now,
            updated_at=now,
        )

    def _snapshotter(self, run: RunState) -> Snapshotter:
        baseline = (
            None
            if self.plan.baseline is None
            else (
                self.plan.baseline.start,
                self.plan.baseline.end,
            )
        )
        return Snapshotter(
            self.store,
            window_start=run.window_start,
            baseline=baseline,
            max_runtime_s=self.plan.max_runtime_s,
        )

    # -- the loop --

    def run(self) -> WatchResult:
        """Run (or resume, or replay) to the end, or until stopped.

        Raises:
            ConfigError: the plan cannot run (a replay of a window not over yet, a
                changed plan while its run is unfinished).
            BackendError: the store or the state database failed.
            AlreadyRunning: a live watch of this plan runs in another process.
        """
        if self.replay:
            return self._run()
        self.state_db.claim(self.plan.name, self.mode, self.owner)
        try:
            return self._run()
        finally:
            with contextlib.suppress(BackendError):
                self.state_db.release(self.plan.name, self.mode, self.owner)

    def _run(self) -> WatchResult:
        run = self._begin()
        snap = self._snapshotter(run)
        if not self.resumed:
            if self.source is not None and self.plan.baseline is not None:
                self.run_state = run  # the baseline's data must be in before it is measured
                self._from_source(self.plan.baseline.end)
            figures = snap.baseline_figures()
            run.baseline = None if figures is None else _figures_doc(figures, None)
            self.state_db.create(run, self.plan)
        self.run_state = run
        self.times = self.plan.checkpoint_times(run.window_start)
        self._write_reports()
        self.observer.started(self)
        if self._redeliver():
            self._write_reports()
        done = len(run.checkpoints)
        if done:
            snap.advance(self.times[done - 1])  # rebuild the cumulative figures so far
        try:
            for index in range(done, len(self.times)):
                at = self.times[index]
                self._wait_until(at + self.settle_s, at)
                if self._take(snap, index, at) is not None:
                    break
        except (_Stop, KeyboardInterrupt):
            if self.replay:
                self.state_db.set_status(run, INTERRUPTED, self.clock())
            self._write_reports()
            result = self._result()
            self.observer.finished(self, result)
            return result
        result = self._result()
        self.observer.finished(self, result)
        return result

    def _wait_until(self, wake_at: float, at: float) -> None:
        if self.replay:
            return
        while True:
            if self._stop.is_set():
                raise _Stop
            now = self.clock()
            if now >= wake_at:
                return
            if time.monotonic() - self._beat >= HEARTBEAT_S:
                self._beat = time.monotonic()
                self.state_db.heartbeat(self.plan.name, self.mode, self.owner)
            self.observer.waiting(self, at, now)
            self.sleep(min(self.tick_s, wake_at - now))

    def _from_source(self, at: float) -> tuple[dict[str, Any] | None, str | None]:
        """Sync the source up to ``at`` and sample its queue, trying until it works.

        A checkpoint is never judged on part of its data: while the platform is
        unavailable the watch waits (backing off) and the checkpoint is taken late.
        """
        from steadyq.watch.sources.base import SourceUnavailable

        source = self.source
        assert source is not None and self.run_state is not None
        earliest = self.run_state.window_start
        if self.plan.baseline is not None:
            earliest = min(earliest, self.plan.baseline.start)
        wait, longest = self.backoff_s
        failures: list[str] = []
        while True:
            try:
                source.sync(at, earliest=earliest)
                sample = source.queue_sample(at)
                break
            except SourceUnavailable as exc:
                failures.append(str(exc))
                self.observer.source_failed(self, exc, wait)
                retry_at = self.clock() + wait
                while self.clock() < retry_at:
                    if self._stop.is_set():
                        raise _Stop from exc
                    self.sleep(min(self.tick_s, retry_at - self.clock()))
                wait = min(longest, wait * 2)
        note = None
        if failures:
            note = (
                f"taken late, after {len(failures)} failed tries of {source.url}"
                f" (last: {failures[-1]})"
            )
        return (None if sample is None else dict(sample)), note

    def _take(self, snap: Snapshotter, index: int, at: float) -> Decision | None:
        run = self.state
        plan = self.plan
        sample: dict[str, Any] | None = None
        note: str | None = None
        source_note: str | None = None
        if self.source is not None:
            sample, source_note = self._from_source(at)
        interval_fig, cumulative_fig = snap.advance(at)
        now = self.clock()
        if self.source is not None:
            if sample is None:
                note = f"{self.source.url} has no queue figures for this time"
        elif self.queue is None:
            note = "no queue to sample"
        elif self.replay:
            note = "replayed: the queue was not sampled then, queue measures have no data"
        elif now - at <= queue_sample_tolerance_s(plan.checkpoint_every):
            sample = dict(sample_queue(self.queue))
        else:
            note = (
                f"taken {format_duration(now - at)} after its time: the queue's state then"
                " cannot be known, queue measures have no data"
            )
        interval = _figures_doc(interval_fig, sample)
        cumulative = _figures_doc(cumulative_fig, sample)
        previous = run.checkpoints[-1].criteria if run.checkpoints else None
        baseline_values = None if run.baseline is None else run.baseline.get("values")
        results = jd.judge_checkpoint(
            plan, index, interval["values"], cumulative["values"], baseline_values, previous
        )
        risks = [jd.judge_risk(r, cumulative["values"]) for r in plan.risks]
        decision = jd.early_stop(results, index)
        if decision is None and index == len(self.times) - 1:
            decision = jd.final_verdict(results, activity=_active(cumulative["values"]))
        record = CheckpointRecord(
            index=index,
            at=at,
            taken_at=now,
            interval=interval,
            cumulative=cumulative,
            queue=sample,
            queue_note=note,
            criteria=results,
            risks=risks,
            decision=decision,
            source_note=source_note,
        )
        alerts = self._alerts(record, decision, previous)
        ids = self.state_db.record(run, record, alerts, decision, now)
        self._write_reports()
        self.observer.checkpoint(self, record)
        for alert_id, alert in zip(ids, alerts, strict=True):
            self._send(alert_id, alert)
        if ids:
            self._write_reports()
        return decision

    def _alerts(
        self,
        record: CheckpointRecord,
        decision: Decision | None,
        previous: Sequence[CriterionResult] | None,
    ) -> list[dict[str, Any]]:
        """One alert when a criterion newly breaches (or a checkpoint-scoped one breaches)."""
        bad = jd.newly_failing(record.criteria, previous)
        if not bad:
            return []
        early = decision is not None and decision.early
        critical = [r for r in bad if r.critical]
        kind = "critical_breach" if early else "checkpoint_failed"
        shown = critical if early else bad
        n = len(self.times)
        head = (
            f"watch {self.plan.name!r}: critical breach at checkpoint {record.index + 1}/{n},"
            " ended early: FAILED"
            if early
            else f"watch {self.plan.name!r}: checkpoint {record.index + 1}/{n} failed"
        )
        message = head + ": " + "; ".join(f"{r.name}: {r.reason}" for r in shown)
        return [
            {
                "kind": kind,
                "plan": self.plan.name,
                "run_id": self.state.run_id,
                "checkpoint": record.index + 1,
                "checkpoints": n,
                "at": rfc3339(record.at),
                "verdict": decision.verdict.value if decision is not None else None,
                "message": message,
                "criteria": [r.to_dict() for r in shown],
                "report": str((self.report_dir / "report.md").resolve()),
            }
        ]

    def _send(self, alert_id: int, alert: Mapping[str, Any]) -> None:
        deliveries = deliver(alert, self.plan.alerts)
        self.state_db.delivered(self.state, alert_id, deliveries)
        self.observer.alert(self, alert, deliveries)

    def _redeliver(self) -> int:
        """Send the alerts a watch of this plan stored but was killed before sending."""
        unsent = self.state_db.unsent(self.plan.name, self.mode)
        for alert_id, _run_id, body in unsent:
            self._send(alert_id, body)
        return len(unsent)

    # -- results --

    def report_doc(self) -> dict[str, Any]:
        from steadyq.watch.reports import build_report

        return build_report(self.plan, self.state, self.times, now=self.clock())

    def _write_reports(self) -> dict[str, Path]:
        from steadyq.watch.reports import write_reports

        return write_reports(self.report_doc(), self.report_dir)

    def _result(self) -> WatchResult:
        run = self.state
        paths = self._write_reports()
        doc = self.report_doc()
        if run.verdict is None:
            reason = (
                f"interrupted after {len(run.checkpoints)} of {len(self.times)} checkpoints;"
                + (" start the same watch again to resume" if not self.replay else "")
            )
            code = VerdictCode.INTERRUPTED
        else:
            reason = run.verdict_reason or run.verdict.value
            code = verdict_code(run.verdict)
        return WatchResult(
            verdict=run.verdict,
            exit_code=code,
            reason=reason,
            run_id=run.run_id,
            checkpoints_taken=len(run.checkpoints),
            checkpoints_planned=len(self.times),
            ended_early=run.ended_early,
            report_paths=paths,
            report=doc,
        )


def _figures_doc(figures: Figures, sample: Mapping[str, Any] | None) -> dict[str, Any]:
    """A snapshot's figures as JSON, with the queue sample filled in when there is one."""
    doc = figures.to_dict()
    values = dict(doc["values"])
    for name in QUEUE_MEASURES:
        values[name] = None if sample is None else sample.get(name)
    doc["values"] = values
    doc.setdefault("details", {})
    return _finite(json.loads(json.dumps(doc, default=str)))  # type: ignore[no-any-return]


def _finite(value: Any) -> Any:
    """The same JSON data with NaN and infinities replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _active(values: Mapping[str, Any]) -> bool:
    """Whether anything ran in the window: an execution, or a message pulled."""
    return any(
        isinstance(values.get(name), int | float) and values[name] > 0
        for name in ("executions.total", "messages.received")
    )


def _run_id(name: str, now: float) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "watch"
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{slug}-{stamp}-{secrets.token_hex(2)}"


def stop_on_signals(watch: Watch) -> AbstractContextManager[None]:
    """SIGTERM (and SIGINT) stop a live run at its next wake-up, state kept; main thread only."""
    return stop_signals(lambda signum: watch.request_stop())


def run_watch(
    plan: Plan | str | Path,
    store: EventStore,
    queue: Queue | None = None,
    report_dir: str | Path = "reports",
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    replay: bool = False,
    fresh: bool = False,
    out: Console | None = None,
    observer: WatchObserver | None = None,
    tick_s: float | None = None,
    settle_s: float = 1.0,
    handle_signals: bool = True,
    source: PlatformSource | None = None,
) -> WatchResult:
    """Run a watch to its verdict and write its reports; the one call the demo needs.

    ``plan`` is a :class:`Plan` or the path of a TOML plan. With ``out`` the run shows
    itself on that console (a live view on a terminal, one line per event otherwise);
    ``observer`` replaces that view. Returns the verdict, its exit code (0 PASSED,
    1 FAILED, 2 INCONCLUSIVE, 130 interrupted) and the report paths.

    Raises:
        ConfigError: the plan is bad or cannot run (exit code 3 on the command line).
        BackendError: the store or the state database failed (exit code 3 too).
    """
    if not isinstance(plan, Plan):
        plan = load_plan(plan)
    if observer is None and out is not None:
        from steadyq.watch.views import view_for

        observer = view_for(out)
    if tick_s is None:
        tick_s = 1.0 if out is not None and out.is_terminal else 5.0
    watch = Watch(
        plan,
        store,
        queue,
        report_dir=report_dir,
        clock=clock,
        sleep=sleep,
        replay=replay,
        fresh=fresh,
        observer=observer,
        tick_s=tick_s,
        settle_s=settle_s,
        source=source,
    )
    if handle_signals and not replay:
        with stop_on_signals(watch):
            return watch.run()
    return watch.run()


__all__ = [
    "CheckpointRecord",
    "RunState",
    "Watch",
    "WatchObserver",
    "WatchResult",
    "WatchState",
    "deliver",
    "run_watch",
]
