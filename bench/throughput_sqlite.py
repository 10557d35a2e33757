"""No-op throughput of one steadyq worker on SQLite, next to huey's SqliteHuey.

Each round, interleaved, every variant processes N valid content requests with a
handler that does nothing:

* ``steadyq inline``: ``Worker`` with ``runner="inline"`` (handler in the worker);
* ``steadyq process``: ``Worker`` with ``runner="process"``, ``concurrency`` = cores,
  default prefetch (handlers in forked children);
* ``huey (sync=NORMAL)``: ``SqliteHuey(results=False)`` consumed by huey's own
  ``Consumer(workers=1, worker_type="thread")``; its SQLite connection is set to
  ``synchronous=NORMAL``, the durability steadyq runs with (WAL + NORMAL), so both
  sides pay the same for a commit. This is the figure the ratios use;
* ``huey (default)``: the same, with huey's stock connection (SQLite's default
  ``synchronous=FULL``: an fsync per commit), for reference;
* ``records only``: no worker at all. The rows steadyq records for each message,
  written by SQLite alone: each batch of 64 is leased by ``SqliteQueue.pull``,
  claimed by the store's own ``claim_in``, then one transaction deletes the batch,
  inserts its two events a message (arrival, outcome) and its ledger rows and
  releases its claims, through the store's own statements, with every parameter
  built before the clock starts. No gate, no handler, no Python per message beyond
  the pull's deliveries: the ceiling of any worker that keeps these records in this
  schema on this machine (``ratio_records``: the records alone against huey).

Fairness: every variant starts in a fresh subprocess on a fresh database in a temp
dir; the messages are published beforehand by a separate subprocess, so the timed
process does nothing but consume. steadyq is timed around ``Worker.run()`` (start
of the execution to its end, including its startup and final flush); huey from
``Consumer.start()`` to the moment its N-th task ran. huey really dequeues each
task from its SQLite file (one transaction each) and executes it; steadyq also
gates (pydantic), writes telemetry events and the request ledger per message:
that is the work steadyq does for every message and it is counted.

CPU: beside each wall-clock rate, the CPU time (user + sys) per message of the
timed process (``resource.getrusage`` deltas around the timed part) and, for the
process runner, of its handler children and their forkserver, read from
``/proc/PID/stat`` just before they stop (they are the forkserver's children, not
the worker's, so no ``RUSAGE_CHILDREN`` ever counts them). Other tenants of a shared
machine slow the wall clock far more than they change the CPU a message costs, so
this is the steadier figure.

Start: the timed part of steadyq includes its execution's start (for the process
runner: the forkserver's imports and the children's handshake, ~0.1 s); huey's
includes its consumer's. ``ratio_process_after_start`` also gives the process
runner's rate from its execution's ``ready`` to the end, against huey's whole run:
what a long execution settles into. ``ratio_process`` stays the figure with the start.

Load: ``--burners N`` starts N processes that spin (``while True: pass``) for the
whole run, to show how the figures degrade on a busy machine.

Memory: the worker subprocess reads its own VmRSS from /proc/self/status after
the run; for the process runner the handler children's VmRSS (and PSS, which
splits pages shared with the parent after fork) are read just before they stop.

Also measured, in their own subprocesses: steadyq's publish rate with
``publish_batch`` (batches of 500) and with ``publish()`` one by one.

Run on demand (not a test):

    python bench/throughput_sqlite.py                 # 20,000 messages, 5 rounds
    python bench/throughput_sqlite.py --messages 5000 --rounds 1
    python bench/throughput_sqlite.py --burners 2     # with two CPU burners beside

Prints a table of medians, then exactly one line of JSON as the last line of
stdout. Progress goes to stderr. Nothing is left on disk.
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
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TARGETS = {"ratio_inline": 2.0, "ratio_process": 1.0, "worker_rss_mb": 80.0}
VARIANTS = ("steadyq-inline", "steadyq-process", "huey-normal", "huey-default", "records")
LABELS = {
    "steadyq-inline": "steadyq inline",
    "steadyq-process": "steadyq process",
    "huey-normal": "huey (sync=NORMAL)",
    "huey-default": "huey (default FULL)",
    "records": "records only (no worker)",
}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def proc_status_kb(pid: int | str, field: str) -> int | None:
    """A ``kB`` field (VmRSS, VmHWM) of /proc/<pid>/status, or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def pss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def mb(kb: int | None) -> float | None:
    return None if kb is None else kb / 1024


