"""The page in a real browser: Debian's Chromium driven by Playwright.

Few and quick: one browser for the session, one page per test. Bounds are generous
(the machine is shared); the lag itself is measured by ``bench/dashboard.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.telemetry.store import EventFilter
from tests.dashboard.conftest import (
    HOSTILE_ID,
    HOSTILE_TOPIC,
    REPO,
    LiveServer,
    body,
    drain,
    save_artifact,
)

pytestmark = pytest.mark.slow
LIVE_BOUND_MS = 45_000  # the 2 s is for an idle machine; this one is shared (and a
# worker subprocess must start first): the lag itself is the benchmark's


def expect(locator: Any) -> Any:
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


@pytest.fixture
def worker(db_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``steadyq worker --forever`` on the test's queue, killed at the end."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEADYQ_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    cmd = [
        sys.executable, "-m", "steadyq.cli", "worker", "--url", db_url, "--forever",
        "--runner", "inline", "--handler", "tests.worker_handlers:by_topic",
        "--log-format", "none",
    ]  # fmt: skip
    with open(tmp_path / "worker.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=log)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(30)


def test_a_poison_message_appears_live_and_stays_inert(
    browser: Any, page: Any, view: Any, worker: Any, tmp_path: Path
) -> None:
    with LiveServer(view) as server:
        page.goto(server.url + "/")
        # the feed is open once the page says so: what follows is news to it
        expect(page.locator("#status")).to_have_text("live", timeout=LIVE_BOUND_MS)
        view.queue.publish(body(HOSTILE_TOPIC, request_id=HOSTILE_ID))
        row = page.locator('#live tr[data-kind="message.rejected"]')
        expect(row).to_contain_text("request_id_invalid", timeout=LIVE_BOUND_MS)
        expect(page.locator('[data-count="message.rejected"]')).to_have_text("1")
        view.queue.publish(body())
        expect(page.locator('#live tr[data-kind="message.succeeded"]')).to_have_count(
            1, timeout=LIVE_BOUND_MS
        )
        save_artifact(page, "dashboard-live.png", tmp_path)
        # nothing from the message became markup or ran
        assert page.locator("main img, main b, main script").count() == 0
        assert page.dialogs == []
    assert worker.poll() is None, "the worker died"


def test_replaying_a_letter_through_the_confirmation_changes_the_queue(
    browser: Any, page: Any, view: Any, tmp_path: Path
) -> None:
    view.queue.publish(body(request_id="test-smoke-001"))
    drain(view.queue)
    with LiveServer(view) as server:
        page.goto(server.url + "/dlq")
        expect(page.locator("#dlq-total")).to_contain_text("1 letters match")
        page.click("#replay")
        expect(page.locator("#question")).to_contain_text("Replay 1 dead letter")
        page.click("#confirm")
        expect(page.locator("#summary")).to_have_text("replayed 1 dead letters")
        page.goto(server.url + "/")
        expect(page.locator('[data-stat="ready"]')).to_have_text("1")
        expect(page.locator('[data-stat="dead_lettered"]')).to_have_text("0")
        save_artifact(page, "dashboard-after-replay.png", tmp_path)
    stats = view.queue.stats()
    assert (stats.ready, stats.dead_lettered) == (1, 0)
    logs = view.store.events(EventFilter(kinds=(ev.LOG,), min_severity="NOTICE"))
    assert [e.data["count"] for e in logs if e.reason == "dlq_replay"] == [1]


def test_the_overview_of_a_postgres_store_shows_each_kind(
    browser: Any, page: Any, pg_view: Any, tmp_path: Path
) -> None:
    view = pg_view
    for topic in ("fractions", "fractions", "flaky", "warn", "broken", "permanent"):
        view.queue.publish(body(topic))
    view.queue.publish(body(request_id="test-smoke-001"))  # rejected at the gate
    drain(view.queue)
    now = time.time()
    view.store.write(
        [Event(ev.MESSAGE_TIMED_OUT, now - 2, severity="ERROR", request_id="slow-one",
               reason="deadline_exceeded", message="handler exceeded its 30 s deadline")]
    )  # fmt: skip
    with LiveServer(view) as server:
        page.goto(server.url + "/")
        expect(page.locator("#status")).to_have_text("live", timeout=LIVE_BOUND_MS)
        executions = page.locator("#executions")
        expect(executions).to_contain_text("succeeded 1")
        expect(page.locator('[data-count="message.timed_out"]')).to_have_text("1")
        expect(page.locator("#timeouts")).to_contain_text("slow-one")
        expect(page.locator('[data-count="message.rejected"]')).to_have_text("1")
        expect(page.locator("#rejections")).to_contain_text("request_id_invalid")
        errors = page.locator("#errors")
        for text in ("always broken", "topic refused", "careful with warn", "transient"):
            expect(errors).to_contain_text(text)
        expect(errors.locator("mark")).not_to_have_count(0)  # new against the hour before
        # broken (retries spent), permanent, and the rejection: each a dead letter
        expect(page.locator('[data-stat="dead_lettered"]')).to_have_text("3")
        expect(page.locator('[data-stat="ready"]')).to_have_text("0")
        # the live feed reads the PostgreSQL events table by id: a new rejection shows
        view.store.write(
            [Event(ev.MESSAGE_REJECTED, time.time(), severity="WARNING",
                   request_id=HOSTILE_ID, reason=HOSTILE_TOPIC)]
        )  # fmt: skip
        row = page.locator('#live tr[data-kind="message.rejected"]')
        expect(row).to_have_count(1, timeout=LIVE_BOUND_MS)
        expect(page.locator('[data-count="message.rejected"]')).to_have_text("2")
        save_artifact(page, "dashboard-postgres.png", tmp_path)
        assert page.locator("main img, main b, main script").count() == 0
        assert page.dialogs == []
