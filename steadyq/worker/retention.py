"""Retention the worker applies by itself: old dead letters deleted (7 days by
default) and, when asked, old telemetry pruned, every ``RETENTION_EVERY_S`` (the
first time on the loop's first pass), so no table grows without bound and nobody has
to run ``steadyq store prune`` for it (docs/store.md, "Retention")."""

from __future__ import annotations

import dataclasses
import time

from steadyq.brokers.base import Queue
from steadyq.errors import ConfigError
from steadyq.telemetry.retention import RetentionPolicy, apply_retention
from steadyq.telemetry.store import EventStore
from steadyq.worker.options import RETENTION_EVERY_S, WorkerOptions
from steadyq.worker.outage import OutageGuard
from steadyq.worker.recorder import Recorder


class RetentionKeeper:
    """Applies the options' retention now and then, through the outage guard."""

    def __init__(
        self,
        queue: Queue,
        store: EventStore,
        opts: WorkerOptions,
        guard: OutageGuard,
        recorder: Recorder,
    ) -> None:
        self.queue, self.store, self.guard, self.recorder = queue, store, guard, recorder
        self.policy = RetentionPolicy(
            dlq_s=opts.dlq_retention_s,
            telemetry_s=opts.telemetry_retention_s,
            every_s=RETENTION_EVERY_S,
        )
        self.last: float | None = None  # monotonic: when it last ran

    def tick(self) -> None:
        """Apply the policy if it is due. Best effort: a backend failure is a WARNING
        line and waits for the next turn; a store that cannot prune telemetry is said
        once, and only the dead letters are kept bounded from then on."""
        policy, now = self.policy, time.monotonic()
        if not (policy.dlq_s or policy.telemetry_s) or not policy.due(self.last, now):
            return
        self.last = now
        try:
            done = self.guard.call(
                "note", apply_retention, self.queue, self.store, policy, fallback=None,
                what="apply retention",
            )  # fmt: skip
        except ConfigError as exc:
            self.recorder.log("WARNING", f"telemetry retention is off: {exc}")
            self.policy = dataclasses.replace(policy, telemetry_s=0.0)
            return
        if done is None:
            return
        pruned = done.telemetry.total if done.telemetry is not None else 0
        if done.dead_letters or pruned:
            text = f"retention: deleted {done.dead_letters} dead letters"
            if done.telemetry is not None:
                text += f"; pruned telemetry {done.telemetry.to_dict()}"
            self.recorder.log("NOTICE", text)
