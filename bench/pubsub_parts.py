"""CPU per message of each piece of the worker's path on Pub/Sub, one piece at a time.

No emulator and no network: the Pub/Sub queue runs on a stand-in for Google's
low-level subscriber client that answers ``pull`` with real serialized
``PullResponse`` protobufs and accepts every ack. Each piece runs on batches of 100
content requests (the worker's batch on Pub/Sub); the figure is ``time.process_time``
per message, the median of ``--rounds`` runs. What ``bench/throughput_pubsub.py``
measures as a whole, this splits up, so that the cost of each piece can be weighed
against the hand-written peer's ~16 µs per message.

    python bench/pubsub_parts.py                 # 5 rounds of 20,000 messages
    python bench/pubsub_parts.py --messages 5000 --rounds 3
    python bench/pubsub_parts.py --against /tmp/before   # + pull/settle A/B, one process

Prints a table, then one line of JSON (piece -> µs per message) as the last line.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BATCH = 100


class _Subscriber:
    """Stands in for ``google.pubsub_v1.SubscriberClient``: pulls answer with the
    prepared responses in turn, acks and lease calls are accepted."""

    def __init__(self, responses: list[bytes]) -> None:
        from google.pubsub_v1.types import PullResponse

        self._type = PullResponse
        self._responses = responses
        self._next = 0

    def pull(self, **_: Any) -> Any:
        raw = self._responses[self._next % len(self._responses)]
        self._next += 1
        return self._type.deserialize(raw)

    def acknowledge(self, **_: Any) -> None:
        pass

    def modify_ack_deadline(self, **_: Any) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--against",
        metavar="TREE",
        help="also time pull + settle with TREE's steadyq/brokers/pubsub.py (e.g. a"
        " `git archive` of an older commit), in rounds interleaved with this tree's, in"
        " one process; the rest of steadyq is this tree's",
    )
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))

    from google.pubsub_v1.types import PullResponse

    from steadyq.worker import WorkerOptions
    from steadyq.worker.policy import OutcomePolicy, ledger_fields

    policy = OutcomePolicy(WorkerOptions(), "parts", clock=lambda: 1.0, rng=random.Random(1))
    from steadyq.brokers import open_store
    from steadyq.brokers.base import Delivery, Settlement
    from steadyq.brokers.pubsub import FORGET_BATCH, PubSubQueue, _Names
    from steadyq.content.schema import ContentRequest
    from steadyq.gate import Gate
    from steadyq.samples import valid_request
    from steadyq.telemetry import events as ev

    batches = max(1, args.messages // BATCH)
    n = batches * BATCH
    rng = random.Random(1)
    bodies = [json.dumps(valid_request(rng)).encode() for _ in range(n)]
    responses = []
    with_attributes: list[bytes] = []
    with_policy: list[bytes] = []  # as Pub/Sub fills them with a dead-letter policy
    for b in range(batches):
        response = PullResponse.pb()()
        for i in range(BATCH):
            m = response.received_messages.add()
            m.ack_id = f"projects/steadyq-bench/subscriptions/parts:{b * BATCH + i}"
            m.message.data = bodies[b * BATCH + i]
            m.message.message_id = str(1_000_000 + b * BATCH + i)
            m.message.publish_time.seconds = 1_700_000_000 + b
            m.message.publish_time.nanos = i
        responses.append(response.SerializeToString())
        for m in response.received_messages:  # first deliveries by Pub/Sub's own count
            m.delivery_attempt = 1
        with_policy.append(response.SerializeToString())
        for m in response.received_messages:
            m.delivery_attempt = 0
        for i in range(BATCH):  # the same batch with three user attributes on each message
            attributes = response.received_messages[i].message.attributes
            attributes.update(source="bench", tenant="t-42", trace_id=f"{b:08x}{i:08x}")
        with_attributes.append(response.SerializeToString())
    gate = Gate(ContentRequest, max_bytes=10 << 20)
    checked = [gate.check(body) for body in bodies]
    request_ids = [str(getattr(c, "request_id", "")) for c in checked]
    folder = Path(tempfile.mkdtemp(prefix="steadyq-parts-"))
    stores: list[Any] = []

    def fresh_store() -> Any:
        store = open_store(f"sqlite:///{folder}/s{len(stores)}.db")
        stores.append(store)
        return store

    def queue_on(store: Any, pulled: list[bytes] = responses, module: Any = None) -> Any:
        names = _Names if module is None else module._Names
        q = (PubSubQueue if module is None else module.PubSubQueue)(
            "steadyq-bench", "parts", store=store
        )
        q._clients = (None, _Subscriber(pulled))
        q._names = names(
            "steadyq-bench",
            "projects/steadyq-bench/topics/parts",
            "projects/steadyq-bench/subscriptions/parts",
            "projects/steadyq-bench/topics/parts-dlq",
            "projects/steadyq-bench/subscriptions/parts-dlq-sub",
            600,
        )
        q._pruned = True
        return q

    deliveries = [
        Delivery(str(i), body, {}, 1, 1.0, f"1 ack{i}", 2.0, 0, None, 0)
        for i, body in enumerate(bodies)
    ]

    def events_of(i: int) -> list[Any]:
        d, c, rid = deliveries[i], checked[i], request_ids[i]
        fields = ledger_fields(c)  # type: ignore[arg-type]
        return [
            policy.arrival(d, 1.0, {"request": fields}, rid),
            ev.Event(
                ev.MESSAGE_SUCCEEDED,
                1.1,
                execution_id="parts",
                message_id=d.message_id,
                request_id=rid,
                attempt=1,
                duration_ms=0.1,
            ),
        ]

    all_events = [events_of(i) for i in range(n)]

    def piece_gate() -> None:
        for body in bodies:
            gate.check(body)

    def piece_events() -> None:
        for i in range(n):
            events_of(i)

    def piece_claim() -> Callable[[], None]:
        store = fresh_store()

        def run() -> None:
            for b in range(batches):
                store.claim(request_ids[b * BATCH : (b + 1) * BATCH], "parts", time.time() + 600)

        return run

    def piece_write() -> Callable[[], None]:
        store = fresh_store()

        def run() -> None:
            for b in range(batches):
                store.write([e for pair in all_events[b * BATCH : (b + 1) * BATCH] for e in pair])

        return run

    count_keys = [
        [f"parts/{1_000_000 + b * BATCH + i}" for i in range(BATCH)] for b in range(batches)
    ]

    def piece_counts(part: str) -> Callable[[], None]:
        """The attempt counts' own SQLite work, as the queue asks for it: raised at
        pull (one transaction per batch), read back at settle (the lost-lease check),
        dropped once settled (one transaction per FORGET_BATCH)."""
        store = fresh_store()
        if part != "count":
            for keys in count_keys:
                store.count_attempts(keys)

        def run() -> None:
            if part == "count":
                for keys in count_keys:
                    store.count_attempts(keys)
            elif part == "lease_check":
                for keys in count_keys:
                    store.attempts_of(keys)
            else:
                flat = [k for keys in count_keys for k in keys]
                for start in range(0, len(flat), FORGET_BATCH):
                    store.settle_attempts({}, flat[start : start + FORGET_BATCH])

        return run

    def piece_objects() -> None:
        # the frozen dataclasses every message passes through (steadyq/brokers/base.py)
        for i, body in enumerate(bodies):
            Settlement.ack(Delivery(str(i), body, {}, 1, 1.0, "1 a", 2.0, 0, None, 0))

    def piece_pull_settle(part: str) -> Callable[[], None]:
        pulled = {"attributes": with_attributes, "policy": with_policy}.get(part, responses)
        q = queue_on(fresh_store(), pulled)

        def run() -> None:
            for _ in range(batches):
                got = q.pull(BATCH, 630)
                if part in ("settle", "policy"):
                    q.settle([Settlement.ack(d) for d in got])

        return run

    pieces: list[tuple[str, str, Callable[[], Callable[[], None]]]] = [
        ("gate", "gate.check: UTF-8, JSON, request id, pydantic ContentRequest",
         lambda: piece_gate),
        ("events", "message.received + message.succeeded events (+ ledger fields)",
         lambda: piece_events),
        ("claim", "store.claim of the batch's request ids (SQLite)", piece_claim),
        ("write", "store.write of both events: rows, ledger, claims released (SQLite)",
         piece_write),
        ("counts_raise", "  attempt counts: raised at pull (SQLite, a transaction a batch)",
         lambda: piece_counts("count")),
        ("counts_check", "  attempt counts: read back at settle (the lost-lease check)",
         lambda: piece_counts("lease_check")),
        ("counts_forget", f"  attempt counts: dropped once settled (per {FORGET_BATCH:,})",
         lambda: piece_counts("forget")),
        ("objects", "Delivery + Settlement.ack (frozen dataclasses, brokers/base.py)",
         lambda: piece_objects),
        ("pull", "PubSubQueue.pull: deserialize, count attempts (SQLite), deliveries",
         lambda: piece_pull_settle("pull")),
        ("pull_attributes", "PubSubQueue.pull, messages with three attributes each",
         lambda: piece_pull_settle("attributes")),
        ("pull_settle", "PubSubQueue.pull + settle (lost-lease check, ack, forget)",
         lambda: piece_pull_settle("settle")),
        ("pull_settle_policy", "  the same, first deliveries told by Pub/Sub (dead-letter policy)",
         lambda: piece_pull_settle("policy")),
    ]  # fmt: skip
    figures: dict[str, float] = {}
    rows = []
    for key, label, make in pieces:
        used = []
        for _ in range(args.rounds):
            run = make()
            started = time.process_time()
            run()
            used.append((time.process_time() - started) / n * 1e6)
        figures[key] = round(statistics.median(used), 2)
        rows.append((label, figures[key]))
    figures["settle"] = round(figures["pull_settle"] - figures["pull"], 2)
    counts = figures["counts_raise"] + figures["counts_check"] + figures["counts_forget"]
    figures["queue_python"] = round(figures["pull_settle"] - counts, 2)
    width = max(len(r[0]) for r in rows)
    print(f"CPU per message, {n:,} messages in batches of {BATCH}, median of {args.rounds}")
    for label, value in rows:
        print(f"  {label:<{width}}  {value:6.2f} µs")
    print(f"  {'of which settle':<{width}}  {figures['settle']:6.2f} µs")
    label = "pull + settle less the attempt counts (the queue's own Python)"
    print(f"  {label:<{width}}  {figures['queue_python']:6.2f} µs")
    if args.against:
        for pulled, suffix, what in (
            (responses, "", "no dead-letter policy"),
            (with_policy, "_policy", "first deliveries told by Pub/Sub"),
        ):
            ab = against(args.against, args.rounds, n, queue_on, fresh_store, batches, pulled, what)
            figures.update({k + suffix: v for k, v in ab.items()})
    for store in stores:
        store.close()
    print(json.dumps(figures))
    return 0


def against(
    tree: str,
    rounds: int,
    n: int,
    queue_on: Any,
    fresh_store: Any,
    batches: int,
    pulled: list[bytes],
    what: str,
) -> dict[str, float]:
    """pull + settle on this tree's PubSubQueue and on TREE's, interleaved (ABBA), of
    the ``pulled`` responses."""
    import importlib.util

    from steadyq.brokers.base import Settlement

    other = sys.modules.get("pubsub_against")
    if other is None:
        path = Path(tree) / "steadyq" / "brokers" / "pubsub.py"
        spec = importlib.util.spec_from_file_location("pubsub_against", path)
        assert spec is not None and spec.loader is not None
        other = importlib.util.module_from_spec(spec)
        sys.modules["pubsub_against"] = other  # dataclasses look their module up
        spec.loader.exec_module(other)

    def one(module: Any) -> float:
        q = queue_on(fresh_store(), pulled, module=module)
        started = time.process_time()
        for _ in range(batches):
            q.settle([Settlement.ack(d) for d in q.pull(BATCH, 630)])
        return (time.process_time() - started) / n * 1e6

    used: dict[str, list[float]] = {"this": [], "against": []}
    for r in range(rounds * 2):
        sides = [("this", None), ("against", other)]
        for side, module in sides if r % 2 == 0 else sides[::-1]:
            used[side].append(one(module))
    this, then = statistics.median(used["this"]), statistics.median(used["against"])
    print(f"pull + settle ({what}), interleaved: {tree} {then:.2f} µs, this tree {this:.2f} µs")
    return {"pull_settle_this": round(this, 2), "pull_settle_against": round(then, 2)}


if __name__ == "__main__":
    raise SystemExit(main())
