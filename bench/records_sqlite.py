"""What steadyq's records cost a message on SQLite, phase by phase, and what other
shapes of those records would cost, next to huey.

No worker runs here. Each batch of 64 published requests is leased by
``SqliteQueue.pull`` and claimed; then one transaction deletes the batch, inserts the
events of each message (its arrival and its outcome), reads and writes its ledger rows
and releases its claims, through the store's own statements, with every parameter
built before the clock starts: what any worker that keeps these records pays on this
machine, whatever its own Python costs (``throughput_sqlite.py`` runs the ``stored``
variant as its "records only" row).

Variants, each in a fresh subprocess on a fresh file, interleaved rounds, medians:

* ``stored``: the records as the store writes them today;
* ``floor``: ``stored`` plus the least Python any worker keeping them must run for a
  message, inside the clock: the gate's check of the body (the benchmarks' schema,
  ``ContentRequest``), a no-op handler's call, and the rows' values built straight
  from the checked request as lists (no events, no ledger rule, no loop, no runner):
  what a worker written for this one workload and nothing else could reach;
* ``claim-in-ledger``: no ``request_claims`` table: the claim is the request's ledger
  row itself (two columns, owner and until), taken by inserting that row as
  ``processing``, released by the outcome's update of the same row;
* ``one-event``: the outcome's event row only, no arrival row (what folding the
  arrival into the outcome would save; the watch and the metrics count arrivals);
* ``no-ledger``: no ledger read or write at all (what "a completed request never runs
  again" costs, with its claim kept);
* ``ordered-ids``: ``stored`` with request ids that rise in publish order: what the
  ledger's random request-id index costs against ids with locality (users' ids are
  random UUIDs, so this is a measure, not an option);
* ``huey``: huey's ``SqliteHuey`` at ``synchronous=NORMAL`` consuming the same number
  of tasks (``throughput_sqlite.py``'s anchor): the ratios' denominator.

For ``stored`` it also prints the wall time of each phase (per message) and the WAL
frames a message writes (counted in a run with checkpoints off: the WAL then holds
every frame written).

    python bench/records_sqlite.py                  # 20,000 messages, 5 rounds
    python bench/records_sqlite.py --messages 5000 --rounds 1

Prints a table, then one line of JSON as the last line of stdout; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import throughput_sqlite as ts

VARIANTS = (
    "stored",
    "floor",
    "claim-in-ledger",
    "one-event",
    "no-ledger",
    "ordered-ids",
    "huey",
)
PHASES = ("pull", "claim", "delete", "events", "ledger read", "ledger write", "release", "commit")
BATCH, OWNER, LEASE_S = 64, "records-bench", 600.0


def publish(db: str, messages: int, seed: int, *, ordered: bool) -> None:
    """``messages`` sample requests on a fresh SQLite queue (ordered: rising ids)."""
    from steadyq.brokers import open_queue
    from steadyq.samples import valid_request

    rng = random.Random(seed)
    bodies = []
    for i in range(messages):
        request = valid_request(rng)
        if ordered:
            request["request_id"] = str(uuid.UUID(int=(i + 1) << 64 | 0x4000_8000_0000_0000))
        bodies.append((json.dumps(request).encode(), None))
    queue = open_queue(f"sqlite:///{db}")
    try:
        queue.publish_batch(bodies)
    finally:
        queue.close()


class Phases:
    """Wall time per named phase, if asked for (else a no-op)."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.spent = dict.fromkeys(PHASES, 0.0)
        self._t = time.perf_counter()

    def mark(self, phase: str) -> None:
        if self.on:
            now = time.perf_counter()
            self.spent[phase] += now - self._t
            self._t = now


