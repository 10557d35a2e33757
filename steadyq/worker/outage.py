"""The outage guard: every backend call of the loop goes through it.

A backend that refuses work (``BackendError``) is an *outage*: logged once (ERROR when
it starts, NOTICE when it ends), backed off (0.1 s, doubling with every second of
outage, at most 5 s apart) and given up after ``backend_outage_s``, when the error is
raised to end the execution. What a failure means depends on the call:

* ``pull``: an outage; a pull that works ends an outage of pulls (an outage of
  recording ends only when what waited is recorded: a pull that finds nothing
  writes nothing);
* ``record`` (a commit, a claim, the execution's first writes): an outage of
  recording, ended by the recorder's next commit that works. With ``back_off=False``
  (the ``execution.started`` / ``ready`` writes) the outage is noted but neither
  waited on nor allowed to end the execution: the loop's next call decides;
* ``note`` (a lease or claim extension, a lookup): a WARNING line and a fallback;
  the call is best effort and its failure is no outage by itself;
* ``quietly`` (on the way out): nothing is said; the execution is ending anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal, TypeVar

from steadyq.errors import BackendError
from steadyq.worker.recorder import Recorder

T = TypeVar("T")
Kind = Literal["pull", "record", "note", "quietly"]
MAX_BACKOFF_S = 5.0


class OutageGuard:
    """Runs backend calls; keeps the outage's state."""

    def __init__(self, recorder: Recorder, budget_s: float, sleep: Callable[[float], None]) -> None:
        self.recorder = recorder
        self.budget_s = budget_s
        self._sleep = sleep
        self.since: float | None = None  # monotonic: when the outage began
        self._doubt_until = 0.0  # monotonic: see pull and drained
        self._pulled_at = 0.0  # monotonic: when the last pull began
        recorder.on_recovered = self.recovered

    def call(
        self,
        kind: Kind,
        fn: Callable[..., T],
        *args: Any,
        fallback: Any = None,
        what: str = "",
        back_off: bool = True,
        passthrough: tuple[type[BackendError], ...] = (),
        labels: dict[str, Any] | None = None,
    ) -> Any:
        """``fn(*args)``, or ``fallback`` when the backend refused it.

        Raises:
            BackendError: the outage has lasted longer than the budget, or the error
                is one of ``passthrough`` (the caller handles it).
        """
        try:
            result = fn(*args)
        except BackendError as exc:
            if isinstance(exc, passthrough):
                raise
            if kind == "note":
                self.recorder.log("WARNING", f"could not {what}: {exc}", **(labels or {}))
            elif kind != "quietly":
                if kind == "record":
                    self.recorder.failing = True
                self._down(exc, back_off=back_off)
            return fallback
        if kind == "pull" and self.since is not None and not self.recorder.failing:
            self._over()
        return result

    def pull(self, fn: Callable[..., list[T]], *args: Any, lease_s: float = 0.0) -> list[T]:
        """``fn(*args)``, or nothing when the backend refused it.

        A pull that failed may still have leased messages on the backend (the server
        committed, its answer was lost with the connection): for ``lease_s`` such
        messages are invisible to every pull, and an empty pull proves nothing
        (:meth:`drained`)."""
        failed: list[T] = []
        self._pulled_at = time.monotonic()
        result: list[T] = self.call("pull", fn, *args, fallback=failed)
        if result is failed:
            self._doubt_until = time.monotonic() + lease_s
        return result

    def drained(self, stats: Callable[[], Any]) -> bool:
        """Whether a pull that came back empty proves the queue drained: the backend is
        up, and no failed pull's leases may still run — while they may, the queue's
        count of messages in flight or ready decides (``stats()``; unknown counts as
        none).

        The window is measured at the start of the last pull, not now: a pull that
        began just before the lost leases lapsed saw them still leased, and finding
        it empty a moment after the window closed proves nothing either."""
        if self.down:
            return False
        if self._pulled_at >= self._doubt_until:
            return True
        # ready counts too: a lost lease that lapsed after the empty pull read the
        # queue is no longer in flight, and the message waits for the next pull
        found = self.call("note", stats, fallback=None, what="count messages in flight or ready")
        return found is None or not (found.in_flight or found.ready)

    def record(self, fn: Callable[..., object], *args: Any, back_off: bool = True) -> bool:
        """Whether the write went through."""
        done: bool = self.call(
            "record", lambda: (fn(*args), True)[1], fallback=False, back_off=back_off
        )
        return done

    def quietly(self, fn: Callable[..., object], *args: Any) -> bool:
        done: bool = self.call("quietly", lambda: (fn(*args), True)[1], fallback=False)
        return done

    @property
    def down(self) -> bool:
        return self.since is not None

    def recovered(self) -> None:
        """What waited is recorded: an outage of recording is over."""
        if self.since is not None:
            self._over()

    def _over(self) -> None:
        self.since = None
        self.recorder.log("NOTICE", "backend available again")

    def _down(self, exc: BackendError, *, back_off: bool) -> None:
        now = time.monotonic()
        if self.since is None:
            self.since = now
            # the detail names the backend (the queue, or a store of its own)
            self.recorder.log("ERROR", f"backend unavailable, backing off: {exc}")
        if not back_off:
            return  # noted, not waited on; the loop's next call decides whether it ends
        if now - self.since > self.budget_s:
            raise exc
        self._sleep(min(MAX_BACKOFF_S, 0.1 * 2 ** min(10, int(now - self.since))))
