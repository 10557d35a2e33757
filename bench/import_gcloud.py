"""How fast does a day of a Cloud Run Job's telemetry come into a watch's store?

1. ``steadyq import gcloud`` of a 24-hour export: ``--executions`` executions (1,000 by
   default, as ``gcloud run jobs executions list`` prints them) and ``--entries`` log
   entries (1,000,000, as ``gcloud logging read`` prints them: a JSON array, newest
   first). The entries are a steadyq worker's JSON lines (executions, received and
   succeeded messages, rejections), plain stdout lines below WARNING, and plain stderr
   lines without severity. The import runs as the real command in a child process,
   so its peak RSS is its own. Targets: ≤ 60 s, ≤ 300 MB.
2. One live checkpoint that brings in ``--live-entries`` new entries (100,000) from the
   local Cloud Logging / Cloud Run gRPC servers of the tests, through the real client
   libraries (pages of 1,000). Target: ≤ 10 s.

The export is cached under ``$STEADYQ_BENCH_CACHE`` (default ``$TMPDIR/steadyq-bench``).

    python bench/import_gcloud.py
    python bench/import_gcloud.py --entries 100000 --live-entries 10000   # quicker

Prints a table, then one line of JSON as the last line of stdout:
``{"import_s": ..., "import_rss_mb": ..., "entries_per_s": ..., "live_checkpoint_s": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from steadyq.durations import rfc3339  # noqa: E402
from steadyq.telemetry import events as ev  # noqa: E402
from steadyq.telemetry.events import Event  # noqa: E402
from steadyq.telemetry.logs import cloud_logging_line  # noqa: E402
from steadyq.watch.sources.gcloud import log_entry_for_line  # noqa: E402

VERSION = 1
JOB = "content-worker"
DAY_START = 1_793_793_600.0  # 2026-11-04T12:00:00Z
PATTERN = "Invalid request_id format: '(?P<request_id>[^']*)'"
TARGET_IMPORT_S, TARGET_RSS_MB, TARGET_LIVE_S = 60.0, 300.0, 10.0


def _lines(
    execution: int, per_execution: int, start: float, step: float
) -> list[tuple[float, str, str]]:
    """(time, stream, line) of one execution: a steadyq worker's day, in miniature."""
    run_id = f"{execution:016x}"
    out: list[tuple[float, str, str]] = []
    t = start

    def event(e: Event) -> None:
        out.append((e.timestamp, "stdout", cloud_logging_line(e)))

    event(
        Event(
            ev.EXECUTION_STARTED,
            t,
            message="worker started",
            execution_id=run_id,
            data={"max_runtime_s": 1800.0},
        )
    )
    event(Event(ev.EXECUTION_READY, t + 1, message="ready", execution_id=run_id, duration_ms=900.0))
    m = 0
    while len(out) < per_execution - 1:
        t += step
        kind = m % 20
        rid = f"{execution:08x}-0000-4000-8000-{m:012x}"
        mid = str(execution * 100_000 + m)
        if kind == 0:
            out.append((t, "stderr", f"ERROR worker Invalid request_id format: 'test-{m}'"))
        elif kind == 1:
            out.append((t, "stderr", "Traceback (most recent call last):"))
        elif kind < 6:
            out.append((t, "stdout", f"INFO handling {rid}"))
        else:
            event(
                Event(
                    ev.MESSAGE_RECEIVED,
                    t,
                    execution_id=run_id,
                    message_id=mid,
                    request_id=rid,
                    attempt=1,
                )
            )
            event(
                Event(
                    ev.MESSAGE_SUCCEEDED,
                    t + step / 2,
                    execution_id=run_id,
                    message_id=mid,
                    request_id=rid,
                    attempt=1,
                    duration_ms=120.0,
                )
            )
        m += 1
    t += step
    event(
        Event(
            ev.EXECUTION_FINISHED,
            t,
            message="drained",
            execution_id=run_id,
            data={"status": "succeeded"},
        )
    )
    return out[:per_execution]


def _execution_doc(i: int, start: float, end: float) -> dict[str, Any]:
    name = f"{JOB}-{i:05x}"
    return {
        "apiVersion": "run.googleapis.com/v1",
        "kind": "Execution",
        "metadata": {
            "name": name,
            "creationTimestamp": rfc3339(start - 5),
            "labels": {"run.googleapis.com/job": JOB},
        },
        "spec": {"taskCount": 1, "template": {"spec": {"timeoutSeconds": "1800", "maxRetries": 0}}},
        "status": {
            "startTime": rfc3339(start),
            "completionTime": rfc3339(end),
            "succeededCount": 1,
            "conditions": [{"type": "Completed", "status": "True"}],
        },
    }


def make_export(folder: Path, executions: int, entries: int) -> tuple[Path, Path]:
    """Write the export (cached); entries newest first, as gcloud prints them."""
    ex_path, log_path = folder / "executions.json", folder / "logs.json"
    if ex_path.exists() and log_path.exists():
        return ex_path, log_path
    folder.mkdir(parents=True, exist_ok=True)
    per = entries // executions
    span = 86_400.0 / executions
    docs = []
    tmp = log_path.with_suffix(".part")
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write("[\n")
        for i in reversed(range(executions)):  # newest execution first
            start = DAY_START + i * span
            lines = _lines(i, per, start, (span * 0.8) / per)
            docs.append(_execution_doc(i, start, lines[-1][0] + 1))
            for at, stream, line in reversed(lines):
                entry = log_entry_for_line(
                    line,
                    insert_id=f"{n:020x}",
                    execution=f"{JOB}-{i:05x}",
                    job=JOB,
                    stream=stream,
                    received=rfc3339(at + 0.01),
                )
                if entry["timestamp"] is None:
                    entry["timestamp"] = rfc3339(at)
                fh.write(("" if n == 0 else ",\n") + json.dumps(entry, separators=(",", ":")))
                n += 1
        fh.write("\n]\n")
    tmp.rename(log_path)
    ex_path.write_text(json.dumps(docs, indent=2))
    return ex_path, log_path


