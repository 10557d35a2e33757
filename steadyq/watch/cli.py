"""``steadyq watch PLAN`` and ``steadyq watch init``: the commands of the watch.

The terminal views of a running watch live in :mod:`steadyq.watch.views`. The exit
codes of ``steadyq watch PLAN`` are :class:`steadyq.exit_codes.VerdictCode`: 0 PASSED,
1 FAILED, 2 INCONCLUSIVE, 3 nothing could be judged, 130 interrupted (start it again to
resume); ``watch init``'s are :class:`steadyq.exit_codes.ExitCode`.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

from steadyq._options import ConfigOpt, StoreOpt, UrlOpt
from steadyq.cli_import import RejectionOpt
from steadyq.exit_codes import VerdictCode, exits_on_error, fail
from steadyq.watch.views import LiveView, PlainView, view_for


class _PlanFirst(TyperGroup):
    """``steadyq watch PLAN …`` runs a plan; ``steadyq watch init …`` writes one."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # typer's own click
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


watch_app = typer.Typer(
    cls=_PlanFirst,
    help="Watch a fix for a window and end with a verdict: `steadyq watch PLAN`,"
    " or `steadyq watch init` to write the incident's plan.",
    no_args_is_help=True,
)

SourceOpt = Annotated[
    str | None,
    typer.Option(
        "--source",
        help="Watch a platform instead of steadyq's own store: cloudrun://PROJECT/REGION/JOB"
        " (imported into --url at each checkpoint; needs steadyq[gcp]).",
        show_default=False,
    ),
]
SubscriptionOpt = Annotated[
    str | None,
    typer.Option(
        "--subscription",
        help="pubsub://PROJECT/SUBSCRIPTION whose backlog Cloud Monitoring reports.",
        show_default=False,
    ),
]


# -- the command -------------------------------------------------------------------------------


@watch_app.command("run")
def watch_command(
    plan: Annotated[Path, typer.Argument(help="The watch plan (TOML).", show_default=False)],
    url: UrlOpt = None,
    store_url: StoreOpt = None,
    config: ConfigOpt = None,
    report_dir: Annotated[
        Path, typer.Option("--report-dir", help="Where report.md, .json and .html are written.")
    ] = Path("reports"),
    replay: Annotated[
        bool,
        typer.Option(
            "--replay",
            help="Judge a window that is already over, every checkpoint at once"
            " (no start in the plan: the window that ends now).",
        ),
    ] = False,
    fresh: Annotated[
        bool,
        typer.Option("--fresh", help="Abandon this plan's unfinished run and start a new one."),
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print report.json on stdout at the end.")
    ] = False,
    source_url: SourceOpt = None,
    subscription: SubscriptionOpt = None,
    rejection_pattern: RejectionOpt = None,
) -> None:
    """Watch a fix for a window, checkpoint by checkpoint, and end with a verdict.

    With --source, each checkpoint first imports what the platform recorded since
    the last one into the --url store (a transient API failure is retried, and the
    checkpoint taken late rather than judged on part of its data).

    Exit codes: 0 PASSED (proceed), 1 FAILED (investigate), 2 INCONCLUSIVE,
    3 the plan or the store is unusable, 130 interrupted (run it again to resume).
    """
    from steadyq.brokers import open_queue, store_for
    from steadyq.config import load_settings
    from steadyq.watch.plan import load_plan
    from steadyq.watch.run import run_watch

    out = Console(stderr=True, highlight=False) if json_out else Console(highlight=False)
    if source_url is None and (subscription or rejection_pattern):
        fail("--subscription and --rejection-pattern go with --source", VerdictCode.CANNOT_RUN)
    # anything that keeps the watch from judging exits CANNOT_RUN, never a verdict's code
    with exits_on_error(verdict=True):
        the_plan = load_plan(plan)
        settings = load_settings(config, overrides={"url": url, "store": store_url})
        if source_url is not None:
            result = _watch_source(
                the_plan,
                settings.url,
                source_url,
                subscription,
                rejection_pattern or [],
                report_dir,
                replay=replay,
                fresh=fresh,
                out=out,
            )
            if json_out:
                sys.stdout.write(json.dumps(result.report, indent=2, ensure_ascii=True) + "\n")
            raise typer.Exit(result.exit_code)
        # a replay only reads the telemetry: its run state is kept in memory
        queue = open_queue(settings.url, read_only=replay)
        with queue:
            result = run_watch(
                the_plan,
                store_for(queue, settings.store, read_only=replay),
                queue,
                report_dir,
                replay=replay,
                fresh=fresh,
                out=out,
            )
    if json_out:
        sys.stdout.write(json.dumps(result.report, indent=2, ensure_ascii=True) + "\n")
    raise typer.Exit(result.exit_code)


def _watch_source(
    plan: Any,
    url: str,
    source_url: str,
    subscription: str | None,
    patterns: list[str],
    report_dir: Path,
    *,
    replay: bool,
    fresh: bool,
    out: Console,
) -> Any:
    from steadyq.brokers import open_store
    from steadyq.watch.run import run_watch
    from steadyq.watch.sources.cloudrun import open_source
    from steadyq.watch.sources.gcloud import EntryConverter

    converter = EntryConverter.compile(patterns)
    store = open_store(url)
    try:
        target = store.sqlite_store("--source (imports into the watch's store)")
        source = open_source(source_url, target, subscription=subscription, converter=converter)
        try:
            return run_watch(
                plan, store, None, report_dir, replay=replay, fresh=fresh, out=out, source=source
            )
        finally:
            source.close()
    finally:
        store.close()


@watch_app.command("init")
def init_command(
    source_url: Annotated[
        str,
        typer.Option(
            "--source", help="The job: cloudrun://PROJECT/REGION/JOB.", show_default=False
        ),
    ],
    subscription: SubscriptionOpt = None,
    start: Annotated[
        str | None,
        typer.Option(
            help="When the fix was deployed (RFC 3339); the window starts there and the"
            " baseline is the 24 hours before. Default: now, to the minute.",
            show_default=False,
        ),
    ] = None,
    timeout: Annotated[
        str, typer.Option(help="The job's task timeout: a run past it was killed.")
    ] = "30m",
) -> None:
    """Print the incident's plan for a Cloud Run Job: seven criteria, four risks,
    24 h with a checkpoint every 4 h, judged against the day before. Edit, then run
    `steadyq watch plan.toml --source … --subscription …`."""
    from steadyq.durations import parse_duration
    from steadyq.errors import ConfigError
    from steadyq.watch.init import plan_for
    from steadyq.watch.sources.gcloud import parse_time

    with exits_on_error():
        at = time.time() if start is None else parse_time(start)
        if at is None:
            raise ConfigError(f"--start {start!r} is not an RFC 3339 time")
        try:
            text = plan_for(source_url, subscription, start=at, timeout_s=parse_duration(timeout))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    sys.stdout.write(text)


__all__ = ["LiveView", "PlainView", "init_command", "view_for", "watch_app", "watch_command"]
