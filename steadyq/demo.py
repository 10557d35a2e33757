"""``steadyq demo``: the incident, reenacted on the embedded default, judged by a watch.

In a fresh folder it plays, in about two minutes of wall time:

1. **Before the fix.** A legacy worker without request-id validation takes the same
   traffic. Its handler meets an invalid id and retries it in place, as the incident's
   worker did, until the platform's task timeout kills the execution. Those
   executions never finish: the watch counts them as timed out.
2. **After the fix.** Worker executions with the gate start on a schedule, each a
   real ``steadyq worker --drain`` process running the content handler, while valid
   requests and a few poison messages keep arriving.
3. **The watch.** A short plan (written to ``DIR/plan.toml``) judges the "after" window
   at a few checkpoints against the "before" baseline and ends with a verdict; the
   reports land in ``DIR/reports/``.

``--fault hang`` swaps in a handler that hangs on some requests: the hard deadline
kills each hung call, the critical criterion breaches at the first checkpoint, and
the watch ends early, FAILED. The demo exits with the verdict's code.

Everything runs at demo scale: a task timeout of a few seconds stands in for the
incident's 30 minutes. The time scale is in :class:`Timings`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.text import Text

from steadyq.brokers import open_queue, store_for
from steadyq.durations import rfc3339
from steadyq.gate import canonical_request_id, show
from steadyq.publishing import publish_recorded
from steadyq.runner import HandlerContext
from steadyq.samples import poison_messages, valid_request

FAULTS = ("none", "hang")
CLEANUP_TIMEOUT_S = 120.0  # the last execution drains the queue; it needs no tight budget


@dataclass(frozen=True)
class Timings:
    """The demo's clock, in seconds of wall time.

    ``task_timeout_s`` plays the platform's execution timeout (30 minutes in the
    incident); the legacy executions are killed when it passes. A fixed worker gets a
    budget (``--max-runtime``) of ``budget_share`` of it, as a careful user would set
    it: the rest is room for process start and exit on a busy machine, so that the
    platform never has to kill a fixed execution.
    """

    legacy_executions: int = 2
    task_timeout_s: float = 10.0
    budget_share: float = 0.6
    window_s: float = 60.0
    checkpoint_every_s: float = 20.0
    execution_every_s: float = 8.0
    deadline_s: float = 4.0
    traffic_every_s: float = 2.0
    requests_per_tick: int = 2
    poison_every_ticks: int = 4
    video: bool = True  # some requests ask for a video (about a second of CPU each)

    @property
    def worker_budget_s(self) -> float:
        return round(self.task_timeout_s * self.budget_share, 2)


# The quick run (the tests' run) must judge the fix, not the machine: its requests are
# text only (milliseconds each), and every bound keeps seconds of slack, so that two
# CPU-bound processes beside it change nothing.
QUICK = Timings(
    legacy_executions=1,
    task_timeout_s=10.0,
    window_s=20.0,
    checkpoint_every_s=10.0,
    execution_every_s=4.0,
    deadline_s=2.0,
    traffic_every_s=1.0,
    requests_per_tick=2,
    poison_every_ticks=3,
    video=False,
)


# -- what each phase runs (the legacy worker's process, and handlers the workers import) --


def legacy_worker(url: str, artifacts: str, budget_s: float) -> None:
    """The worker as it was before the fix: no gate, one message at a time.

    It writes the same telemetry as steadyq's worker, so the watch can compare the
    two. A body that is not JSON is nacked and comes back; a request whose id is
    not a UUID is retried in place, its lease renewed, until the platform's task
    timeout kills the process, which therefore never writes its finish.
    """
    import uuid

    from steadyq.brokers.base import Delivery, Settlement
    from steadyq.telemetry import events as ev
    from steadyq.telemetry.events import Event

    execution_id = uuid.uuid4().hex[:16]
    with open_queue(url) as queue:
        store = store_for(queue)

        def event(kind: str, **fields: Any) -> Event:
            return Event(kind=kind, timestamp=time.time(), execution_id=execution_id, **fields)

        def give_back(d: Delivery, labels: dict[str, Any], exc: Exception) -> None:
            """Log the failure and nack: the message comes back in half a second."""
            text = f"Failed to process message: {type(exc).__name__}"
            logged = event(ev.LOG, severity="ERROR", message=text, **labels)
            queue.settle([Settlement.nack(d, 0.5, error=text, events=[logged])])

        store.write(
            [
                event(
                    ev.EXECUTION_STARTED,
                    # its budget is the task timeout that kills it: past it, a listing
                    # shows the execution timed out, as the watch counts it
                    data={"runner": "legacy", "pid": os.getpid(), "max_runtime_s": budget_s},
                ),
                event(ev.EXECUTION_READY),
            ]
        )
        while True:
            deliveries = queue.pull(1, 2.0)
            if not deliveries:
                time.sleep(0.2)
                continue
            d = deliveries[0]
            labels = {"message_id": d.message_id, "attempt": d.attempt}
            store.write([event(ev.MESSAGE_RECEIVED, **labels)])
            try:
                data = json.loads(d.body)
                request_id = str(data["request_id"])
            except Exception as exc:
                give_back(d, labels, exc)
                continue
            attempt = 0
            while canonical_request_id(request_id) is None:
                attempt += 1
                text = (
                    f"Invalid request_id format: {show(request_id)}; retrying (attempt {attempt})"
                )
                store.write([event(ev.LOG, severity="ERROR", message=text, **labels)])
                d = queue.extend(d, 2.0)
                time.sleep(0.5)
            started = time.perf_counter()
            ctx = HandlerContext(
                attempt=d.attempt,
                deadline_at=time.time() + 1800,
                execution_id=execution_id,
                message_id=d.message_id,
                request_id=request_id,
                attributes=dict(d.attributes),
                logger=logging.getLogger("steadyq.demo.legacy"),
                artifacts_dir=Path(artifacts),
            )
            try:
                result = _content(data, ctx)
            except Exception as exc:
                give_back(d, labels, exc)
                continue
            done = event(
                ev.MESSAGE_SUCCEEDED,
                request_id=canonical_request_id(request_id),
                duration_ms=(time.perf_counter() - started) * 1000,
                data={"result": result} if result else {},
                **labels,
            )
            queue.settle([Settlement.ack(d, [done])])


CONTENT_SCHEMA = "steadyq.content:ContentRequest"


def hanging_handle(request: Any, ctx: HandlerContext) -> dict[str, Any] | None:
    """The content handler with a fault: one request in four hangs forever.

    Its worker runs with ``--schema steadyq.content:ContentRequest``.
    """
    from steadyq.content import handle

    if int(request.request_id[:2], 16) % 4 == 0:
        ctx.logger.info("fault injected: this call hangs")
        time.sleep(3600)
    return handle(request, ctx)


def _content(data: dict[str, Any], ctx: HandlerContext) -> dict[str, Any] | None:
    from steadyq.content import handle
    from steadyq.content.schema import ContentRequest

    return handle(ContentRequest.model_validate(data), ctx)


# -- traffic -----------------------------------------------------------------------------


class Traffic(threading.Thread):
    """Publishes valid content requests every tick and a poison message now and then."""

    def __init__(self, url: str, timings: Timings, seed: int = 11) -> None:
        super().__init__(name="demo-traffic", daemon=True)
        self.url = url
        self.timings = timings
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.published = 0
        self.poisoned = 0
        self.error: BaseException | None = None
        self._poison = poison_messages(random.Random(seed))

    def run(self) -> None:
        # mostly text; one in seven text + video; one in seven without modalities (video)
        shapes: list[list[str] | None] = [["text"] for _ in range(5)]
        shapes += [["text", "video"], None] if self.timings.video else [["text"]]
        try:
            with open_queue(self.url) as queue:
                store = store_for(queue)
                tick = 0
                while not self.stop.is_set():
                    bodies = [
                        json.dumps(
                            valid_request(self.rng, modalities=self.rng.choice(shapes))
                        ).encode()
                        for _ in range(self.timings.requests_per_tick)
                    ]
                    if tick % self.timings.poison_every_ticks == 0:
                        bodies.append(self._poison[self.poisoned % len(self._poison)])
                        self.poisoned += 1
                    publish_recorded(queue, store, ((b, {"source": "demo"}) for b in bodies))
                    self.published += len(bodies)
                    tick += 1
                    self.stop.wait(self.timings.traffic_every_s)
        except BaseException as exc:  # reported by the demo, not lost in a thread
            self.error = exc


# -- executions --------------------------------------------------------------------------


@dataclass
class Execution:
    phase: str
    started: float
    seconds: float
    code: int | None  # None: killed by the task timeout


def _worker_command(url: str, artifacts: Path, args: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "steadyq",
        "worker",
        "--url",
        url,
        "--artifacts",
        str(artifacts),
        "--log-format",
        "none",
        *args,
    ]


def run_execution(
    command: list[str],
    log: IO[str],
    timeout_s: float,
    phase: str,
    stop: threading.Event,
    *,
    finish_on_stop: bool = False,
) -> Execution:
    """One execution as a platform runs it: a process, killed when the task times out.

    ``stop`` kills it early, unless ``finish_on_stop``: a draining worker with a time
    budget ends by itself, and a signal sent while it is still starting could kill it
    before it can drain."""
    started = time.time()
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,  # our Ctrl-C is not its Ctrl-C; we stop it ourselves
    )
    deadline = started + timeout_s
    while proc.poll() is None and time.time() < deadline:
        if stop.is_set() and not finish_on_stop:
            break
        time.sleep(0.05)
    code = proc.poll()
    if code is None:
        # the platform's task timeout: no grace, the worker cannot write its finish
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return Execution(phase, started, time.time() - started, code)


class Scheduler(threading.Thread):
    """Starts one fixed-worker execution every ``execution_every_s``, one at a time."""

    def __init__(self, command: list[str], log: IO[str], timings: Timings) -> None:
        super().__init__(name="demo-scheduler", daemon=True)
        self.command = command
        self.log = log
        self.timings = timings
        self.stop = threading.Event()
        self.done: list[Execution] = []

    def run(self) -> None:
        while not self.stop.is_set():
            begun = time.time()
            self.done.append(
                run_execution(
                    self.command,
                    self.log,
                    self.timings.task_timeout_s,
                    "after",
                    self.stop,
                    finish_on_stop=True,
                )
            )
            self.stop.wait(max(0.0, self.timings.execution_every_s - (time.time() - begun)))


# -- the plan ----------------------------------------------------------------------------


def demo_plan(*, start: float, baseline: tuple[float, float], timings: Timings, fault: str) -> str:
    """The watch plan the demo judges with: the incident's criteria at demo scale."""
    t = timings
    lines = [
        f'name = "demo-uuid-fix{"-fault-" + fault if fault != "none" else ""}"',
        f'purpose = "Confirm that the gate stops invalid request ids from hanging executions'
        f' (demo scale: a task timeout of {t.task_timeout_s:g} s stands in for 30 minutes)"',
        f"start = {rfc3339(start)}",
        f'window = "{t.window_s:g}s"',
        f'checkpoint_every = "{t.checkpoint_every_s:g}s"',
        f'max_runtime_s = "{t.task_timeout_s:g}s"',
        "",
        "[baseline]",
        f"start = {rfc3339(baseline[0])}",
        f"end = {rfc3339(baseline[1])}",
    ]
    criteria: list[dict[str, Any]] = [
        {"name": "No execution timed out", "measure": "executions.timed_out", "max": 0,
         "critical": True},
        {"name": "No handler call hung past its deadline", "measure": "messages.timed_out",
         "max": 0, "critical": True},
        {"name": "Every execution finished well inside the task timeout",
         "measure": "executions.duration_s.max", "max": round(t.task_timeout_s * 0.8, 2)},
        {"name": "Invalid request ids rejected and never retried",
         "measure": "messages.rejected.redelivered", "max": 0},
        {"name": "Valid requests processed without errors", "measure": "messages.failed",
         "max": 0},
        {"name": "Startup under 2 seconds", "measure": "executions.startup_s.max", "max": 2},
        {"name": "No request failing in more than one execution",
         "measure": "requests.failed_in_multiple_executions", "max": 0},
        {"name": "No error pattern the baseline did not have",
         "measure": "errors.new_patterns", "max": 0},
        {"name": "Oldest unacked message younger than the checkpoint interval",
         "measure": "queue.oldest_unacked_age_s", "max": t.checkpoint_every_s,
         "scope": "checkpoint", "no_data": "pass"},
        {"name": "Success rate no worse than before", "measure": "executions.success_rate",
         "min_vs_baseline": "+0%", "dry_run": True},
    ]  # fmt: skip
    for c in criteria:
        lines += ["", "[[criteria]]"]
        lines += [f"{key} = {json.dumps(value)}" for key, value in c.items()]
    lines += [
        "",
        "[[risks]]",
        'name = "DLQ filling up"',
        'probability = "medium"',
        'impact = "low"',
        'mitigation = "steadyq dlq stats; fix the producer; steadyq dlq replay"',
        'measure = "messages.to_dlq"',
        "max = 25",
    ]
    return "\n".join(lines) + "\n"