def run_records(db: str, messages: int, variant: str, *, phases: bool = False) -> dict[str, Any]:
    """The records of ``messages`` published requests in ``variant``'s shape; see the
    module docstring."""
    from steadyq.brokers import open_queue
    from steadyq.telemetry import events as ev
    from steadyq.telemetry.store_sqlite import (
        _INSERT_HEAD,
        _LEDGER_WRITE,
        _RELEASE_CLAIM,
        _REQUEST_COLUMNS,
        _ROW_MARKS,
        claim_in,
    )

    queue = open_queue(f"sqlite:///{db}")
    store_db = queue.db  # type: ignore[attr-defined]
    if phases:  # every frame stays in the WAL, to be counted
        if store_db._checkpointer is not None:
            store_db._checkpointer.stop()
        store_db._checkpointer, store_db.background_checkpoint = None, False
        store_db.conn.execute("PRAGMA wal_autocheckpoint=0")
    in_ledger = variant == "claim-in-ledger"
    if in_ledger:
        for column in ("owner TEXT", "claim_until REAL"):
            store_db.conn.execute(f"ALTER TABLE requests ADD COLUMN {column}")
    with store_db.reading() as conn:
        published = conn.execute("SELECT seq, body FROM messages ORDER BY seq").fetchall()
    # every row's parameters, made before the clock starts
    now = time.time()
    plan: dict[str, tuple[str, list[Any], list[Any], list[Any]]] = {}
    for seq, body in published:
        request = json.loads(body)
        rid, mid = request["request_id"], str(seq)
        fields = json.dumps({"modalities": request.get("modalities", [])})
        arrival = [now, ev.MESSAGE_RECEIVED, "INFO", 20, "", OWNER, mid, rid, 1, None, None]
        arrival.append('{"request": ' + fields + "}")
        outcome = [now, ev.MESSAGE_SUCCEEDED, "INFO", 20, "", OWNER, mid, rid, 1, None, 0.01, None]
        rows = outcome if variant == "one-event" else arrival + outcome
        ledger = [rid, "completed", now, mid, OWNER, 1, fields, 0.00001, None, now, now, now, None]
        plan[mid] = (rid, rows, ledger, [rid, OWNER])
    per_message = 1 if variant == "one-event" else 2
    floor = variant == "floor"
    if floor:
        floor_rows = _floor_builder()
    clock = Phases(phases)
    cpu0 = ts.cpu_s()
    t = time.perf_counter()
    done = 0
    while True:
        deliveries = queue.pull(BATCH, LEASE_S)
        clock.mark("pull")
        if not deliveries:
            break
        if floor:
            rows = floor_rows(deliveries, time.time())
        else:
            rows = [plan[d.message_id] for d in deliveries]
        ids = [r[0] for r in rows]
        with store_db.transaction() as conn:
            if in_ledger:
                _claim_in_ledger(conn, deliveries, ids)
            else:
                claim_in(conn, ids, OWNER, time.time() + LEASE_S, time.time())
        clock.mark("claim")
        with store_db.transaction() as conn:
            seqs = [int(d.message_id) for d in deliveries]
            conn.execute(
                "DELETE FROM messages WHERE lease_token = ? AND seq IN"
                f" ({','.join('?' * len(seqs))}) RETURNING seq",
                [deliveries[0].lease_token, *seqs],
            ).fetchall()
            clock.mark("delete")
            step = 64 // per_message  # 64 event rows a statement, as the store
            for start in range(0, len(rows), step):
                chunk = rows[start : start + step]
                conn.execute(
                    _INSERT_HEAD + ",".join([_ROW_MARKS] * (per_message * len(chunk))),
                    [v for r in chunk for v in r[1]],
                )
            clock.mark("events")
            if variant != "no-ledger":
                conn.execute(
                    f"SELECT {_REQUEST_COLUMNS} FROM requests"
                    f" WHERE request_id IN ({','.join('?' * len(ids))})",
                    ids,
                ).fetchall()
                clock.mark("ledger read")
                if in_ledger:
                    conn.executemany(_LEDGER_DONE, [(*r[2][1:9], r[2][11], r[0]) for r in rows])
                else:
                    conn.executemany(_LEDGER_WRITE, [r[2] for r in rows])
                clock.mark("ledger write")
            if not in_ledger:
                conn.executemany(_RELEASE_CLAIM, [r[3] for r in rows])
            clock.mark("release")
        clock.mark("commit")
        done += len(deliveries)
    elapsed = time.perf_counter() - t
    cpu = ts.cpu_s() - cpu0
    with store_db.reading() as conn:
        (completed,) = conn.execute(
            "SELECT COUNT(*) FROM requests WHERE status = 'completed'"
        ).fetchone()
        (events,) = conn.execute("SELECT COUNT(*) FROM events").fetchone()
    stats = queue.stats()
    wal_bytes = Path(db + "-wal").stat().st_size if phases else 0  # before the close checkpoints
    queue.close()
    ledger_ok = completed == (0 if variant == "no-ledger" else messages)
    ok = done == messages and ledger_ok and events == per_message * messages
    out: dict[str, Any] = {
        "per_s": messages / elapsed,
        "elapsed_s": elapsed,
        "cpu_us_per_msg": cpu / messages * 1e6,
        "rss_mb": ts.mb(ts.proc_status_kb("self", "VmRSS")),
        "ok": ok and stats.ready == 0,
    }
    if phases:
        out["phases_us_per_msg"] = {k: v / messages * 1e6 for k, v in clock.spent.items()}
        # frames of 4,096-byte pages and a 24-byte header after the WAL's 32-byte header
        out["wal_frames_per_msg"] = (wal_bytes - 32) / 4120 / messages
    return out


