"""steadyq's worker on Pub/Sub next to the raw client's synchronous pull-and-ack loop.

Against Google's Pub/Sub emulator (started here on a free loopback port when
``PUBSUB_EMULATOR_HOST`` is unset, and stopped at the end). First a warm-up: both loops
run once, untimed, on ``--warmup`` messages, because the emulator (a JVM) runs its first
tens of thousands of messages at half speed. Then each round, in this order:

* ``raw``: google-cloud-pubsub's ``SubscriberClient``: ``pull(max_messages=100)`` then
  ``acknowledge`` of what came back, in one loop, until N messages are acked. No
  validation, no bookkeeping: the ceiling for one consumer.
* ``steadyq``: ``Worker`` with ``runner="inline"``, handler ``steadyq.handlers:noop``,
  ``--drain``, telemetry in a SQLite file: every message is gated (pydantic), its
  attempt counted durably, its events and ledger row written, then acked in batches.
* ``store in memory``: the same worker with its telemetry store in memory (nothing
  durable), to show what the durable bookkeeping costs.
* ``ceiling``: the same worker, options and SQLite store on an in-memory queue (no
  broker at all): what the worker itself costs per message, for reference.

Then ``rejections``: R messages whose ``request_id`` is not a UUID, through the same
worker. Latency per message: from the moment its pull returned (the gate runs right
after) to the return of the ``settle`` that published it to the dead-letter topic
(confirmed) and then acked it.

Last, unless ``--rtt-ms 0``: ``raw`` and ``steadyq`` again on ``--rtt-messages``
messages through a loopback proxy that adds ``--rtt-ms`` of round trip
(``bench/latency_proxy.py``), the way a worker on a VM talks to real Pub/Sub.

Every variant consumes the same N valid content requests, published beforehand to a
fresh topic and subscription of its own (publishing is not timed; the resources are
deleted afterwards), in the same process, one after the other, for ``--rounds``
rounds; medians are reported.

    python bench/throughput_pubsub.py                    # 20,000 messages, 3 rounds
    python bench/throughput_pubsub.py --messages 5000 --rounds 1 --rtt-ms 0

Prints a table, then exactly one line of JSON as the last line of stdout:
``raw_per_s``, ``steadyq_per_s``, ``ratio``, ``rejection_p99_ms`` (and details,
``rtt_*`` for the proxied runs). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROJECT = "steadyq-bench"
TARGET_RATIO = 0.5


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def publish(topic: str, bodies: Sequence[bytes]) -> None:
    from steadyq.brokers.pubsub import PubSubQueue

    queue = PubSubQueue(PROJECT, topic)
    try:
        queue.publish_batch((b, None) for b in bodies)
    finally:
        queue.close()


@contextlib.contextmanager
def fresh(stem: str) -> Iterator[tuple[str, str]]:
    """A new topic and subscription (with their DLQ), deleted afterwards so that the
    emulator's small heap does not fill up over the rounds."""
    from google.cloud import pubsub_v1

    from steadyq.brokers.pubsub import dlq_names, setup

    topic, sub = f"{stem}-{uuid.uuid4().hex[:8]}", f"{stem}-sub-{uuid.uuid4().hex[:8]}"
    setup(PROJECT, topic, sub, min_backoff_s=0, max_backoff_s=0, max_delivery_attempts=100)
    try:
        yield topic, sub
    finally:
        dlq_topic, dlq_sub = dlq_names(topic)
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        for name in (sub, dlq_sub):
            with contextlib.suppress(Exception):
                subscriber.delete_subscription(
                    subscription=subscriber.subscription_path(PROJECT, name)
                )
        for name in (topic, dlq_topic):
            with contextlib.suppress(Exception):
                publisher.delete_topic(topic=publisher.topic_path(PROJECT, name))
        subscriber.close()
        publisher.transport.close()


def valid_bodies(n: int, seed: int) -> list[bytes]:
    from steadyq.samples import valid_request

    rng = random.Random(seed)
    return [json.dumps(valid_request(rng)).encode() for _ in range(n)]


def run_raw(n: int, seed: int) -> float:
    from google.cloud import pubsub_v1

    with fresh("raw") as (topic, sub):
        publish(topic, valid_bodies(n, seed))
        subscriber = pubsub_v1.SubscriberClient()
        path = subscriber.subscription_path(PROJECT, sub)
        acked = 0
        t = time.perf_counter()
        while acked < n:
            response = subscriber.pull(subscription=path, max_messages=100)
            ack_ids = [m.ack_id for m in response.received_messages]
            if ack_ids:
                subscriber.acknowledge(subscription=path, ack_ids=ack_ids)
                acked += len(ack_ids)
        elapsed = time.perf_counter() - t
        subscriber.close()
        return n / elapsed