def proc_cpu_s(pid: int | str) -> float:
    """CPU seconds (user + sys) a live process has used so far, from /proc."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def forkserver_pid() -> int | None:
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    return getattr(server, "_forkserver_pid", None)


def cpu_s() -> float:
    """CPU seconds (user + sys) of this process and of its children reaped so far."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def start_burners(n: int) -> list[subprocess.Popen[bytes]]:
    """``n`` processes that spin until killed: the loaded figures."""
    return [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(n)
    ]


def stop_burners(burners: list[subprocess.Popen[bytes]]) -> None:
    for proc in burners:
        proc.kill()
    for proc in burners:
        proc.wait()


# -- children: each runs one step in a fresh interpreter and prints one JSON line -----


def child_publish_steadyq(db: str, messages: int, batch: int, seed: int) -> dict[str, Any]:
    """Publish ``messages`` valid requests in batches; the rate includes JSON encoding."""
    from steadyq.brokers import open_queue
    from steadyq.samples import valid_request

    rng = random.Random(seed)
    queue = open_queue(f"sqlite:///{db}")
    try:
        t = time.perf_counter()
        for start in range(0, messages, batch):
            n = min(batch, messages - start)
            queue.publish_batch((json.dumps(valid_request(rng)).encode(), None) for _ in range(n))
        elapsed = time.perf_counter() - t
    finally:
        queue.close()
    return {"per_s": messages / elapsed}


def child_publish_one(db: str, messages: int, seed: int) -> dict[str, Any]:
    """publish() one message at a time: one transaction each."""
    from steadyq.brokers import open_queue
    from steadyq.samples import valid_request

    rng = random.Random(seed)
    bodies = [json.dumps(valid_request(rng)).encode() for _ in range(messages)]
    queue = open_queue(f"sqlite:///{db}")
    try:
        t = time.perf_counter()
        for body in bodies:
            queue.publish(body)
        elapsed = time.perf_counter() - t
    finally:
        queue.close()
    return {"per_s": messages / elapsed}


