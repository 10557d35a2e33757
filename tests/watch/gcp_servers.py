"""Local gRPC servers for the Google APIs that have no emulator.

They implement Cloud Run v2 ``Executions.ListExecutions``, Cloud Logging v2
``LoggingServiceV2.ListLogEntries`` and Cloud Monitoring v3
``MetricService.ListTimeSeries`` with Google's own generated types (from the
google-cloud-* packages), on a free loopback port. The real client libraries talk to
them, with their own paging, retries and error mapping. ``fail`` queues status codes
a method answers with before it works again.
"""

from __future__ import annotations

import bisect
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import grpc
from google.cloud import monitoring_v3, run_v2
from google.cloud.logging_v2.types import ListLogEntriesRequest, ListLogEntriesResponse, LogEntry

_TIME = re.compile(r'timestamp(>=|<)"([^"]+)"')
_METRIC = re.compile(r'metric\.type="([^"]+)"')
_SUB = re.compile(r'subscription_id="([^"]+)"')


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@dataclass
class FakeGoogle:
    """What the servers hold, and the failures they are told to serve."""

    executions: list[run_v2.Execution] = field(default_factory=list)
    entries: list[Any] = field(default_factory=list)  # raw LogEntry protobufs, time order
    series: dict[tuple[str, str], list[tuple[float, int]]] = field(default_factory=dict)
    failures: dict[str, list[tuple[grpc.StatusCode, int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    filters: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # asked before every call: a status code to answer with (an outage), or None
    outage: Callable[[str], grpc.StatusCode | None] | None = None
    _times: list[float] = field(default_factory=list)

    def fail(self, method: str, code: grpc.StatusCode, *, times: int = 1, on_page: int = 0) -> None:
        """Answer ``code`` to the next ``times`` calls of ``method`` (``on_page``: only
        to calls asking for that page, 0 the first)."""
        for _ in range(times):
            self.failures[method].append((code, on_page))

    def add_entry(self, entry: LogEntry) -> None:
        """Add an entry; entries must be added in time order."""
        pb = LogEntry.pb(entry)
        self.entries.append(pb)
        self._times.append(pb.timestamp.seconds + pb.timestamp.nanos / 1e9)

    def _maybe_fail(self, method: str, page: int, context: grpc.ServicerContext) -> None:
        down = None if self.outage is None else self.outage(method)
        if down is not None:
            context.abort(down, f"{method} is down (told to)")
        with self.lock:
            self.calls[method] += 1
            queue = self.failures[method]
            for i, (_code, on_page) in enumerate(queue):
                if on_page == page:
                    code = queue.pop(i)[0]
                    break
            else:
                return
        context.abort(code, f"{method} answers {code.name} (told to)")

    # -- the methods --

    def list_executions(self, request: Any, context: grpc.ServicerContext) -> Any:
        start = int(request.page_token or 0)
        self._maybe_fail("ListExecutions", start, context)
        size = request.page_size or 2
        page = [e for e in self.executions if e.name.startswith(request.parent + "/")]
        chunk = page[start : start + size]
        token = str(start + size) if start + size < len(page) else ""
        return run_v2.ListExecutionsResponse(executions=chunk, next_page_token=token)

    def list_log_entries(self, request: Any, context: grpc.ServicerContext) -> Any:
        start = int(request.page_token or 0)
        self._maybe_fail("ListLogEntries", start, context)
        self.filters.append(request.filter)
        since, until = float("-inf"), float("inf")
        for op, text in _TIME.findall(request.filter):
            if op == ">=":
                since = _epoch(text)
            else:
                until = _epoch(text)
        first = bisect.bisect_left(self._times, since)
        last = bisect.bisect_left(self._times, until)
        size = request.page_size or 50
        chunk = self.entries[first + start : min(last, first + start + size)]
        token = str(start + size) if first + start + size < last else ""
        response = ListLogEntriesResponse.pb()(next_page_token=token)
        response.entries.extend(chunk)
        return response

    def list_time_series(self, request: Any, context: grpc.ServicerContext) -> Any:
        self._maybe_fail("ListTimeSeries", 0, context)
        metric = _METRIC.search(request.filter)
        sub = _SUB.search(request.filter)
        points = self.series.get((metric.group(1) if metric else "", sub.group(1) if sub else ""))
        end = request.interval.end_time.timestamp()
        begin = request.interval.start_time.timestamp()
        chosen = sorted((p for p in points or () if begin <= p[0] <= end), reverse=True)
        if not chosen:
            return monitoring_v3.ListTimeSeriesResponse()
        series = monitoring_v3.TimeSeries(
            metric={"type": metric.group(1) if metric else ""},
            points=[
                monitoring_v3.Point(
                    interval={"end_time": {"seconds": int(at)}, "start_time": {"seconds": int(at)}},
                    value={"int64_value": value},
                )
                for at, value in chosen
            ],
        )
        return monitoring_v3.ListTimeSeriesResponse(time_series=[series])


def _handler(fn: Callable[..., Any], request_type: Any, raw: bool = False) -> Any:
    return grpc.unary_unary_rpc_method_handler(
        fn,
        request_deserializer=request_type.deserialize,
        response_serializer=(lambda m: m.SerializeToString())
        if raw
        else (lambda m: type(m).serialize(m)),
    )


@contextmanager
def google_servers(fake: FakeGoogle) -> Iterator[str]:
    """Serve ``fake`` on a free loopback port; yields ``host:port``."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "google.cloud.run.v2.Executions",
                {"ListExecutions": _handler(fake.list_executions, run_v2.ListExecutionsRequest)},
            ),
            grpc.method_handlers_generic_handler(
                "google.logging.v2.LoggingServiceV2",
                {
                    "ListLogEntries": _handler(
                        fake.list_log_entries, ListLogEntriesRequest, raw=True
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                "google.monitoring.v3.MetricService",
                {
                    "ListTimeSeries": _handler(
                        fake.list_time_series, monitoring_v3.ListTimeSeriesRequest
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait()
