"""What the pages show, and that nothing from a message is ever live markup: on a
SQLite store and on a PostgreSQL one (``db_url`` is each backend's)."""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import quote

import pytest

from steadyq.dashboard.app import feed_item
from steadyq.telemetry import events as ev
from steadyq.telemetry.events import Event
from steadyq.watch.run import WatchState
from tests.dashboard.conftest import (
    HOSTILE_ID,
    HOSTILE_TOPIC,
    body,
    client_for,
    drain,
    uncommitted_event,
)

RAW = ("<img", "<script>alert", "<b>", "\u202e")


@pytest.fixture
def db_url(backend_url: str) -> str:
    return backend_url


def _inert(html: str, shown: bool = True) -> None:
    # a form field's value must round-trip exactly (a filter on a reason with a
    # control character in it): escaped for HTML, but its characters kept
    html = re.sub(r' value="[^"]*"', "", html)
    for bad in RAW:
        assert bad not in html, f"{bad!r} reached the page unescaped"
    # each hostile text is there, escaped, not dropped
    assert not shown or "&lt;img src=x onerror=alert(1)&gt;" in html or "&lt;script&gt;" in html


def _hostile_store(view: Any) -> str:
    """A rejection and a dead letter carrying hostile bytes, plus ledger rows and a
    watch run whose names and reasons are hostile."""
    now = time.time()
    view.queue.publish(body(HOSTILE_TOPIC, request_id=HOSTILE_ID))  # rejected at the gate
    view.queue.publish(body("permanent"))
    drain(view.queue)
    view.store.write(
        [
            Event(
                ev.MESSAGE_RECEIVED,
                now - 5,
                execution_id=HOSTILE_TOPIC,
                message_id="m1",
                request_id=HOSTILE_ID,
                attempt=1,
            ),
            Event(
                ev.MESSAGE_DEAD_LETTERED,
                now - 4,
                severity="ERROR",
                message=f"topic {HOSTILE_TOPIC} refused",
                execution_id=HOSTILE_TOPIC,
                message_id="m1",
                request_id=HOSTILE_ID,
                reason=HOSTILE_TOPIC,
            ),
            Event(ev.MESSAGE_TIMED_OUT, now - 3, severity="ERROR", request_id=HOSTILE_ID),
        ]
    )
    state = WatchState(view.db)  # the watch tables, as a watch makes them
    record = {
        "index": 1,
        "at": now - 60,
        "criteria": [
            {"name": HOSTILE_ID, "measure": "success_rate", "status": "fail", "value": 0.5,
             "reason": HOSTILE_TOPIC},
        ],
    }  # fmt: skip
    with state.transaction() as conn:  # SQLite's spelling, on either backend
        conn.execute(
            "INSERT INTO watch_runs (run_id, plan_name, plan_hash, plan, mode, status,"
            " window_start, window_end, verdict, verdict_reason, created_at, updated_at)"
            " VALUES ('r1', ?, 'h', ?, 'live', 'finished', ?, ?, 'FAILED', ?, ?, ?)",
            (HOSTILE_ID, json.dumps({"checkpoint_every_s": 60}), now - 120, now,
             HOSTILE_TOPIC, now, now),
        )  # fmt: skip
        conn.execute(
            "INSERT INTO watch_checkpoints (run_id, idx, at, taken_at, record)"
            " VALUES ('r1', 1, ?, ?, ?)",
            (now - 60, now - 60, json.dumps(record)),
        )
    letters = view.queue.dlq_list()
    return next(str(d.message_id) for d in letters if b"onerror" in d.payload)


def test_hostile_ids_and_topics_are_inert_on_every_view(view: Any) -> None:
    mid = _hostile_store(view)
    client = client_for(view)
    hostile = quote(HOSTILE_ID)
    for path in (
        "/",
        "/?window=24h",
        "/dlq",
        f"/dlq?reason={quote(HOSTILE_TOPIC)}",
        f"/dlq/letter/{quote(mid)}",
        f"/dlq/confirm?action=replay&reason={quote(HOSTILE_TOPIC)}",
        f"/dlq/confirm?action=purge&id={quote(mid)}",
        f"/requests?id={hostile}",
        "/watches",
        "/watches/r1",
        f"/watches/{hostile}",
        f"/dlq/letter/{hostile}",
    ):
        response = client.get(path)
        assert response.status_code in (200, 404), path
        if response.status_code == 200 and path not in ("/dlq",):
            _inert(response.text, shown=not ("reason=" in path or "confirm" in path))
        else:
            for bad in RAW[:3]:
                assert bad not in response.text, (path, bad)


def test_the_live_feed_sends_only_cleaned_text(view: Any) -> None:
    _hostile_store(view)
    _, found = view.events_after(0)
    items = [feed_item(e) for e in found]
    assert {i["kind"] for i in items} >= {ev.MESSAGE_REJECTED, ev.MESSAGE_DEAD_LETTERED}
    text = json.dumps(items, ensure_ascii=False)
    assert "\u202e" not in text and "\\u202e" in text  # the control shown, as the CLI does


def test_a_letter_shows_its_payload_escaped_byte_by_byte(view: Any) -> None:
    view.queue.publish(b'\xff\x00{"request_id": "x\x1b[31m"}')
    drain(view.queue)
    (letter,) = view.queue.dlq_list()
    html = client_for(view).get(f"/dlq/letter/{letter.message_id}").text
    payload = re.search(r'<pre id="payload">(.*?)</pre>', html, re.S)
    assert payload is not None
    assert payload.group(1) == "\\xff\\x00{&#34;request_id&#34;: &#34;x\\x1b[31m&#34;}"


