"""steadyq's worker on Pub/Sub next to the raw client's synchronous pull-and-ack loop.

Against Google's Pub/Sub emulator (started here on a free loopback port when
``PUBSUB_EMULATOR_HOST`` is unset, and stopped at the end). First a warm-up: both loops
run once, untimed, on ``--warmup`` messages, because the emulator (a JVM) runs its first
tens of thousands of messages at half speed. Then each round, in this order:

* ``raw``: google-cloud-pubsub's ``SubscriberClient``: ``pull(max_messages=100)`` then
  ``acknowledge`` of what came back, in one loop, until N messages are acked. No
  validation, no bookkeeping: the ceiling for one consumer.
* ``peer``: the fixed worker a user would write by hand on the same client: pull 100,
  decode each body (UTF-8 JSON), check that ``request_id`` is a UUID, ack the whole
  batch (the bad ones too, so nothing loops). No durable bookkeeping, no
  dead-letter queue: what steadyq is measured against (``ratio_peer``).
* ``steadyq``: ``Worker`` with ``runner="inline"``, handler ``steadyq.handlers:noop``,
  ``--drain``, telemetry in a SQLite file: every message is gated (pydantic), its
  attempt counted durably, its events and ledger row written, then acked in batches.
* ``store in memory``: the same worker with its telemetry store in memory (nothing
  durable), to show what the durable bookkeeping costs.
* ``ceiling``: the same worker, options and SQLite store on an in-memory queue (no
  broker at all): what the worker itself costs per message, for reference.

Once, outside every ratio: ``streaming``, google-cloud-pubsub's own
``subscribe(callback)`` acking inline, on ``--streaming-messages``. On the emulator it
measures the emulator: its StreamingPull sends 100 messages a response at about 20
responses a second (~2,000 msg/s whatever the flow control or thread count).

Then ``rejections``: R messages whose ``request_id`` is not a UUID, through the same
worker. Latency per message: from the moment its pull returned (the gate runs right
after) to the return of the ``settle`` that published it to the dead-letter topic
(confirmed) and then acked it. Each round, also ``rejections among valid traffic``:
R / 4 rejections, each after ``--mixed-every`` - 1 valid requests, so that a rejection
meets the commits of other outcomes, as in production. Per round p50 and p99; the
medians of those are reported. Beside them, steadyq's share: each latency less the
time its settle spent in the two RPCs (the dead-letter publish and the ack), i.e. the
gate, the wait for a free lane, the store write and the settle's own Python; the rest
is the emulator answering. After each rejection run, the floor under them:
``pairs``, R bare pairs of those two RPCs (publish one message, then ack one), by
the low-level clients, one pair after the other, nothing else running in the process.

With ``--breakdown``, one more steadyq run after the rounds, in no ratio, with a
stopwatch (thread CPU and wall) around each piece on whichever thread runs it: the
loop's pull, accept, claim and collect, the committer's store write and settle, the
read-ahead's pull RPC. It places ``bench/pubsub_parts.py``'s pieces in the running
worker, where they wait on one another.

Last, unless ``--rtt-ms 0``: ``raw``, ``peer`` and ``steadyq`` again on ``--rtt-messages``
messages through a loopback proxy that adds ``--rtt-ms`` of round trip
(``bench/latency_proxy.py``), the way a worker on a VM talks to real Pub/Sub.

Every variant consumes the same N valid content requests, published beforehand to a
fresh topic and subscription of its own (publishing is not timed; the resources are
deleted afterwards), in the same process, one after the other, for ``--rounds``
rounds; medians are reported. Beside each rate, the CPU this process spent per
message (``time.process_time``: every thread of the worker's process, not the
emulator's), in µs.

    python bench/throughput_pubsub.py                    # 20,000 messages, 3 rounds
    python bench/throughput_pubsub.py --messages 5000 --rounds 1 --rtt-ms 0

Prints a table, then exactly one line of JSON as the last line of stdout:
``raw_per_s``, ``peer_per_s``, ``steadyq_per_s``, ``ratio`` (steadyq / raw),
``ratio_peer`` (steadyq / peer), ``*_cpu_us_per_msg``, ``rejection_p99_ms``,
``rejection_own_p99_ms`` (steadyq's share of it), ``pair_p50_ms`` and ``pair_p99_ms``
(the bare RPC pairs), ``rejections_per_s`` (how fast the
worker drained the stream of poison), and details (``rtt_*`` for the proxied runs,
``rtt_ratio`` = steadyq / raw there). Progress goes to stderr. The machine this runs
on may be shared: quote medians, and CPU/msg, which load changes less than rates.
``bench/pubsub_parts.py`` splits steadyq's CPU per message into its pieces.
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
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROJECT = "steadyq-bench"
TARGET_RATIO = 0.5  # steadyq against the hand-written peer, on loopback
TARGET_RTT_RATIO = 1.2  # steadyq against the raw loop at 10 ms RTT


class Rate:
    """Messages per second and CPU µs per message of one timed run."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.per_s = 0.0
        self.cpu_us = 0.0

    def __enter__(self) -> Rate:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.per_s = self.n / (time.perf_counter() - self._wall)
        self.cpu_us = (time.process_time() - self._cpu) / self.n * 1e6


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


