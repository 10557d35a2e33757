"""Is the dashboard fast on a big store, and how late does the live feed show an event?

Uses the store that ``bench/watch_snapshot.py`` generates (the incident's after-the-fix
day: 24 hours of traffic, executions every few minutes, rejections and their log
lines; ``--events`` of them, 10 M by default; cached under ``$STEADYQ_BENCH_CACHE``,
shared with that benchmark). Starts ``steadyq dashboard`` on it in a child process
and measures:

* the overview's server time (its ``Server-Timing`` header) over ``--loads`` loads
  of the last hour of the store (the page's default window), and, for information,
  of the last 4 and 24 hours;
* the live feed's lag: an event committed to the store by this process, until its
  line arrives on an open ``/live`` stream (``--probes`` times, 0.3 s apart);
* the first ``/metrics`` scrape, which waits until the dashboard has read every event
  once (it starts doing so as it starts; later scrapes read only what is new), and a
  second one;
* the dashboard's peak RSS (``VmHWM``).

The probe events are deleted again at the end, so the cached store stays as it was.

    python bench/dashboard.py                     # 10 M events
    python bench/dashboard.py --events 1000000    # a smaller store

Prints a table, then exactly one line of JSON as the last line of stdout:
``{"overview_p95_ms": ..., "sse_lag_ms": ..., "rss_mb": ...}`` (and the other figures).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import watch_snapshot as store_gen

from steadyq._sqlite import SqliteDatabase
from steadyq.durations import rfc3339
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.store_sqlite import SqliteStore

TARGET_OVERVIEW_P95_MS = 300.0
TARGET_SSE_LAG_MS = 1000.0
TARGET_RSS_MB = 150.0
REPO = Path(__file__).resolve().parents[1]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


class Dashboard:
    """``steadyq dashboard`` on a free loopback port, in a child process."""

    def __init__(self, path: Path) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        env.pop("STEADYQ_DASHBOARD_TOKEN", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "steadyq.cli", "dashboard", "--url", f"sqlite:///{path}",
             "--port", "0"],
            stdout=subprocess.PIPE, env=env, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "steadyq dashboard on http://127.0.0.1:PORT/"
        if "http://" not in line:
            self.proc.kill()
            raise SystemExit(f"the dashboard did not start: {line!r}")
        self.base = line.strip().split(" on ")[1].rstrip("/")
        self.host, port = self.base.removeprefix("http://").split(":")
        self.port = int(port)

    def get(self, path: str, timeout: float = 600) -> tuple[float, float, bytes]:
        """(server ms from Server-Timing, wall ms, body)."""
        began = time.perf_counter()
        with urllib.request.urlopen(self.base + path, timeout=timeout) as response:
            data = response.read()
            timing = response.headers.get("server-timing", "")
        wall = (time.perf_counter() - began) * 1000
        server = float(timing.split("dur=")[1]) if "dur=" in timing else wall
        return server, wall, data

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def overview_times(dash: Dashboard, start: float, end: float, loads: int) -> list[float]:
    query = f"/?since={rfc3339(start)}&until={rfc3339(end)}"
    dash.get(query)  # warm-up: the page cache, the template
    return [dash.get(query)[0] for _ in range(loads)]


def sse_lags(dash: Dashboard, path: Path, probes: int) -> list[float]:
    """Milliseconds from a committed write to its line on the live stream."""
    seen: dict[str, float] = {}
    ready = threading.Event()
    done = threading.Event()

    def read() -> None:
        conn = http.client.HTTPConnection(dash.host, dash.port, timeout=60)
        conn.request("GET", "/live", headers={"Accept": "text/event-stream"})
        response = conn.getresponse()
        ready.set()
        while not done.is_set():
            line = response.readline()
            if not line:
                break
            if line.startswith(b"data:") and b"bench-probe-" in line:
                item = json.loads(line[5:])
                seen[item["message_id"]] = time.perf_counter()
        conn.close()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait(60)
    time.sleep(1.0)  # the stream has read the store's last id
    store = SqliteStore(SqliteDatabase(path), owns_db=True)
    committed: dict[str, float] = {}
    try:
        for i in range(probes):
            mid = f"bench-probe-{i}"
            event = Event(
                ev.MESSAGE_REJECTED,
                time.time(),
                severity="WARNING",
                message="bench probe",
                message_id=mid,
                reason="request_id_invalid",
            )
            store.write([event])
            committed[mid] = time.perf_counter()
            time.sleep(0.3)
        deadline = time.monotonic() + 10
        while len(seen) < probes and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        done.set()
        with store.db.transaction() as conn:
            conn.execute("DELETE FROM events WHERE message_id LIKE 'bench-probe-%'")
        store.close()
    missing = probes - len(seen)
    if missing:
        print(f"{missing} probes never arrived on the stream", file=sys.stderr)
    return [(seen[m] - committed[m]) * 1000 for m in committed if m in seen]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events in the store")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fresh", action="store_true", help="regenerate the cached store")
    parser.add_argument("--loads", type=int, default=50, help="overview loads measured")
    parser.add_argument("--probes", type=int, default=20, help="live-feed events measured")
    args = parser.parse_args(argv)

    print(f"store of {args.events:,} events …", file=sys.stderr)
    path = store_gen.generate(args.events, args.seed, args.fresh)
    end = store_gen.START + store_gen.WINDOW_S
    dash = Dashboard(path)
    try:
        # first: the dashboard reads the history into the metrics as it starts, and
        # the first scrape waits for that; the pages are measured after it
        print("metrics …", file=sys.stderr)
        first = dash.get("/metrics")[1]
        second = dash.get("/metrics")[1]
        print("overview loads …", file=sys.stderr)
        hour = overview_times(dash, end - 3600, end, args.loads)
        four = overview_times(dash, end - 4 * 3600, end, 5)
        day = overview_times(dash, end - 24 * 3600, end, 3)
        print("live feed …", file=sys.stderr)
        lags = sse_lags(dash, path, args.probes)
        rss = dash.peak_rss_mb()
    finally:
        dash.close()

    result: dict[str, Any] = {
        "events": args.events,
        "overview_p50_ms": round(statistics.median(hour), 1),
        "overview_p95_ms": round(percentile(hour, 95), 1),
        "overview_4h_p50_ms": round(statistics.median(four), 1),
        "overview_24h_p50_ms": round(statistics.median(day), 1),
        "sse_lag_ms": round(percentile(lags, 95), 1) if lags else None,
        "sse_lag_p50_ms": round(statistics.median(lags), 1) if lags else None,
        "sse_probes_seen": len(lags),
        "metrics_first_scrape_s": round(first / 1000, 2),
        "metrics_next_scrape_ms": round(second, 1),
        "rss_mb": round(rss, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }
    rows = [
        ("overview, last hour, p50 / p95 (server)",
         f"{result['overview_p50_ms']} / {result['overview_p95_ms']} ms",
         f"≤ {TARGET_OVERVIEW_P95_MS:g} ms (p95)"),
        ("overview, last 4 h / 24 h, p50", f"{result['overview_4h_p50_ms']} / "
         f"{result['overview_24h_p50_ms']} ms", "—"),
        ("live feed, commit → stream, p50 / p95",
         f"{result['sse_lag_p50_ms']} / {result['sse_lag_ms']} ms", f"≤ {TARGET_SSE_LAG_MS:g} ms"),
        ("/metrics first (history read) / next scrape",
         f"{result['metrics_first_scrape_s']} s / {result['metrics_next_scrape_ms']} ms", "—"),
        ("dashboard peak RSS", f"{result['rss_mb']} MB", f"≤ {TARGET_RSS_MB:g} MB"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"dashboard on a {args.events:,}-event store (load {result['load_avg_1m']})")
    for name, value, target in rows:
        print(f"  {name:<{width}}  {value:>22}  {target}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
