"""No-op throughput on PostgreSQL: steadyq's worker next to procrastinate and raw loops.

Every round, interleaved, each variant consumes N valid content requests with a
handler that does nothing, on the machine's PostgreSQL, each in a fresh subprocess
and a fresh schema (procrastinate: a fresh database, since it keeps its tables in
``public``):

* ``procrastinate``: one procrastinate worker (``run_worker(wait=False)``, its
  defaults otherwise: concurrency 1, LISTEN/NOTIFY on, jobs kept as ``succeeded``);
* ``raw claim 1/tx``: a psycopg 3 loop that claims one row per transaction with
  ``FOR UPDATE SKIP LOCKED`` and deletes it (``DELETE … RETURNING``), decoding the
  JSON body: the least a one-job-at-a-time queue can do;
* ``raw claim 100/tx``: the same, 100 rows a transaction: the limit of this machine
  for a queue that records nothing;
* ``raw recorded 100/tx``: the least any worker that keeps steadyq's records must do,
  through steadyq's own schema (made and filled by steadyq's ``publish``, so the same
  tables and indexes): claim 100 rows with ``FOR UPDATE SKIP LOCKED`` and delete them
  (one ``DELETE … RETURNING``), decode each body, then insert each message's two events
  (``message.received`` with the request's ledger fields, ``message.succeeded``) in one
  multi-row statement and upsert its ledger row as ``completed`` (``ON CONFLICT … WHERE
  status <> 'completed'``, as steadyq's), commit. No gate, no claim rows, no reading
  of the ledger first: the ceiling of this design, not a worker;
* ``steadyq``: ``Worker`` with ``runner="inline"`` and ``drain=True`` on a
  ``postgresql://`` queue whose store shares the database (gate, ledger, events,
  settlement in one transaction per pass);
* ``steadyq x4``: four such worker processes on one schema, started together,
  timed from the first start to the last finish.

Then the rejection run: N poison messages (every gate reason) drained by one
inline worker, each timed from the gate to the commit that dead-letters and acks it.

Every side runs with the server's durability setting (``synchronous_commit``, printed;
``on`` by default: a commit waits for its WAL flush). Statistics: autovacuum is off
on this machine, so every variant ANALYZEs its tables after the bulk publish, as an
operator's autovacuum would, so that no claim plans a sort of every row.

CPU: beside each wall-clock rate, the user+sys CPU time of the consuming process
(and its children) per message, and the server's: the user+sys CPU of the backends
that served the variant (``/proc/PID/stat`` of each backend process, found by its
``application_name`` or ``pg_backend_pid()``), per message. The server's background
processes (WAL writer, checkpointer) are not in it; ``pg_stat_statements`` is not
loaded on this machine's server (``shared_preload_libraries`` is empty), so the
backends' own CPU is what is read. WAL bytes per message come from
``pg_current_wal_lsn()`` before and after (the whole server's: noisy when others write).

Run on demand (not a test):

    python bench/throughput_postgres.py                  # 20,000 messages, 3 rounds
    python bench/throughput_postgres.py --messages 5000 --rounds 1
    python bench/throughput_postgres.py --url postgresql://postgres@127.0.0.1:5432/test

Prints a table of medians, then exactly one line of JSON as the last line of stdout.
Progress goes to stderr. Every schema and database it made is dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
TARGETS = {
    "ratio_procrastinate": 10.0,
    "ratio_raw_batch": 0.5,
    "ratio_4_workers": 1.5,
    "rejection_p99_ms": 10.0,
}
VARIANTS = ("procrastinate", "raw-1", "raw-100", "raw-recorded", "steadyq", "steadyq-x4")
LABELS = {
    "procrastinate": "procrastinate (1 worker)",
    "raw-1": "raw claim 1/tx",
    "raw-100": "raw claim 100/tx",
    "raw-recorded": "raw recorded 100/tx",
    "steadyq": "steadyq inline, 1 process",
    "steadyq-x4": "steadyq inline, 4 processes",
}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def conninfo(url: str) -> str:
    """``url`` without steadyq's own query options: what psycopg connects with."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, "", ""))