def run_raw(n: int, seed: int) -> Rate:
    from google.cloud import pubsub_v1

    with fresh("raw") as (topic, sub):
        publish(topic, valid_bodies(n, seed))
        subscriber = pubsub_v1.SubscriberClient()
        path = subscriber.subscription_path(PROJECT, sub)
        acked = 0
        with Rate(n) as rate:
            while acked < n:
                response = subscriber.pull(subscription=path, max_messages=100)
                ack_ids = [m.ack_id for m in response.received_messages]
                if ack_ids:
                    subscriber.acknowledge(subscription=path, ack_ids=ack_ids)
                    acked += len(ack_ids)
        subscriber.close()
        return rate


def run_peer(n: int, seed: int) -> Rate:
    """The fixed worker a user would write: decode, check the id, ack every message."""
    from google.cloud import pubsub_v1

    with fresh("peer") as (topic, sub):
        publish(topic, valid_bodies(n, seed))
        subscriber = pubsub_v1.SubscriberClient()
        path = subscriber.subscription_path(PROJECT, sub)
        acked = good = 0
        with Rate(n) as rate:
            while acked < n:
                response = subscriber.pull(subscription=path, max_messages=100)
                ack_ids = []
                for m in response.received_messages:
                    ack_ids.append(m.ack_id)
                    try:
                        request = json.loads(m.message.data.decode("utf-8"))
                        uuid.UUID(str(request["request_id"]))
                    except (ValueError, KeyError, TypeError):
                        continue  # bad: acked with the rest, so it does not loop
                    good += 1
                if ack_ids:
                    subscriber.acknowledge(subscription=path, ack_ids=ack_ids)
                    acked += len(ack_ids)
        subscriber.close()
        if good != n:
            raise SystemExit(f"peer: {good} of {n} requests were valid")
        return rate


def run_streaming(n: int, seed: int) -> Rate:
    """google-cloud-pubsub's streaming subscriber, acking in its callback (not a peer
    on the emulator: its StreamingPull caps the rate)."""
    import threading

    from google.cloud import pubsub_v1

    with fresh("stream") as (topic, sub):
        publish(topic, valid_bodies(n, seed))
        subscriber = pubsub_v1.SubscriberClient()
        done = threading.Event()
        lock = threading.Lock()
        seen = [0]

        def callback(message: Any) -> None:
            message.ack()
            with lock:
                seen[0] += 1
                if seen[0] >= n:
                    done.set()

        with Rate(n) as rate:
            future = subscriber.subscribe(
                subscriber.subscription_path(PROJECT, sub),
                callback,
                flow_control=pubsub_v1.types.FlowControl(max_messages=1000),
            )
            finished = done.wait(timeout=max(60.0, n / 200))
        future.cancel()
        with contextlib.suppress(Exception):
            future.result(timeout=10)
        subscriber.close()
        if not finished:
            raise SystemExit(f"streaming: {seen[0]} of {n} messages in time")
        return rate


def _drain_noop(queue: Any, store: Any, n: int) -> tuple[Any, Rate]:
    """One draining execution of the inline no-op worker: its result and its rate."""
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
    with Rate(n) as rate:
        result = Worker(queue, store, options).run()
    return result, rate


