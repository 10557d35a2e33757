"""Start and stop Google's Pub/Sub emulator (``gcloud beta emulators pubsub start``).

Used by the test fixtures and by ``bench/throughput_pubsub.py``. The process gcloud
starts is a Python wrapper that starts a Java server; the emulator runs in a process
group of its own so that :meth:`Emulator.stop` ends both. When
``STEADYQ_EMULATOR_PGIDS`` names a file, each started group's id is appended to it,
so ``.ci/run`` can make sure none outlives the run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def gcloud_available() -> bool:
    return shutil.which("gcloud") is not None and shutil.which("java") is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Emulator:
    """One emulator on ``127.0.0.1:port`` with its data in a temp dir."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.host = f"127.0.0.1:{self.port}"
        self._dir = Path(tempfile.mkdtemp(prefix="steadyq-pubsub-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        path = self._dir / "emulator.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout_s: float = 90.0) -> Emulator:
        env = {**os.environ, "JAVA_TOOL_OPTIONS": "-Xmx256m"}
        env.pop("PUBSUB_EMULATOR_HOST", None)
        data = self._dir / "data"
        data.mkdir(exist_ok=True)
        with (self._dir / "emulator.log").open("ab") as log:
            self._proc = subprocess.Popen(
                [
                    "gcloud",
                    "beta",
                    "emulators",
                    "pubsub",
                    "start",
                    f"--host-port={self.host}",
                    f"--data-dir={data}",
                    "--quiet",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        record = os.environ.get("STEADYQ_EMULATOR_PGIDS")
        if record:
            with open(record, "a") as f:
                f.write(f"{self._proc.pid}\n")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the Pub/Sub emulator exited early:\n{self.log[-2000:]}")
            if "Server started" in self.log and self._listening():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the Pub/Sub emulator did not start in {timeout_s:.0f} s")

    def _listening(self) -> bool:
        with socket.socket() as s:
            s.settimeout(0.5)
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """Stop the wrapper and its Java child: signal the whole process group."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline and self._group_alive(proc.pid):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=0.1)
            if not self._group_alive(proc.pid):
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
