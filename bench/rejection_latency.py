"""How long does a poison message cost? Gate-to-commit latency of rejections.

Publishes N invalid messages (an even mix of the gate's reason codes) into a fresh
SQLite queue in a temp dir, drains them with one worker, and measures for each
message the time from the moment its delivery reaches the gate to the commit of the
transaction that dead-letters and acks it.

Each round runs two variants, interleaved, each in a fresh subprocess on a fresh
database: the inline runner and the process runner (rejections never reach a
handler child, but the process runner's parent loop is a different one). huey has
no gate and no dead-letter queue, so there is no like-for-like anchor; the
throughput benchmark carries the huey comparison. Figures are medians over the
rounds (``--rounds``, 5): p50, p99 and max, and the CPU time (user + sys) per
message of the worker process and its reaped children (``resource.getrusage``
deltas around the drain). ``--burners N`` runs N spinning processes beside, for
the loaded figures.

How the two instants are taken (no library code is changed):

* start: ``worker.gate.check`` is wrapped; ``time.perf_counter()`` is read just
  before the real check runs. Bodies are unique, so the body names the message.
* end: ``queue.settle`` is wrapped; ``time.perf_counter()`` is read right after it
  returns, i.e. after its COMMIT. That instant applies to every settlement in the
  call (one call = one transaction), mapped by message id.

Run on demand (not a test):

    python bench/rejection_latency.py               # 10,000 messages, 5 rounds
    python bench/rejection_latency.py --messages 2000 --seed 3 --rounds 1
    python bench/rejection_latency.py --burners 2   # with two CPU burners beside

Prints a table, then exactly one line of JSON as the last line of stdout.
Progress goes to stderr. Nothing is left on disk.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steadyq.brokers import open_queue, store_for
from steadyq.content.schema import ContentRequest
from steadyq.gate import (
    PAYLOAD_NOT_JSON,
    PAYLOAD_NOT_OBJECT,
    PAYLOAD_NOT_UTF8,
    REQUEST_ID_INVALID,
    REQUEST_ID_MISSING,
    SCHEMA_INVALID,
)
from steadyq.worker import ExitCode, Worker, WorkerOptions

TARGET_P99_MS = 1.0  # issue 17


# -- the poison mix ------------------------------------------------------------
# One maker per reason code. Each body carries the index ``i`` so that every body
# is unique: the gate wrapper only sees bytes, and the body is how it finds the
# message id.


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


POISON: dict[str, Callable[[int, random.Random], bytes]] = {
    PAYLOAD_NOT_UTF8: lambda i, rng: b"\xff\xfe not utf-8 #" + str(i).encode(),
    PAYLOAD_NOT_JSON: lambda i, rng: f"request_id={i};topic=fractions".encode(),
    PAYLOAD_NOT_OBJECT: lambda i, rng: json.dumps(["a", "list", i]).encode(),
    REQUEST_ID_MISSING: lambda i, rng: json.dumps({"topic": "fractions", "n": i}).encode(),
    # the incident's smoke-test ids were of this shape
    REQUEST_ID_INVALID: lambda i, rng: json.dumps(
        {"request_id": f"test-smoke-{i:03d}", "topic": "fractions"}
    ).encode(),
    # a good id, so this one also gets past the id checks into pydantic
    SCHEMA_INVALID: lambda i, rng: json.dumps(
        {"request_id": _uuid(rng), "topic": "", "grade_level": 99, "n": i}
    ).encode(),
}


def poison_mix(n: int, seed: int) -> list[tuple[str, bytes]]:
    """``n`` (expected reason, body) pairs, the reasons evenly mixed and shuffled."""
    rng = random.Random(seed)
    reasons = list(POISON)
    mix = [(reasons[i % len(reasons)], POISON[reasons[i % len(reasons)]](i, rng)) for i in range(n)]
    rng.shuffle(mix)
    return mix


# -- statistics -----------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (p in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def summary(values_ms: list[float]) -> dict[str, float]:
    s = sorted(values_ms)
    return {
        "count": len(s),
        "p50_ms": percentile(s, 50),
        "p90_ms": percentile(s, 90),
        "p99_ms": percentile(s, 99),
        "max_ms": s[-1] if s else math.nan,
        "mean_ms": sum(s) / len(s) if s else math.nan,
    }


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def cpu_s() -> float:
    """CPU seconds (user + sys) of this process and of its children reaped so far."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


# -- the run ----------------------------------------------------------------------


