"""``steadyq worker`` processes meeting a backend that cannot be written.

Each fault is a real condition on the worker's own database, entered while handler
calls are running so that their outcomes meet it when the worker records them:

- **locked**: another process takes the write lock (``BEGIN IMMEDIATE``, a row
  written) and is frozen with SIGSTOP; the worker's busy timeout is 100 ms.
- **immutable**: ``chattr +i`` on the database and its WAL (root ignores file modes;
  the immutable flag it does not).
- **tmpfs full**: the database lives on a 2 MiB tmpfs that a filler file fills up.

For each: the outage is logged once, the worker backs off and resumes when the fault
clears (every message then succeeds); a fault that outlasts ``--backend-outage``
ends the execution with exit code 3 and every message is still in the queue for the
next execution. Never a traceback.

Nothing sleeps to synchronise: the tests poll for a condition with a generous deadline.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import pytest

from steadyq.brokers.sqlite import SqliteQueue
from tests.faults.files import chattr
from tests.test_reliability import wait_for

REPO = Path(__file__).resolve().parents[2]
HANDLERS = "tests.faults.handlers"
OUTAGE = "backend unavailable, backing off"
RECOVERED = "backend available again"
# more than one pull takes (the runner's capacity): while the fault lasts, a pull
# always finds ready messages and so has to write
MESSAGES = 30

pytestmark = pytest.mark.slow


class Worker:
    """One ``steadyq worker --drain`` subprocess with its output in files."""

    def __init__(
        self,
        folder: Path,
        url: str,
        name: str,
        *args: str,
        handler: str = "gated",
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        self.out = folder / f"{name}.out"
        self.err = folder / f"{name}.err"
        env = {k: v for k, v in os.environ.items() if not k.startswith("STEADYQ_")}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        cmd = [
            sys.executable, "-m", "steadyq.cli", "worker", "--url", url,
            "--handler", f"{HANDLERS}:{handler}", "--drain", "--concurrency", "2",
            "--deadline", "30", "--lease", "3", "--retry-min", "0", "--retry-max", "0.1",
            "--log-format", "json",
            *args,
        ]  # fmt: skip
        with self.out.open("wb") as out, self.err.open("wb") as err:
            # cwd is the scratch folder: no steadyq.toml of the repository applies
            self.proc = subprocess.Popen(
                cmd, cwd=folder, env=env, stdout=out, stderr=err, preexec_fn=preexec_fn
            )

    def text(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")

    def log_lines(self, needle: str) -> list[str]:
        """Messages of the JSON log lines on stdout that contain ``needle``."""
        found = []
        for line in self.out.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                message = str(json.loads(line).get("message", ""))
                if needle in message:
                    found.append(message)
        return found

    def wait(self, timeout: float = 90) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker still running after {timeout}s:\n{self.text()}") from None


class Fault(Protocol):
    def enter(self, db: Path) -> None: ...
    def clear(self) -> None: ...


class FrozenLockHolder:
    """A process that holds the write lock mid-transaction, frozen by SIGSTOP."""

    SCRIPT = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "c.execute(\"INSERT INTO steadyq_meta VALUES ('held-by', 'a frozen process')\")\n"
        "print('held', flush=True)\n"
        "time.sleep(3600)\n"
    )

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def enter(self, db: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, str(db)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "held"
        os.kill(self.proc.pid, signal.SIGSTOP)

    def clear(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()  # a stopped process dies of SIGKILL too; its lock goes
            self.proc.wait(30)
        if self.proc is not None:
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.proc = None


class Immutable:
    """``chattr +i`` on the database file and its WAL: every write fails (EPERM)."""

    def __init__(self) -> None:
        self.paths: list[Path] = []

    def enter(self, db: Path) -> None:
        self.paths = [db, Path(f"{db}-wal")]
        assert chattr("+i", *self.paths), "chattr +i failed"

    def clear(self) -> None:
        if self.paths:
            chattr("-i", *self.paths)
            self.paths = []


class FullTmpfs:
    """The database on a small tmpfs; a filler file takes every free block.

    A reader holding a snapshot that reaches into the WAL keeps the full disk an
    outage: without it, the worker's background checkpointer lets SQLite start the
    WAL over and reuse the file's blocks, and small commits go through a full disk
    (a real full disk may do the same; this test needs the outage to last)."""

    def __init__(self, mount: Path) -> None:
        self.filler = mount / "filler"
        self.reader: sqlite3.Connection | None = None

    def enter(self, db: Path) -> None:
        for _ in range(20):
            # a snapshot taken right after a commit reads that commit's WAL frame
            reader = sqlite3.connect(db, timeout=30, isolation_level=None)
            reader.execute("INSERT OR REPLACE INTO steadyq_meta VALUES ('fault', 'full')")
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM steadyq_meta").fetchone()
            self.reader = reader
            self._fill()
            probe = sqlite3.connect(db, timeout=30, isolation_level=None)
            try:
                probe.execute("INSERT OR REPLACE INTO steadyq_meta VALUES ('probe', 'x')")
            except sqlite3.OperationalError as exc:
                if "full" in str(exc):
                    return  # a commit cannot find room: the outage holds
                raise
            finally:
                probe.close()
            self.clear()  # the WAL started over under the snapshot's feet: again
        raise AssertionError("could not make the full disk hold (the WAL kept starting over)")

    def _fill(self) -> None:
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for size in (65536, 4096, 512):  # big blocks, then what is left of the last
                with contextlib.suppress(OSError):
                    while os.write(fd, b"\0" * size) == size:
                        pass
        finally:
            os.close(fd)

    def clear(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        self.filler.unlink(missing_ok=True)


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
        w.proc.wait(30)


def _tmpfs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture(params=["locked", "immutable", "tmpfs_full"])
def fault(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Fault, Path]]:
    """A fault and the database file it applies to."""
    kind = request.param
    if kind == "tmpfs_full":
        mounted = _tmpfs(tmp_path)
        mount = next(mounted)
        made: Fault = FullTmpfs(mount)
        db = mount / "q.db"
    else:
        mounted = None
        db = tmp_path / "q.db"
        if kind == "immutable":
            probe = tmp_path / "probe"
            probe.touch()
            if not chattr("+i", probe):
                pytest.skip("chattr +i is not permitted here (needs root and ext4/xfs/btrfs)")
            chattr("-i", probe)
            made = Immutable()
        else:
            made = FrozenLockHolder()
    try:
        yield made, db
    finally:
        made.clear()
        if mounted is not None:
            with contextlib.suppress(StopIteration):
                next(mounted)


# -- helpers -------------------------------------------------------------------------


def publish(db: Path, folder: Path) -> list[str]:
    with SqliteQueue.from_url(f"sqlite:///{db}") as queue:
        return queue.publish_batch(
            [
                (
                    json.dumps({"request_id": str(uuid.uuid4()), "topic": "fractions"}).encode(),
                    {"dir": str(folder)},
                )
                for _ in range(MESSAGES)
            ]
        )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def where_is(db: Path, ids: list[str]) -> dict[str, set[str]]:
    """Each message id: in the queue, in the DLQ, or acked with its outcome recorded."""
    conn = sqlite3.connect(db)
    try:
        queued = {str(r[0]) for r in conn.execute("SELECT seq FROM messages")}
        dead = {r[0] for r in conn.execute("SELECT message_id FROM dead_letters")}
        succeeded = {
            r[0]
            for r in conn.execute("SELECT message_id FROM events WHERE kind='message.succeeded'")
        }
    finally:
        conn.close()
    return {
        m: {p for p, s in (("queue", queued), ("dlq", dead), ("ok", succeeded)) if m in s}
        for m in ids
    }


def start_and_break(
    folder: Path, db: Path, fault: Fault, workers: list[Worker], budget: str
) -> tuple[Worker, list[str]]:
    """Publish, start a worker, enter the fault while its calls run, then let them end."""
    ids = publish(db, folder)
    url = f"sqlite:///{db}?busy_timeout_ms=100"
    worker = Worker(folder, url, "first", "--backend-outage", budget)
    workers.append(worker)
    wait_for(lambda: lines(folder / "started.log"), 60, "a handler call to start")
    fault.enter(db)
    (folder / "go").touch()
    wait_for(lambda: worker.log_lines(OUTAGE) or worker.proc.poll() is not None, 60, "the outage")
    return worker, ids


# -- the tests --------------------------------------------------------------------------


def test_outage_is_logged_once_and_the_worker_resumes_when_it_clears(
    tmp_path: Path, fault: tuple[Fault, Path], workers: list[Worker]
) -> None:
    made, db = fault
    worker, ids = start_and_break(tmp_path, db, made, workers, "2m")
    assert worker.proc.poll() is None, worker.text()
    made.clear()
    assert worker.wait() == 0, worker.text()
    text = worker.text()
    assert "Traceback" not in text, text
    outage = worker.log_lines(OUTAGE)
    assert len(outage) == 1, outage
    assert len(worker.log_lines(RECOVERED)) == 1, text
    assert {m: {"ok"} for m in ids} == where_is(db, ids)
    assert {line.split()[0] for line in lines(tmp_path / "ran.log")} == set(ids)


def test_outage_past_the_budget_exits_3_and_the_next_run_finishes_the_work(
    tmp_path: Path, fault: tuple[Fault, Path], workers: list[Worker]
) -> None:
    made, db = fault
    worker, ids = start_and_break(tmp_path, db, made, workers, "2")
    assert worker.wait() == 3, worker.text()
    text = worker.text()
    assert "Traceback" not in text, text
    outage = worker.log_lines(OUTAGE)
    assert len(outage) == 1, outage
    assert "failed" in worker.err.read_text(), text
    made.clear()
    # nothing was acked without its outcome: every message waits in the queue
    assert {m: {"queue"} for m in ids} == where_is(db, ids)
    # once their leases (3 s) run out, a new execution finishes them
    with SqliteQueue.from_url(f"sqlite:///{db}") as queue:
        wait_for(lambda: queue.stats().ready == MESSAGES, 60, "the leases to expire")
    again = Worker(tmp_path, f"sqlite:///{db}", "second")
    workers.append(again)
    assert again.wait() == 0, again.text()
    assert "Traceback" not in again.text()
    assert {m: {"ok"} for m in ids} == where_is(db, ids)


# -- a full file by SQLite's own page cap: deterministic, on any machine ------------------
#
# ``?max_page_count=1`` caps the worker's connection at the file's current size. Pulls
# rewrite rows in place and fit; the handler's 20 kB results need new pages to be
# recorded, so every settle of a success fails with SQLITE_FULL: only the worker's
# settle path meets the fault.

FULL_NOW = "max_page_count=1&busy_timeout_ms=100"


def run_capped(tmp_path: Path, workers: list[Worker]) -> tuple[Worker, Path, list[str]]:
    db = tmp_path / "q.db"
    ids = publish(db, tmp_path)
    url = f"sqlite:///{db}?{FULL_NOW}"
    worker = Worker(tmp_path, url, "capped", "--backend-outage", "2", handler="bulky")
    workers.append(worker)
    worker.wait()
    return worker, db, ids


def test_full_file_loses_nothing_and_a_run_with_room_finishes_the_work(
    tmp_path: Path, workers: list[Worker]
) -> None:
    worker, db, ids = run_capped(tmp_path, workers)
    text = worker.text()
    assert "Traceback" not in text, text
    outage = worker.log_lines(OUTAGE)
    assert outage, text
    assert "database or disk is full (SQLITE_FULL)" in outage[0]
    # no outcome could be recorded, so nothing was acked: all wait in the queue
    assert {m: {"queue"} for m in ids} == where_is(db, ids)
    with SqliteQueue.from_url(f"sqlite:///{db}") as queue:
        wait_for(lambda: queue.stats().ready == MESSAGES, 60, "the leases to expire")
    again = Worker(tmp_path, f"sqlite:///{db}", "roomy", handler="bulky")
    workers.append(again)
    assert again.wait() == 0, again.text()
    assert {m: {"ok"} for m in ids} == where_is(db, ids)


def test_full_file_is_one_outage_and_exit_3_when_only_the_settle_fails(
    tmp_path: Path, workers: list[Worker]
) -> None:
    worker, _, _ = run_capped(tmp_path, workers)
    assert len(worker.log_lines(OUTAGE)) == 1, worker.text()
    assert worker.proc.returncode == 3, worker.text()


# -- a file the worker may not write, from the start -----------------------------------


def _as_nobody() -> None:
    os.setgid(65534)
    os.setuid(65534)


def _nobody_can_run_python(cwd: Path) -> str | None:
    """None if user nobody can run this Python and import steadyq, else why not."""
    if os.geteuid() != 0:
        return "switching to user nobody needs root"
    try:
        done = subprocess.run(
            [sys.executable, "-c", "import steadyq"],
            cwd=cwd,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            preexec_fn=_as_nobody,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run Python as nobody: {exc}"
    if done.returncode != 0:
        return f"user nobody cannot run {sys.executable} with steadyq: {done.stderr[-200:]!r}"
    return None


@pytest.mark.parametrize("how", ["immutable", "nobody"])
def test_unwritable_file_at_start_exits_3_naming_the_cause(
    how: str, tmp_path: Path, workers: list[Worker]
) -> None:
    folder = tmp_path
    if how == "nobody":
        # a folder user nobody may enter but not write, holding root's 0644 file
        folder = Path(tempfile.mkdtemp(prefix="steadyq-ro-"))
        folder.chmod(0o755)
        if why := _nobody_can_run_python(folder):
            shutil.rmtree(folder, ignore_errors=True)
            pytest.skip(why)
    db = folder / "q.db"
    try:
        ids = publish(db, folder)
        url = f"sqlite:///{db}?busy_timeout_ms=100"
        if how == "immutable":
            if not chattr("+i", db):
                pytest.skip("chattr +i is not permitted here (needs root and ext4/xfs/btrfs)")
            worker = Worker(folder, url, "ro", "--backend-outage", "2")
        else:
            worker = Worker(folder, url, "ro", "--backend-outage", "2", preexec_fn=_as_nobody)
        workers.append(worker)
        assert worker.wait() == 3, worker.text()
        text = worker.text()
        assert "Traceback" not in text, text
        assert "readonly" in worker.err.read_text() or "unable to open" in text, text
    finally:
        chattr("-i", db)
    with SqliteQueue.from_url(f"sqlite:///{db}") as queue:
        assert queue.stats().ready == MESSAGES
    assert {m: {"queue"} for m in ids} == where_is(db, ids)
    if folder != tmp_path:
        shutil.rmtree(folder, ignore_errors=True)