def run_steadyq(n: int, seed: int, folder: Path, *, durable: bool = True) -> Rate:
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
            result, rate = _drain_noop(queue, store, n)
        finally:
            queue.close()
        if result.counts["succeeded"] != n:
            raise SystemExit(f"steadyq handled {dict(result.counts)}, expected {n} successes")
        return rate


def run_ceiling(n: int, seed: int, folder: Path) -> Rate:
    from steadyq.brokers import open_store
    from steadyq.brokers.memory import MemoryQueue

    queue = MemoryQueue()
    queue.publish_batch((b, None) for b in valid_bodies(n, seed))
    store = open_store(f"sqlite:///{folder}/ceiling-{uuid.uuid4().hex[:8]}.db")
    try:
        _, rate = _drain_noop(queue, store, n)
    finally:
        store.close()
    return rate


# the pieces ``--breakdown`` times, in one extra untimed steadyq run: (module, class,
# method, label); each is timed on whichever thread calls it
_PIECES = (
    ("steadyq.worker.loop", "Worker", "_loop", "loop thread, all of it"),
    ("steadyq.brokers.pubsub", "PubSubQueue", "pull", "  PubSubQueue.pull (waits for read-ahead)"),
    ("steadyq.worker.loop", "Worker", "_accept", "  Worker._accept: gate, events, claim, start"),
    ("steadyq.telemetry.store_sqlite", "SqliteStore", "claim", "    store.claim (and its lock)"),
    ("steadyq.worker.loop", "Worker", "_collect", "  Worker._collect: outcomes decided"),
    ("steadyq.worker.recorder", "Recorder", "flush", "  Recorder.flush: the hand-off"),
    ("steadyq.worker.recorder", "Recorder", "_commit", "committer thread (and rejection lane)"),
    ("steadyq.telemetry.store_sqlite", "SqliteStore", "write", "  store.write"),
    ("steadyq.brokers.pubsub", "PubSubQueue", "settle", "  PubSubQueue.settle (the ack RPC)"),
    ("steadyq.brokers.pubsub", "PubSubTransport", "pull_once", "pull RPC, read-ahead thread"),
)  # fmt: skip