def _drain_noop(queue: Any, store: Any) -> tuple[Any, float]:
    """One draining execution of the inline no-op worker: its result and wall seconds."""
    from steadyq import RetryPolicy, Worker, WorkerOptions
    from steadyq.content.schema import ContentRequest

    options = WorkerOptions(
        handler="steadyq.handlers:noop",
        schema=ContentRequest,  # the sample traffic, validated as the figures always were
        runner="inline",
        drain=True,
        retry=RetryPolicy(0, 0, 5),
        idle_poll_s=0.05,
    )
    t = time.perf_counter()
    result = Worker(queue, store, options).run()
    return result, time.perf_counter() - t


def run_steadyq(n: int, seed: int, folder: Path, *, durable: bool = True) -> float:
    from steadyq.brokers import open_queue, store_for
    from steadyq.telemetry.store_memory import MemoryStore

    with fresh("steadyq") as (topic, sub):
        publish(topic, valid_bodies(n, seed))
        queue = open_queue(f"pubsub://{PROJECT}/{sub}")
        if durable:
            store = store_for(queue, f"sqlite:///{folder}/steadyq-{sub}.db")
        else:
            # the same worker keeping its events, ledger and attempt counts in memory only:
            # what durability costs, and what the worker's own Python path leaves
            store = MemoryStore()
            queue.use_store(store)
        try:
            result, elapsed = _drain_noop(queue, store)
        finally:
            queue.close()
        if result.counts["succeeded"] != n:
            raise SystemExit(f"steadyq handled {dict(result.counts)}, expected {n} successes")
        return n / elapsed


def run_ceiling(n: int, seed: int, folder: Path) -> float:
    from steadyq.brokers import open_store
    from steadyq.brokers.memory import MemoryQueue

    queue = MemoryQueue()
    queue.publish_batch((b, None) for b in valid_bodies(n, seed))
    store = open_store(f"sqlite:///{folder}/ceiling-{uuid.uuid4().hex[:8]}.db")
    try:
        _, elapsed = _drain_noop(queue, store)
    finally:
        store.close()
    return n / elapsed


