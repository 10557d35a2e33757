"""``steadyq worker --metrics-port``: the worker's own metrics, fed by its event sink.

The worker is not changed for this: every event it emits already reaches the
``sink`` callback, which here updates the metrics and then passes the event on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from steadyq.errors import ConfigError
from steadyq.telemetry.events import Event

Sink = Callable[[Event], None]


@contextmanager
def serving_metrics(
    url: str, sink: Sink | None, host: str, port: int
) -> Iterator[tuple[Sink, int]]:
    """Serve ``/metrics`` on ``host:port`` while the block runs; yield the sink to
    give the worker (metrics first, then ``sink``) and the port (``port`` 0: a free one).

    The queue gauges come from a connection of their own, opened on ``url``, so a
    scrape never waits on the worker's.

    Raises:
        ConfigError: prometheus-client is missing, or the port cannot be bound.
    """
    from steadyq.dashboard.serve import MISSING

    try:
        from prometheus_client import start_http_server
    except ImportError:
        raise ConfigError(MISSING.format(name="prometheus_client")) from None
    from steadyq.brokers import open_queue
    from steadyq.metrics import WorkerMetrics, safe_stats

    queue = open_queue(url)
    try:
        metrics = WorkerMetrics(queue_stats=safe_stats(queue))
        try:
            server, thread = start_http_server(port, addr=host, registry=metrics.registry)
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None

        def fed(event: Event) -> None:
            metrics.observe(event)
            if sink is not None:
                sink(event)

        try:
            yield fed, int(server.server_port)
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
    finally:
        queue.close()
