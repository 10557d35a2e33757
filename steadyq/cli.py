"""The ``steadyq`` command: parse, build settings, call the library, return an exit code."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from steadyq import dlq as dlq_ops
from steadyq._options import ConfigOpt, StoreOpt, UrlOpt
from steadyq._terminal import safe
from steadyq.brokers import open_queue, store_for
from steadyq.brokers.base import DlqFilter, Queue
from steadyq.cli_import import import_app
from steadyq.cli_pubsub import pubsub_app
from steadyq.cli_schema import schema_command
from steadyq.cli_store import store_app
from steadyq.config import (
    WORKER_SETTINGS,
    Setting,
    Settings,
    load_settings,
    unknown_variables,
    worker_options,
)
from steadyq.durations import format_duration, parse_duration, parse_time_or_age, rfc3339
from steadyq.errors import ConfigError, SteadyqError
from steadyq.exit_codes import exits_on_error
from steadyq.publishing import publish_recorded
from steadyq.telemetry.events import KINDS, LOG, SEVERITIES, Event
from steadyq.telemetry.store import REQUEST_STATUSES, EventFilter, EventStore
from steadyq.watch.cli import watch_app

if TYPE_CHECKING:
    from steadyq._progress import TerminalProgress

app = typer.Typer(
    name="steadyq",
    help="Queue-driven workers that cannot be poisoned, and the tools to inspect them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain help: typer's rich panels label every flag '<bool>' as if it took a value
    rich_markup_mode=None,
)
dlq_app = typer.Typer(
    help="Inspect, replay and purge the dead-letter queue.",
    no_args_is_help=True,
    rich_markup_mode=None,
)
queue_app = typer.Typer(
    help="Look at the queue itself.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(dlq_app, name="dlq")
app.add_typer(queue_app, name="queue")
app.add_typer(pubsub_app, name="pubsub")
app.add_typer(import_app, name="import")
app.add_typer(store_app, name="store")

out = Console(highlight=False, soft_wrap=False)
err = Console(stderr=True, highlight=False, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON array instead of a table.")]
SinceOpt = Annotated[
    str | None,
    typer.Option("--since", help="Only since this age (24h, 7d) or RFC 3339 time."),
]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="At most this many rows.")]

F = TypeVar("F", bound=Callable[..., Any])


def _show_version(value: bool) -> None:
    if value:
        from steadyq import __version__

        out.print(f"steadyq {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_show_version,
            is_eager=True,
            help="Print steadyq's version and exit.",
        ),
    ] = False,
) -> None:
    """Queue-driven workers that cannot be poisoned, and the tools to inspect them."""


def settings_for(
    url: str | None,
    config: Path | None,
    worker: dict[str, Any] | None = None,
    store: str | None = None,
) -> Settings:
    _warn_about_variables()
    return load_settings(config, overrides={"url": url, "store": store, "worker": worker or {}})


def _warn_about_variables() -> None:
    for note in unknown_variables():
        err.print(Text("warning: ", style="bold yellow") + Text(note))


def _open(
    url: str | None, config: Path | None, store: str | None = None, *, read_only: bool = False
) -> tuple[Queue, EventStore]:
    """The queue and its store; ``read_only`` for commands that only look, which must
    neither create a database nor need the right to write one."""
    settings = settings_for(url, config, store=store)
    queue = open_queue(settings.url, read_only=read_only)
    try:
        return queue, store_for(queue, settings.store, read_only=read_only)
    except BaseException:
        queue.close()
        raise


def _look_at_queue(url: str | None, config: Path | None) -> Queue:
    """The queue alone, read-only: its stats and dead letters need no telemetry store."""
    return open_queue(settings_for(url, config).url, read_only=True)


def table(*columns: str) -> Table:
    """A table whose columns keep their values on one line, but for the last, which wraps."""
    t = Table()
    for index, name in enumerate(columns):
        last = index == len(columns) - 1
        t.add_column(name, no_wrap=not last, overflow="fold" if last else "ellipsis")
    return t


# piped, a table keeps its natural width: a terminal's 80-column default would squeeze
# and cut it for the program reading it
PIPED_WIDTH = 100_000


def _one_more(limit: int | None) -> int | None:
    """Ask a listing for one row past ``limit``: that row says whether more match."""
    return None if limit is None else limit + 1


def _cut(rows: list[Any], limit: int | None, what: str, narrow: str) -> list[Any]:
    """The first ``limit`` rows; when more matched, say so on stderr (stdout stays the
    listing, JSON included)."""
    if limit is None or len(rows) <= limit:
        return rows
    err.print(
        f"showing the first {limit} {what}; more match: raise --limit, or narrow with {narrow}"
    )
    return rows[:limit]


def _show(renderable: Any) -> None:
    if out.is_terminal:
        out.print(renderable)
        return
    # a console of its own: out's width is fixed once asked, and stdout may change
    # under it (tests swap it)
    piped = Console(file=sys.stdout, width=PIPED_WIDTH, highlight=False, soft_wrap=False)
    piped.print(renderable)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=True, indent=2, default=str) + "\n")


def _since(value: str | None) -> float | None:
    return None if value is None else parse_time_or_age(value, now=time.time())


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _guard(fn: Callable[[], int | None], *, verdict: bool = False) -> None:
    """Run a command body and exit with the code it returns; its errors become one
    ``error:`` line and the code :func:`steadyq.exit_codes.code_for` gives them
    (``verdict``: a command whose codes are verdicts, where every error is CANNOT_RUN)."""
    with exits_on_error(verdict=verdict):
        code = fn()
    raise typer.Exit(code or 0)


# -- publish ------------------------------------------------------------------


def _read_lines(path: str) -> Iterator[bytes]:
    stream = sys.stdin.buffer if path == "-" else Path(path).open("rb")  # noqa: SIM115
    try:
        for line in stream:
            body = line[:-1] if line.endswith(b"\n") else line
            if body:
                yield body
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


@app.command()
def publish(
    file: Annotated[str, typer.Argument(help="File with one message body per line; - for stdin.")],
    url: UrlOpt = None,
    config: ConfigOpt = None,
    store_url: StoreOpt = None,
    attribute: Annotated[
        list[str] | None,
        typer.Option("--attribute", "-a", help="KEY=VALUE attribute on every message."),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Messages per publish batch.")] = 500,
    json_out: JsonOpt = False,
) -> None:
    """Publish each line of FILE verbatim (bytes) as one message. Empty lines are skipped."""

    def run() -> int:
        attrs: dict[str, str] = {}
        for item in attribute or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--attribute {item!r} must look like KEY=VALUE")
            attrs[key] = value
        if file != "-" and Path(file).is_dir():
            raise ConfigError(f"{file} is a folder: give a file with one message body per line")
        if file != "-" and not Path(file).is_file():
            raise ConfigError(f"no such file: {file}")
        queue, store = _open(url, config, store_url)
        ids: list[str] = []
        chunk: list[tuple[bytes, dict[str, str]]] = []
        with queue:
            for body in _read_lines(file):
                chunk.append((body, attrs))
                if len(chunk) >= batch:
                    ids += publish_recorded(queue, store, chunk)
                    chunk = []
                    if not json_out and len(ids) % 10000 < batch:
                        err.print(f"published {len(ids)} …")
            if chunk:
                ids += publish_recorded(queue, store, chunk)
        if json_out:
            _print_json({"published": len(ids), "message_ids": ids})
        else:
            out.print(f"published {len(ids)} messages")
        return 0

    _guard(run)


# -- worker -------------------------------------------------------------------


def _import_from_here() -> None:
    """Let ``--handler mypkg.jobs:handle`` find ``mypkg`` in the current folder, as
    uvicorn, celery and rq do. The handler processes inherit ``sys.path`` (fork copies
    it; spawn and forkserver are handed it by multiprocessing)."""
    here = os.getcwd()
    if here not in sys.path and "" not in sys.path:
        sys.path.insert(0, here)


def _setting_flag(setting: Setting) -> Any:
    """The typer annotation of a worker setting's flag; every flag defaults to None
    ("not given"), so the file and the environment show through."""
    if setting.type is bool:
        names = f"{setting.cli_flag}/{setting.off_flag}" if setting.off_flag else setting.cli_flag
        return Annotated[bool | None, typer.Option(names, help=setting.help, show_default=False)]
    if setting.type in (int, int | None):
        low, high = setting.limits.get("ge"), setting.limits.get("le")
        return Annotated[
            int | None,
            typer.Option(
                setting.cli_flag,
                help=setting.help,
                show_default=False,
                min=None if low is None else int(low),
                max=None if high is None else int(high),
            ),
        ]
    # durations, names and choices: the settings validate them and blame the flag
    return Annotated[str | None, typer.Option(setting.cli_flag, help=setting.help)]


def _with_setting_flags(command: F) -> F:
    """Give ``command`` one flag per worker setting (:data:`steadyq.config.WORKER_SETTINGS`),
    before its own keyword-only options; they reach it in ``**settings``."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    first_own_option = next(i for i, p in enumerate(own) if p.kind is p.KEYWORD_ONLY)
    flags = [
        inspect.Parameter(
            s.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_setting_flag(s)
        )
        for s in WORKER_SETTINGS
    ]
    params = own[:first_own_option] + flags + own[first_own_option:]
    command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    return command


