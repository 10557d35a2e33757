"""What does a watch checkpoint cost against a large event store?

Generates SQLite stores that look like the incident's after-the-fix day: 24 hours of
traffic (mostly ``message.received`` / ``message.succeeded``, rejections by gate
reason with their WARNING log lines, failed attempts and their retries, dead letters,
duplicates, lease warnings), a worker execution every ~3 minutes (started, ready,
finished; a few failed, timed out, or killed without a finish event), preceded by a
2-hour "before the fix" baseline (invalid ids retried, executions running out of
time). The 24-hour window holds ``--events`` events (10 M and 1 M by default); the
baseline adds a twelfth on top.

Measures, each in a fresh child process (so that the peak RSS is the watch's alone),
``--rounds`` times (3 by default; the median is shown, these machines are shared):

* one checkpoint whose interval holds 100 k events, at mid-window, after the earlier
  checkpoints were taken (its cost should follow the interval, not the history);
* the same interval as the first checkpoint of a fresh watch (start-up included);
* a replay of the 24-hour plan: baseline, then 6 checkpoints of 4 hours, interval and
  cumulative figures at each.

Generated stores are cached under ``$STEADYQ_BENCH_CACHE`` (default
``$TMPDIR/steadyq-bench``), keyed by size, seed and generator version; ``--fresh``
regenerates. Timings are with a warm page cache.

    python bench/watch_snapshot.py                    # 10 M and 1 M
    python bench/watch_snapshot.py --events 1000000   # one size
    python bench/watch_snapshot.py --postgres postgresql://postgres@127.0.0.1:5432/test

With ``--postgres URL`` the same generated stores are loaded (COPY) into a schema of
their own on that PostgreSQL server, ANALYZEd, measured through the PostgreSQL store's
own reader (its aggregates run in SQL), and the schema is dropped at the end; the
targets for a PostgreSQL store: a 100 k-event checkpoint in a 10 M-event store ≤ 0.5 s.

Prints a table, then exactly one line of JSON as the last line of stdout:
``{"interval_100k_s": ..., "replay_1m_s": ..., "replay_10m_s": ..., "rss_mb": ...}``.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from steadyq._sqlite import SqliteDatabase
from steadyq.gate import (
    PAYLOAD_NOT_JSON,
    PAYLOAD_NOT_UTF8,
    REQUEST_ID_INVALID,
    REQUEST_ID_MISSING,
    SCHEMA_INVALID,
)
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import SEVERITY_RANK
from steadyq.telemetry.store import EventStore
from steadyq.telemetry.store_sqlite import SqliteStore
from steadyq.watch.measures import Snapshotter

GENERATOR_VERSION = 2
START = 1_800_000_000.0  # the window opens here
HOUR = 3600.0
WINDOW_S = 24 * HOUR
BASELINE_S = 2 * HOUR
CHECKPOINTS = 6
MAX_RUNTIME_S = 1800.0
INTERVAL_EVENTS = 100_000

TARGET_INTERVAL_S = 0.2
TARGET_REPLAY_10M_S = 15.0
TARGET_RSS_MB = 150.0

INFO, WARNING, ERROR = "INFO", "WARNING", "ERROR"
RANK = {name: SEVERITY_RANK[name] for name in (INFO, WARNING, ERROR)}

# after the fix: rejections by reason, (share of deliveries)
REJECT_MIX = (
    (REQUEST_ID_INVALID, 0.012),
    (SCHEMA_INVALID, 0.004),
    (REQUEST_ID_MISSING, 0.002),
    (PAYLOAD_NOT_JSON, 0.0015),
    (PAYLOAD_NOT_UTF8, 0.0005),
)
LOG_TEXT = {
    REQUEST_ID_INVALID: "Invalid request_id format: 'test-smoke-{k}'",
    SCHEMA_INVALID: "Request failed schema validation: topic",
    REQUEST_ID_MISSING: "Missing request_id: no request_id field",
    PAYLOAD_NOT_JSON: "Request payload is not JSON: line 1 column {c}",
    PAYLOAD_NOT_UTF8: "Request payload is not UTF-8: byte 0x{b:02x} at {c}",
}
ERRORS = (
    "TimeoutError: upstream render took {x:.1f} s",
    "ConnectionError: storage endpoint reset after {n} bytes",
    "OSError: [Errno 28] No space left on device: '/tmp/render-{k}'",
)
BASELINE_ERROR = "ValueError: badly formed hexadecimal UUID string: 'test-smoke-{k}'"
EVENTS_PER_DELIVERY = 2.04  # received + outcome, plus log lines and retries


# -- generation --------------------------------------------------------------------------


class _Gen:
    """Writes a store whose window holds about ``events`` events."""

    def __init__(self, conn: sqlite3.Connection, events: int, seed: int) -> None:
        self.conn = conn
        self.rng = random.Random(seed)
        self.rows: list[tuple[Any, ...]] = []
        self.written = 0
        self.window_events = 0
        self.k = 0
        self.executions: list[tuple[Any, ...]] = []
        self.step = WINDOW_S / (events / EVENTS_PER_DELIVERY)

    def flush(self, force: bool = False) -> None:
        if len(self.rows) < 200_000 and not (force and self.rows):
            return
        self.rows.sort(key=lambda r: r[0])
        self.conn.executemany(
            "INSERT INTO events (ts, kind, severity, sev_rank, message, execution_id,"
            " message_id, request_id, attempt, reason, duration_ms, data)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            self.rows,
        )
        self.written += len(self.rows)
        self.rows = []

    def plan_executions(self, start: float, end: float, before_fix: bool) -> list[list[Any]]:
        """[start, end or None, status, execution_id] every ~3 minutes."""
        rng, out = self.rng, []
        t = start - 100.0
        while t < end:
            eid = f"{rng.getrandbits(64):016x}"
            roll = rng.random()
            if before_fix and roll < 0.4:
                plan = [t, None if roll < 0.3 else t + MAX_RUNTIME_S + 1, "timed_out", eid]
            elif roll < 0.004:
                plan = [t, None, "killed", eid]  # the platform killed it: no finish
            elif roll < 0.02:
                plan = [t, t + rng.uniform(20, 160), "failed", eid]
            else:
                plan = [t, t + rng.uniform(140, 175), "succeeded", eid]
            out.append(plan)
            t += rng.uniform(170, 190)
        return out

    def write_executions(self, plans: list[list[Any]]) -> None:
        rng = self.rng
        for started, finished, status, eid in plans:
            ready = started + rng.uniform(4, 20)
            data = {"host": "job-task", "max_runtime_s": MAX_RUNTIME_S, "runner": "process"}
            self.rows.append(
                (started, ev.EXECUTION_STARTED, INFO, RANK[INFO], "execution started", eid,
                 None, None, None, None, None, json.dumps(data))
            )  # fmt: skip
            self.rows.append(
                (ready, ev.EXECUTION_READY, INFO, RANK[INFO], "execution ready", eid,
                 None, None, None, None, (ready - started) * 1000, None)
            )  # fmt: skip
            row_status = "running"
            if finished is not None:
                row_status = status
                severity = INFO if status == "succeeded" else ERROR
                detail = {"status": status, "exit_code": 0 if status == "succeeded" else 1}
                self.rows.append(
                    (finished, ev.EXECUTION_FINISHED, severity, RANK[severity],
                     f"execution {status}: time budget reached" if status == "succeeded"
                     else f"execution {status}: handler pool lost {rng.randint(1, 4)} children",
                     eid, None, None, None, None, (finished - started) * 1000,
                     json.dumps(detail))
                )  # fmt: skip
                data.update(detail)
            self.executions.append((eid, row_status, started, ready, finished, json.dumps(data)))

    def traffic(self, start: float, end: float, plans: list[list[Any]], before_fix: bool) -> None:
        rng, rows, step = self.rng, self.rows, self.step
        random_ = rng.random
        retries: list[tuple[float, int, int, str]] = []  # due, k, attempt, request_id
        e = 0
        t = start
        while t < end:
            t += step * (0.5 + random_())
            while e + 1 < len(plans) and plans[e + 1][0] <= t:
                e += 1
            eid = plans[e][3]
            while retries and retries[0][0] <= t:
                _, k, attempt, rid = heapq.heappop(retries)
                self._attempt(t, k, attempt, rid, eid, retries, before_fix)
            self.k += 1
            k = self.k
            rid = f"{k:08x}-5e1f-4c3b-8d2e-{k:012x}"
            roll = random_()
            if not before_fix and roll < 0.02:
                self._reject(t, k, eid)
            else:
                self._attempt(t, k, 1, rid, eid, retries, before_fix)
            if random_() < 0.0008:
                rows.append(
                    (t + 0.3, ev.LOG, WARNING, RANK[WARNING],
                     f"lease on message {k:x} was lost before its ack was recorded;"
                     " it will be delivered again", eid, f"{k:x}", None, 1, None, None, None)
                )  # fmt: skip
            self.flush()

    def _reject(self, t: float, k: int, eid: str) -> None:
        rng = self.rng
        roll = rng.random() * 0.02
        reason = REJECT_MIX[-1][0]
        for reason, share in REJECT_MIX:  # noqa: B007 - the loop picks it
            roll -= share
            if roll <= 0:
                break
        attempt = 2 if rng.random() < 0.001 else 1
        mid = f"{k:x}"
        text = LOG_TEXT[reason].format(k=k, c=rng.randint(1, 80), b=rng.randint(128, 255))
        self.rows += [
            (t, ev.MESSAGE_RECEIVED, INFO, RANK[INFO], "", eid, mid, None, attempt,
             None, None, None),
            (t + 0.001, ev.MESSAGE_REJECTED, WARNING, RANK[WARNING], text, eid, mid, None,
             attempt, reason, rng.lognormvariate(-0.7, 0.5), None),
            (t + 0.001, ev.LOG, WARNING, RANK[WARNING], text, eid, mid, None, attempt,
             reason, None, None),
        ]  # fmt: skip

    def _attempt(
        self,
        t: float,
        k: int,
        attempt: int,
        rid: str,
        eid: str,
        retries: list[tuple[float, int, int, str]],
        before_fix: bool,
    ) -> None:
        rng, rows = self.rng, self.rows
        mid = f"{k:x}"
        rows.append(
            (t, ev.MESSAGE_RECEIVED, INFO, RANK[INFO], "", eid, mid, None, attempt,
             None, None, None)
        )  # fmt: skip
        roll = rng.random()
        done = t + rng.uniform(0.2, 3.0)
        fail = 0.06 if before_fix else 0.005
        if roll < fail:
            if before_fix:
                error = BASELINE_ERROR.format(k=k)
            else:
                error = rng.choice(ERRORS).format(
                    x=rng.uniform(20, 90), n=rng.randint(1000, 99999), k=k
                )
            rows += [
                (done, ev.MESSAGE_FAILED, ERROR, RANK[ERROR], error, eid, mid, rid, attempt,
                 "handler_error", (done - t) * 1000, None),
                (done, ev.LOG, ERROR, RANK[ERROR], f"Handler attempt {attempt} failed: {error}",
                 eid, mid, rid, attempt, "handler_error", None, None),
            ]  # fmt: skip
            if attempt >= 3:
                rows.append(
                    (done, ev.MESSAGE_DEAD_LETTERED, ERROR, RANK[ERROR],
                     f"gave up after {attempt} attempts; last error: {error}", eid, mid, rid,
                     attempt, "max_attempts_exceeded", None, None)
                )  # fmt: skip
            else:
                # retried later, by then often in another execution
                due = done + rng.uniform(30, 400) * attempt
                heapq.heappush(retries, (due, k, attempt + 1, rid))
        elif roll < fail + 0.01:
            rows.append(
                (done, ev.MESSAGE_DUPLICATE, INFO, RANK[INFO],
                 "request already completed; acknowledged without running the handler",
                 eid, mid, rid, attempt, None, None, None)
            )  # fmt: skip
        elif roll < fail + 0.011:
            rows.append(
                (done, ev.MESSAGE_DEAD_LETTERED, ERROR, RANK[ERROR],
                 f"topic {rng.choice(['calculus', 'poetry'])} is not offered", eid, mid, rid,
                 attempt, "topic_refused", (done - t) * 1000, None)
            )  # fmt: skip
        else:
            rows.append(
                (done, ev.MESSAGE_SUCCEEDED, INFO, RANK[INFO], "", eid, mid, rid, attempt,
                 None, (done - t) * 1000, None)
            )  # fmt: skip


def store_path(events: int, seed: int) -> Path:
    root = Path(
        os.environ.get("STEADYQ_BENCH_CACHE", Path(tempfile.gettempdir()) / "steadyq-bench")
    )
    return root / f"watch-v{GENERATOR_VERSION}-{events}-s{seed}.db"


def generate(events: int, seed: int, fresh: bool) -> Path:
    path = store_path(events, seed)
    if path.exists() and not fresh:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        leftover.unlink(missing_ok=True)
    t0 = time.perf_counter()
    SqliteDatabase(partial).close()  # the real schema, indexes included
    conn = sqlite3.connect(partial, isolation_level=None)
    # generator only: no durability needed for a file rebuilt on failure
    for pragma in (
        "journal_mode=OFF",
        "synchronous=OFF",
        "cache_size=-262144",
        "temp_store=MEMORY",
        "locking_mode=EXCLUSIVE",
    ):
        conn.execute(f"PRAGMA {pragma}")
    conn.execute("BEGIN")
    gen = _Gen(conn, events, seed)
    base_start, end = START - BASELINE_S, START + WINDOW_S
    before = gen.plan_executions(base_start, START, before_fix=True)
    after = gen.plan_executions(START, end, before_fix=False)
    gen.write_executions(before + after)
    gen.traffic(base_start, START, before, before_fix=True)
    gen.traffic(START, end, after, before_fix=False)
    gen.flush(force=True)
    conn.executemany(
        "INSERT INTO executions (execution_id, status, started_at, ready_at, finished_at, data)"
        " VALUES (?,?,?,?,?,?)",
        gen.executions,
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA locking_mode=NORMAL")
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("ANALYZE")
    conn.close()
    partial.rename(path)
    print(
        f"generated {gen.written:,} events in {time.perf_counter() - t0:.1f} s -> {path}",
        file=sys.stderr,
    )
    return path


# -- measuring (in a child) ------------------------------------------------------------------


# Set in a child measuring a PostgreSQL copy of the store (``--postgres``).
PG_URL: str | None = None
TARGET_INTERVAL_PG_S = 0.5


def _open(path: Path) -> EventStore:
    if PG_URL is not None:
        from steadyq.brokers import open_store

        return open_store(PG_URL)
    return SqliteStore(SqliteDatabase(path), owns_db=True)


def load_postgres(path: Path, url: str) -> str:
    """Copy the generated store's events and executions into a fresh schema on ``url``
    (created through the PostgreSQL store itself, so its tables and indexes are the
    real ones); return the store URL of that schema."""
    import uuid
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    from steadyq.brokers import open_store

    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    schema = f"watch_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    store_url = urlunsplit((parts.scheme, parts.netloc, parts.path, f"schema={schema}", ""))
    open_store(store_url).close()  # the schema, as the store makes it
    t0 = time.perf_counter()
    columns = (
        "ts, kind, severity, sev_rank, message, execution_id, message_id, request_id,"
        " attempt, reason, duration_ms, data"
    )
    source = sqlite3.connect(path)
    with psycopg.connect(base, autocommit=True) as conn:
        with conn.cursor() as cur:
            with cur.copy(f"COPY {schema}.events ({columns}) FROM STDIN") as copy:
                for row in source.execute(f"SELECT {columns} FROM events ORDER BY id"):
                    copy.write_row(row)
            exec_columns = "execution_id, status, started_at, ready_at, finished_at, data"
            with cur.copy(f"COPY {schema}.executions ({exec_columns}) FROM STDIN") as copy:
                for row in source.execute(f"SELECT {exec_columns} FROM executions"):
                    copy.write_row(row)
        conn.execute(f"ANALYZE {schema}.events")
        conn.execute(f"ANALYZE {schema}.executions")
    source.close()
    print(f"loaded {path.name} into {schema} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return store_url


def drop_postgres(store_url: str) -> None:
    from urllib.parse import parse_qs, urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(store_url)
    schema = parse_qs(parts.query)["schema"][0]
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _count(path: Path, start: float, end: float) -> int:
    with sqlite3.connect(path) as conn:
        return int(
            conn.execute(
                "SELECT count(*) FROM events WHERE ts >= ? AND ts < ?", (start, end)
            ).fetchone()[0]
        )


def _nth_ts(path: Path, start: float, n: int) -> float:
    with sqlite3.connect(path) as conn:
        return float(
            conn.execute(
                "SELECT ts FROM events WHERE ts >= ? ORDER BY ts LIMIT 1 OFFSET ?", (start, n)
            ).fetchone()[0]
        )


def peak_rss_mb() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: on Linux a child's ru_maxrss keeps
    the high-water mark of the parent it was forked from, even across exec."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_interval(path: Path, warm: bool) -> dict[str, Any]:
    """One checkpoint over 100 k events at mid-window (after the earlier ones if ``warm``)."""
    a = START + WINDOW_S / 2
    b = _nth_ts(path, a, INTERVAL_EVENTS)
    store = _open(path)
    t0 = time.perf_counter()
    if warm:
        snap = Snapshotter(
            store, window_start=START, baseline=(START - BASELINE_S, START), max_runtime_s=1800
        )
        snap.advance(a)  # the checkpoints before this one
    else:
        snap = Snapshotter(store, window_start=a, max_runtime_s=1800)
    t1 = time.perf_counter()
    interval, _ = snap.advance(b)
    t2 = time.perf_counter()
    store.close()
    return {
        "seconds": t2 - t1,
        "setup_s": t1 - t0,
        "events": _count(path, a, b),
        "received": interval.values["messages.received"],
        "rss_mb": peak_rss_mb(),
    }


def child_replay(path: Path) -> dict[str, Any]:
    """The 24-hour plan: baseline, then 6 checkpoints of 4 hours, cumulative included."""
    store = _open(path)
    t0 = time.perf_counter()
    snap = Snapshotter(
        store, window_start=START, baseline=(START - BASELINE_S, START), max_runtime_s=1800
    )
    base = snap.baseline_figures()
    t_base = time.perf_counter() - t0
    every = WINDOW_S / CHECKPOINTS
    steps: list[float] = []
    cumulative = None
    for i in range(1, CHECKPOINTS + 1):
        s0 = time.perf_counter()
        _, cumulative = snap.advance(START + i * every)
        json.dumps(cumulative.to_dict())  # what the reports will do with it
        steps.append(time.perf_counter() - s0)
    total = time.perf_counter() - t0
    store.close()
    assert cumulative is not None and base is not None
    v = cumulative.values
    return {
        "seconds": total,
        "baseline_s": t_base,
        "checkpoints_s": steps,
        "window_events": _count(path, START, START + WINDOW_S),
        "rss_mb": peak_rss_mb(),
        "figures": {
            name: v[name]
            for name in (
                "executions.total",
                "executions.timed_out",
                "executions.success_rate",
                "executions.duration_s.max",
                "messages.received",
                "messages.rejected",
                "messages.rejected.redelivered",
                "messages.rejection_latency_ms.p99",
                "requests.failed_in_multiple_executions",
                "logs.warnings",
                "errors.patterns",
                "errors.new_patterns",
            )
        },
        "baseline_timed_out": base.values["executions.timed_out"],
    }


def run_child(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def median_run(rounds: int, *args: str) -> dict[str, Any]:
    """The run with the median time of ``rounds`` fresh children; peak RSS is the max."""
    runs = sorted((run_child(*args) for _ in range(rounds)), key=lambda r: r["seconds"])
    chosen = dict(runs[len(runs) // 2])
    chosen["rss_mb"] = max(r["rss_mb"] for r in runs)
    chosen["all_s"] = [r["seconds"] for r in runs]
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events",
        type=int,
        action="append",
        help="events in the 24 h window (repeatable; default 10 M and 1 M)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--fresh", action="store_true", help="regenerate cached stores")
    parser.add_argument("--rounds", type=int, default=3, help="runs per measure; the median")
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="measure a PostgreSQL copy of each store on this server (postgresql://...)",
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        global PG_URL
        step, path = args.child[0], Path(args.child[1])
        PG_URL = args.child[2] if len(args.child) > 2 else None
        if step == "replay":
            print(json.dumps(child_replay(path)))
        else:
            print(json.dumps(child_interval(path, warm=step == "interval-warm")))
        return 0

    sizes = sorted(set(args.events or [1_000_000, 10_000_000]))
    rows: list[tuple[str, str, str, str]] = []
    result: dict[str, Any] = {
        "interval_100k_s": None,
        "replay_1m_s": None,
        "replay_10m_s": None,
        "rss_mb": None,
    }
    details: dict[int, dict[str, Any]] = {}
    target_interval = TARGET_INTERVAL_PG_S if args.postgres else TARGET_INTERVAL_S
    for size in sizes:
        path = generate(size, args.seed, args.fresh)
        where = [str(path)]
        if args.postgres:
            where.append(load_postgres(path, args.postgres))
        print(f"measuring {size:,} ...", file=sys.stderr)
        try:
            warm = median_run(args.rounds, "interval-warm", *where)
            cold = median_run(args.rounds, "interval-fresh", *where)
            replay = median_run(args.rounds, "replay", *where)
        finally:
            if args.postgres:
                drop_postgres(where[1])
        details[size] = {"warm": warm, "fresh": cold, "replay": replay}
        label = f"{size / 1e6:g} M"
        rows.append(
            (
                f"checkpoint, 100 k-event interval, {label} store, after earlier checkpoints",
                f"{warm['seconds']:.3f} s",
                f"≤ {target_interval} s",
                f"{warm['events']:,} events",
            )
        )
        rows.append(
            (
                f"checkpoint, 100 k-event interval, {label} store, fresh watch",
                f"{cold['seconds']:.3f} s",
                f"≤ {target_interval} s",
                f"{cold['events']:,} events",
            )
        )
        rows.append(
            (
                f"replay 24 h, 6 checkpoints + 2 h baseline, {label} in window",
                f"{replay['seconds']:.2f} s",
                f"≤ {TARGET_REPLAY_10M_S} s" if size >= 10_000_000 else "",
                "per checkpoint "
                + ", ".join(f"{s:.2f}" for s in replay["checkpoints_s"])
                + f"; baseline {replay['baseline_s']:.2f}",
            )
        )
        rows.append(
            (
                f"peak RSS of the replay process, {label}",
                f"{replay['rss_mb']:.0f} MB",
                f"≤ {TARGET_RSS_MB:.0f} MB",
                f"{replay['window_events']:,} events in the window",
            )
        )
        if size == 1_000_000:
            result["replay_1m_s"] = round(replay["seconds"], 3)
        if size == 10_000_000:
            result["replay_10m_s"] = round(replay["seconds"], 3)
    largest = details[sizes[-1]]
    result["interval_100k_s"] = round(largest["warm"]["seconds"], 4)
    result["rss_mb"] = round(max(d["replay"]["rss_mb"] for d in details.values()), 1)

    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>10}  {'target':>9}  notes")
    for name, value, target, notes in rows:
        print(f"{name:<{width}}  {value:>10}  {target:>9}  {notes}")
    print()
    print(f"cumulative figures at the end of the window ({sizes[-1]:,} events):")
    for name, value in largest["replay"]["figures"].items():
        print(f"  {name:<42} {value}")
    result["store"] = "postgresql" if args.postgres else "sqlite"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