# -- the whole story ---------------------------------------------------------------------


def _clean_up(url: str, command: list[str], log: IO[str], say: Callable[[str], None]) -> None:
    """Run draining executions until nothing is ready, in flight or waiting out a retry
    delay (a drain leaves delayed retries to the next execution)."""
    end = time.time() + CLEANUP_TIMEOUT_S
    with open_queue(url) as queue:
        while time.time() < end:
            run = run_execution(command, log, end - time.time(), "cleanup", threading.Event())
            if run.code != 0:
                say(f"    a cleanup execution ended with {run.code or 'a kill'}")
                return
            stats = queue.stats()
            if not (stats.ready or stats.in_flight or stats.delayed):
                return
            time.sleep(0.5)  # a retry delay runs out (the demo's are 2 s at most)
        say(f"    the queue was not empty after {CLEANUP_TIMEOUT_S:g} s of cleanup")


def _fresh(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("steadyq.db", "steadyq.db-wal", "steadyq.db-shm", "plan.toml"):
        (directory / name).unlink(missing_ok=True)
    for name in ("artifacts", "reports", "logs"):
        shutil.rmtree(directory / name, ignore_errors=True)


def _fit_to_host(t: Timings, say: Callable[[str], None]) -> Timings:
    """The demo's timings for this machine: its videos only where one renders within
    a third of a handler call's deadline.

    A video costs about a second of CPU on a machine like ours; where it takes several
    (a slow or shared host), two of them in a worker's children beside the traffic run
    past the 4 s deadline (each child gets well under a core), and the watch then
    judges the machine instead of the fix (calls timed out, executions over their
    budget). One sample video is rendered and timed first; past the limit the requests
    are text only and the demo says so.
    """
    if not t.video:
        return t
    from steadyq.content.handler import _default_generator
    from steadyq.content.schema import ContentRequest
    from steadyq.content.video import render_video
    from steadyq.samples import valid_request

    sample = ContentRequest.model_validate(
        valid_request(random.Random(7), modalities=["text", "video"])
    )
    lesson = _default_generator.generate(sample)
    with tempfile.TemporaryDirectory(prefix="steadyq-demo-probe-") as probe:
        started = time.perf_counter()
        render_video(lesson, Path(probe) / "probe.mp4")
        took = time.perf_counter() - started
    limit = t.deadline_s / 3
    if took <= limit:
        return t
    say(
        f"this machine renders a sample video in {took:.1f} s (more than a third of"
        f" the {t.deadline_s:g} s deadline): the demo's requests are text only, so that"
        " the verdict judges the fix and not the machine"
    )
    return replace(t, video=False)


def run_demo(
    directory: Path,
    *,
    fault: str = "none",
    timings: Timings | None = None,
    console: Console | None = None,
    handle_signals: bool = True,
) -> int:
    """Reenact the incident and judge the fix; return the verdict's exit code."""
    from steadyq.watch.run import run_watch

    if fault not in FAULTS:
        from steadyq.errors import ConfigError

        raise ConfigError(f"--fault {fault!r}: expected one of {', '.join(FAULTS)}")
    try:
        import steadyq.content  # noqa: F401  (the demo's workers run it)
    except ImportError as exc:
        from steadyq.errors import MissingExtra

        # the content workload says which of its packages is missing
        raise MissingExtra("steadyq demo (the content workload)", "content") from exc
    t = timings or Timings()
    console = console or Console()
    directory = directory.resolve()
    _fresh(directory)
    (directory / "logs").mkdir()
    url = f"sqlite:///{directory / 'steadyq.db'}"
    artifacts = directory / "artifacts"
    log = (directory / "logs" / "executions.log").open("a", encoding="utf-8")
    say: Callable[[str], None] = lambda text: console.print(Text(text))  # noqa: E731
    if timings is None:
        t = _fit_to_host(t, say)

    traffic = Traffic(url, t)
    scheduler: Scheduler | None = None
    stop = threading.Event()
    try:
        # -- before the fix ---------------------------------------------------------
        with open_queue(url):
            pass  # create the database before two threads race to
        before_start = time.time()
        traffic.start()
        say(
            f"1/3 before the fix: {t.legacy_executions} legacy execution(s) without the gate;"
            f" each is killed by a {t.task_timeout_s:g} s task timeout"
        )
        legacy = [
            sys.executable, "-m", "steadyq.demo", "legacy", url, str(artifacts),
            f"{t.task_timeout_s:g}",
        ]  # fmt: skip
        for index in range(t.legacy_executions):
            run = run_execution(legacy, log, t.task_timeout_s, "before", stop)
            fate = "killed at the task timeout" if run.code is None else f"exit {run.code}"
            say(f"    legacy execution {index + 1}: {fate} after {run.seconds:.1f} s")
        time.sleep(2.5)  # the killed workers' leases run out; their messages come back
        before_end = time.time()

        # -- after the fix ----------------------------------------------------------
        # the content handler brings its own schema; the faulty one borrows it
        handler = (
            ["--handler", "steadyq.demo:hanging_handle", "--schema", CONTENT_SCHEMA]
            if fault == "hang"
            else ["--handler", "steadyq.content:handle"]
        )
        fixed_args = [
            *handler,
            "--drain",
            "--deadline", f"{t.deadline_s:g}s",
            "--retry-min", "0.5s",
            "--retry-max", "2s",
            "--max-attempts", "3",
        ]  # fmt: skip
        fixed = _worker_command(
            url,
            artifacts,
            [*fixed_args, "--max-runtime", f"{t.worker_budget_s:g}s", "--concurrency", "2"],
        )
        window_start = time.time()
        plan_path = directory / "plan.toml"
        plan_path.write_text(
            demo_plan(
                start=window_start, baseline=(before_start, before_end), timings=t, fault=fault
            ),
            encoding="utf-8",
        )
        say(
            f"2/3 after the fix: an execution with the gate every {t.execution_every_s:g} s"
            + (" (fault injected: a handler that hangs)" if fault == "hang" else "")
        )
        scheduler = Scheduler(fixed, log, t)
        scheduler.start()
        say(f"3/3 watching {t.window_s:g} s, a checkpoint every {t.checkpoint_every_s:g} s")
        with open_queue(url) as queue:
            result = run_watch(
                plan_path,
                store_for(queue),
                queue,
                directory / "reports",
                out=console,
                handle_signals=handle_signals,
                settle_s=0.5,
            )
    finally:
        traffic.stop.set()
        if scheduler is not None:
            scheduler.stop.set()
            scheduler.join()
        stop.set()
        traffic.join()
        if scheduler is not None:
            # what the window left behind (messages still queued, a request whose
            # execution the task timeout killed) is worked off, so the store ends clean
            say("cleaning up: draining executions work off what is left")
            tidy = _worker_command(url, artifacts, [*fixed_args, "--concurrency", "4"])
            _clean_up(url, tidy, log, say)
        log.close()
    if traffic.error is not None:
        say(f"traffic stopped early: {traffic.error}")
    runs = scheduler.done if scheduler is not None else []
    say(
        f"published {traffic.published} messages ({traffic.poisoned} poison);"
        f" {len(runs)} fixed execution(s) ran"
    )
    style = {0: "bold green", 1: "bold red"}.get(result.exit_code, "bold yellow")
    verdict = result.verdict or "interrupted (resumable)"
    console.print(Text(f"verdict: {verdict}", style=style) + Text(f" — {result.reason}"))
    for path in result.report_paths.values():
        say(f"report: {path}")
    say(f"look closer: steadyq requests --url {url}    steadyq dlq ls --url {url}")
    say(f"judge again: steadyq watch {plan_path} --replay --url {url}")
    return int(result.exit_code)


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "legacy":
    # the legacy worker's process: python -m steadyq.demo legacy URL ARTIFACTS BUDGET_S
    legacy_worker(sys.argv[2], sys.argv[3], float(sys.argv[4]))