def run_import(ex_path: Path, log_path: Path, db: Path) -> dict[str, Any]:
    for p in db.parent.glob(db.name + "*"):
        p.unlink()
    cmd = [
        sys.executable,
        "-m",
        "steadyq.cli",
        "import",
        "gcloud",
        str(ex_path),
        str(log_path),
        "--url",
        f"sqlite:///{db}",
        "--rejection-pattern",
        PATTERN,
        "--json",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    began = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    seconds = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"import failed ({proc.returncode}): {proc.stderr}")
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"seconds": seconds, "rss_mb": rss_kb / 1024, "counts": json.loads(proc.stdout)["total"]}


def run_live(entries: int, folder: Path) -> dict[str, Any]:
    from google.api_core import exceptions as api
    from google.api_core.retry import Retry, if_exception_type
    from google.auth.credentials import AnonymousCredentials
    from google.cloud.logging_v2.types import LogEntry

    from steadyq.brokers import open_store
    from steadyq.telemetry.store_sqlite import SqliteStore
    from steadyq.watch.sources.cloudrun import CloudRunSource
    from steadyq.watch.sources.gcloud import EntryConverter
    from tests.watch.gcp_servers import FakeGoogle, google_servers

    fake = FakeGoogle()
    per = 1000
    lines: list[tuple[float, str, str, int]] = []
    for i in range(max(1, entries // per)):
        lines += [(at, s, line, i) for at, s, line in _lines(i, per, DAY_START + i * 60, 0.05)]
    lines.sort()
    for n, (at, stream, line, i) in enumerate(lines[:entries]):
        doc = log_entry_for_line(
            line,
            insert_id=f"{n:020x}",
            execution=f"{JOB}-{i:05x}",
            job=JOB,
            stream=stream,
            received=rfc3339(at),
        )
        doc["timestamp"] = doc["timestamp"] or rfc3339(at)
        doc.pop("resource")
        doc.pop("receiveTimestamp")
        fake.add_entry(LogEntry.from_json(json.dumps(doc)))
    db = folder / "live.db"
    for p in folder.glob("live.db*"):
        p.unlink()
    store = open_store(f"sqlite:///{db}")
    assert isinstance(store, SqliteStore)
    with google_servers(fake) as endpoint:
        source = CloudRunSource(
            f"cloudrun://proj/europe-west1/{JOB}",
            store,
            converter=EntryConverter.compile([PATTERN]),
            credentials=AnonymousCredentials(),
            endpoint=endpoint,
            insecure=True,
            retry=Retry(predicate=if_exception_type(api.ServiceUnavailable), timeout=30),
        )
        began = time.perf_counter()
        report = source.sync(lines[-1][0] + 1, earliest=DAY_START - 1)
        seconds = time.perf_counter() - began
        source.close()
    store.close()
    return {"seconds": seconds, "entries": report.entries}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--executions", type=int, default=1000)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--live-entries", type=int, default=100_000)
    args = parser.parse_args()
    cache = Path(
        os.environ.get("STEADYQ_BENCH_CACHE", Path(tempfile.gettempdir()) / "steadyq-bench")
    )
    folder = cache / f"gcloud-v{VERSION}-{args.executions}-{args.entries}"
    print(f"export in {folder} …", file=sys.stderr)
    began = time.perf_counter()
    ex_path, log_path = make_export(folder, args.executions, args.entries)
    print(
        f"  ready in {time.perf_counter() - began:.1f} s"
        f" ({log_path.stat().st_size / 1e6:.0f} MB of log entries)",
        file=sys.stderr,
    )
    print("import …", file=sys.stderr)
    imported = run_import(ex_path, log_path, folder / "import.db")
    print("live checkpoint …", file=sys.stderr)
    live = run_live(args.live_entries, folder)
    counts = imported["counts"]
    rate = counts["entries_new"] / imported["seconds"]
    rows = [
        (
            "import of the export",
            f"{imported['seconds']:.1f} s",
            f"≤ {TARGET_IMPORT_S:.0f} s",
            f"{args.executions:,} executions, {counts['entries_new']:,} entries"
            f" ({counts['entries_not_stored']:,} below WARNING not stored)",
        ),
        ("peak RSS of the import", f"{imported['rss_mb']:.0f} MB", f"≤ {TARGET_RSS_MB:.0f} MB", ""),
        ("entries per second", f"{rate:,.0f}", "", ""),
        (
            "live checkpoint",
            f"{live['seconds']:.2f} s",
            f"≤ {TARGET_LIVE_S:.0f} s",
            f"{live['entries']:,} new entries from the local gRPC servers",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>10}  {'target':>8}  notes")
    for name, value, target, notes in rows:
        print(f"{name:<{width}}  {value:>10}  {target:>8}  {notes}")
    print(
        json.dumps(
            {
                "import_s": round(imported["seconds"], 2),
                "import_rss_mb": round(imported["rss_mb"], 1),
                "entries_per_s": round(rate),
                "live_checkpoint_s": round(live["seconds"], 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