def test_the_overview_shows_the_five_views(view: Any) -> None:
    view.queue.publish(body())
    view.queue.publish(body(request_id="test-smoke-001"))
    view.queue.publish(body("permanent"))
    drain(view.queue)
    html = client_for(view).get("/?window=4h").text
    for section in ("executions", "timeouts", "rejections", "errors", "backlog"):
        assert f'id="{section}"' in html
    assert "request_id_invalid" in html
    assert "succeeded 1" in html  # one execution, succeeded
    assert 'data-stat="dead_lettered">2<' in html
    bad = client_for(view).get("/?window=3y")
    assert bad.status_code == 400 and "unknown window" in bad.text
    # no watch ever ran on this store: no watch tables, an empty list
    watches = client_for(view).get("/watches")
    assert watches.status_code == 200 and "/watches/" not in watches.text
    assert client_for(view).get("/watches/r1").status_code == 404


def test_a_request_lookup_shows_its_ledger_row_and_events(view: Any) -> None:
    view.queue.publish(body(request_id="6f9619ff-8b86-d011-b42d-00c04fc964ff"))
    drain(view.queue)
    html = client_for(view).get("/requests?id=6f9619ff-8b86-d011-b42d-00c04fc964ff").text
    assert 'class="completed"' in html
    assert html.count("<tr><td>") >= 2  # received and succeeded
    assert ev.MESSAGE_SUCCEEDED in html
    missing = client_for(view).get("/requests?id=nobody").text
    assert "No ledger row" in missing
    # without a ledger row only log records can name a request: they are found
    view.store.write(
        [Event(ev.LOG, time.time(), severity="WARNING", request_id="ghost", message="odd")]
    )
    ghost = client_for(view).get("/requests?id=ghost").text
    assert "No ledger row" in ghost and "<td>odd</td>" in ghost


def test_replay_needs_the_count_it_confirmed(view: Any) -> None:
    for _ in range(2):
        view.queue.publish(body(request_id="bad"))
    drain(view.queue)
    client = client_for(view)
    confirm = client.get("/dlq/confirm?action=replay&reason=request_id_invalid").text
    assert "Replay 2 dead letters" in confirm
    origin = {"Origin": "http://127.0.0.1:8765"}
    stale = client.post(
        "/dlq/replay", data={"reason": "request_id_invalid", "expected": "3"}, headers=origin
    )
    assert stale.status_code == 409 and view.queue.stats().dead_lettered == 2
    done = client.post(
        "/dlq/replay", data={"reason": "request_id_invalid", "expected": "2"}, headers=origin
    )
    assert done.status_code == 200 and "replayed 2 dead letters" in done.text
    stats = view.queue.stats()
    assert (stats.dead_lettered, stats.ready) == (0, 2)
    from steadyq.telemetry.store import EventFilter

    logs = view.store.events(EventFilter(kinds=(ev.LOG,), min_severity="NOTICE"))
    (logged,) = [e for e in logs if e.reason == "dlq_replay"]
    assert logged.reason == "dlq_replay"
    assert logged.data["count"] == 2 and logged.data["action"] == "replay"
    assert logged.data["filter"] == {"reason": "request_id_invalid"}
    assert "dashboard loopback" in logged.data["who"]


def test_purge_of_everything_must_be_asked_for(view: Any) -> None:
    view.queue.publish(body(request_id="bad"))
    drain(view.queue)
    client = client_for(view)
    assert client.get("/dlq/confirm?action=purge").status_code == 400
    assert "Purge 1 dead letter" in client.get("/dlq/confirm?action=purge&all=1").text


def test_watch_page_shows_criteria_next_checkpoint_and_reports(view: Any, tmp_path: Any) -> None:
    _hostile_store(view)
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "report.md").write_text("# report\n")
    client = client_for(view, report_dir=reports)
    html = client.get("/watches/r1").text
    assert 'class="fail"' in html and "FAILED" in html
    assert 'href="/reports/report.md"' in html and "report.html" not in html
    assert client.get("/reports/report.md").text == "# report\n"
    assert client.get("/reports/..%2Fsteadyq.db").status_code == 404


def test_an_unreachable_store_is_said_on_the_overview(view: Any) -> None:
    client = client_for(view)
    view.db.close()
    response = client.get("/")
    assert response.status_code == 503
    assert "the store is unreachable" in response.text


def test_the_live_feed_sends_an_event_committed_below_one_it_sent(pg_view: Any) -> None:
    # PostgreSQL: ids are taken at insert, commits come in any order
    view = pg_view
    cursor = view.live_cursor()
    with uncommitted_event(view, ev.MESSAGE_REJECTED, reason="late"):
        view.store.write([Event(ev.MESSAGE_REJECTED, time.time(), reason="early")])
        assert [e.reason for e in view.live_events(cursor)] == ["early"]
    assert [e.reason for e in view.live_events(cursor)] == ["late"]
    assert view.live_events(cursor) == []
    # a stream that starts just after the late one's id still sees it come in
    with uncommitted_event(view, ev.MESSAGE_REJECTED, reason="late again"):
        view.store.write([Event(ev.MESSAGE_REJECTED, time.time(), reason="early again")])
        cursor = view.live_cursor()
    assert [e.reason for e in view.live_events(cursor)] == ["late again"]


def test_a_store_without_sql_is_refused_with_what_works() -> None:
    from steadyq.brokers.memory import MemoryQueue
    from steadyq.dashboard.data import StoreView
    from steadyq.errors import ConfigError
    from steadyq.telemetry.store_memory import MemoryStore

    with pytest.raises(ConfigError, match="SQLite or PostgreSQL store"):
        StoreView(MemoryQueue(), MemoryStore())
