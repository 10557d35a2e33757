"""A loopback TCP proxy that delays every byte by a fixed one-way latency.

Used by ``bench/throughput_pubsub.py --rtt-ms`` to put a network between the client
and the Pub/Sub emulator, the way a worker on a VM talks to real Pub/Sub: each
direction is held back by half the round trip; order and bandwidth are kept.

    with LatencyProxy("127.0.0.1:8085", rtt_ms=10) as proxy:
        os.environ["PUBSUB_EMULATOR_HOST"] = proxy.host
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Any


class LatencyProxy:
    """Listens on a free loopback port and forwards to ``target`` (host:port)."""

    def __init__(self, target: str, *, rtt_ms: float) -> None:
        host, _, port = target.rpartition(":")
        self._target = (host, int(port))
        self._delay_s = max(0.0, rtt_ms) / 2000
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self.host = ""

    def __enter__(self) -> LatencyProxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        port = self._server.sockets[0].getsockname()[1]
        self.host = f"127.0.0.1:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

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