def child_run_steadyq(db: str, messages: int, runner: str, concurrency: int) -> dict[str, Any]:
    """Drain the queue with one Worker; report rate, counts, RSS; verify everything."""
    import multiprocessing

    from steadyq.brokers import open_queue, store_for
    from steadyq.content.schema import ContentRequest
    from steadyq.worker import ExitCode, Worker, WorkerOptions

    children: list[dict[str, Any]] = []
    helpers_cpu: list[float] = []  # the forkserver's CPU (it starts inside run())

    class MeasuredWorker(Worker):
        # The handler children exit inside run(); read their memory just before.
        def _make_runner(self):  # type: ignore[no-untyped-def]
            made = super()._make_runner()
            real_close = made.close

            def close() -> None:
                for p in multiprocessing.active_children():
                    if p.pid is not None:
                        children.append(
                            {
                                "rss_mb": mb(proc_status_kb(p.pid, "VmRSS")),
                                "pss_mb": mb(pss_kb(p.pid)),
                                # the forkserver's children are not this process's to
                                # reap: their CPU is read before they stop
                                "cpu_s": proc_cpu_s(p.pid),
                            }
                        )
                server = forkserver_pid()
                if server is not None:
                    helpers_cpu.append(proc_cpu_s(server))
                real_close()

            made.close = close  # type: ignore[method-assign]
            return made

    queue = open_queue(f"sqlite:///{db}")
    try:
        options = WorkerOptions(
            handler="steadyq.handlers:noop",
            # the sample traffic validated as content requests, as the figures always were
            schema=ContentRequest,
            runner=runner,
            concurrency=concurrency,
            drain=True,
        )
        worker = MeasuredWorker(queue, store_for(queue), options, sink=None)
        cpu0 = cpu_s()
        t = time.perf_counter()
        result = worker.run()
        elapsed = time.perf_counter() - t
        handler_cpu = sum(c["cpu_s"] for c in children) + sum(helpers_cpu)
        cpu = cpu_s() - cpu0 + handler_cpu
        rss = proc_status_kb("self", "VmRSS")
        hwm = proc_status_kb("self", "VmHWM")
        # -- verification: all succeeded, queue empty, ledger complete ----------------
        stats = queue.stats()
        with queue.db.reading() as conn:  # type: ignore[attr-defined]
            (completed,) = conn.execute(
                "SELECT COUNT(*) FROM requests WHERE status = 'completed'"
            ).fetchone()
        ok = (
            result.exit_code == ExitCode.OK
            and result.counts["succeeded"] == messages
            and result.counts["received"] == messages
            and sum(result.counts.values()) == 2 * messages  # received + succeeded only
            and (stats.ready, stats.in_flight, stats.delayed, stats.dead_lettered) == (0, 0, 0, 0)
            and completed == messages
        )
    finally:
        queue.close()
    return {
        "per_s": messages / elapsed,
        "elapsed_s": elapsed,
        "cpu_us_per_msg": cpu / messages * 1e6,
        "children_cpu_us_per_msg": handler_cpu / messages * 1e6,
        "startup_s": result.startup_s,
        "rss_mb": mb(rss),
        "hwm_mb": mb(hwm),
        "children": children,
        "counts": dict(result.counts),
        "detail": result.detail,
        "left_in_queue": {
            "ready": stats.ready,
            "in_flight": stats.in_flight,
            "delayed": stats.delayed,
            "dead_lettered": stats.dead_lettered,
        },
        "ledger_completed": completed,
        "ok": ok,
    }


def child_run_records(db: str, messages: int) -> dict[str, Any]:
    """steadyq's records for ``messages`` published requests, without a worker: see
    the module docstring ("records only") and ``records_sqlite.py``, which also
    times their phases and other shapes of them."""
    import records_sqlite

    return records_sqlite.run_records(db, messages, "stored")


def _huey(db: str, synchronous_normal: bool) -> Any:
    from huey import SqliteHuey
    from huey.storage import SqliteStorage

    class NormalSyncStorage(SqliteStorage):
        """huey's storage with steadyq's durability: WAL + synchronous=NORMAL."""

        def _create_connection(self):  # type: ignore[no-untyped-def]
            conn = super()._create_connection()
            conn.execute("pragma synchronous=NORMAL")
            return conn

    kwargs: dict[str, Any] = {"storage_class": NormalSyncStorage} if synchronous_normal else {}
    return SqliteHuey("bench", filename=db, results=False, **kwargs)


_done = threading.Event()
_executed = [0, 0]  # [executed so far, target]


def _register_noop(huey: Any) -> Any:
    # The task body is the no-op plus a counter, so the parent knows when the N-th
    # task ran (the counter is the only work; huey's worker is a single thread).
    @huey.task(name="noop")
    def noop(request: dict[str, Any]) -> None:
        _executed[0] += 1
        if _executed[0] >= _executed[1]:
            _done.set()

    return noop


def child_publish_huey(
    db: str, messages: int, seed: int, synchronous_normal: bool
) -> dict[str, Any]:
    from steadyq.samples import valid_request

    huey = _huey(db, synchronous_normal)
    noop = _register_noop(huey)
    rng = random.Random(seed)
    t = time.perf_counter()
    for _ in range(messages):
        noop(valid_request(rng))  # the same request dicts steadyq gets, pickled by huey
    elapsed = time.perf_counter() - t
    assert huey.pending_count() == messages
    huey.storage.close()
    return {"per_s": messages / elapsed}


