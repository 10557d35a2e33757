"""A loopback TCP proxy that delays every byte by a fixed one-way latency.

Used by ``bench/throughput_pubsub.py --rtt-ms`` to put a network between the client
and the Pub/Sub emulator, the way a worker on a VM talks to real Pub/Sub: each
direction is held back by half the round trip; order and bandwidth are kept.

The proxy runs in a process of its own. Run as a thread of the process it measures
(as it did until session 10), its Python took that process's GIL: a client busy with
its own Python (steadyq's worker) had every forwarded chunk wait for the GIL on top of
the delay, up to the 5 ms switch interval each way, while an idle client (the raw
loop) did not, and the proxy's CPU counted as the client's. A real network costs the
worker neither.

    with LatencyProxy("127.0.0.1:8085", rtt_ms=10) as proxy:
        os.environ["PUBSUB_EMULATOR_HOST"] = proxy.host

    python bench/latency_proxy.py 127.0.0.1:8085 10   # prints its host:port, then serves
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from typing import Any


class LatencyProxy:
    """A child process that listens on a free loopback port and forwards to ``target``
    (host:port), ``rtt_ms`` of round trip added."""

    def __init__(self, target: str, *, rtt_ms: float) -> None:
        self._target = target
        self._rtt_ms = rtt_ms
        self._child: subprocess.Popen[str] | None = None
        self.host = ""

    def __enter__(self) -> LatencyProxy:
        self._child = subprocess.Popen(
            [sys.executable, __file__, self._target, str(self._rtt_ms)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._child.stdout is not None
        self.host = self._child.stdout.readline().strip()
        if not self.host:
            self._child.wait(5)
            raise RuntimeError(f"the latency proxy did not start (exit {self._child.returncode})")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._child is not None:
            self._child.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._child.wait(5)
            if self._child.poll() is None:
                self._child.kill()
                self._child.wait()


class _Proxy:
    """The proxy itself, in the child: an asyncio server on a free loopback port."""

    def __init__(self, target: str, rtt_ms: float) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._delay_s = max(0.0, rtt_ms) / 2000

    async def serve(self) -> None:
        server = await self._listen()
        print(f"127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        async with server:
            await server.serve_forever()

    async def _listen(self) -> asyncio.base_events.Server:
        return await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _accept(self, client_r: Any, client_w: Any) -> None:
        try:
            server_r, server_w = await asyncio.open_connection(*self._target)
        except OSError:
            client_w.close()
            return
        # cancelled at exit: end quietly (the server's callback reports a cancelled task)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(
                self._pipe(client_r, server_w),
                self._pipe(server_r, client_w),
                return_exceptions=True,
            )

    async def _pipe(self, reader: Any, writer: Any) -> None:
        """Copy one direction; each chunk leaves ``delay`` after it arrived."""
        chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await chunks.get()
                if not data:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(send())
        try:
            while True:
                data = await reader.read(65536)
                await chunks.put((time.monotonic() + self._delay_s, data))
                if not data:
                    break
            await sender
        finally:
            sender.cancel()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_Proxy(sys.argv[1], float(sys.argv[2])).serve())
