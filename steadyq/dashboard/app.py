"""The dashboard's web application (starlette): pages, the live feed, ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from jinja2 import Environment, PackageLoader, select_autoescape
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from steadyq import dlq as dlq_ops
from steadyq._terminal import safe
from steadyq.brokers.base import DlqFilter
from steadyq.dashboard.data import WINDOWS, StoreView
from steadyq.dashboard.security import Guard
from steadyq.durations import format_duration, parse_duration, parse_time_or_age, rfc3339
from steadyq.errors import BackendError, ConfigError, NotFound
from steadyq.metrics import StoreCollector, safe_stats
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import RequestRecord

STATIC = Path(__file__).parent / "static"
#: Report files a watch writes, the only names /reports serves.
REPORT_FILES = ("report.html", "report.md", "report.json")
# a report is shown as a document: its styles apply, no script of any kind runs
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


@dataclass(frozen=True, slots=True)
class DashboardOptions:
    """How the app behaves; ``token`` None lets every loopback request in."""

    token: str | None = None
    report_dir: Path = Path("reports")
    poll_s: float = 0.2
    heartbeat_s: float = 15.0
    #: read the store's history into the metrics' totals at once, in a thread, so
    #: that the first scrape of a big store does not outlast Prometheus's timeout
    warm_metrics: bool = False


def clean(value: object, limit: int | None = 200) -> str:
    """Text from a message made inert: control and direction characters escaped the
    way the CLI escapes them, cut at ``limit``; HTML escaping is the templates' job."""
    return safe(value, limit).plain


def _when(epoch: float | None) -> str:
    return "—" if epoch is None else rfc3339(epoch)[:19].replace("T", " ")


def _duration(seconds: float | None) -> str:
    return "—" if seconds is None else format_duration(seconds)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("steadyq.dashboard", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
    )
    env.filters["clean"] = clean
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    env.filters["preview"] = lambda b, n=4000: dlq_ops.preview(b, n)
    return env


def feed_item(event: Event) -> dict[str, Any]:
    """One live-feed entry, every text already cleaned (the page sets it as text)."""
    return {
        "time": _when(event.timestamp),
        "kind": event.kind,
        "severity": event.severity,
        "execution_id": clean(event.execution_id or "", 80),
        "message_id": clean(event.message_id or "", 80),
        "request_id": clean(event.request_id or "", 80),
        "reason": clean(event.reason or "", 80),
        "text": clean(event.message, 160),
    }


def _window(request: Request, now: float) -> tuple[float, float, str]:
    """The overview's window: ``?window=1h|4h|24h`` or ``?since=…&until=…``."""
    q = request.query_params
    if q.get("since"):
        try:
            start = parse_time_or_age(q["since"], now=now)
            end = parse_time_or_age(q["until"], now=now) if q.get("until") else now
        except ConfigError as exc:
            raise _BadInput(str(exc)) from None
        if end <= start:
            raise _BadInput("the window ends before it starts")
        return start, end, "custom"
    name = q.get("window", "1h")
    if name not in WINDOWS:
        raise _BadInput(f"unknown window {name!r}: pick 1h, 4h, 24h or since/until")
    return now - WINDOWS[name], now, name


class _BadInput(Exception):
    pass


def _filter(q: Any) -> DlqFilter:
    """A DLQ filter from form or query fields: reason, newer_than, older_than, id."""
    now = time.time()
    try:
        newer = q.get("newer_than") or None
        older = q.get("older_than") or None
        ids = [i for i in q.getlist("id") if i] if hasattr(q, "getlist") else []
        return DlqFilter(
            reason=q.get("reason") or None,
            since=None if newer is None else now - parse_duration(newer),
            before=None if older is None else now - parse_duration(older),
            message_ids=tuple(ids) if ids else None,
        )
    except ConfigError as exc:
        raise _BadInput(str(exc)) from None


def _filter_fields(q: Any) -> list[tuple[str, str]]:
    fields = [(k, q.get(k)) for k in ("reason", "newer_than", "older_than") if q.get(k)]
    if hasattr(q, "getlist"):
        fields += [("id", i) for i in q.getlist("id") if i]
    return fields