@app.command()
@_with_setting_flags
def worker(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    store_url: StoreOpt = None,
    *,
    log_format: Annotated[
        str,
        typer.Option(
            help="What goes to stdout: 'auto' (a live status line on a terminal, else"
            " 'json'), 'json' (every event as a Cloud Logging line), 'progress', 'none'.",
        ),
    ] = "auto",
    metrics_port: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=65535,
            help="Serve Prometheus /metrics on this port while the execution runs"
            " (needs the dashboard extra).",
        ),
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="Address for --metrics-port.")] = "127.0.0.1",
    **settings: Any,
) -> None:
    """Run one execution: pull, validate, run the handler, settle every message.

    Every setting of steadyq.toml's [worker] table has a flag here (and a variable
    STEADYQ_WORKER_<KEY>); a flag wins over both.

    Exit codes: 0 done (drained, stopped, or time budget reached), 2 bad settings,
    3 backend unavailable, 4 handler unloadable, 5 interrupted by a second signal.
    """

    def run() -> int:
        from steadyq.telemetry.logs import JsonLinesSink
        from steadyq.worker import Worker

        if log_format not in LOG_FORMATS:
            raise ConfigError(f"--log-format must be one of {', '.join(LOG_FORMATS)}")
        keys = {s.name: s.key for s in WORKER_SETTINGS}
        given = {keys[name]: value for name, value in settings.items()}
        settings_ = settings_for(url, config, given, store=store_url)
        ws = settings_.worker
        if ws.handler is None:
            raise ConfigError(
                "no handler: name one with --handler module:function, or `handler` under"
                " [worker] in steadyq.toml (the content workload: steadyq.content:handle)"
            )
        _import_from_here()  # before the schema is loaded: it may live here too
        options = worker_options(ws)
        shown = log_format
        if shown == "auto":
            shown = "progress" if out.is_terminal else "json"
        queue = open_queue(settings_.url)
        with queue, contextlib.ExitStack() as stack:
            store = store_for(queue, settings_.store)
            progress = None
            sink: Callable[[Event], None] | None = None
            if shown == "progress":
                progress = stack.enter_context(
                    _terminal_progress(settings_.url, drain=options.drain, level=ws.log_level)
                )
                sink = progress
            elif shown == "json":
                # the handlers' records below --log-level never leave the handler; the
                # worker's own (NOTICE "backend available again" …) always print
                sink = JsonLinesSink()
            if metrics_port is not None:
                from steadyq.worker_metrics import serving_metrics

                fed, bound = stack.enter_context(
                    serving_metrics(settings_.url, sink, metrics_host, metrics_port)
                )
                err.print(f"metrics on http://{metrics_host}:{bound}/metrics")
                sink = fed
            worker_ = Worker(queue, store, options, sink=sink)
            if progress is not None:
                progress.follow(worker_.counts)
            result = worker_.run()
        sys.stdout.flush()
        counts = ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items())) or "no messages"
        style = "green" if result.exit_code == 0 else "red"
        err.print(
            Text(f"execution {result.execution_id} {result.status}", style=style)
            + Text(f" in {format_duration(result.duration_s)}: {counts}")
            + (Text(f" ({result.detail})") if result.detail else Text(""))
        )
        return int(result.exit_code)

    _guard(run)