def run(messages: int, seed: int, batch_size: int | None, runner: str = "inline") -> dict[str, Any]:
    mix = poison_mix(messages, seed)
    bodies = [body for _, body in mix]
    if len(set(bodies)) != len(bodies):
        raise AssertionError("bodies must be unique: the gate wrapper maps body -> message")

    with tempfile.TemporaryDirectory(prefix="steadyq-bench-") as tmp:
        queue = open_queue(f"sqlite:///{Path(tmp) / 'queue.db'}")
        try:
            log(f"publishing {messages} invalid messages ...")
            ids: list[str] = []
            for start in range(0, messages, 500):
                ids += queue.publish_batch((b, None) for b in bodies[start : start + 500])
            id_of_body = dict(zip(bodies, ids, strict=True))
            expected_reason = {ids[k]: mix[k][0] for k in range(messages)}

            worker = Worker(
                queue,
                store_for(queue),
                WorkerOptions(
                    handler="steadyq.handlers:noop",
                    schema=ContentRequest,  # the schema_invalid mix is the content shape's
                    runner=runner,
                    drain=True,
                    batch_size=batch_size,
                ),
                sink=None,
            )

            gate_at: dict[str, float] = {}
            commit_at: dict[str, float] = {}
            settle_sizes: Counter[int] = Counter()
            gate_calls: Counter[str] = Counter()

            real_check = worker.gate.check

            def timed_check(body: bytes) -> Any:
                t = time.perf_counter()  # read first: the delivery has reached the gate
                message_id = id_of_body[bytes(body)]
                gate_at[message_id] = t
                gate_calls[message_id] += 1
                return real_check(body)

            real_settle = queue.settle

            def timed_settle(settlements: Any, **kwargs: Any) -> Any:
                result = real_settle(settlements, **kwargs)
                t = time.perf_counter()  # settle returned: its transaction is committed
                settle_sizes[len(settlements)] += 1
                for s in result.applied:
                    commit_at[s.delivery.message_id] = t
                return result

            # instance attributes shadow the methods for this one worker and queue
            worker.gate.check = timed_check  # type: ignore[method-assign]
            queue.settle = timed_settle  # type: ignore[method-assign]

            log(f"draining with one {runner} worker ...")
            cpu0 = cpu_s()
            wall = time.perf_counter()
            result = worker.run()
            wall = time.perf_counter() - wall
            cpu = cpu_s() - cpu0

            # -- verification: everything rejected, everything in the DLQ --------
            if result.exit_code != ExitCode.OK:
                raise AssertionError(f"worker ended with {result.exit_code!r}: {result.detail}")
            stats = queue.stats()
            letters = queue.dlq_list()
            dlq_reasons = Counter(letter.reason for letter in letters)
            wrong = [
                (lt.message_id, lt.reason, expected_reason[lt.message_id])
                for lt in letters
                if lt.reason != expected_reason[lt.message_id]
            ]
            assert result.counts["rejected"] == messages, dict(result.counts)
            assert stats.dead_lettered == messages, stats
            assert (stats.ready, stats.in_flight, stats.delayed) == (0, 0, 0), stats
            assert len(letters) == messages and not wrong, wrong[:5]
            assert set(gate_at) == set(commit_at) == set(ids)
            assert max(gate_calls.values()) == 1, "a message went through the gate twice"
        finally:
            queue.close()

    latency_ms = {m: (commit_at[m] - gate_at[m]) * 1000 for m in ids}
    by_reason: dict[str, list[float]] = defaultdict(list)
    for message_id, ms in latency_ms.items():
        by_reason[expected_reason[message_id]].append(ms)
    return {
        "overall": summary(list(latency_ms.values())),
        "by_reason": {r: summary(v) for r, v in sorted(by_reason.items())},
        "dlq_reasons": dict(sorted(dlq_reasons.items())),
        "dlq_count": len(letters),
        "wall_s": wall,
        "cpu_us_per_msg": cpu / messages * 1e6,
        "settle_sizes": dict(sorted(settle_sizes.items())),
    }


RUNNERS = ("inline", "process")


