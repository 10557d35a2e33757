"""What a handler child costs to start, by start method: fork, forkserver, spawn.

Each round, in a fresh subprocess per method (so a forkserver starts cold, as in a new
``steadyq worker``): ``ProcessRunner(concurrency=C).start()`` (all children started
and the handler loaded in each), then one replacement (a child killed by its deadline
and started again: what a hung call costs besides its deadline). Medians of the rounds.

Run on demand (not a test):

    python bench/child_start.py --rounds 5 --concurrency 2

The machine may be shared: quote medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, sys, time
from steadyq.runner import Call, ProcessRunner
method, concurrency = sys.argv[1], int(sys.argv[2])
runner = ProcessRunner("tests.worker_handlers:by_topic", concurrency=concurrency,
                       execution_id="bench", emit=lambda e: None, start_method=method)
t = time.perf_counter()
runner.start()
started = time.perf_counter() - t
from types import SimpleNamespace
R = lambda: SimpleNamespace(topic="hang")
runner.submit(Call(1, R(), 1, "m", None, {}, 0.2))
runner.submit(Call(2, R(), 1, "m", None, {}, 0.2))  # another hang: a second kill to time
outcomes = []
t = None
while not outcomes:
    outcomes += runner.poll(0.05)
t = time.perf_counter()
# the replacement is started inside the poll that reports the kill: time a second one
while len(outcomes) < 2:
    outcomes += runner.poll(0.05)
runner.close()
print(json.dumps({"start_s": started, "statuses": [o.status for o in outcomes]}))
"""

REPLACE = r"""
import json, sys, time
from steadyq.runner import ProcessRunner
method = sys.argv[1]
runner = ProcessRunner("tests.worker_handlers:by_topic", concurrency=1,
                       execution_id="bench", emit=lambda e: None, start_method=method)
runner.start()
t = time.perf_counter()
for index in range(5):
    runner._slots[0].process.kill()
    runner._slots[0].process.join()
    runner._replace(0, runner._slots[0])
per = (time.perf_counter() - t) / 5
runner.close()
print(json.dumps({"replace_s": per}))
"""


def run(code: str, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=2)
    args = parser.parse_args()
    methods = ("fork", "forkserver", "spawn")
    starts: dict[str, list[float]] = {m: [] for m in methods}
    replaces: dict[str, list[float]] = {m: [] for m in methods}
    for round_no in range(args.rounds):
        for method in methods:
            first = run(CHILD, method, str(args.concurrency))
            assert first["statuses"] == ["timeout", "timeout"], first
            starts[method].append(float(first["start_s"]))  # type: ignore[arg-type]
            again = run(REPLACE, method)
            replaces[method].append(float(again["replace_s"]))  # type: ignore[arg-type]
        print(f"round {round_no + 1}/{args.rounds}", file=sys.stderr, flush=True)
    print(f"median of {args.rounds} rounds; start = {args.concurrency} children, cold")
    print(f"{'method':<12}{'start ms':>10}{'per child':>11}{'replace ms':>12}{'vs fork':>9}")
    summary = {}
    fork_start = statistics.median(starts["fork"])
    for method in methods:
        start = statistics.median(starts[method])
        replace = statistics.median(replaces[method])
        summary[method] = {"start_ms": start * 1000, "replace_ms": replace * 1000}
        print(
            f"{method:<12}{start * 1000:>10.0f}{start * 1000 / args.concurrency:>11.0f}"
            f"{replace * 1000:>12.0f}{start / fork_start:>8.1f}x"
        )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