LOG_FORMATS = ("auto", "json", "progress", "none")


@contextlib.contextmanager
def _terminal_progress(url: str, *, drain: bool, level: str) -> Iterator[TerminalProgress]:
    """A live status line for the worker's terminal; the queue's remaining count comes
    from a second handle (read-only for SQLite), so asking never waits on the worker."""
    from steadyq._progress import TerminalProgress

    looker: Queue | None = None
    if not url.startswith("memory:"):
        try:
            looker = open_queue(url, read_only=True)
        except SteadyqError:
            looker = None  # the line simply shows no remaining count
    try:
        progress = TerminalProgress(
            out,
            drain=drain,
            min_severity=level,
            queue_stats=None if looker is None else looker.stats,
        )
        with progress:
            yield progress
    finally:
        if looker is not None:
            looker.close()


# -- listings -----------------------------------------------------------------


@app.command()
def executions(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    store_url: StoreOpt = None,
    since: SinceOpt = None,
    limit: LimitOpt = 50,
    json_out: JsonOpt = False,
) -> None:
    """Executions, newest first: status, start, completion, duration, startup."""

    def run() -> int:
        queue, store = _open(url, config, store_url, read_only=True)
        with queue:
            rows = store.executions(since=_since(since), limit=_one_more(limit))
        rows = _cut(rows, limit, "executions (newest first)", "--since")
        if json_out:
            _print_json([r.to_dict() for r in rows])
            return 0
        grid = table(
            "execution", "status", "started", "finished", "duration", "startup", "messages"
        )
        for r in rows:
            counts = r.data.get("counts", {})
            grid.add_row(
                r.execution_id,
                Text(r.status, style="green" if r.status == "succeeded" else "yellow"),
                _when(r.started_at),
                _when(r.finished_at),
                "—" if r.duration_s is None else format_duration(r.duration_s),
                "—" if r.startup_s is None else format_duration(r.startup_s),
                safe(" ".join(f"{k}={v}" for k, v in sorted(counts.items()))),
            )
        _show(grid if rows else "no executions")
        return 0

    _guard(run)


