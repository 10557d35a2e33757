"""Fixtures for the dashboard: a queue and store (SQLite; PostgreSQL where a module asks
for ``backend_url``), the app, a live server, a browser."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require_service
from tests.postgres_db import postgres_url

# The dashboard extra is part of the test extra: missing, the tests are not run
# locally, and CI fails.
_EXTRA = ("starlette", "uvicorn", "prometheus_client", "httpx2")
if not all(find_spec(name) for name in _EXTRA):
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"CI needs the dashboard extra ({', '.join(_EXTRA)})")
    collect_ignore_glob = ["test_*.py"]

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
TOKEN = "a-long-enough-test-token-0123456789"
HOSTILE_ID = "<img src=x onerror=alert(1)>\u202eevil<b>bold</b>"
HOSTILE_TOPIC = "<script>alert(2)</script>\u202e<b>topic</b>"


def body(topic: str = "fractions", request_id: str | None = None) -> bytes:
    return json.dumps({"request_id": request_id or str(uuid.uuid4()), "topic": topic}).encode()


def drain(queue: Any) -> Any:
    """One in-process execution that settles everything in ``queue``."""
    from steadyq import RetryPolicy, Worker, WorkerOptions
    from steadyq.brokers import store_for

    options = WorkerOptions(
        handler="tests.worker_handlers:by_topic",
        runner="inline",
        drain=True,
        retry=RetryPolicy(0.0, 0.0, 2),
        idle_poll_s=0.01,
    )
    return Worker(queue, store_for(queue), options).run()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'steadyq.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The queue-and-store URL of each backend: a SQLite file, and a fresh schema on the
    machine's PostgreSQL (skipped locally without one, a failure under CI=true). A
    module that overrides ``db_url`` with it runs its tests on both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'steadyq.db'}"
    else:
        with postgres_url() as url:
            yield url


@pytest.fixture
def view(db_url: str) -> Iterator[Any]:
    from steadyq.brokers import open_queue, store_for
    from steadyq.dashboard.data import StoreView

    queue = open_queue(db_url)
    try:
        yield StoreView(queue, store_for(queue))
    finally:
        queue.close()


@pytest.fixture
def pg_view() -> Iterator[Any]:
    """A dashboard's view of a PostgreSQL queue and its store, on a fresh schema."""
    from steadyq.brokers import open_queue, store_for
    from steadyq.dashboard.data import StoreView

    with postgres_url() as url:
        queue = open_queue(url)
        try:
            yield StoreView(queue, store_for(queue))
        finally:
            queue.close()


@contextmanager
def uncommitted_event(view: Any, kind: str, reason: str = "late") -> Iterator[None]:
    """An event inserted into a PostgreSQL store and committed only when the block
    ends: its id is lower than those of the events written meanwhile."""
    with view.db.transaction() as conn:
        conn.execute(
            view.db.sql(
                "INSERT INTO SQ.events (ts, kind, severity, sev_rank, reason)"
                " VALUES (%s, %s, 'WARNING', 3, %s)"
            ),
            (time.time(), kind, reason),
        )
        yield


def client_for(view: Any, token: str | None = None, **kw: Any) -> Any:
    from starlette.testclient import TestClient

    from steadyq.dashboard.app import DashboardOptions, create_app

    app = create_app(view, DashboardOptions(token=token, **kw))
    return TestClient(app, base_url="http://127.0.0.1:8765", follow_redirects=False)


class LiveServer:
    """The dashboard served by uvicorn in a thread, on a free loopback port."""

    def __init__(self, view: Any, **kw: Any) -> None:
        import uvicorn

        from steadyq.dashboard.app import DashboardOptions, create_app, free_port_socket

        self.sock = free_port_socket("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(view, DashboardOptions(poll_s=0.05, **kw)),
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:  # the server says when it listens
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the dashboard server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium (Debian's, never a downloaded one) for the session."""
    require_service(CHROMIUM.exists(), f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    require_service(find_spec("playwright") is not None, "playwright is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.dialogs = dialogs
    try:
        yield page
    finally:
        context.close()


def save_artifact(page: Any, name: str, tmp_path: Path) -> Path:
    """A screenshot in the test's folder, copied to ./test-artifacts for CI to keep."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(shot, ARTIFACTS / name)
    return shot