def spawn(messages: int, seed: int, batch_size: int | None, runner: str) -> dict[str, Any]:
    """One drain in a fresh interpreter; its last stdout line is its JSON result."""
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            runner,
            "--messages",
            str(messages),
            "--seed",
            str(seed),
            *(["--batch-size", str(batch_size)] if batch_size is not None else []),
        ],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the {runner} round failed with exit code {proc.returncode}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Gate-to-commit latency of rejected (poison) messages on the SQLite queue,"
        " inline and process runner, interleaved rounds, medians.",
    )
    parser.add_argument("--messages", type=int, default=10_000, help="invalid messages (10000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the mix (1)")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=WorkerOptions().batch_size,
        help="WorkerOptions.batch_size (default: the library default)",
    )
    parser.add_argument(
        "--burners",
        type=int,
        default=0,
        help="CPU-burning processes to run beside the benchmark (0): the loaded figures",
    )
    parser.add_argument("--child", choices=RUNNERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.messages < 1 or args.rounds < 1:
        parser.error("--messages and --rounds must be at least 1")
    if args.burners < 0:
        parser.error("--burners must be 0 or more")

    if args.child:
        print(json.dumps(run(args.messages, args.seed, args.batch_size, args.child)))
        return 0

    load_before = os.getloadavg()[0]
    burners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL)
        for _ in range(args.burners)
    ]
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        for rnd in range(args.rounds):
            order = RUNNERS if rnd % 2 == 0 else RUNNERS[::-1]
            out: dict[str, dict[str, Any]] = {}
            for runner in order:
                res = spawn(args.messages, args.seed + rnd, args.batch_size, runner)
                o = res["overall"]
                log(
                    f"  round {rnd + 1} {runner:<8} p50 {o['p50_ms']:.3f} ms  p99"
                    f" {o['p99_ms']:.3f} ms  max {o['max_ms']:.3f} ms"
                    f"  {res['cpu_us_per_msg']:.1f} us CPU/msg"
                )
                out[runner] = res
            rounds.append(out)
    finally:
        for proc in burners:
            proc.kill()
        for proc in burners:
            proc.wait()
    load_after = os.getloadavg()[0]

    def median_of(runner: str, key: str) -> float:
        return statistics.median(r[runner]["overall"][key] for r in rounds)

    def cpu_of(runner: str) -> float:
        return statistics.median(r[runner]["cpu_us_per_msg"] for r in rounds)

    def rate_of(runner: str) -> float:
        return statistics.median(args.messages / r[runner]["wall_s"] for r in rounds)

    print(
        f"rejection latency: delivery reaches gate -> dead-letter+ack committed"
        f" ({args.messages} messages, SQLite); medians of {args.rounds} interleaved round(s);"
        f" {os.cpu_count()} cores; {args.burners} CPU burner(s) beside; load average"
        f" {load_before:.2f} before, {load_after:.2f} after"
    )
    header = (
        f"{'runner':<10}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}"
        f"{'rejections/s':>14}{'CPU us/msg':>12}   p99 per round (ms)"
    )
    print(header)
    print("-" * (len(header) + 10))
    for runner in RUNNERS:
        per_round = ", ".join(f"{r[runner]['overall']['p99_ms']:.2f}" for r in rounds)
        print(
            f"{runner:<10}{median_of(runner, 'p50_ms'):>9.3f}{median_of(runner, 'p90_ms'):>9.3f}"
            f"{median_of(runner, 'p99_ms'):>9.3f}{median_of(runner, 'max_ms'):>9.3f}"
            f"{rate_of(runner):>14,.0f}{cpu_of(runner):>12.1f}   {per_round}"
        )
    print()
    last = rounds[-1]["inline"]
    print("inline, last round, by reason (ms):")
    for reason, s in last["by_reason"].items():
        print(
            f"  {reason:<22}{s['count']:>7}  p50 {s['p50_ms']:.3f}  p99 {s['p99_ms']:.3f}"
            f"  max {s['max_ms']:.3f}"
        )
    print(
        f"DLQ verified every run: all {args.messages} dead-lettered with their reason, queue"
        f" empty; settle calls by size (last inline round): {last['settle_sizes']}"
    )
    p99 = median_of("inline", "p99_ms")
    verdict = "OK" if p99 <= TARGET_P99_MS else "MISSED"
    print(f"target p99 <= {TARGET_P99_MS} ms (inline): {verdict}")
    print(
        json.dumps(
            {
                "p50_ms": round(median_of("inline", "p50_ms"), 4),
                "p90_ms": round(median_of("inline", "p90_ms"), 4),
                "p99_ms": round(p99, 4),
                "max_ms": round(median_of("inline", "max_ms"), 4),
                "p50_ms_process": round(median_of("process", "p50_ms"), 4),
                "p99_ms_process": round(median_of("process", "p99_ms"), 4),
                "max_ms_process": round(median_of("process", "max_ms"), 4),
                "count": args.messages,
                "rounds": args.rounds,
                "burners": args.burners,
                "rejections_per_s": round(rate_of("inline"), 1),
                "rejections_per_s_process": round(rate_of("process"), 1),
                "cpu_us_per_msg_inline": round(cpu_of("inline"), 1),
                "cpu_us_per_msg_process": round(cpu_of("process"), 1),
                "target_p99_ms": TARGET_P99_MS,
                "p99_ok": p99 <= TARGET_P99_MS,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