def with_schema(url: str, schema: str, app: str | None = None) -> str:
    """A steadyq URL on ``schema``; ``app``: the connections' ``application_name``
    (how the server meter finds their backends; default the schema's name)."""
    parts = urlsplit(conninfo(url))
    query = f"schema={schema}&application_name={app or schema}"
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def cpu_s() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


_TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu_s(pid: int) -> float:
    """CPU seconds process ``pid`` has run so far (0 once it is gone): the scheduler's
    own count in ``/proc/PID/schedstat`` (nanoseconds), else utime+stime of
    ``/proc/PID/stat`` (clock ticks)."""
    try:
        with open(f"/proc/{pid}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime


def backends_of(conn: Any, application_name: str) -> list[int]:
    """The backend pids whose ``application_name`` is this one."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,)
    ).fetchall()
    return [r[0] for r in rows]


class ServerMeter:
    """The CPU of a set of server backends and the server's WAL, between start and stop.

    Backends that appear after ``start`` count from zero (their start-up is in it: a
    few ms, nothing per message)."""

    def __init__(self, conn: Any, pids: Any) -> None:
        self.conn, self.pids = conn, pids  # pids: a callable giving the backends now
        self.before: dict[int, float] = {}
        self.lsn0 = ""

    def start(self) -> None:
        self.before = {pid: proc_cpu_s(pid) for pid in self.pids()}
        self.lsn0 = self.conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()[0]

    def stop(self) -> tuple[float, float]:
        """(backend CPU seconds, WAL bytes) since start."""
        cpu = sum(proc_cpu_s(pid) - self.before.get(pid, 0.0) for pid in self.pids())
        (wal,) = self.conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (self.lsn0,)
        ).fetchone()
        return cpu, float(wal)


def per_message(result: dict[str, Any], messages: int, server: tuple[float, float]) -> None:
    result["server_cpu_s"], result["wal_bytes"] = server
    result["server_cpu_us"] = server[0] / messages * 1e6 if messages else None
    result["wal_per_msg"] = server[1] / messages if messages else None


def bodies(n: int, seed: int) -> list[bytes]:
    from steadyq.samples import valid_request

    rng = random.Random(seed)
    return [json.dumps(valid_request(rng)).encode() for _ in range(n)]


# -- raw psycopg loops ---------------------------------------------------------------

RAW_TABLE = """
CREATE TABLE raw_jobs (
    id bigserial PRIMARY KEY,
    body jsonb NOT NULL,
    available_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX raw_jobs_available ON raw_jobs (available_at, id);
"""
RAW_CLAIM = """
DELETE FROM raw_jobs WHERE id IN (
    SELECT id FROM raw_jobs WHERE available_at <= now()
    ORDER BY available_at, id LIMIT %s FOR UPDATE SKIP LOCKED
) RETURNING body
"""


def child_raw(url: str, schema: str, messages: int, per_tx: int, seed: int) -> dict[str, Any]:
    import psycopg

    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        conn.execute(RAW_TABLE)
        with conn.cursor() as cur:
            texts = [b.decode() for b in bodies(messages, seed)]
            cur.executemany("INSERT INTO raw_jobs (body) VALUES (%s::jsonb)", [(t,) for t in texts])
        conn.execute("ANALYZE raw_jobs")
        meter = ServerMeter(conn, lambda: [conn.info.backend_pid])
        meter.start()
        conn.autocommit = False
        done = 0
        t, c = time.perf_counter(), cpu_s()
        while True:
            with conn.transaction():
                rows = conn.execute(RAW_CLAIM, (per_tx,)).fetchall()
                for (body,) in rows:
                    if not isinstance(body, dict) or "request_id" not in body:
                        raise AssertionError("a raw job came back without its body")
            if not rows:
                break
            done += len(rows)
        elapsed, cpu = time.perf_counter() - t, cpu_s() - c
        conn.autocommit = True
        server = meter.stop()
    if done != messages:
        raise AssertionError(f"raw loop consumed {done} of {messages}")
    out = {"per_s": messages / elapsed, "cpu_us": cpu / messages * 1e6, "ok": True}
    per_message(out, messages, server)
    return out


# The recorded raw loop, on steadyq's own tables (the schema steadyq made, qualified).
RECORDED_CLAIM = """
DELETE FROM SQ.messages WHERE seq IN (
    SELECT seq FROM SQ.messages WHERE visible_at <= extract(epoch FROM statement_timestamp())
    ORDER BY visible_at, seq LIMIT %s FOR UPDATE SKIP LOCKED
) RETURNING seq, attempts, body
"""
RECORDED_EVENTS = """
INSERT INTO SQ.events (ts, kind, severity, sev_rank, execution_id, message_id, request_id,
    attempt, duration_ms, data)
SELECT * FROM unnest(%b::float8[], %b::text[], %b::text[], %b::int[], %b::text[], %b::text[],
    %b::text[], %b::int[], %b::float8[], %b::text[])
"""
RECORDED_LEDGER = """
INSERT INTO SQ.requests AS r (request_id, status, message_id, execution_id, updated_at,
    attempts, fields, duration_s, created_at, started_at, completed_at)
SELECT v.request_id, 'completed', v.message_id, v.execution_id, v.t, v.attempts,
    v.fields::jsonb, 0.0, v.t, v.t, v.t
FROM unnest(%b::text[], %b::text[], %b::text[], %b::float8[], %b::int[], %b::text[])
    AS v (request_id, message_id, execution_id, t, attempts, fields)
ORDER BY v.request_id
ON CONFLICT (request_id) DO UPDATE SET status = excluded.status,
    message_id = excluded.message_id, execution_id = excluded.execution_id,
    updated_at = excluded.updated_at, attempts = excluded.attempts, fields = excluded.fields,
    duration_s = excluded.duration_s, completed_at = excluded.completed_at
WHERE r.status <> 'completed'
"""


def child_raw_recorded(url: str, schema: str, messages: int, seed: int) -> dict[str, Any]:
    """Claim 100, write each message's two events and its ledger row through
    steadyq's schema, delete the claimed rows, commit: per transaction, two round
    trips (the claim, whose bodies the records need; then both inserts and the commit
    in one pipeline). Arrays go in binary (``%b``), as steadyq sends them."""
    import psycopg

    from steadyq._postgres import qualify

    surl = with_schema(url, schema)
    child_publish(surl, messages, seed)  # steadyq makes its schema and fills the queue
    claim, events, ledger = (
        qualify(q, schema) for q in (RECORDED_CLAIM, RECORDED_EVENTS, RECORDED_LEDGER)
    )
    execution = uuid.uuid4().hex[:16]
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        meter = ServerMeter(conn, lambda: [conn.info.backend_pid])
        meter.start()
        conn.autocommit = False
        loads, dumps, now = json.loads, json.dumps, time.time
        done = 0
        t, c = time.perf_counter(), cpu_s()
        while True:
            # one transaction a pass, its COMMIT sent with the inserts
            rows = conn.execute(claim, (100,)).fetchall()
            if not rows:
                conn.rollback()
                break
            n = len(rows)
            ts = now()
            mids = [str(r[0]) for r in rows]
            attempts = [r[1] for r in rows]
            rids, fields, received = [], [], []
            for r in rows:
                body = loads(r[2])
                rids.append(body["request_id"])
                shown = {"modalities": body.get("modalities")}  # the ledger's fields
                fields.append(dumps(shown))
                received.append(dumps({"request": shown}))  # as steadyq's event data
            with conn.pipeline():
                conn.execute(
                    events,
                    (
                        [ts] * (2 * n),
                        ["message.received"] * n + ["message.succeeded"] * n,
                        ["INFO"] * (2 * n),
                        [1] * (2 * n),
                        [execution] * (2 * n),
                        mids + mids,
                        rids + rids,
                        attempts + attempts,
                        [None] * n + [0.0] * n,
                        received + [None] * n,
                    ),
                )
                conn.execute(ledger, (rids, mids, [execution] * n, [ts] * n, attempts, fields))
                conn.commit()
            done += n
        elapsed, cpu = time.perf_counter() - t, cpu_s() - c
        conn.autocommit = True
        server = meter.stop()
        (events_n,) = conn.execute(qualify("SELECT count(*) FROM SQ.events", schema)).fetchone()
    if done != messages or events_n != 2 * messages:
        raise AssertionError(f"recorded raw loop: {done} of {messages}, {events_n} events")
    out = {"per_s": messages / elapsed, "cpu_us": cpu / messages * 1e6, "ok": True}
    per_message(out, messages, server)
    return out


# -- procrastinate -------------------------------------------------------------------


def child_procrastinate(url: str, database: str, messages: int, seed: int) -> dict[str, Any]:
    import asyncio
    import logging

    import procrastinate
    import psycopg

    logging.getLogger("procrastinate").setLevel(logging.ERROR)
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=with_database(url, database))
    )
    ran = [0]

    @app.task(name="noop")
    def noop(request: dict[str, Any]) -> None:
        ran[0] += 1

    async def go() -> tuple[float, float]:
        async with app.open_async():
            await app.schema_manager.apply_schema_async()
            payloads = [json.loads(b) for b in bodies(messages, seed)]
            for start in range(0, messages, 1000):
                await noop.batch_defer_async(
                    *({"request": p} for p in payloads[start : start + 1000])
                )
            with psycopg.connect(with_database(url, database), autocommit=True) as c:
                c.execute("ANALYZE")
            t, c0 = time.perf_counter(), cpu_s()
            await app.run_worker_async(wait=False, install_signal_handlers=False)
            return time.perf_counter() - t, cpu_s() - c0

    elapsed, cpu = asyncio.run(go())
    if ran[0] != messages:
        raise AssertionError(f"procrastinate ran {ran[0]} of {messages}")
    return {"per_s": messages / elapsed, "cpu_us": cpu / messages * 1e6, "ok": True}


# -- steadyq ---------------------------------------------------------------------------


def child_publish(url: str, messages: int, seed: int) -> dict[str, Any]:
    import psycopg

    from steadyq.brokers import open_queue

    queue = open_queue(url)
    try:
        payload = bodies(messages, seed)
        t = time.perf_counter()
        for start in range(0, messages, 500):
            queue.publish_batch((b, None) for b in payload[start : start + 500])
        elapsed = time.perf_counter() - t
    finally:
        queue.close()
    schema = urlsplit(url).query.split("schema=", 1)[1].split("&")[0]
    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            )
        ]
        for table in tables:
            conn.execute(f'ANALYZE "{table}"')
    return {"per_s": messages / elapsed}


def child_steadyq(url: str, messages: int | None, start_at: float) -> dict[str, Any]:
    """Drain with one inline Worker. ``messages``: verify exactly that many succeeded
    (one process); ``None``: one of several, report counts only."""
    import psycopg

    from steadyq.brokers import open_queue, store_for
    from steadyq.content.schema import ContentRequest
    from steadyq.worker import ExitCode, Worker, WorkerOptions

    while time.time() < start_at:  # the x4 processes start together
        time.sleep(0.005)
    queue = open_queue(url)
    name = dict(p.split("=", 1) for p in urlsplit(url).query.split("&"))["application_name"]
    admin_conn = psycopg.connect(conninfo(url), autocommit=True)
    meter = ServerMeter(admin_conn, lambda: backends_of(admin_conn, name))
    meter.start()
    try:
        options = WorkerOptions(
            handler="steadyq.handlers:noop",
            schema=ContentRequest,
            runner="inline",
            drain=True,
        )
        worker = Worker(queue, store_for(queue), options, sink=None)
        t, c, wall0 = time.perf_counter(), cpu_s(), time.time()
        result = worker.run()
        elapsed, cpu, wall1 = time.perf_counter() - t, cpu_s() - c, time.time()
        counts = dict(result.counts)
        ok = result.exit_code == ExitCode.OK
        if messages is not None:
            stats = queue.stats()
            ok = (
                ok
                and counts.get("succeeded") == messages
                and (stats.ready, stats.in_flight, stats.delayed, stats.dead_lettered)
                == (0, 0, 0, 0)
            )
        server = meter.stop()
    finally:
        queue.close()
        admin_conn.close()
    n = counts.get("succeeded", 0)
    out = {
        "per_s": (n / elapsed) if elapsed else 0.0,
        "cpu_s": cpu,
        "cpu_us": cpu / n * 1e6 if n else None,
        "succeeded": n,
        "started": wall0,
        "finished": wall1,
        "ok": ok,
        "detail": result.detail,
    }
    per_message(out, n, server)
    return out


def child_rejections(url: str, messages: int, seed: int) -> dict[str, Any]:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from rejection_latency import poison_mix, summary

    from steadyq.brokers import open_queue, store_for
    from steadyq.content.schema import ContentRequest
    from steadyq.worker import Worker, WorkerOptions

    mix = poison_mix(messages, seed)
    payload = [b for _, b in mix]
    queue = open_queue(url)
    try:
        ids: list[str] = []
        for start in range(0, messages, 500):
            ids += queue.publish_batch((b, None) for b in payload[start : start + 500])
        id_of_body = dict(zip(payload, ids, strict=True))
        worker = Worker(
            queue,
            store_for(queue),
            WorkerOptions(
                handler="steadyq.handlers:noop", schema=ContentRequest, runner="inline", drain=True
            ),
            sink=None,
        )
        gate_at: dict[str, float] = {}
        commit_at: dict[str, float] = {}
        real_check, real_settle = worker.gate.check, queue.settle

        def timed_check(body: bytes) -> Any:
            gate_at[id_of_body[bytes(body)]] = time.perf_counter()
            return real_check(body)

        def timed_settle(settlements: Any, **kwargs: Any) -> Any:
            result = real_settle(settlements, **kwargs)
            t = time.perf_counter()
            for s in result.applied:
                commit_at[s.delivery.message_id] = t
            return result

        worker.gate.check = timed_check  # type: ignore[method-assign]
        queue.settle = timed_settle  # type: ignore[method-assign]
        result = worker.run()
        letters = queue.dlq_list()
    finally:
        queue.close()
    if result.counts.get("rejected") != messages or len(letters) != messages:
        raise AssertionError(f"rejections: {dict(result.counts)}, {len(letters)} letters")
    if set(commit_at) != set(ids):
        raise AssertionError("a rejection was not timed to its commit")
    return summary([(commit_at[m] - gate_at[m]) * 1000 for m in ids])


# -- the parent ------------------------------------------------------------------------


def spawn(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"child {args[0]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def admin(url: str, sql: str) -> Any:
    import psycopg

    with psycopg.connect(conninfo(url), autocommit=True) as conn:
        cur = conn.execute(sql)
        return cur.fetchone() if cur.description else None


def run_variant(variant: str, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    tag = f"bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    n = args.messages
    if variant == "procrastinate":
        n = args.procrastinate_messages or args.messages
        admin(args.url, f"CREATE DATABASE {tag}")
        try:
            return spawn("procrastinate", args.url, tag, str(n), str(seed))
        finally:
            admin(args.url, f"DROP DATABASE IF EXISTS {tag} WITH (FORCE)")
    admin(args.url, f"CREATE SCHEMA {tag}")
    try:
        if variant == "raw-recorded":
            return spawn("raw-recorded", args.url, tag, str(n), str(seed))
        if variant in ("raw-1", "raw-100"):
            per_tx = "1" if variant == "raw-1" else "100"
            return spawn("raw", args.url, tag, str(n), per_tx, str(seed))
        url = with_schema(args.url, tag)
        published = spawn("publish", url, str(n), str(seed))
        if variant == "steadyq":
            out = spawn("steadyq", url, str(n), str(time.time()))
            out["publish_per_s"] = published["per_s"]
            return out
        start_at = time.time() + 1.5  # every process imported and connected by then
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--child",
                    "steadyq",
                    with_schema(args.url, tag, f"{tag}_{i}"),
                    "-",
                    str(start_at),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(4)
        ]
        results = []
        for p in procs:
            stdout, stderr = p.communicate()
            if p.returncode != 0:
                raise RuntimeError(f"steadyq x4 child failed:\n{stderr[-3000:]}")
            results.append(json.loads(stdout.strip().splitlines()[-1]))
        total = sum(r["succeeded"] for r in results)
        span = max(r["finished"] for r in results) - min(r["started"] for r in results)
        return {
            "per_s": total / span,
            "cpu_us": sum(r["cpu_s"] for r in results) / total * 1e6 if total else None,
            "server_cpu_us": (
                sum(r["server_cpu_s"] for r in results) / total * 1e6 if total else None
            ),
            "wal_per_msg": max(r["wal_bytes"] for r in results) / total if total else None,
            "split": [r["succeeded"] for r in results],
            "ok": total == n and all(r["ok"] for r in results),
        }
    finally:
        admin(args.url, f"DROP SCHEMA IF EXISTS {tag} CASCADE")


def rejection_run(args: argparse.Namespace) -> dict[str, Any]:
    tag = f"bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin(args.url, f"CREATE SCHEMA {tag}")
    try:
        return spawn("rejections", with_schema(args.url, tag), str(args.rejections), "7")
    finally:
        admin(args.url, f"DROP SCHEMA IF EXISTS {tag} CASCADE")


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def child_main(argv: list[str]) -> int:
    what, rest = argv[0], argv[1:]
    if what == "raw":
        out = child_raw(rest[0], rest[1], int(rest[2]), int(rest[3]), int(rest[4]))
    elif what == "raw-recorded":
        out = child_raw_recorded(rest[0], rest[1], int(rest[2]), int(rest[3]))
    elif what == "procrastinate":
        out = child_procrastinate(rest[0], rest[1], int(rest[2]), int(rest[3]))
    elif what == "publish":
        out = child_publish(rest[0], int(rest[1]), int(rest[2]))
    elif what == "steadyq":
        out = child_steadyq(rest[0], None if rest[1] == "-" else int(rest[1]), float(rest[2]))
    elif what == "rejections":
        out = child_rejections(rest[0], int(rest[1]), int(rest[2]))
    else:
        raise SystemExit(f"unknown child {what}")
    print(json.dumps(out))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        return child_main(argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("STEADYQ_BENCH_PG", DEFAULT_URL))
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument(
        "--procrastinate-messages",
        type=int,
        default=None,
        help="messages for procrastinate (default: --messages); its rate is per message",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rejections", type=int, default=5_000)
    parser.add_argument("--skip", action="append", default=[], choices=VARIANTS)
    args = parser.parse_args(argv)

    try:
        (sync,) = admin(args.url, "SHOW synchronous_commit")
        (version,) = admin(args.url, "SHOW server_version")
    except Exception as exc:
        print(f"error: cannot reach PostgreSQL at {conninfo(args.url)}: {exc}", file=sys.stderr)
        return 3
    variants = [v for v in VARIANTS if v not in args.skip]
    figures: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    for rnd in range(args.rounds):
        order = variants[:]
        random.Random(rnd).shuffle(order)
        for variant in order:
            log(f"round {rnd + 1}/{args.rounds}: {LABELS[variant]} ...")
            out = run_variant(variant, args, seed=rnd)
            if not out.get("ok"):
                raise RuntimeError(f"{variant} did not verify: {out}")
            figures[variant].append(out)
            log(f"  {out['per_s']:,.0f} msg/s")
    log(f"rejection run ({args.rejections} poison messages) ...")
    rej = rejection_run(args)

    rate = {v: med([f["per_s"] for f in figures[v]]) for v in variants}

    def med_of(key: str) -> dict[str, float]:
        return {v: med([f[key] for f in figures[v] if f.get(key) is not None]) for v in variants}

    cpu, server_cpu, wal = med_of("cpu_us"), med_of("server_cpu_us"), med_of("wal_per_msg")

    def whole(value: float | None) -> int | None:
        return None if value is None or value != value else round(value)

    def ratio(a: str, b: str) -> float | None:
        return round(rate[a] / rate[b], 2) if a in rate and b in rate and rate[b] else None

    print(f"PostgreSQL {version}, synchronous_commit={sync}; {args.messages:,} no-op messages,")
    print(
        f"medians of {args.rounds} interleaved rounds (CPU per message: the consuming"
        " process; its server backends; WAL bytes)"
    )
    print()

    def shown(value: float) -> str:
        return "-" if value != value else f"{value:,.0f}"

    print(f"{'variant':32} {'msg/s':>10} {'client µs':>10} {'server µs':>10} {'WAL B':>8}")
    for v in variants:
        print(
            f"{LABELS[v]:32} {rate[v]:>10,.0f} {shown(cpu[v]):>10} {shown(server_cpu[v]):>10}"
            f" {shown(wal[v]):>8}"
        )
    print()
    summary = {
        "steadyq_per_s": whole(rate.get("steadyq")),
        "steadyq_4_workers_per_s": whole(rate.get("steadyq-x4")),
        "procrastinate_per_s": whole(rate.get("procrastinate")),
        "raw_claim_per_s": whole(rate.get("raw-1")),
        "raw_batch_per_s": whole(rate.get("raw-100")),
        "raw_batch_recorded_per_s": whole(rate.get("raw-recorded")),
        "ratio_procrastinate": ratio("steadyq", "procrastinate"),
        "ratio_raw_batch": ratio("steadyq", "raw-100"),
        "ratio_raw_batch_recorded": ratio("steadyq", "raw-recorded"),
        "ratio_4_workers": ratio("steadyq-x4", "steadyq"),
        "rejection_p50_ms": round(rej["p50_ms"], 2),
        "rejection_p99_ms": round(rej["p99_ms"], 2),
        "cpu_us_per_msg": whole(cpu.get("steadyq")),
        "server_cpu_us_per_msg": whole(server_cpu.get("steadyq")),
        "server_cpu_us_per_msg_4_workers": whole(server_cpu.get("steadyq-x4")),
        "raw_batch_server_cpu_us_per_msg": whole(server_cpu.get("raw-100")),
        "raw_recorded_server_cpu_us_per_msg": whole(server_cpu.get("raw-recorded")),
        "raw_recorded_cpu_us_per_msg": whole(cpu.get("raw-recorded")),
        "procrastinate_cpu_us_per_msg": whole(cpu.get("procrastinate")),
        "synchronous_commit": sync,
        "messages": args.messages,
        "rounds": args.rounds,
    }
    for key, target in TARGETS.items():
        value = summary.get(key)
        if value is None:
            continue
        at_most = key.endswith("_ms")
        met = value <= target if at_most else value >= target
        sign = "≤" if at_most else "≥"
        print(f"{key:24} {value!s:>8}  target {sign} {target}  {'met' if met else 'NOT met'}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
