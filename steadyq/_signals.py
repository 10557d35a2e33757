"""Turning SIGTERM and SIGINT into a polite request to stop."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def stop_signals(on_signal: Callable[[int], None]) -> Iterator[None]:
    """While inside, SIGTERM and SIGINT call ``on_signal(signum)`` instead of killing us.

    Only the main thread can own signal handlers; elsewhere this does nothing. The
    previous handlers come back on exit.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        on_signal(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