class _Timed:
    """Wraps a queue: notes when each delivery's pull returned and when its settle did."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.pulled: dict[str, float] = {}
        self.latency_ms: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)

    def pull(self, max_messages: int, lease_s: float) -> Any:
        got = self.queue.pull(max_messages, lease_s)
        now = time.perf_counter()
        for d in got:
            self.pulled[d.message_id] = now
        return got

    def settle(self, settlements: Any, **kwargs: Any) -> Any:
        result = self.queue.settle(settlements, **kwargs)
        now = time.perf_counter()
        for s in result.applied:
            if s.action == "dead_letter":
                self.latency_ms.append((now - self.pulled[s.delivery.message_id]) * 1000)
        return result


def run_rejections(n: int, folder: Path) -> list[float]:
    from steadyq import Worker, WorkerOptions
    from steadyq.brokers import open_queue, store_for

    with fresh("reject") as (topic, sub):
        publish(
            topic,
            [
                json.dumps({"request_id": f"test-smoke-{i:05d}", "topic": "x"}).encode()
                for i in range(n)
            ],
        )
        queue = open_queue(f"pubsub://{PROJECT}/{sub}")
        store = store_for(queue, f"sqlite:///{folder}/reject-{sub}.db")
        timed = _Timed(queue)
        try:
            options = WorkerOptions(handler="steadyq.handlers:noop", runner="inline", drain=True)
            # the same queue, with a stopwatch around pull and settle
            result = Worker(timed, store, options).run()  # type: ignore[arg-type]
        finally:
            queue.close()
        if result.counts["rejected"] != n:
            raise SystemExit(f"rejections: {dict(result.counts)}, expected {n} rejected")
        return timed.latency_ms


def p(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rejections", type=int, default=2_000)
    parser.add_argument(
        "--warmup", type=int, default=20_000, help="untimed messages per loop first (0: none)"
    )
    parser.add_argument(
        "--rtt-ms",
        type=float,
        default=10.0,
        help="also measure both loops through a proxy adding this round trip (0: skip)",
    )
    parser.add_argument("--rtt-messages", type=int, default=5_000)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))

    emulator = None
    if not os.environ.get("PUBSUB_EMULATOR_HOST"):
        from tests.pubsub_emulator import Emulator

        log("starting the Pub/Sub emulator …")
        emulator = Emulator().start()
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    raw: list[float] = []
    ours: list[float] = []
    in_memory: list[float] = []
    ceiling: list[float] = []
    latencies: list[float] = []
    rtt_raw: list[float] = []
    rtt_ours: list[float] = []
    try:
        with tempfile.TemporaryDirectory(prefix="steadyq-bench-") as tmp:
            folder = Path(tmp)
            if args.warmup:
                # the emulator is a JVM: its first tens of thousands of messages run
                # slower, so both loops first run once, untimed, on a warm-up batch
                log(f"warm-up: {args.warmup:,} messages each, not timed")
                run_raw(args.warmup, 0)
                run_steadyq(args.warmup, 0, folder)
            for round_ in range(1, args.rounds + 1):
                raw.append(run_raw(args.messages, round_))
                log(f"round {round_}: raw {raw[-1]:,.0f}/s")
                ours.append(run_steadyq(args.messages, round_, folder))
                log(f"round {round_}: steadyq {ours[-1]:,.0f}/s")
                in_memory.append(run_steadyq(args.messages, round_, folder, durable=False))
                log(f"round {round_}: steadyq, store in memory {in_memory[-1]:,.0f}/s")
                ceiling.append(run_ceiling(args.messages, round_, folder))
                log(f"round {round_}: ceiling (memory queue) {ceiling[-1]:,.0f}/s")
            latencies = run_rejections(args.rejections, folder)
            if args.rtt_ms > 0:
                from latency_proxy import LatencyProxy

                direct = os.environ["PUBSUB_EMULATOR_HOST"]
                with LatencyProxy(direct, rtt_ms=args.rtt_ms) as proxy:
                    os.environ["PUBSUB_EMULATOR_HOST"] = proxy.host
                    try:
                        for round_ in range(1, args.rounds + 1):
                            rtt_raw.append(run_raw(args.rtt_messages, round_))
                            rtt_ours.append(run_steadyq(args.rtt_messages, round_, folder))
                            log(
                                f"round {round_} at {args.rtt_ms:g} ms RTT: raw"
                                f" {rtt_raw[-1]:,.0f}/s, steadyq {rtt_ours[-1]:,.0f}/s"
                            )
                    finally:
                        os.environ["PUBSUB_EMULATOR_HOST"] = direct
    finally:
        if emulator is not None:
            emulator.stop()
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)

    raw_per_s = statistics.median(raw)
    steadyq_per_s = statistics.median(ours)
    ratio = steadyq_per_s / raw_per_s
    p50, p99 = p(latencies, 0.5), p(latencies, 0.99)

    def listed(values: Sequence[float]) -> str:
        return ", ".join(f"{x:,.0f}" for x in values)

    rows = [
        ("raw pull + ack loop", f"{raw_per_s:,.0f} msg/s", listed(raw)),
        ("steadyq worker (inline, noop)", f"{steadyq_per_s:,.0f} msg/s", listed(ours)),
        ("ratio steadyq / raw", f"{ratio:.2f}", f"target >= {TARGET_RATIO}; per round "
         + ", ".join(f"{a / b:.2f}" for a, b in zip(ours, raw, strict=True))),
        ("same worker, store in memory", f"{statistics.median(in_memory):,.0f} msg/s",
         "nothing durable: what the bookkeeping costs"),
        ("same worker, in-memory queue", f"{statistics.median(ceiling):,.0f} msg/s",
         "no broker: the worker's own ceiling"),
        ("rejection latency p50", f"{p50:.1f} ms", f"{len(latencies)} rejections"),
        ("rejection latency p99", f"{p99:.1f} ms", "pull returned -> DLQ publish confirmed + ack"),
    ]  # fmt: skip
    result: dict[str, Any] = {
        "raw_per_s": round(raw_per_s, 1),
        "steadyq_per_s": round(steadyq_per_s, 1),
        "ratio": round(ratio, 3),
        "rejection_p99_ms": round(p99, 2),
        "rejection_p50_ms": round(p50, 2),
        "messages": args.messages,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "raw_rounds": [round(x, 1) for x in raw],
        "steadyq_rounds": [round(x, 1) for x in ours],
        "memory_store_per_s": round(statistics.median(in_memory), 1),
        "ceiling_per_s": round(statistics.median(ceiling), 1),
    }
    if rtt_raw:
        rtt_ratio = statistics.median(rtt_ours) / statistics.median(rtt_raw)
        rows += [
            (f"raw loop, {args.rtt_ms:g} ms RTT", f"{statistics.median(rtt_raw):,.0f} msg/s",
             f"{args.rtt_messages:,} messages: {listed(rtt_raw)}"),
            (f"steadyq, {args.rtt_ms:g} ms RTT", f"{statistics.median(rtt_ours):,.0f} msg/s",
             listed(rtt_ours)),
            (f"ratio at {args.rtt_ms:g} ms RTT", f"{rtt_ratio:.2f}",
             "a network between worker and Pub/Sub, as on a VM"),
        ]  # fmt: skip
        result.update(
            rtt_ms=args.rtt_ms,
            rtt_raw_per_s=round(statistics.median(rtt_raw), 1),
            rtt_steadyq_per_s=round(statistics.median(rtt_ours), 1),
            rtt_ratio=round(rtt_ratio, 3),
        )
    width = max(len(r[0]) for r in rows)
    print(f"Pub/Sub emulator, {args.messages:,} messages, {args.rounds} round(s), medians")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value:>14}   {note}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