@app.command()
def requests(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    store_url: StoreOpt = None,
    status: Annotated[
        str | None,
        typer.Option(help="Only this status: pending, processing, completed or failed."),
    ] = None,
    request_id: Annotated[str | None, typer.Option("--request-id", help="Only this id.")] = None,
    since: SinceOpt = None,
    limit: LimitOpt = 50,
    json_out: JsonOpt = False,
) -> None:
    """Requests in the ledger, most recently updated first: status, duration, and the
    workload's ledger fields (file paths shortened to names; --json gives them whole)."""

    def run() -> int:
        if status is not None and status not in REQUEST_STATUSES:
            raise ConfigError(f"--status {status!r}: expected one of {', '.join(REQUEST_STATUSES)}")
        queue, store = _open(url, config, store_url, read_only=True)
        with queue:
            rows = store.requests(
                status=status, request_id=request_id, since=_since(since), limit=_one_more(limit)
            )
        rows = _cut(rows, limit, "requests (most recently updated first)", "--status or --since")
        if json_out:
            _print_json([r.to_dict() for r in rows])
            return 0
        grid = Table(box=box.SIMPLE_HEAD, pad_edge=False)
        grid.add_column("request", no_wrap=True, min_width=36)
        for name in ("status", "duration"):
            grid.add_column(name, no_wrap=True)
        grid.add_column("fields / error", overflow="fold", min_width=22)
        colours = {"completed": "green", "failed": "red", "processing": "cyan"}
        for r in rows:
            grid.add_row(
                safe(r.request_id),
                Text(r.status, style=colours.get(r.status, "yellow")),
                "—" if r.duration_s is None else format_duration(r.duration_s),
                safe(r.error if r.status != "completed" and r.error else _fields_text(r.fields)),
            )
        _show(grid if rows else "no requests")
        return 0

    _guard(run)


def _fields_text(fields: dict[str, Any] | None) -> str:
    """``key=value`` pairs on one line: lists joined with +, an object by its values,
    paths by their file names."""
    if not fields:
        return "—"

    def one(value: Any) -> str:
        if isinstance(value, list):
            return "+".join(one(v) for v in value)
        if isinstance(value, dict):
            return " ".join(sorted(one(v) for v in value.values()))
        text = str(value)
        return Path(text).name if "/" in text else text

    return " ".join(f"{key}={one(value)}" for key, value in fields.items())


