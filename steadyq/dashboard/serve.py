"""The ``steadyq dashboard`` command's body: settings, the token, the server."""

from __future__ import annotations

import os
from pathlib import Path

from steadyq.errors import ConfigError

TOKEN_ENV = "STEADYQ_DASHBOARD_TOKEN"
MISSING = "the dashboard needs its extra: pip install 'steadyq[dashboard]' ({name} is missing)"


def require_extra() -> None:
    """Raise a readable ConfigError when the dashboard's packages are not installed."""
    import importlib

    for name in ("starlette", "uvicorn", "prometheus_client"):
        try:
            importlib.import_module(name)
        except ImportError:
            raise ConfigError(MISSING.format(name=name)) from None


def read_token(token_file: Path | None) -> str | None:
    """The token from ``--token-file`` (first line), else from the environment."""
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"cannot read --token-file {token_file}: {exc.strerror}") from None
        if not text:
            raise ConfigError(f"--token-file {token_file} is empty")
        return text
    value = os.environ.get(TOKEN_ENV, "").strip()
    return value or None


def check_bind(host: str, token: str | None) -> None:
    from steadyq.dashboard.security import is_loopback

    if not is_loopback(host) and token is None:
        raise ConfigError(
            f"refusing to serve on {host}, which is not a loopback address, without a token:"
            f" give --token-file FILE or set {TOKEN_ENV}"
        )
    if token is not None and len(token) < 16:
        raise ConfigError("the dashboard token is too short: use at least 16 characters")


def serve(
    url: str,
    store_url: str | None,
    *,
    host: str,
    port: int,
    token: str | None,
    report_dir: Path,
    announce: bool = True,
) -> None:
    """Serve until interrupted.

    Raises:
        ConfigError: a bad bind or token, or the port is taken.
        BackendUnavailable: the queue or store cannot be opened.
    """
    require_extra()
    check_bind(host, token)
    import uvicorn

    from steadyq.brokers import open_queue, store_for
    from steadyq.dashboard.app import DashboardOptions, create_app, free_port_socket
    from steadyq.dashboard.data import StoreView

    queue = open_queue(url)
    with queue:
        view = StoreView(queue, store_for(queue, store_url))
        options = DashboardOptions(token=token, report_dir=report_dir, warm_metrics=True)
        app = create_app(view, options)
        try:
            sock = free_port_socket(host, port)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        shown = f"[{host}]" if ":" in host else host
        if announce:
            print(f"steadyq dashboard on http://{shown}:{sock.getsockname()[1]}/", flush=True)
        config = uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
            lifespan="off",
        )
        uvicorn.Server(config).run(sockets=[sock])
