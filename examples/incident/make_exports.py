"""Write the founding incident as the gcloud exports its team would have printed.

    python examples/incident/make_exports.py [FOLDER]

The day before the fix (2026-11-03 12:00 → 2026-11-04 12:00 UTC) the job ran its own
worker: 18 executions, 10 killed at their 1800 s task timeout, 5 other failures, 3
successes, and plain stderr lines that retry the same poison request ids again and
again. The fixed day ran a steadyq worker: its JSON lines are in the logs, each a
steadyq event. Everything is invented but shaped like gcloud's output (v1 executions
newest first, log entries newest first); the output is the same on every run.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

from steadyq.durations import rfc3339
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.logs import cloud_logging_line
from steadyq.watch.sources.gcloud import log_entry_for_line

PROJECT = "acme-content"
REGION = "europe-west1"
JOB = "content-worker"
FIX = 1_793_793_600.0  # 2026-11-04T12:00:00Z, the deployment
STEP = 75 * 60
POISON = ("test-smoke-001", "invalid-uuid-test-1762216900", "test2_text_only")
# the day before: 10 timeouts, 5 other failures, 3 successes, interleaved
BEFORE = "TTFTSTTFTTFSTTFTSF"


def _hex(*parts: object) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()


def _uuid(*parts: object) -> str:
    h = _hex(*parts)
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def _execution(name: str, created: float, started: float, outcome: str, ended: float) -> dict:
    conditions: list[dict[str, Any]] = []
    if outcome == "S":
        conditions.append({"type": "Completed", "status": "True", "lastTransitionTime": ""})
        counts = {"succeededCount": 1}
    else:
        why = (
            "The configured timeout was reached."
            if outcome == "T"
            else "The container exited with an error."
        )
        conditions.append(
            {
                "type": "Completed",
                "status": "False",
                "reason": "NonZeroExitCode",
                "message": f"Task {name}-task0 failed with message: {why}",
            }
        )
        counts = {"failedCount": 1}
    conditions[0]["lastTransitionTime"] = rfc3339(ended)
    conditions.append({"type": "Started", "status": "True", "lastTransitionTime": rfc3339(started)})
    return {
        "apiVersion": "run.googleapis.com/v1",
        "kind": "Execution",
        "metadata": {
            "name": name,
            "namespace": "123456789012",
            "uid": _uuid("uid", name),
            "generation": 1,
            "creationTimestamp": rfc3339(created),
            "labels": {"run.googleapis.com/job": JOB, "cloud.googleapis.com/location": REGION},
            "annotations": {"run.googleapis.com/creator": "scheduler@acme.iam.gserviceaccount.com"},
        },
        "spec": {
            "parallelism": 1,
            "taskCount": 1,
            "template": {
                "spec": {
                    "containers": [{"image": f"{REGION}-docker.pkg.dev/acme/c/worker:1.4"}],
                    "maxRetries": 0,
                    "timeoutSeconds": "1800",
                }
            },
        },
        "status": {
            "observedGeneration": 1,
            "startTime": rfc3339(started),
            "completionTime": rfc3339(ended),
            **counts,
            "conditions": conditions,
        },
    }


class _Log:
    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def line(self, text: str, at: float, execution: str, stream: str = "stderr") -> None:
        entry = log_entry_for_line(
            text,
            insert_id=_hex("entry", len(self.entries))[:24],
            execution=execution,
            job=JOB,
            project=PROJECT,
            region=REGION,
            stream=stream,
            received=rfc3339(at + 0.004),
        )
        if entry["timestamp"] is None:
            entry["timestamp"] = rfc3339(at)
        self.entries.append(entry)

    def system(self, text: str, at: float, execution: str, severity: str) -> None:
        self.line(text, at, execution, stream="varlog%2Fsystem")
        self.entries[-1]["severity"] = severity


def before_day(log: _Log) -> list[dict]:
    executions = []
    for i, outcome in enumerate(BEFORE):
        name = f"{JOB}-{_hex('before', i)[:5]}"
        created = FIX - 86400 + 1800 + i * STEP
        started = created + 7.5
        ended = started + {"T": 1800.0, "F": 420.0 + 37 * i, "S": 190.0 + 11 * i}[outcome]
        executions.append(_execution(name, created, started, outcome, ended))
        at = started + 2
        log.line(
            f"INFO worker pulling from projects/{PROJECT}/subscriptions/requests",
            at,
            name,
            stream="stdout",
        )
        # the poison ids come back in every execution and are retried until it dies
        for attempt in range(4 if outcome == "T" else 2):
            for rid in POISON[: 1 + i % 3]:
                at += 3
                log.line(f"ERROR worker Invalid request_id format: '{rid}'", at, name)
                log.line(
                    f"INFO worker retrying {rid} (attempt {attempt + 1})", at, name, stream="stdout"
                )
        if outcome == "F":
            log.line("Traceback (most recent call last):", ended - 1, name)
            log.line("ValueError: badly formed hexadecimal UUID string", ended - 1, name)
        if outcome == "T":
            log.system(
                "Terminating task because it has reached the maximum timeout of 1800 seconds",
                ended,
                name,
                "WARNING",
            )
        else:
            log.system(
                "Container called exit(0)." if outcome == "S" else "Container called exit(1).",
                ended,
                name,
                "INFO",
            )
    return executions


def fixed_day(log: _Log) -> list[dict]:
    executions = []
    for i in range(18):
        name = f"{JOB}-{_hex('after', i)[:5]}"
        created = FIX + 1800 + i * STEP
        started = created + 6.0
        run_id = _hex("run", i)[:16]
        t = started
        events = [
            Event(
                ev.EXECUTION_STARTED,
                t,
                message="worker started",
                execution_id=run_id,
                data={"max_runtime_s": 1800.0, "mode": "drain"},
            ),
            Event(
                ev.EXECUTION_READY,
                t + 3.2,
                message="ready",
                execution_id=run_id,
                duration_ms=3200.0,
            ),
        ]
        t += 4
        for m in range(3 + i % 4):
            rid, mid = _uuid("request", i, m), str(9_000_000 + i * 100 + m)
            events.append(
                Event(
                    ev.MESSAGE_RECEIVED,
                    t,
                    execution_id=run_id,
                    message_id=mid,
                    request_id=rid,
                    attempt=1,
                )
            )
            t += 20 + (i * 7 + m * 13) % 40
            events.append(
                Event(
                    ev.MESSAGE_SUCCEEDED,
                    t,
                    execution_id=run_id,
                    message_id=mid,
                    request_id=rid,
                    attempt=1,
                    duration_ms=20_000.0,
                )
            )
        if i % 3 == 0:  # the producer still sends a smoke test now and then
            mid = str(9_500_000 + i)
            t += 0.5
            events.append(
                Event(
                    ev.MESSAGE_RECEIVED,
                    t,
                    execution_id=run_id,
                    message_id=mid,
                    request_id=POISON[i % 3],
                    attempt=1,
                )
            )
            events.append(
                Event(
                    ev.MESSAGE_REJECTED,
                    t + 0.002,
                    severity="WARNING",
                    message=f"request_id {POISON[i % 3]!r} is not a UUID",
                    execution_id=run_id,
                    message_id=mid,
                    request_id=POISON[i % 3],
                    attempt=1,
                    reason="request_id_invalid",
                    duration_ms=1.8,
                )
            )
        t += 2
        events.append(
            Event(
                ev.EXECUTION_FINISHED,
                t,
                message="queue drained",
                execution_id=run_id,
                data={"status": "succeeded"},
            )
        )
        for event in events:
            log.line(cloud_logging_line(event), event.timestamp, name, stream="stdout")
        executions.append(_execution(name, created, started, "S", t + 1))
    return executions


SUBSCRIPTION = {
    "name": f"projects/{PROJECT}/subscriptions/requests",
    "topic": f"projects/{PROJECT}/topics/requests",
    "ackDeadlineSeconds": 60,
    "messageRetentionDuration": "604800s",
    "expirationPolicy": {},
    "deadLetterPolicy": {
        "deadLetterTopic": f"projects/{PROJECT}/topics/requests-dlq",
        "maxDeliveryAttempts": 5,
    },
    "retryPolicy": {"minimumBackoff": "10s", "maximumBackoff": "600s"},
    "pushConfig": {},
    "state": "ACTIVE",
}


def main(folder: Path) -> None:
    log = _Log()
    executions = before_day(log) + fixed_day(log)
    executions.sort(key=lambda e: e["status"]["startTime"], reverse=True)
    entries = sorted(log.entries, key=lambda e: e["timestamp"], reverse=True)
    folder.mkdir(parents=True, exist_ok=True)
    for name, doc in (
        ("executions.json", executions),
        ("logs.json", entries),
        ("subscription.json", SUBSCRIPTION),
    ):
        (folder / name).write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    plan = (Path(__file__).parents[1] / "plans" / "uuid-fix-24h.toml").read_text("utf-8")
    head = "# Made by make_exports.py: uuid-fix-24h.toml with the deployment time set.\n"
    plan = plan.replace(
        'name = "uuid-fix-24h"\n', f'name = "uuid-fix-24h"\nstart = {rfc3339(FIX)}\n', 1
    )
    (folder / "plan.toml").write_text(head + plan, encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent)