@app.command()
def events(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    store_url: StoreOpt = None,
    kind: Annotated[
        list[str] | None, typer.Option("--kind", help=f"Event kind: {', '.join(KINDS)}.")
    ] = None,
    since: SinceOpt = None,
    execution: Annotated[str | None, typer.Option(help="Only this execution id.")] = None,
    message: Annotated[str | None, typer.Option(help="Only this message id.")] = None,
    request: Annotated[str | None, typer.Option(help="Only this request id.")] = None,
    limit: LimitOpt = 200,
    json_out: JsonOpt = False,
) -> None:
    """Events from the store, oldest first within the newest LIMIT."""

    def run() -> int:
        for k in kind or []:
            if k not in KINDS:
                raise ConfigError(f"unknown event kind {k!r}; known: {', '.join(KINDS)}")
        where = EventFilter(
            kinds=tuple(kind) if kind else None,
            since=_since(since),
            execution_id=execution,
            message_id=message,
            request_id=request,
            limit=limit,
            newest_first=True,
        )
        _show_events(
            url, config, store_url, where, json_out, "--kind, --since, --execution or --message"
        )
        return 0

    _guard(run)


@app.command()
def logs(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    store_url: StoreOpt = None,
    severity: Annotated[
        str, typer.Option(help=f"Lowest severity: {', '.join(SEVERITIES)}.")
    ] = "WARNING",
    since: SinceOpt = None,
    limit: LimitOpt = 200,
    json_out: JsonOpt = False,
) -> None:
    """Log records (WARNING and above are stored) at or above SEVERITY."""

    def run() -> int:
        if severity.upper() not in SEVERITIES:
            raise ConfigError(f"unknown severity {severity!r}; known: {', '.join(SEVERITIES)}")
        where = EventFilter(
            kinds=(LOG,),
            since=_since(since),
            min_severity=severity.upper(),
            limit=limit,
            newest_first=True,
        )
        _show_events(url, config, store_url, where, json_out, "--severity or --since")
        return 0

    _guard(run)


def _show_events(
    url: str | None,
    config: Path | None,
    store_url: str | None,
    where: EventFilter,
    json_out: bool,
    narrow: str,
) -> None:
    queue, store = _open(url, config, store_url, read_only=True)
    with queue:
        newest = store.events(dataclasses.replace(where, limit=_one_more(where.limit)))
    found = list(reversed(_cut(newest, where.limit, "events (the newest)", narrow)))
    if json_out:
        _print_json([e.to_dict() for e in found])
        return
    if not found:
        out.print("no events")
        return
    grid = table("time", "severity", "kind", "execution", "message", "attempt", "reason", "text")
    for e in found:
        grid.add_row(
            rfc3339(e.timestamp)[:23],
            Text(e.severity, style="red" if e.severity in ("ERROR", "CRITICAL") else ""),
            e.kind,
            e.execution_id or "",
            e.message_id or "",
            "" if e.attempt is None else str(e.attempt),
            safe(e.reason or ""),
            safe(e.message, 120 if out.is_terminal else None),
        )
    _show(grid)