def run_breakdown(
    n: int, folder: Path
) -> tuple[Rate, list[tuple[str, float, float]], dict[int, tuple[int, float]]]:
    """One steadyq run with a thread-CPU and wall stopwatch around each piece in
    _PIECES (not in any ratio: the stopwatches cost CPU themselves). Returns the run's
    rate and, per piece, (label, thread CPU, wall) in µs per message; the pull RPC is
    counted only where it runs on the read-ahead thread (on the loop thread it is part
    of PubSubQueue.pull). Also, per generation, the garbage collections that ran while
    the loop did (on any thread) and their wall time in µs per message: a full
    collection holds the GIL for every tracked object in the process."""
    import gc
    import importlib
    import threading

    spent: dict[str, list[float]] = {label: [0.0, 0.0] for *_, label in _PIECES}
    undo: list[tuple[Any, str, Any]] = []
    collections: dict[int, list[float]] = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
    looping = [False]
    began = [0.0]

    def collected(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
        elif looping[0]:
            seen = collections[info["generation"]]
            seen[0] += 1
            seen[1] += time.perf_counter() - began[0]

    def timed(method: Any, label: str, off_loop_only: bool) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if off_loop_only and threading.current_thread() is threading.main_thread():
                return method(*args, **kwargs)
            wall, cpu = time.perf_counter(), time.thread_time()
            if method.__name__ == "_loop":
                looping[0] = True
            try:
                return method(*args, **kwargs)
            finally:
                if method.__name__ == "_loop":
                    looping[0] = False
                total = spent[label]
                total[0] += time.thread_time() - cpu
                total[1] += time.perf_counter() - wall

        return wrapper

    for module, cls_name, name, label in _PIECES:
        cls = getattr(importlib.import_module(module), cls_name)
        method = cls.__dict__[name]
        undo.append((cls, name, method))
        setattr(cls, name, timed(method, label, name == "pull_once"))
    gc.callbacks.append(collected)
    try:
        rate = run_steadyq(n, 0, folder)
    finally:
        gc.callbacks.remove(collected)
        for cls, name, method in undo:
            setattr(cls, name, method)
    pieces = [(label, c / n * 1e6, w / n * 1e6) for label, (c, w) in spent.items()]
    return rate, pieces, {g: (int(c), w / n * 1e6) for g, (c, w) in collections.items()}


def run_pairs(n: int) -> list[float]:
    """The floor under a rejection's latency: ms for each of n bare pairs of the two
    RPCs a dead letter needs (publish one message, then ack one pulled message), on
    the low-level clients steadyq's queue uses, one pair after the other, nothing
    else running in the process."""
    from steadyq.brokers.pubsub import clients

    with fresh("pairs") as (topic, sub):
        publish(topic, [b"x"] * n)
        publisher, subscriber = clients()
        path = subscriber.subscription_path(PROJECT, sub)
        letters = publisher.topic_path(PROJECT, topic)  # any topic: the same RPC
        ack_ids: list[str] = []
        while len(ack_ids) < n:
            response = subscriber.pull(subscription=path, max_messages=100)
            ack_ids += [m.ack_id for m in response.received_messages]
        took: list[float] = []
        for ack_id in ack_ids:
            started = time.perf_counter()
            publisher.publish(topic=letters, messages=[{"data": b"letter"}])
            subscriber.acknowledge(subscription=path, ack_ids=[ack_id])
            took.append((time.perf_counter() - started) * 1000)
        publisher.transport.close()
        subscriber.transport.close()
        return took


REJECTION_RUN_S: list[float] = []  # each rejection run's worker, start to end


class _Timed:
    """Wraps a queue: notes when each delivery's pull returned and when its settle did,
    and how much of that settle the two RPCs took (the dead-letter publish and the
    ack, timed on the settling thread): the rest is steadyq's own share."""

    def __init__(self, queue: Any) -> None:
        self.queue = queue
        self.pulled: dict[str, float] = {}
        self.latency_ms: list[float] = []
        self.own_ms: list[float] = []  # per rejection: its latency less the two RPCs
        self._rpc = threading.local()  # seconds in RPCs of the settle running here
        transport = queue._transport
        for name in ("publish", "ack"):
            setattr(transport, name, self._timing(getattr(transport, name)))

    def _timing(self, call: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                self._rpc.s = getattr(self._rpc, "s", 0.0) + time.perf_counter() - started

        return timed

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)

    def pull(self, max_messages: int, lease_s: float) -> Any:
        got = self.queue.pull(max_messages, lease_s)
        now = time.perf_counter()
        for d in got:
            self.pulled[d.message_id] = now
        return got

    def settle(self, settlements: Any, **kwargs: Any) -> Any:
        self._rpc.s = 0.0
        result = self.queue.settle(settlements, **kwargs)
        now = time.perf_counter()
        rpc_ms = self._rpc.s * 1000
        for s in result.applied:
            if s.action == "dead_letter":
                latency = (now - self.pulled[s.delivery.message_id]) * 1000
                self.latency_ms.append(latency)
                self.own_ms.append(latency - rpc_ms)
        return result


def run_rejections(
    n: int, folder: Path, *, valid_between: int = 0
) -> tuple[list[float], list[float]]:
    """Latencies (ms) of n rejections, and steadyq's share of each (the latency less
    the dead-letter publish and ack RPCs); ``valid_between`` valid requests before
    each. How long the worker took for all of them is left in ``REJECTION_RUN_S``."""
    from steadyq import Worker, WorkerOptions
    from steadyq.brokers import open_queue, store_for

    valid = iter(valid_bodies(n * valid_between, n))
    bodies: list[bytes] = []
    for i in range(n):
        bodies += [next(valid) for _ in range(valid_between)]
        bodies.append(json.dumps({"request_id": f"test-smoke-{i:05d}", "topic": "x"}).encode())
    with fresh("reject") as (topic, sub):
        publish(topic, bodies)
        queue = open_queue(f"pubsub://{PROJECT}/{sub}")
        store = store_for(queue, f"sqlite:///{folder}/reject-{sub}.db")
        timed = _Timed(queue)
        try:
            options = WorkerOptions(handler="steadyq.handlers:noop", runner="inline", drain=True)
            # the same queue, with a stopwatch around pull and settle
            started = time.perf_counter()
            result = Worker(timed, store, options).run()  # type: ignore[arg-type]
            REJECTION_RUN_S.append(time.perf_counter() - started)
        finally:
            queue.close()
        if result.counts["rejected"] != n:
            raise SystemExit(f"rejections: {dict(result.counts)}, expected {n} rejected")
        return timed.latency_ms, timed.own_ms


def p(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def median_rate(rates: Sequence[Rate]) -> tuple[float, float]:
    """Median msg/s and median CPU µs per message."""
    return statistics.median(r.per_s for r in rates), statistics.median(r.cpu_us for r in rates)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rejections", type=int, default=2_000)
    parser.add_argument(
        "--mixed-every",
        type=int,
        default=20,
        help="also time --rejections / 4 rejections each after this many - 1 valid requests,"
        " so that a rejection meets commits of other outcomes (0: skip)",
    )
    parser.add_argument(
        "--warmup", type=int, default=20_000, help="untimed messages per loop first (0: none)"
    )
    parser.add_argument(
        "--rtt-ms",
        type=float,
        default=10.0,
        help="also measure the loops through a proxy adding this round trip (0: skip)",
    )
    parser.add_argument("--rtt-messages", type=int, default=5_000)
    parser.add_argument(
        "--breakdown",
        action="store_true",
        help="also run steadyq once more with a stopwatch around each piece and print"
        " each one's thread CPU and wall per message (in no ratio)",
    )
    parser.add_argument(
        "--streaming-messages",
        type=int,
        default=5_000,
        help="messages for the streaming subscriber's figure, outside every ratio (0: skip)",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "bench"))

    emulator = None
    if not os.environ.get("PUBSUB_EMULATOR_HOST"):
        from tests.pubsub_emulator import Emulator

        log("starting the Pub/Sub emulator …")
        emulator = Emulator().start()
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
    raw: list[Rate] = []
    peer: list[Rate] = []
    ours: list[Rate] = []
    in_memory: list[Rate] = []
    ceiling: list[Rate] = []
    streaming: Rate | None = None
    rejection_p: list[tuple[float, float]] = []  # (p50, p99) per round
    rejection_own: list[tuple[float, float]] = []  # the same, steadyq's share (no RPCs)
    mixed_own: list[tuple[float, float]] = []
    rejection_rates: list[float] = []  # rejections a second, the worker's whole run
    pair_p: list[tuple[float, float]] = []  # the bare publish + ack pairs, per round
    mixed_p: list[tuple[float, float]] = []
    n_mixed = max(1, args.rejections // 4)
    rtt_raw: list[Rate] = []
    rtt_peer: list[Rate] = []
    rtt_ours: list[Rate] = []
    breakdown: tuple[Rate, list[tuple[str, float, float]], dict[int, tuple[int, float]]] | None = (
        None
    )
    try:
        with tempfile.TemporaryDirectory(prefix="steadyq-bench-") as tmp:
            folder = Path(tmp)
            if args.warmup:
                # the emulator is a JVM: its first tens of thousands of messages run
                # slower, so the loops first run once, untimed, on a warm-up batch
                log(f"warm-up: {args.warmup:,} messages each, not timed")
                run_raw(args.warmup, 0)
                run_peer(args.warmup, 0)
                run_steadyq(args.warmup, 0, folder)
            for round_ in range(1, args.rounds + 1):
                raw.append(run_raw(args.messages, round_))
                log(f"round {round_}: raw {raw[-1].per_s:,.0f}/s")
                peer.append(run_peer(args.messages, round_))
                log(f"round {round_}: peer {peer[-1].per_s:,.0f}/s")
                ours.append(run_steadyq(args.messages, round_, folder))
                log(f"round {round_}: steadyq {ours[-1].per_s:,.0f}/s")
                in_memory.append(run_steadyq(args.messages, round_, folder, durable=False))
                log(f"round {round_}: steadyq, store in memory {in_memory[-1].per_s:,.0f}/s")
                ceiling.append(run_ceiling(args.messages, round_, folder))
                log(f"round {round_}: ceiling (memory queue) {ceiling[-1].per_s:,.0f}/s")
            if args.breakdown:
                breakdown = run_breakdown(args.messages, folder)
                log(f"breakdown run: steadyq {breakdown[0].per_s:,.0f}/s (stopwatches on)")
            if args.streaming_messages:
                streaming = run_streaming(args.streaming_messages, 0)
                log(f"streaming subscriber {streaming.per_s:,.0f}/s (outside every ratio)")
            for round_ in range(1, args.rounds + 1):
                lat, own = run_rejections(args.rejections, folder)
                rejection_p.append((p(lat, 0.5), p(lat, 0.99)))
                rejection_own.append((p(own, 0.5), p(own, 0.99)))
                rejection_rates.append(args.rejections / REJECTION_RUN_S[-1])
                pairs = run_pairs(args.rejections)
                pair_p.append((p(pairs, 0.5), p(pairs, 0.99)))
                log(f"round {round_}: rejections p50 / p99 {rejection_p[-1][0]:.1f} /"
                    f" {rejection_p[-1][1]:.1f} ms, {rejection_rates[-1]:,.0f}/s; bare pairs"
                    f" {pair_p[-1][0]:.1f} / {pair_p[-1][1]:.1f} ms")  # fmt: skip
                if args.mixed_every > 1:
                    lat, own = run_rejections(n_mixed, folder, valid_between=args.mixed_every - 1)
                    mixed_p.append((p(lat, 0.5), p(lat, 0.99)))
                    mixed_own.append((p(own, 0.5), p(own, 0.99)))
                    log(f"round {round_}: rejections among valid traffic p50 / p99"
                        f" {mixed_p[-1][0]:.1f} / {mixed_p[-1][1]:.1f} ms")  # fmt: skip
            if args.rtt_ms > 0:
                from latency_proxy import LatencyProxy

                direct = os.environ["PUBSUB_EMULATOR_HOST"]
                with LatencyProxy(direct, rtt_ms=args.rtt_ms) as proxy:
                    os.environ["PUBSUB_EMULATOR_HOST"] = proxy.host
                    try:
                        for round_ in range(1, args.rounds + 1):
                            rtt_raw.append(run_raw(args.rtt_messages, round_))
                            rtt_peer.append(run_peer(args.rtt_messages, round_))
                            rtt_ours.append(run_steadyq(args.rtt_messages, round_, folder))
                            log(
                                f"round {round_} at {args.rtt_ms:g} ms RTT: raw"
                                f" {rtt_raw[-1].per_s:,.0f}/s, peer {rtt_peer[-1].per_s:,.0f}/s,"
                                f" steadyq {rtt_ours[-1].per_s:,.0f}/s"
                            )
                    finally:
                        os.environ["PUBSUB_EMULATOR_HOST"] = direct
    finally:
        if emulator is not None:
            emulator.stop()
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)

    raw_per_s, raw_cpu = median_rate(raw)
    peer_per_s, peer_cpu = median_rate(peer)
    steadyq_per_s, steadyq_cpu = median_rate(ours)
    memory_per_s, memory_cpu = median_rate(in_memory)
    ceiling_per_s, ceiling_cpu = median_rate(ceiling)
    ratio = steadyq_per_s / raw_per_s
    ratio_peer = steadyq_per_s / peer_per_s
    p50 = statistics.median(x[0] for x in rejection_p)
    p99 = statistics.median(x[1] for x in rejection_p)
    own99 = statistics.median(x[1] for x in rejection_own)
    pair50 = statistics.median(x[0] for x in pair_p)
    pair99 = statistics.median(x[1] for x in pair_p)

    def listed(values: Sequence[Rate]) -> str:
        return ", ".join(f"{x.per_s:,.0f}" for x in values)

    def per_round(a: Sequence[Rate], b: Sequence[Rate]) -> str:
        return ", ".join(f"{x.per_s / y.per_s:.2f}" for x, y in zip(a, b, strict=True))

    def cpu(us: float) -> str:
        return f"{us:,.0f} µs"

    rows = [
        ("raw pull + ack loop (ceiling)", f"{raw_per_s:,.0f} msg/s", cpu(raw_cpu), listed(raw)),
        ("peer: hand-written fixed worker", f"{peer_per_s:,.0f} msg/s", cpu(peer_cpu),
         listed(peer)),
        ("steadyq worker (inline, noop)", f"{steadyq_per_s:,.0f} msg/s", cpu(steadyq_cpu),
         listed(ours)),
        ("ratio steadyq / peer", f"{ratio_peer:.2f}", "",
         f"target >= {TARGET_RATIO}; per round {per_round(ours, peer)}"),
        ("ratio steadyq / raw", f"{ratio:.2f}", "", f"per round {per_round(ours, raw)}"),
        ("same worker, store in memory", f"{memory_per_s:,.0f} msg/s", cpu(memory_cpu),
         "nothing durable: what the bookkeeping costs"),
        ("same worker, in-memory queue", f"{ceiling_per_s:,.0f} msg/s", cpu(ceiling_cpu),
         "no broker: the worker's own ceiling"),
    ]  # fmt: skip
    if streaming is not None:
        rows.append(
            ("streaming subscribe(callback)", f"{streaming.per_s:,.0f} msg/s",
             cpu(streaming.cpu_us),
             f"{streaming.n:,} messages; the emulator's StreamingPull cap: in no ratio")
        )  # fmt: skip
    rows += [
        ("rejection latency p50", f"{p50:.1f} ms", "",
         f"{args.rejections:,} rejections back to back; per round "
         + ", ".join(f"{x[0]:.1f}" for x in rejection_p)),
        ("rejection latency p99", f"{p99:.1f} ms", "",
         "pull returned -> DLQ publish confirmed + ack; per round "
         + ", ".join(f"{x[1]:.1f}" for x in rejection_p)),
        ("  steadyq's share, p99", f"{own99:.1f} ms", "",
         "the same, less the DLQ publish and ack RPCs (the emulator's time); per round "
         + ", ".join(f"{x[1]:.1f}" for x in rejection_own)),
        ("rejections drained", f"{statistics.median(rejection_rates):,.0f}/s", "",
         "the same runs, the worker's start to its end; per round "
         + ", ".join(f"{x:,.0f}" for x in rejection_rates)),
        ("  bare publish + ack pairs, p50 / p99", f"{pair50:.1f} / {pair99:.1f} ms", "",
         f"{args.rejections:,} of the raw client's two RPCs a letter needs, one pair after"
         " the other: the emulator's floor under a rejection; per round p99 "
         + ", ".join(f"{x[1]:.1f}" for x in pair_p)),
    ]  # fmt: skip
    if mixed_p:
        mixed50 = statistics.median(x[0] for x in mixed_p)
        mixed99 = statistics.median(x[1] for x in mixed_p)
        mixed_own50 = statistics.median(x[0] for x in mixed_own)
        mixed_own99 = statistics.median(x[1] for x in mixed_own)
        rows += [
            ("rejection among valid, p50", f"{mixed50:.1f} ms", "",
             f"{n_mixed:,} rejections, one in {args.mixed_every}; per round "
             + ", ".join(f"{x[0]:.1f}" for x in mixed_p)),
            ("rejection among valid, p99", f"{mixed99:.1f} ms", "",
             "per round " + ", ".join(f"{x[1]:.1f}" for x in mixed_p)),
            ("  steadyq's share, p50 / p99",
             f"{mixed_own50:.1f} / {mixed_own99:.1f} ms", "",
             "less the DLQ publish and ack RPCs; per round p99 "
             + ", ".join(f"{x[1]:.1f}" for x in mixed_own)),
        ]  # fmt: skip
    result: dict[str, Any] = {
        "raw_per_s": round(raw_per_s, 1),
        "peer_per_s": round(peer_per_s, 1),
        "steadyq_per_s": round(steadyq_per_s, 1),
        "ratio": round(ratio, 3),
        "ratio_peer": round(ratio_peer, 3),
        "raw_cpu_us_per_msg": round(raw_cpu, 1),
        "peer_cpu_us_per_msg": round(peer_cpu, 1),
        "steadyq_cpu_us_per_msg": round(steadyq_cpu, 1),
        "rejection_p99_ms": round(p99, 2),
        "rejection_p50_ms": round(p50, 2),
        "rejection_own_p99_ms": round(own99, 2),
        "rejections_per_s": round(statistics.median(rejection_rates), 1),
        "pair_p50_ms": round(pair50, 2),
        "pair_p99_ms": round(pair99, 2),
        "messages": args.messages,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "raw_rounds": [round(x.per_s, 1) for x in raw],
        "peer_rounds": [round(x.per_s, 1) for x in peer],
        "steadyq_rounds": [round(x.per_s, 1) for x in ours],
        "memory_store_per_s": round(memory_per_s, 1),
        "memory_store_cpu_us_per_msg": round(memory_cpu, 1),
        "ceiling_per_s": round(ceiling_per_s, 1),
        "ceiling_cpu_us_per_msg": round(ceiling_cpu, 1),
    }
    if streaming is not None:
        result["streaming_per_s"] = round(streaming.per_s, 1)
    if mixed_p:
        result["mixed_rejection_p50_ms"] = round(mixed50, 2)
        result["mixed_rejection_p99_ms"] = round(mixed99, 2)
        result["mixed_rejection_own_p99_ms"] = round(mixed_own99, 2)
    if rtt_raw:
        rtt_raw_per_s, rtt_raw_cpu = median_rate(rtt_raw)
        rtt_peer_per_s, _ = median_rate(rtt_peer)
        rtt_ours_per_s, rtt_ours_cpu = median_rate(rtt_ours)
        rtt_ratio = rtt_ours_per_s / rtt_raw_per_s
        ms = f"{args.rtt_ms:g} ms RTT"
        rows += [
            (f"raw loop, {ms}", f"{rtt_raw_per_s:,.0f} msg/s", cpu(rtt_raw_cpu),
             f"{args.rtt_messages:,} messages: {listed(rtt_raw)}"),
            (f"peer, {ms}", f"{rtt_peer_per_s:,.0f} msg/s", "", listed(rtt_peer)),
            (f"steadyq, {ms}", f"{rtt_ours_per_s:,.0f} msg/s", cpu(rtt_ours_cpu),
             listed(rtt_ours)),
            (f"ratio steadyq / raw at {ms}", f"{rtt_ratio:.2f}", "",
             f"target >= {TARGET_RTT_RATIO}; a network between worker and Pub/Sub, as on a VM"),
            (f"ratio steadyq / peer at {ms}", f"{rtt_ours_per_s / rtt_peer_per_s:.2f}", "", ""),
        ]  # fmt: skip
        result.update(
            rtt_ms=args.rtt_ms,
            rtt_raw_per_s=round(rtt_raw_per_s, 1),
            rtt_peer_per_s=round(rtt_peer_per_s, 1),
            rtt_steadyq_per_s=round(rtt_ours_per_s, 1),
            rtt_ratio=round(rtt_ratio, 3),
            rtt_ratio_peer=round(rtt_ours_per_s / rtt_peer_per_s, 3),
        )
    width = max(len(r[0]) for r in rows)
    print(
        f"Pub/Sub emulator, {args.messages:,} messages, {args.rounds} round(s), medians;"
        " CPU = this process's CPU per message"
    )
    for name, value, used, note in rows:
        print(f"  {name:<{width}}  {value:>14}  {used:>8}   {note}")
    if breakdown is not None:
        rate, pieces, collections = breakdown
        print(
            f"Breakdown, one more steadyq run with stopwatches ({rate.per_s:,.0f} msg/s,"
            f" {rate.cpu_us:.1f} µs CPU a message in the process): µs per message"
        )
        print(f"  {'piece':<48} {'thread CPU':>10} {'wall':>8}")
        for label, cpu_us, wall_us in pieces:
            print(f"  {label:<48} {cpu_us:>10.1f} {wall_us:>8.1f}")
        threads = sum(c for label, c, _ in pieces if not label.startswith(" "))
        rest = "the rest (gRPC and SQLite threads, start, end)"
        print(f"  {rest:<48} {rate.cpu_us - threads:>10.1f}")
        result["breakdown_cpu_us"] = {label.strip(): round(c, 1) for label, c, _ in pieces}
        for generation, (count, wall_us) in collections.items():
            what = f"garbage collections, generation {generation}: {count}"
            print(f"  {what:<48} {'':>10} {wall_us:>8.1f}")
        result["breakdown_gc"] = {
            f"gen{g}": {"collections": c, "wall_us_per_msg": round(w, 1)}
            for g, (c, w) in collections.items()
        }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