def _floor_builder() -> Any:
    """The least Python any worker keeping these records runs for each message: the
    gate (UTF-8, JSON, the request's schema, as the benchmarks' workers use it), a
    call of a no-op handler, and the row values built straight from the request, as
    lists (no events, no ledger rule, no loop): ``floor``'s per-batch step."""
    from steadyq.content.schema import ContentRequest
    from steadyq.gate import Gate, Rejection
    from steadyq.telemetry import events as ev

    check = Gate(ContentRequest, max_bytes=10 << 20).check
    received, succeeded = ev.MESSAGE_RECEIVED, ev.MESSAGE_SUCCEEDED
    dumps = json.dumps

    def handler(request: Any) -> None:
        return None

    def rows(deliveries: list[Any], now: float) -> list[Any]:
        out: list[Any] = []
        for d in deliveries:
            request = check(d.body)
            if isinstance(request, Rejection):
                raise AssertionError(f"the sample traffic is valid: {request}")
            t0 = time.perf_counter()
            handler(request)
            ran = time.perf_counter() - t0
            rid, mid = str(request.request_id), d.message_id
            fields = dumps({"modalities": request.ledger_fields().get("modalities", [])})
            event_rows = [
                now, received, "INFO", 20, "", OWNER, mid, rid, d.attempt, None, None,
                '{"request": ' + fields + "}",
                now, succeeded, "INFO", 20, "", OWNER, mid, rid, d.attempt, None, ran * 1000,
                None,
            ]  # fmt: skip
            ledger = [rid, "completed", now, mid, OWNER, d.attempt, fields, ran, None, now, now,
                      now, None]  # fmt: skip
            out.append((rid, event_rows, ledger, [rid, OWNER]))
        return out

    return rows


def _claim_in_ledger(conn: Any, deliveries: list[Any], ids: list[str]) -> None:
    """The claim as the ledger row: inserted as processing, or taken where it lapsed."""
    now = time.time()
    marks = ",".join(["(?,'processing',?,?,?,1,?,?,?,?)"] * len(ids))
    params = [
        v
        for d, rid in zip(deliveries, ids, strict=True)
        for v in (rid, now, d.message_id, OWNER, now, now, OWNER, now + LEASE_S)
    ]
    claimed = conn.execute(
        "INSERT INTO requests (request_id, status, updated_at, message_id, execution_id,"
        f" attempts, created_at, started_at, owner, claim_until) VALUES {marks}"
        " ON CONFLICT (request_id) DO UPDATE SET owner = excluded.owner,"
        " claim_until = excluded.claim_until WHERE requests.status != 'completed'"
        " AND (requests.owner IS NULL OR requests.owner = excluded.owner"
        " OR requests.claim_until <= excluded.updated_at) RETURNING request_id",
        params,
    ).fetchall()
    assert len(claimed) == len(ids), "every request is new here"


_LEDGER_DONE = (
    "UPDATE requests SET status = ?, updated_at = ?, message_id = ?, execution_id = ?,"
    " attempts = ?, fields = ?, duration_s = ?, error = ?, completed_at = ?, owner = NULL,"
    " claim_until = NULL WHERE request_id = ? AND status != 'completed'"
)


def spawn(*args: str) -> dict[str, Any]:
    return ts.spawn_script(Path(__file__).resolve(), *args)