@queue_app.command("stats")
def queue_stats(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    store_url: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Ready, in flight, delayed, dead-lettered, and the oldest unacked message's age."""

    def run() -> int:
        queue = _look_at_queue(url, config)
        with queue:
            stats = queue.stats()
        if json_out:
            data = stats.to_dict()
            sys.stdout.write(json.dumps(data, ensure_ascii=True) + "\n")
            return 0
        grid = table("ready", "in flight", "delayed", "dead-lettered", "oldest unacked")
        age = stats.oldest_unacked_age_s
        grid.add_row(
            *(
                str(v) if v is not None else "unknown"
                for v in (stats.ready, stats.in_flight, stats.delayed, stats.dead_lettered)
            ),
            "—" if age is None else format_duration(age),
        )
        _show(grid)
        for note in stats.notes:
            out.print(safe(note))
        return 0

    _guard(run)


# -- dlq ------------------------------------------------------------------------

ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Only this reason code.")]
IdOpt = Annotated[list[str] | None, typer.Option("--id", help="Only these message ids.")]


def _filter(
    reason: str | None,
    since: str | None,
    limit: int | None,
    ids: list[str] | None = None,
    before: float | None = None,
) -> DlqFilter:
    return DlqFilter(
        reason=reason,
        since=_since(since),
        before=before,
        message_ids=tuple(ids) if ids else None,
        limit=limit,
    )


@dlq_app.command("ls")
def dlq_ls(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    store_url: StoreOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    limit: LimitOpt = 100,
    json_out: JsonOpt = False,
) -> None:
    """Dead letters: when, why, how many attempts, and the start of the payload."""

    def run() -> int:
        queue = _look_at_queue(url, config)
        with queue:
            letters = queue.dlq_list(_filter(reason, since, _one_more(limit)))
        letters = _cut(letters, limit, "dead letters (oldest first)", "--reason or --since")
        if json_out:
            _print_json([d.to_dict() for d in letters])
            return 0
        if not letters:
            out.print("the dead-letter queue is empty")
            return 0
        grid = table("message", "dead-lettered", "reason", "attempts", "request", "payload")
        for d in letters:
            grid.add_row(
                d.message_id,
                _when(d.dead_lettered_at),
                safe(d.reason),
                str(d.attempts),
                safe(d.request_id or "—"),
                safe(dlq_ops.preview(d.payload), 60 if out.is_terminal else None),
            )
        _show(grid)
        return 0

    _guard(run)


@dlq_app.command("show")
def dlq_show(
    message_id: Annotated[str, typer.Argument(help="The dead letter's message id.")],
    url: UrlOpt = None,
    config: ConfigOpt = None,
    store_url: StoreOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """One dead letter in full: reason, detail, attributes, payload."""

    def run() -> int:
        queue = _look_at_queue(url, config)
        with queue:
            letter = queue.dlq_get(message_id)  # NotFound: exit 2, as bad input
        if json_out:
            _print_json(letter.to_dict())
            return 0
        data = letter.to_dict()
        for key in (
            "message_id",
            "request_id",
            "reason",
            "detail",
            "attempts",
            "replays",
            "published_at",
            "dead_lettered_at",
        ):
            # a detail may carry the handler's traceback: its lines stay lines
            first, *rest = str(data[key] if data[key] is not None else "").split("\n")
            out.print(Text(f"{key:>17}: ", style="bold") + safe(first, None))
            for line in rest:
                out.print(Text(" " * 19) + safe(line, None))
        out.print(
            Text(f"{'attributes':>17}: ", style="bold")
            + safe(json.dumps(data["attributes"], ensure_ascii=True))
        )
        out.print(
            Text(f"{'payload':>17}: ", style="bold")
            + safe(dlq_ops.preview(letter.payload, 4000), None)
        )
        return 0

    _guard(run)


@dlq_app.command("stats")
def dlq_stats(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    store_url: StoreOpt = None,
    since: SinceOpt = None,
    json_out: JsonOpt = False,
) -> None:
    """Dead letters grouped by reason."""

    def run() -> int:
        queue = _look_at_queue(url, config)
        with queue:
            groups = dlq_ops.stats(queue.dlq_list(_filter(None, since, None)))
        if json_out:
            _print_json(groups)
            return 0
        grid = table("reason", "count", "oldest", "newest")
        for g in groups:
            grid.add_row(safe(g["reason"]), str(g["count"]), g["oldest"], g["newest"])
        _show(grid if groups else "the dead-letter queue is empty")
        return 0

    _guard(run)


@dlq_app.command("replay")
def dlq_replay(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    store_url: StoreOpt = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    message_id: IdOpt = None,
    limit: LimitOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be replayed.")
    ] = False,
    max_replays: Annotated[
        int, typer.Option(min=1, help="Loop guard: refuse letters replayed this often already.")
    ] = dlq_ops.MAX_REPLAYS,
    all_: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Publish dead letters again, attempt count reset, replay counter raised.
    Needs --reason, --since, --id, --limit or --all."""

    def run() -> int:
        if not (reason or since or message_id or limit or all_):
            raise ConfigError("say what to replay: --reason, --since, --id, --limit or --all")
        queue, _ = _open(url, config, store_url)
        with queue:
            done = queue.dlq_replay(
                _filter(reason, since, limit, message_id),
                max_replays=max_replays,
                dry_run=dry_run,
            )
        rows = dlq_ops.replay_rows(done, dry_run=dry_run, max_replays=max_replays)
        if json_out:
            _print_json(rows)
        else:
            for row in rows:
                out.print(
                    safe(
                        f"{row['message_id']}: {row['outcome']}"
                        + (f" as {row['new_message_id']}" if row["new_message_id"] else "")
                    )
                )
            summary = dlq_ops.replay_summary(rows, dry_run=dry_run, max_replays=max_replays)
            out.print(summary)
        refused = [r for r in rows if r["outcome"] == "refused"]
        return 1 if refused and len(refused) == len(rows) else 0

    _guard(run)


@dlq_app.command("purge")
def dlq_purge(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    store_url: StoreOpt = None,
    older_than: Annotated[
        str | None, typer.Option(help="Only letters dead-lettered longer ago than this (7d).")
    ] = None,
    reason: ReasonOpt = None,
    message_id: IdOpt = None,
    all_: Annotated[bool, typer.Option("--all", help="Purge every dead letter.")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Delete dead letters for good (retention). Needs --older-than, --reason, --id or --all."""

    def run() -> int:
        if not (older_than or reason or message_id or all_):
            raise ConfigError("say what to purge: --older-than, --reason, --id or --all")
        before = None if older_than is None else time.time() - parse_duration(older_than)
        queue, _ = _open(url, config, store_url)
        with queue:
            count = queue.dlq_purge(_filter(reason, None, None, message_id, before))
        if json_out:
            _print_json({"purged": count})
        else:
            out.print(f"purged {count} dead letters")
        return 0

    _guard(run)


@dlq_app.command("export")
def dlq_export(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    store_url: StoreOpt = None,
    output: Annotated[
        Path | None, typer.Option("--out", "-o", help="File to write (default: stdout).")
    ] = None,
    reason: ReasonOpt = None,
    since: SinceOpt = None,
    limit: LimitOpt = None,
) -> None:
    """Dead letters as JSON lines (payload as text, or base64 when not UTF-8)."""

    def run() -> int:
        queue = _look_at_queue(url, config)
        with queue:
            letters = queue.dlq_list(_filter(reason, since, limit))
        if output is None:
            for letter in letters:
                sys.stdout.write(json.dumps(letter.to_dict(), ensure_ascii=True) + "\n")
        else:
            dlq_ops.export_jsonl(letters, output)
            err.print(f"wrote {len(letters)} dead letters to {output}")
        return 0

    _guard(run)


# -- watch ----------------------------------------------------------------------

app.add_typer(watch_app, name="watch")
app.command("schema")(schema_command)


# -- dashboard ------------------------------------------------------------------


@app.command()
def dashboard(
    url: UrlOpt = None,
    config: ConfigOpt = None,
    store_url: StoreOpt = None,
    host: Annotated[
        str, typer.Option(help="Address to bind; anything but loopback needs a token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one).")] = 8765,
    token_file: Annotated[
        Path | None,
        typer.Option(help="File holding the token (else STEADYQ_DASHBOARD_TOKEN)."),
    ] = None,
    report_dir: Annotated[
        Path, typer.Option(help="Folder of the watch reports the page links to.")
    ] = Path("reports"),
) -> None:
    """Serve the store live in a browser: overview, live feed, DLQ, requests, watches,
    and Prometheus /metrics. The store is SQLite (sqlite:///PATH) or PostgreSQL
    (postgresql://…, a fleet's shared one); other stores are refused. Needs the
    dashboard extra."""

    def run() -> int:
        from steadyq.dashboard.serve import read_token, serve

        settings = settings_for(url, config, store=store_url)
        token = read_token(token_file)
        serve(
            settings.url,
            settings.store,
            host=host,
            port=port,
            token=token,
            report_dir=report_dir,
        )
        return 0

    _guard(run)


# -- demo -----------------------------------------------------------------------


@app.command()
def demo(
    directory: Annotated[
        Path,
        typer.Option("--dir", help="Folder for the demo (emptied of earlier demo files)."),
    ] = Path("steadyq-demo"),
    fault: Annotated[
        str,
        typer.Option(help="none: the fix holds; hang: a handler that hangs, an early FAILED."),
    ] = "none",
    quick: Annotated[
        bool, typer.Option("--quick", help="A shorter run (about 25 s) on a compressed clock.")
    ] = False,
) -> None:
    """Reenact the incident (before and after the fix) and judge it with a watch.

    Exits with the verdict's code: 0 PASSED, 1 FAILED, 2 INCONCLUSIVE; 3 when it
    cannot run (a bad --fault included), so no error is taken for a verdict."""

    def run() -> int:
        from steadyq.demo import QUICK, run_demo

        return run_demo(directory, fault=fault, timings=QUICK if quick else None, console=out)

    _guard(run, verdict=True)


def main() -> None:
    """Console entry point."""
    app()


if __name__ == "__main__":
    main()