def child_run_huey(db: str, messages: int, synchronous_normal: bool) -> dict[str, Any]:
    from huey.consumer import Consumer

    huey = _huey(db, synchronous_normal)
    _register_noop(huey)
    _executed[1] = messages
    assert huey.pending_count() == messages
    consumer = Consumer(huey, workers=1, worker_type="thread")
    cpu0 = cpu_s()
    t = time.perf_counter()
    consumer.start()
    finished = _done.wait(timeout=600)
    elapsed = time.perf_counter() - t
    cpu = cpu_s() - cpu0
    consumer.stop(graceful=True)
    rss = proc_status_kb("self", "VmRSS")
    ok = finished and _executed[0] == messages and huey.pending_count() == 0
    return {
        "per_s": messages / elapsed,
        "elapsed_s": elapsed,
        "cpu_us_per_msg": cpu / messages * 1e6,
        "rss_mb": mb(rss),
        "ok": ok,
    }


# -- the parent: rounds, medians, table -------------------------------------------------


def spawn_script(script: Path, *args: str) -> dict[str, Any]:
    """Run ``script`` as a child step; its last stdout line is its JSON result."""
    proc = subprocess.run(
        [sys.executable, str(script), "--child", *args],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {args} failed with exit code {proc.returncode}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def spawn(*args: str) -> dict[str, Any]:
    """Run this script as a child step."""
    return spawn_script(Path(__file__).resolve(), *args)


def one_round(tmp: Path, rnd: int, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    n, seed = args.messages, args.seed + rnd
    # rotate the order each round so that no variant always runs first or last
    order = VARIANTS[rnd % len(VARIANTS) :] + VARIANTS[: rnd % len(VARIANTS)]
    out: dict[str, dict[str, Any]] = {}
    for variant in order:
        db = str(tmp / f"r{rnd}-{variant}.db")
        if variant.startswith("steadyq"):
            pub = spawn("publish-steadyq", db, str(n), str(args.publish_batch), str(seed))
            runner = variant.split("-")[1]
            res = spawn("run-steadyq", db, str(n), runner, str(args.concurrency))
        elif variant == "records":
            pub = spawn("publish-steadyq", db, str(n), str(args.publish_batch), str(seed))
            res = spawn("run-records", db, str(n))
        else:
            normal = "1" if variant == "huey-normal" else "0"
            pub = spawn("publish-huey", db, str(n), str(seed), normal)
            res = spawn("run-huey", db, str(n), normal)
        res["publish_per_s"] = pub["per_s"]
        if not res["ok"]:
            # e.g. a drain=True worker that stopped with messages still ready
            raise AssertionError(f"round {rnd + 1} {variant}: verification failed: {res}")
        log(
            f"  round {rnd + 1} {LABELS[variant]:<20} {res['per_s']:>9,.0f} msg/s"
            f"  {res['cpu_us_per_msg']:>6.1f} us CPU/msg"
            f"  ({res['elapsed_s']:.2f} s, RSS {res['rss_mb']:.1f} MB)"
        )
        out[variant] = res
        for suffix in ("", "-wal", "-shm"):  # free the disk as we go
            Path(db + suffix).unlink(missing_ok=True)
    one_db = str(tmp / f"r{rnd}-one.db")
    out["publish-one"] = spawn("publish-one", one_db, str(args.publish_one), str(seed))
    log(f"  round {rnd + 1} publish() one by one {out['publish-one']['per_s']:>9,.0f} msg/s")
    return out


def med(values: list[float]) -> float:
    return statistics.median(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="No-op throughput of one steadyq worker (inline and process runners)"
        " on SQLite, next to huey's SqliteHuey; plus publish rates and worker RSS.",
    )
    parser.add_argument("--messages", type=int, default=20_000, help="messages per run (20000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument(
        "--burners",
        type=int,
        default=0,
        help="CPU-burning processes to run beside the benchmark (0): the loaded figures",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=os.cpu_count() or 1,
        help="process runner children (default: cores)",
    )
    parser.add_argument("--publish-batch", type=int, default=500, help="publish_batch size (500)")
    parser.add_argument(
        "--publish-one", type=int, default=2000, help="messages published one by one (2000)"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed for the requests (1)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        step, *rest = args.child
        steps = {
            "publish-steadyq": lambda a: child_publish_steadyq(
                a[0], int(a[1]), int(a[2]), int(a[3])
            ),
            "publish-one": lambda a: child_publish_one(a[0], int(a[1]), int(a[2])),
            "run-steadyq": lambda a: child_run_steadyq(a[0], int(a[1]), a[2], int(a[3])),
            "publish-huey": lambda a: child_publish_huey(a[0], int(a[1]), int(a[2]), a[3] == "1"),
            "run-huey": lambda a: child_run_huey(a[0], int(a[1]), a[2] == "1"),
            "run-records": lambda a: child_run_records(a[0], int(a[1])),
        }
        print(json.dumps(steps[step](rest)))
        return 0

    if args.messages < 1 or args.rounds < 1:
        parser.error("--messages and --rounds must be at least 1")
    if args.burners < 0:
        parser.error("--burners must be 0 or more")

    rounds: list[dict[str, dict[str, Any]]] = []
    load_before = os.getloadavg()[0]
    burners = start_burners(args.burners)
    try:
        with tempfile.TemporaryDirectory(prefix="steadyq-bench-") as tmp:
            for rnd in range(args.rounds):
                log(f"round {rnd + 1}/{args.rounds}: {args.messages} messages per variant ...")
                rounds.append(one_round(Path(tmp), rnd, args))
    finally:
        stop_burners(burners)
    load_after = os.getloadavg()[0]

    rate = {v: med([r[v]["per_s"] for r in rounds]) for v in VARIANTS}
    rss = {v: med([r[v]["rss_mb"] for r in rounds]) for v in VARIANTS}
    cpu = {v: med([r[v]["cpu_us_per_msg"] for r in rounds]) for v in VARIANTS}
    after_start = med(
        [
            args.messages / (r["steadyq-process"]["elapsed_s"] - r["steadyq-process"]["startup_s"])
            for r in rounds
        ]
    )
    process_start = med([r["steadyq-process"]["startup_s"] for r in rounds])
    children_cpu = med([r["steadyq-process"]["children_cpu_us_per_msg"] for r in rounds])
    child_rss = [c["rss_mb"] for r in rounds for c in r["steadyq-process"]["children"]]
    child_pss = [
        c["pss_mb"]
        for r in rounds
        for c in r["steadyq-process"]["children"]
        if c["pss_mb"] is not None
    ]
    publish_batch = med(
        [r[v]["publish_per_s"] for r in rounds for v in ("steadyq-inline", "steadyq-process")]
    )
    publish_one = med([r["publish-one"]["per_s"] for r in rounds])
    huey_enqueue = med([r["huey-normal"]["publish_per_s"] for r in rounds])
    huey = rate["huey-normal"]

    print(
        f"no-op throughput, {args.messages} messages, one worker process, SQLite;"
        f" medians of {args.rounds} interleaved round(s); {os.cpu_count()} cores;"
        f" {args.burners} CPU burner(s) beside; load average {load_before:.2f} before,"
        f" {load_after:.2f} after"
    )
    header = (
        f"{'variant':<22}{'msg/s':>10}{'vs huey':>9}{'CPU us/msg':>12}{'vs huey':>9}"
        f"{'worker RSS MB':>15}   rounds (msg/s)"
    )
    print(header)
    print("-" * (len(header) + 10))
    for v in VARIANTS:
        per_round = ", ".join(f"{r[v]['per_s']:,.0f}" for r in rounds)
        print(
            f"{LABELS[v]:<22}{rate[v]:>10,.0f}{rate[v] / huey:>8.2f}x{cpu[v]:>12.1f}"
            f"{cpu[v] / cpu['huey-normal']:>8.2f}x{rss[v]:>15.1f}   {per_round}"
        )
    print()
    if child_rss:
        print(
            f"process runner: {args.concurrency} handler children, each RSS median"
            f" {med(child_rss):.1f} MB (PSS {med(child_pss) if child_pss else float('nan'):.1f}"
            " MB; RSS counts pages shared with the worker after fork)"
        )
    print(
        f"process runner after its start ({process_start * 1000:.0f} ms, inside the timed"
        f" part above): {after_start:,.0f} msg/s, {after_start / huey:.2f}x huey; its handler"
        f" children and forkserver: {children_cpu:.1f} us CPU/msg of the process row's CPU"
    )
    print(
        f"steadyq publish_batch({args.publish_batch}): {publish_batch:,.0f} msg/s;"
        f" publish() one by one ({args.publish_one}): {publish_one:,.0f} msg/s;"
        f" huey enqueue one by one (sync=NORMAL): {huey_enqueue:,.0f} msg/s"
    )
    print(
        f"verified each run: {args.messages} succeeded, queue empty, no dead letters,"
        " ledger complete (steadyq); all tasks run and queue empty (huey)"
    )
    result = {
        "steadyq_inline_per_s": round(rate["steadyq-inline"], 1),
        "steadyq_process_per_s": round(rate["steadyq-process"], 1),
        "huey_per_s": round(huey, 1),
        "huey_default_sync_per_s": round(rate["huey-default"], 1),
        "ratio_inline": round(rate["steadyq-inline"] / huey, 3),
        "ratio_process": round(rate["steadyq-process"] / huey, 3),
        "cpu_us_per_msg_inline": round(cpu["steadyq-inline"], 1),
        "cpu_us_per_msg_process": round(cpu["steadyq-process"], 1),
        "huey_cpu_us_per_msg": round(cpu["huey-normal"], 1),
        "huey_default_cpu_us_per_msg": round(cpu["huey-default"], 1),
        # steadyq's records written by SQLite with no worker: the ceiling of the schema
        "records_per_s": round(rate["records"], 1),
        "records_cpu_us_per_msg": round(cpu["records"], 1),
        "ratio_records": round(rate["records"] / huey, 3),
        # the process runner once started (from its execution's "ready" to the end)
        "steadyq_process_after_start_per_s": round(after_start, 1),
        "ratio_process_after_start": round(after_start / huey, 3),
        "process_startup_s": round(process_start, 3),
        "process_children_cpu_us_per_msg": round(children_cpu, 1),
        "rounds": args.rounds,
        "burners": args.burners,
        # against huey as shipped (an fsync per commit): the anchor the issue quotes
        "ratio_inline_vs_stock_huey": round(rate["steadyq-inline"] / rate["huey-default"], 3),
        "ratio_process_vs_stock_huey": round(rate["steadyq-process"] / rate["huey-default"], 3),
        "worker_rss_mb": round(max(rss["steadyq-inline"], rss["steadyq-process"]), 1),
        "worker_rss_inline_mb": round(rss["steadyq-inline"], 1),
        "worker_rss_process_mb": round(rss["steadyq-process"], 1),
        "child_rss_mb": round(med(child_rss), 1) if child_rss else None,
        "publish_batch_per_s": round(publish_batch, 1),
        "publish_one_per_s": round(publish_one, 1),
    }
    verdicts = [
        f"inline >= {TARGETS['ratio_inline']}x huey: "
        + ("OK" if result["ratio_inline"] >= TARGETS["ratio_inline"] else "MISSED"),
        f"process >= {TARGETS['ratio_process']}x huey: "
        + ("OK" if result["ratio_process"] >= TARGETS["ratio_process"] else "MISSED"),
        f"worker RSS <= {TARGETS['worker_rss_mb']:g} MB: "
        + ("OK" if result["worker_rss_mb"] <= TARGETS["worker_rss_mb"] else "MISSED"),
    ]
    print("targets: " + "; ".join(verdicts))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
