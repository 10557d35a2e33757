"""The SQLite store's write path, measured through the worker: before/after a change.

Each run, in a fresh subprocess on a fresh SQLite file in a temp dir: publish N valid
content requests (as ``bench/throughput_sqlite.py`` builds them), then time

    Worker(q, store_for(q), WorkerOptions(handler="steadyq.handlers:noop",
           runner="inline", drain=True, schema=ContentRequest)).run()

Every message writes two events (received, succeeded) and two ledger moves
(processing, completed) and releases a claim, so the figure is dominated by the
store's write path: composing the ledger rows, the upsert, the events insert.

Two trees can be measured side by side in ONE run (interleaved, same machine state):
``--anchor PATH`` names a checkout to compare against (e.g. ``/work/main``, the code
before the change); the tree this script lives in is the other side. Each side's
subprocess runs with ``PYTHONPATH`` set to its tree.

    python bench/store_write_sqlite.py --anchor /work/main            # 5,000 msgs, 5 runs
    python bench/store_write_sqlite.py --messages 2000 --runs 3
    python bench/store_write_sqlite.py --anchor /work/main --recorded  # pending rows exist

``--recorded`` publishes through ``publish_recorded``, so every request already has a
``pending`` ledger row that the worker's writes read and move (the path where the
stored row matters); without it the worker's writes create the rows.

Prints a table of medians (msgs/s, wall s, CPU ms per message) and the ratio against
the anchor, then one line of JSON. Progress goes to stderr. Nothing is left on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent


def child(db: str, messages: int, recorded: bool) -> dict[str, Any]:
    from steadyq.brokers import open_queue, store_for
    from steadyq.content.schema import ContentRequest
    from steadyq.publishing import publish_recorded
    from steadyq.samples import valid_request
    from steadyq.worker import ExitCode, Worker, WorkerOptions

    rng = random.Random(7)
    queue = open_queue(f"sqlite:///{db}")
    try:
        for start in range(0, messages, 500):
            n = min(500, messages - start)
            items = [(json.dumps(valid_request(rng)).encode(), None) for _ in range(n)]
            if recorded:  # each request has a pending ledger row the worker moves
                publish_recorded(queue, store_for(queue), [(b, {}) for b, _ in items])
            else:
                queue.publish_batch(items)
        options = WorkerOptions(
            handler="steadyq.handlers:noop",
            runner="inline",
            drain=True,
            schema=ContentRequest,
        )
        worker = Worker(queue, store_for(queue), options, sink=None)
        cpu = time.process_time()
        t = time.perf_counter()
        result = worker.run()
        elapsed = time.perf_counter() - t
        cpu = time.process_time() - cpu
        ok = result.exit_code == ExitCode.OK and result.counts["succeeded"] == messages
    finally:
        queue.close()
    return {"elapsed_s": elapsed, "cpu_s": cpu, "ok": ok}


def spawn(tree: Path, messages: int, recorded: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="steadyq-store-bench-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        out = subprocess.run(
            [sys.executable, __file__, "--child", f"{tmp}/q.db", "--messages", str(messages)]
            + (["--recorded"] if recorded else []),
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=5000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--anchor", type=Path, help="a checkout to compare against")
    p.add_argument(
        "--recorded",
        action="store_true",
        help="publish with publish_recorded: every request starts with a pending ledger row",
    )
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.messages, args.recorded)))
        return 0
    sides = {"this tree": HERE}
    if args.anchor is not None:
        sides = {"anchor": args.anchor.resolve(), **sides}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    for rnd in range(args.runs):
        for name, tree in sides.items():
            r = spawn(tree, args.messages, args.recorded)
            if not r["ok"]:
                print(f"{name}: the run did not complete every message", file=sys.stderr)
                return 1
            runs[name].append(r)
            print(
                f"run {rnd + 1}/{args.runs} {name}: {args.messages / r['elapsed_s']:,.0f} msgs/s",
                file=sys.stderr,
                flush=True,
            )
    summary: dict[str, Any] = {
        "messages": args.messages,
        "runs": args.runs,
        "recorded": args.recorded,
    }
    print(f"{'side':<12} {'tree':<28} {'msgs/s':>9} {'wall s':>8} {'CPU ms/msg':>11}")
    for name, tree in sides.items():
        wall = statistics.median(r["elapsed_s"] for r in runs[name])
        cpu = statistics.median(r["cpu_s"] for r in runs[name])
        key = name.replace(" ", "_")
        summary[f"{key}_per_s"] = round(args.messages / wall, 1)
        summary[f"{key}_cpu_ms_per_msg"] = round(cpu * 1000 / args.messages, 4)
        print(
            f"{name:<12} {str(tree)[-28:]:<28} {args.messages / wall:>9,.0f} {wall:>8.3f}"
            f" {cpu * 1000 / args.messages:>11.4f}"
        )
    if "anchor" in sides:
        ratio = summary["this_tree_per_s"] / summary["anchor_per_s"]
        summary["ratio_vs_anchor"] = round(ratio, 3)
        print(f"this tree / anchor: {ratio:.3f} (medians of {args.runs}; a shared machine)")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