def _who(request: Request) -> str:
    client = request.client
    where = f"{client.host}:{client.port}" if client else "unknown"
    how = "token" if request.app.state.options.token is not None else "loopback"
    agent = request.headers.get("user-agent", "")[:120]
    return f"dashboard {how} {where} {agent}".strip()


def create_app(
    view: StoreView, options: DashboardOptions | None = None, *, registry: Any = None
) -> Guard:
    """The dashboard as an ASGI app, guarded (see :mod:`steadyq.dashboard.security`)."""
    options = options or DashboardOptions()
    env = _environment()
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        collector = StoreCollector(view.db, safe_stats(view.queue))
        registry.register(collector)
        if options.warm_metrics:
            threading.Thread(target=_warm, args=(collector,), daemon=True).start()

    def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        template = env.get_template(name)
        return HTMLResponse(template.render(**context), status_code=status)

    def problem(text: str, status: int = 400) -> HTMLResponse:
        return page("problem.html.j2", status, title="Problem", text=text)

    async def overview(request: Request) -> Response:
        now = time.time()
        try:
            start, end, name = _window(request, now)
        except _BadInput as exc:
            return problem(str(exc))
        began = time.perf_counter()
        try:
            data = await run_in_threadpool(view.overview, start, end)
        except BackendError as exc:
            return problem(f"the store is unreachable: {exc}", 503)
        server_ms = (time.perf_counter() - began) * 1000
        response = page(
            "overview.html.j2",
            title="Overview",
            o=data,
            window=name,
            windows=list(WINDOWS),
            since=request.query_params.get("since", ""),
            until=request.query_params.get("until", ""),
            server_ms=server_ms,
            chart=_duration_chart(data.executions, data.execution_limit_s),
            backlog_chart=_backlog_chart(data.backlog_history),
            ev=ev,
        )
        response.headers["server-timing"] = f"overview;dur={server_ms:.1f}"
        return response

    async def live(request: Request) -> Response:
        after = request.query_params.get("after")
        try:
            start_id = int(after) if after else None
        except ValueError:
            start_id = 0
        try:
            cursor = await run_in_threadpool(view.live_cursor, start_id)
        except BackendError:
            cursor = view.live_cursor(0)  # reads nothing

        async def stream() -> AsyncIterator[bytes]:
            last_beat, last_stats, up = time.monotonic(), 0.0, None
            yield b"retry: 1000\n\n"
            while not await request.is_disconnected():
                now = time.monotonic()
                try:
                    found = await run_in_threadpool(view.live_events, cursor)
                    if now - last_stats >= 2.0:
                        stats = await run_in_threadpool(view.sample_backlog)
                        last_stats = now
                        yield _sse("backlog", stats.to_dict())
                    if up is not True:
                        up = True
                        yield _sse("status", {"ok": True, "text": "live"})
                except BackendError as exc:
                    if up is not False:
                        up = False
                        yield _sse("status", {"ok": False, "text": clean(exc, 300)})
                    found = []
                for event in found:
                    yield _sse("event", feed_item(event), event_id=cursor.last_id)
                if now - last_beat >= options.heartbeat_s:
                    last_beat = now
                    yield b": still here\n\n"
                await asyncio.sleep(options.poll_s)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    async def dlq_page(request: Request) -> Response:
        q = request.query_params
        try:
            where = _filter(q)
        except _BadInput as exc:
            return problem(str(exc))
        limited = DlqFilter(where.reason, where.since, where.before, where.message_ids, 200)
        try:
            letters = await run_in_threadpool(view.dlq_list, limited)
            counts = await run_in_threadpool(view.dlq_counts)
            total = await run_in_threadpool(view.dlq_count, where)
        except BackendError as exc:
            return problem(f"the queue is unreachable: {exc}", 503)
        return page(
            "dlq.html.j2",
            title="Dead letters",
            letters=letters,
            counts=counts,
            total=total,
            fields=_filter_fields(q),
            q=q,
        )

    async def dlq_letter(request: Request) -> Response:
        message_id = request.path_params["message_id"]
        try:
            letter = await run_in_threadpool(view.queue.dlq_get, message_id)
        except NotFound:
            return problem(f"no dead letter with message id {clean(message_id)}", 404)
        except BackendError as exc:
            return problem(f"the queue is unreachable: {exc}", 503)
        attributes = json.dumps(dict(letter.attributes), ensure_ascii=True)
        return page("letter.html.j2", title="Dead letter", d=letter, attributes=attributes)

    async def dlq_confirm(request: Request) -> Response:
        q = request.query_params
        action = q.get("action")
        if action not in ("replay", "purge"):
            return problem("say what to do: action=replay or action=purge")
        try:
            where = _filter(q)
        except _BadInput as exc:
            return problem(str(exc))
        fields = _filter_fields(q)
        if action == "purge" and not fields and q.get("all") != "1":
            return problem("say what to purge: a reason, an age, an id, or all")
        if q.get("all") == "1":
            fields.append(("all", "1"))
        count = await run_in_threadpool(view.dlq_count, where)
        return page("confirm.html.j2", title="Confirm", action=action, count=count, fields=fields)

    async def dlq_act(request: Request) -> Response:
        action = request.path_params["action"]
        form = await _form(request)
        if form is None:
            return problem("a confirmation is a small urlencoded form", 413)
        try:
            where = _filter(form)
            expected = int(str(form.get("expected", "")))
        except (_BadInput, ValueError):
            return problem("a confirmation names how many letters it is for")
        fields = _filter_fields(form)
        if action == "purge" and not fields and form.get("all") != "1":
            return problem("say what to purge: a reason, an age, an id, or all")
        count = await run_in_threadpool(view.dlq_count, where)
        if count != expected:
            return problem(
                f"the dead-letter queue changed: {count} letters match now, not {expected};"
                " nothing was done, confirm again",
                409,
            )
        try:
            if action == "replay":
                done = await run_in_threadpool(view.queue.dlq_replay, where)
                rows = dlq_ops.replay_rows(done, dry_run=False, max_replays=dlq_ops.MAX_REPLAYS)
                moved = sum(r["outcome"] == "replayed" for r in rows)
                summary = dlq_ops.replay_summary(rows, dry_run=False)
            else:
                moved = await run_in_threadpool(view.queue.dlq_purge, where)
                summary = f"purged {moved} dead letters"
            record = Event(
                kind=ev.LOG,
                timestamp=time.time(),
                severity="NOTICE",
                message=f"{_who(request)}: {summary}",
                reason=f"dlq_{action}",
                data={
                    "who": _who(request),
                    "action": action,
                    "count": moved,
                    "filter": dict(fields),
                },
            )
            await run_in_threadpool(view.store.write, [record])
        except BackendError as exc:
            return problem(f"the queue is unreachable: {exc}", 503)
        return page("done.html.j2", title="Done", summary=summary)

    async def request_page(request: Request) -> Response:
        request_id = request.query_params.get("id", "")
        row: RequestRecord | None = None
        found: list[Event] = []
        how = ""
        if request_id:
            try:
                row, found, how = await run_in_threadpool(view.request, request_id)
            except BackendError as exc:
                return problem(f"the store is unreachable: {exc}", 503)
        return page(
            "request.html.j2",
            title="Requests",
            request_id=request_id,
            row=row,
            found=found,
            how=how,
        )

    async def watches(request: Request) -> Response:
        try:
            runs = await run_in_threadpool(view.watches)
        except BackendError as exc:
            return problem(f"the store is unreachable: {exc}", 503)
        return page("watches.html.j2", title="Watches", runs=runs, reports=_reports())

    async def watch(request: Request) -> Response:
        try:
            run = await run_in_threadpool(view.watch, request.path_params["run_id"])
        except BackendError as exc:
            return problem(f"the store is unreachable: {exc}", 503)
        if run is None:
            return problem("no such watch run", 404)
        return page("watch.html.j2", title="Watch", run=run, reports=_reports())

    def _reports() -> list[str]:
        return [n for n in REPORT_FILES if (options.report_dir / n).is_file()]

    async def report(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in REPORT_FILES or not (options.report_dir / name).is_file():
            return problem("no such report", 404)
        media = {"html": "text/html", "md": "text/plain", "json": "application/json"}
        kind = media[name.rsplit(".", 1)[1]]
        response = FileResponse(options.report_dir / name, media_type=kind)
        # a report page's own scripts and styles stay off: it is shown as a document
        response.headers["content-security-policy"] = REPORT_CSP
        return response

    async def metrics(request: Request) -> Response:
        try:
            body = await run_in_threadpool(generate_latest, registry)
        except BackendError as exc:
            return PlainTextResponse(f"the store is unreachable: {exc}\n", status_code=503)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def favicon(request: Request) -> Response:
        return RedirectResponse("/static/favicon.svg")

    app = Starlette(
        routes=[
            Route("/", overview),
            Route("/live", live),
            Route("/dlq", dlq_page),
            Route("/dlq/confirm", dlq_confirm),
            Route("/dlq/{action:str}", dlq_act, methods=["POST"]),
            Route("/dlq/letter/{message_id:path}", dlq_letter),
            Route("/requests", request_page),
            Route("/watches", watches),
            Route("/watches/{run_id:str}", watch),
            Route("/reports/{name:str}", report),
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/favicon.ico", favicon),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
    )
    app.state.options = options
    app.state.view = view
    return Guard(app, options.token)


def _warm(collector: StoreCollector) -> None:
    # a failure here is a failure of the first scrape too, which reports it
    with contextlib.suppress(BackendError):
        # small batches: the pages share the store's connection meanwhile
        collector.refresh(batch=50_000)


async def _form(request: Request, limit: int = 65536) -> ImmutableMultiDict[str, str] | None:
    """An urlencoded form (all the pages send), without python-multipart; None when
    the body is too big or not urlencoded."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            return None
    return ImmutableMultiDict(parse_qsl(raw.decode("utf-8", errors="replace")))


def _sse(name: str, data: Any, event_id: int | None = None) -> bytes:
    # ensure_ascii: one line whatever the text held (a newline would end the field)
    text = f"event: {name}\n"
    if event_id is not None:
        text += f"id: {event_id}\n"
    return (text + f"data: {json.dumps(data, ensure_ascii=True)}\n\n").encode("ascii")


def _duration_chart(executions: list[Any], limit: float | None) -> dict[str, Any] | None:
    """Bars of execution durations (oldest left) against the time limit, as SVG numbers."""
    done = [x for x in reversed(executions) if x.duration_s is not None]
    if not done:
        return None
    top = max([x.duration_s for x in done] + ([limit] if limit else [])) or 1.0
    width, height = 600, 120
    step = width / len(done)
    bars = [
        {
            "x": round(i * step, 1),
            "w": max(1.0, round(step * 0.8, 1)),
            "h": round(x.duration_s / top * height, 1),
            "y": round(height - x.duration_s / top * height, 1),
            "status": x.status,
            "label": f"{x.execution_id}: {format_duration(x.duration_s)} {x.status}",
        }
        for i, x in enumerate(done)
    ]
    line = None if not limit else round(height - limit / top * height, 1)
    return {"bars": bars, "limit_y": line, "limit": limit, "width": width, "height": height}


def _backlog_chart(history: list[Any]) -> dict[str, Any] | None:
    """Polylines of ready, in flight, delayed and DLQ counts over the samples kept."""
    if len(history) < 2:
        return None
    width, height = 600, 100
    names = ("ready", "in_flight", "delayed", "dead_lettered")
    top = max(max((getattr(b.stats, n) or 0) for n in names) for b in history) or 1
    t0, t1 = history[0].at, history[-1].at
    span = (t1 - t0) or 1.0
    lines = {}
    for n in names:
        lines[n] = " ".join(
            f"{(b.at - t0) / span * width:.1f},"
            f"{height - (getattr(b.stats, n) or 0) / top * height:.1f}"
            for b in history
        )
    return {"lines": lines, "top": top, "width": width, "height": height, "since": t0}


def free_port_socket(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port), made before the server runs."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.set_inheritable(True)
    return sock