def one_round(tmp: Path, rnd: int, n: int, seed: int) -> dict[str, dict[str, Any]]:
    order = VARIANTS[rnd % len(VARIANTS) :] + VARIANTS[: rnd % len(VARIANTS)]
    out: dict[str, dict[str, Any]] = {}
    for variant in order:
        db = str(tmp / f"r{rnd}-{variant}.db")
        if variant == "huey":
            spawn("publish-huey", db, str(n), str(seed))
        else:
            spawn("publish", db, str(n), str(seed), "1" if variant == "ordered-ids" else "0")
        out[variant] = res = spawn("run", db, str(n), variant)
        if not res["ok"]:
            raise AssertionError(f"round {rnd + 1} {variant}: verification failed: {res}")
        ts.log(f"  round {rnd + 1} {variant:<16} {res['per_s']:>9,.0f} msg/s")
        for suffix in ("", "-wal", "-shm"):
            Path(db + suffix).unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="What steadyq's records cost a message on SQLite, by phase and by"
        " shape, next to huey (no worker runs)."
    )
    parser.add_argument("--messages", type=int, default=20_000, help="messages per run (20000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (5)")
    parser.add_argument("--seed", type=int, default=1, help="seed for the requests (1)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        step, *a = args.child
        if step == "publish":
            publish(a[0], int(a[1]), int(a[2]), ordered=a[3] == "1")
            result: dict[str, Any] = {}
        elif step == "publish-huey":
            result = ts.child_publish_huey(a[0], int(a[1]), int(a[2]), True)
        elif a[2] == "huey":
            result = ts.child_run_huey(a[0], int(a[1]), True)
        else:
            result = run_records(a[0], int(a[1]), a[2], phases=a[3:] == ["phases"])
        print(json.dumps(result))
        return 0
    if args.messages < 1 or args.rounds < 1:
        parser.error("--messages and --rounds must be at least 1")

    load_before = os.getloadavg()[0]
    rounds = []
    with tempfile.TemporaryDirectory(prefix="steadyq-records-") as tmp:
        for rnd in range(args.rounds):
            ts.log(f"round {rnd + 1}/{args.rounds}: {args.messages} messages per variant ...")
            rounds.append(one_round(Path(tmp), rnd, args.messages, args.seed + rnd))
        ts.log("the stored records once more, phase by phase, checkpoints off ...")
        db = str(Path(tmp) / "phases.db")
        spawn("publish", db, str(args.messages), str(args.seed), "0")
        phased = spawn("run", db, str(args.messages), "stored", "phases")
    load_after = os.getloadavg()[0]

    med = statistics.median
    rate = {v: med([r[v]["per_s"] for r in rounds]) for v in VARIANTS}
    cpu = {v: med([r[v]["cpu_us_per_msg"] for r in rounds]) for v in VARIANTS}
    print(
        f"steadyq's records without a worker, {args.messages} messages, SQLite (WAL,"
        f" synchronous=NORMAL); medians of {args.rounds} interleaved round(s);"
        f" load average {load_before:.2f} before, {load_after:.2f} after"
    )
    header = f"{'variant':<18}{'msg/s':>10}{'vs huey':>9}{'CPU us/msg':>12}   rounds (msg/s)"
    print(header)
    print("-" * (len(header) + 10))
    for v in VARIANTS:
        listed = ", ".join(f"{r[v]['per_s']:,.0f}" for r in rounds)
        print(f"{v:<18}{rate[v]:>10,.0f}{rate[v] / rate['huey']:>8.2f}x{cpu[v]:>12.1f}   {listed}")
    print()
    spent = phased["phases_us_per_msg"]
    print(
        "stored, phase by phase (us a message, wall, one run, checkpoints off): "
        + ", ".join(f"{k} {spent[k]:.1f}" for k in PHASES)
        + f"; WAL frames a message: {phased['wal_frames_per_msg']:.2f}"
    )
    summary = {
        **{f"{v.replace('-', '_')}_per_s": round(rate[v], 1) for v in VARIANTS},
        **{
            f"ratio_{v.replace('-', '_')}": round(rate[v] / rate["huey"], 3)
            for v in VARIANTS
            if v != "huey"
        },
        **{f"{v.replace('-', '_')}_cpu_us_per_msg": round(cpu[v], 1) for v in VARIANTS},
        "phases_us_per_msg": {k: round(v, 2) for k, v in spent.items()},
        "wal_frames_per_msg": round(phased["wal_frames_per_msg"], 3),
        "rounds": args.rounds,
        "messages": args.messages,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
