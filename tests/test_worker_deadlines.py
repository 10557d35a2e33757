"""Hard deadlines hold whatever the worker's loop is doing.

The loop is blocked on purpose (a store whose write takes 6 s, as SQLite's busy
timeout or an outage's back-off would hold it) while a handler hangs: the child is
killed at its deadline, counted from the moment the child started the call, not from
when the loop noticed the call before it had finished.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from steadyq import RetryPolicy, Worker, WorkerOptions
from steadyq.brokers import open_queue, store_for
from steadyq.telemetry import events as ev
from steadyq.telemetry.store import EventFilter, EventStore
from tests.worker_handlers import STARTS_FILE_ENV

pytestmark = pytest.mark.slow
DEADLINE_S = 1.0
BLOCK_S = 6.0
SLACK_S = 2.5  # the watchdog ticks every 50 ms; the rest is room for a loaded machine


class BlockingStore:
    """A store whose first commit after the execution is ready takes ``BLOCK_S``: the
    loop waits for it (an idle pass sees the commit finished) and does nothing else."""

    def __init__(self, inner: EventStore) -> None:
        self._inner = inner
        self.writes = 0
        self.unblocked_at = 0.0

    def write(self, events: Any) -> None:
        self.writes += 1
        if self.writes == 3:  # 1 and 2: execution.started and execution.ready
            time.sleep(BLOCK_S)
            self.unblocked_at = time.time()
        self._inner.write(events)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _watch_death(starts: Path, seen: dict[str, float]) -> None:
    """Note when the hanging child (its pid written to ``starts``) stops existing."""
    give_up = time.monotonic() + 60
    while time.monotonic() < give_up and not starts.exists():
        time.sleep(0.01)
    while time.monotonic() < give_up and not starts.read_text().strip():
        time.sleep(0.01)
    pid, started = starts.read_text().split()
    seen["started"] = float(started)
    stat = Path(f"/proc/{pid}/stat")
    while time.monotonic() < give_up:
        try:
            state = stat.read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            break
        if state in ("Z", "X"):
            break
        time.sleep(0.01)
    seen["dead"] = time.time()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_hung_call_is_killed_at_its_deadline_while_the_loop_is_blocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts = tmp_path / "starts.txt"
    monkeypatch.setenv(STARTS_FILE_ENV, str(starts))
    queue = open_queue(f"sqlite:///{tmp_path}/d.db")
    # the first call runs 0.8 s, the second hangs: it starts when the first ends, in
    # the same child, while the loop is still waiting on the store
    for topic in ("first", "hang"):
        queue.publish(json.dumps({"request_id": str(uuid.uuid4()), "topic": topic}).encode())
    # a store of its own (as with Pub/Sub): its commits run on the committer thread
    store_queue = open_queue(f"sqlite:///{tmp_path}/store.db")
    store = BlockingStore(store_for(store_queue))
    seen: dict[str, float] = {}
    watcher = threading.Thread(target=_watch_death, args=(starts, seen), daemon=True)
    watcher.start()
    options = WorkerOptions(
        handler="tests.worker_handlers:sleep_then_hang",
        runner="process",
        concurrency=1,
        deadline_s=DEADLINE_S,
        drain=True,
        retry=RetryPolicy(0.0, 0.0, 1),
        idle_poll_s=0.01,
    )
    result = Worker(queue, store, options).run()  # type: ignore[arg-type]
    watcher.join(60)
    assert result.counts["timed_out"] == 1 and result.counts["succeeded"] == 1, result
    assert store.unblocked_at > 0, "the loop really was held by the store"
    assert seen["dead"] < store.unblocked_at, "killed while the loop was blocked"
    killed_after = seen["dead"] - seen["started"]
    assert DEADLINE_S <= killed_after + 0.05 < DEADLINE_S + SLACK_S, killed_after
    found = store.events(EventFilter(kinds=(ev.MESSAGE_TIMED_OUT,)))
    [timed_out] = found
    # the run time is the child's own, from its start: not from when the loop looked
    assert timed_out.duration_ms is not None
    assert DEADLINE_S * 1000 <= timed_out.duration_ms < (DEADLINE_S + SLACK_S) * 1000
    queue.close()
    store_queue.close()


def test_children_started_by_the_forkserver_see_the_workers_environment_now(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from steadyq.runner import Call, ProcessRunner

    def run_one() -> list[object]:
        runner = ProcessRunner(
            "tests.worker_handlers:environment",
            concurrency=1,
            execution_id="x",
            emit=lambda event: None,
            start_method="forkserver",
        )
        runner.start()
        try:
            runner.submit(Call(1, None, 1, "m", None, {}, 30.0))
            outcomes: list[object] = []
            give_up = time.monotonic() + 60
            while not outcomes and time.monotonic() < give_up:
                outcomes += runner.poll(0.1)
        finally:
            runner.close()
        return [o.result for o in outcomes]  # type: ignore[attr-defined]

    monkeypatch.setenv("STEADYQ_TEST_WHO", "first")
    assert run_one() == [{"who": "first"}]
    # the forkserver is running now, started with the environment of then
    monkeypatch.setenv("STEADYQ_TEST_WHO", "second")
    assert run_one() == [{"who": "second"}]


def test_a_start_that_fails_leaves_no_handler_process_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from steadyq import HandlerLoadError
    from steadyq.runner import ProcessRunner

    monkeypatch.setenv("STEADYQ_TEST_LOADS", str(tmp_path))
    runner = ProcessRunner(
        "tests.worker_handler_second_fails:handle",
        concurrency=2,
        execution_id="x",
        emit=lambda event: None,
        start_method="spawn",  # each child imports the module itself
    )
    with pytest.raises(HandlerLoadError, match="second handler process refuses"):
        runner.start()
    first = int((tmp_path / "first").read_text())
    state = Path(f"/proc/{first}/stat")
    give_up = time.monotonic() + 30
    while state.exists() and time.monotonic() < give_up:
        if state.read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            break
        time.sleep(0.05)
    alive = state.exists() and state.read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    assert not alive, "the child that had started is stopped with the failed start"
