"""The worker's own loop, inline, on SQLite: one code tree against another, side by side.

Each round, interleaved, every tree (a folder holding a ``steadyq`` package, given as
``NAME=PATH``) drains N valid content requests published beforehand to a fresh SQLite
file, timed around::

    Worker(q, store_for(q), WorkerOptions(handler="steadyq.handlers:noop",
           runner="inline", drain=True, schema=ContentRequest)).run()

in a fresh subprocess with ``PYTHONPATH=PATH``. It prints the median wall time, the
median rate and the median CPU time per message of each tree, and their ratio to the
first tree (the anchor), then one line of JSON.

Run on demand (not a test), e.g. the code before a change against the worktree:

    git archive HEAD~3 steadyq | tar -x -C /tmp/before
    python bench/worker_loop.py before=/tmp/before after=. --messages 5000 --rounds 5
    python bench/worker_loop.py before=/tmp/before after=. --runner process --rounds 5

The machine may be shared: quote medians, and rerun when figures look odd.

``--instructions`` counts instead of timing: each tree runs once under valgrind
(``cachegrind --cache-sim=no``; about 40 s for 3,000 messages), once draining and
once stopping before the drain, and the difference over N is the worker's own
instructions per message, the SQLite library's included. The checkpointer thread is
stopped for these runs (its share depends on wall-clock timing, which valgrind and
other tenants distort; the WAL then grows until the writer's own auto-checkpoint
backstop). Other tenants do not move the count, so it shows gains of a few per cent
that the CPU time of a shared host hides:

    python bench/worker_loop.py before=/tmp/before after=. --instructions --messages 3000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHILD = r"""
import json, random, resource, sys, time
from steadyq.brokers import open_queue, store_for
from steadyq.content.schema import ContentRequest
from steadyq.samples import valid_request
from steadyq.worker import ExitCode, Worker, WorkerOptions

db, n, runner = sys.argv[1], int(sys.argv[2]), sys.argv[3]
queue = open_queue(f"sqlite:///{db}")
rng = random.Random(7)
queue.publish_batch((json.dumps(valid_request(rng)).encode(), None) for _ in range(n))
options = WorkerOptions(
    handler="steadyq.handlers:noop", runner=runner, drain=True, schema=ContentRequest
)
worker = Worker(queue, store_for(queue), options)
if len(sys.argv) > 4:  # --instructions: no checkpointer thread, whose share is timing
    db = queue.db
    if db._checkpointer is not None:
        db._checkpointer.stop()
    db._checkpointer, db.background_checkpoint = None, False
    db.checkpoint_now("TRUNCATE")
    if sys.argv[4] == "skip":
        raise SystemExit(0)  # the baseline: everything but the drain
cpu0 = resource.getrusage(resource.RUSAGE_SELF)
t = time.perf_counter()
result = worker.run()
elapsed = time.perf_counter() - t
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
ok = result.exit_code == ExitCode.OK and result.counts["succeeded"] == n
queue.close()
print(json.dumps({"elapsed_s": elapsed, "cpu_s": cpu, "ok": ok, "startup_s": result.startup_s}))
"""


def run_one(path: str, messages: int, runner: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="steadyq-loop-bench-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(Path(path).resolve())}
        done = subprocess.run(
            [sys.executable, "-c", CHILD, f"{tmp}/q.db", str(messages), runner],
            env=env,
            # a `-c` child searches its current directory before PYTHONPATH: run
            # from inside a checkout, every tree would import that checkout's steadyq
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"{path}: the run failed:\n{done.stderr[-3000:]}")
        result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        if not result["ok"]:
            raise SystemExit(f"{path}: the run did not succeed every message")
        return result


def instructions(path: str, messages: int, runner: str, *, drain: bool) -> int:
    """Instructions valgrind counts for one child run (see the module's docstring)."""
    with tempfile.TemporaryDirectory(prefix="steadyq-loop-bench-") as tmp:
        env = {**os.environ, "PYTHONPATH": str(Path(path).resolve())}
        valgrind = ["valgrind", "--tool=cachegrind", "--cache-sim=no"]
        done = subprocess.run(
            [
                *valgrind,
                "--cachegrind-out-file=/dev/null",
                *(sys.executable, "-c", CHILD, f"{tmp}/q.db", str(messages), runner),
                "count" if drain else "skip",
            ],
            env=env,
            # a `-c` child searches its current directory before PYTHONPATH: run
            # from inside a checkout, every tree would import that checkout's steadyq
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
        for line in done.stderr.splitlines():
            if "I   refs:" in line:
                return int(line.split(":")[1].replace(",", ""))
        raise SystemExit(f"{path}: valgrind counted nothing:\n{done.stderr[-3000:]}")


def count(trees: list[list[str]], messages: int, runner: str) -> None:
    summary: dict[str, dict[str, float]] = {}
    for name, path in trees:
        base = instructions(path, messages, runner, drain=False)
        total = instructions(path, messages, runner, drain=True)
        summary[name] = {"instructions_per_msg": (total - base) / messages}
    anchor = summary[trees[0][0]]["instructions_per_msg"]
    print(f"{messages} messages, {runner} runner, instructions of the drain (valgrind)")
    print(f"{'tree':<12}{'instr/msg':>12}{'vs ' + trees[0][0]:>14}")
    for name, figures in summary.items():
        figures["vs_anchor"] = figures["instructions_per_msg"] / anchor
        print(f"{name:<12}{figures['instructions_per_msg']:>12,.0f}{figures['vs_anchor']:>13.3f}x")
    print(json.dumps({"messages": messages, "runner": runner, "trees": summary}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("trees", nargs="+", help="NAME=PATH, the first is the anchor")
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runner", choices=("inline", "process"), default="inline")
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions under valgrind instead"
    )
    args = parser.parse_args()
    trees = [t.split("=", 1) for t in args.trees]
    if args.instructions:
        count(trees, args.messages, args.runner)
        return
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in trees}
    for round_no in range(args.rounds):
        for name, path in trees:
            result = run_one(path, args.messages, args.runner)
            runs[name].append(result)
            print(
                f"round {round_no + 1}/{args.rounds} {name}: {result['elapsed_s']:.3f} s",
                file=sys.stderr,
                flush=True,
            )
    summary: dict[str, dict[str, float]] = {}
    for name, _ in trees:
        wall = statistics.median(r["elapsed_s"] for r in runs[name])
        cpu = statistics.median(r["cpu_s"] for r in runs[name])
        summary[name] = {
            "startup_ms": statistics.median(r["startup_s"] for r in runs[name]) * 1000,
            "median_s": wall,
            "per_s": args.messages / wall,
            "cpu_us_per_msg": cpu / args.messages * 1e6,
        }
    anchor = summary[trees[0][0]]
    print(
        f"{args.messages} messages, {args.runner} runner, median of {args.rounds} runs"
        " (CPU: the worker process's own, not its handler children's)"
    )
    print(
        f"{'tree':<12}{'median s':>10}{'startup ms':>12}{'msg/s':>10}{'CPU µs/msg':>12}"
        f"{'vs ' + trees[0][0]:>14}"
    )
    for name, figures in summary.items():
        ratio = anchor["median_s"] / figures["median_s"]
        figures["speed_vs_anchor"] = ratio
        print(
            f"{name:<12}{figures['median_s']:>10.3f}{figures['startup_ms']:>12.0f}"
            f"{figures['per_s']:>10.0f}"
            f"{figures['cpu_us_per_msg']:>12.0f}{ratio:>13.2f}x"
        )
    print(json.dumps({"messages": args.messages, "runner": args.runner, "trees": summary}))


if __name__ == "__main__":
    main()
