"""``steadyq demo``: the shortest path from a fresh folder to the whole story.

It publishes a mix of valid content requests and the incident's poison messages
into a fresh embedded queue, runs one draining execution with the gate, and
prints what happened to every message.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from steadyq.brokers import open_queue, store_for
from steadyq.dlq import preview
from steadyq.policy import RetryPolicy
from steadyq.publishing import publish_recorded
from steadyq.samples import sample_mix
from steadyq.telemetry import events as ev
from steadyq.telemetry.store import EventFilter
from steadyq.worker import Worker, WorkerOptions


def run_demo(directory: Path, *, valid: int = 24, console: Console | None = None) -> int:
    console = console or Console()
    directory.mkdir(parents=True, exist_ok=True)
    db = directory / "steadyq.db"
    for suffix in ("", "-wal", "-shm"):
        (directory / f"steadyq.db{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{db}"
    bodies = sample_mix(valid)
    with open_queue(url) as queue:
        store = store_for(queue)
        publish_recorded(queue, store, ((body, {"source": "demo"}) for body in bodies))
        console.print(
            f"published {len(bodies)} messages ({valid} valid, {len(bodies) - valid} poison)"
            f" to {url}"
        )
        options = WorkerOptions(
            drain=True,
            deadline_s=30,
            retry=RetryPolicy(0.1, 1.0, 3),
            concurrency=2,
            artifacts_dir=str(directory / "artifacts"),
        )
        result = Worker(queue, store, options).run()
        rejected = store.events(EventFilter(kinds=(ev.MESSAGE_REJECTED,)))
        latencies = sorted(e.duration_ms or 0.0 for e in rejected)
        letters = queue.dlq_list()
        stats = queue.stats()

    console.print(
        Text(f"execution {result.execution_id} {result.status}", style="bold green")
        + Text(f" in {result.duration_s:.2f}s (startup {result.startup_s or 0:.2f}s)")
    )
    table = Table("outcome", "messages")
    for key in ("received", "succeeded", "rejected", "duplicate", "retried", "dead_lettered"):
        table.add_row(key, str(result.counts.get(key, 0)))
    console.print(table)
    dead = Table("dead letter", "reason", "payload")
    for letter in letters:
        dead.add_row(letter.message_id, letter.reason, Text(preview(letter.payload, 70)))
    console.print(dead)
    if latencies:
        console.print(
            f"poison messages rejected in {latencies[len(latencies) // 2]:.3f} ms (median),"
            f" {latencies[-1]:.3f} ms (slowest); none was retried"
        )
    console.print(f"queue now: {stats.ready} ready, {stats.dead_lettered} dead-lettered")
    console.print(f"look closer: steadyq dlq ls --url {url}    steadyq executions --url {url}")
    return int(result.exit_code)
