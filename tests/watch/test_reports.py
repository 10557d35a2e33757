from __future__ import annotations

import contextlib
import itertools
import json
import re
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

from steadyq.durations import rfc3339
from steadyq.telemetry.events import Event
from steadyq.watch.judge import Verdict
from steadyq.watch.plan import parse_plan
from steadyq.watch.reports import PAD_B, SCHEMA_VERSION, H, md, render_html, render_markdown
from steadyq.watch.run import CheckpointRecord, Watch, WatchObserver, run_watch
from tests.conftest import FakeClock
from tests.watch.test_run import DAY, HOUR, T0, fake_sleep, incident_events, open_store, plan_text

SCRIPT = '<script>alert("owned")</script> request_id | `x` [link](http://evil.example) **b**'


def _replay(tmp_path: Path, **events: Any) -> tuple[dict[str, Any], Path]:
    clock = FakeClock(T0 + DAY + 10)
    queue, store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", clock)
    store.write(incident_events(**events))
    text = plan_text().replace('name = "uuid-fix"', 'name = "fix <b>bold</b> | [x](y)"')
    result = run_watch(
        parse_plan(text), store, queue, tmp_path / "reports", clock=clock, replay=True
    )
    queue.close()
    return result.report, tmp_path / "reports"


def test_json_report_has_the_documented_fields(tmp_path: Path) -> None:
    doc, folder = _replay(tmp_path)
    on_disk = json.loads((folder / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    assert on_disk["schema_version"] == SCHEMA_VERSION == 1
    assert on_disk["verdict"] == "PASSED" and on_disk["exit_code"] == 0
    for key in ("plan", "baseline", "checkpoints", "criteria", "risks", "alerts", "schedule"):
        assert key in on_disk
    assert on_disk["plan"]["window_s"] == DAY and len(on_disk["plan"]["criteria"]) == 7
    assert on_disk["baseline"]["figures"]["values"]["executions.total"] == 18
    assert len(on_disk["checkpoints"]) == 6
    for cp in on_disk["checkpoints"]:
        assert set(cp) >= {"at", "figures", "queue", "criteria", "risks", "anomalies"}
        assert set(cp["figures"]) == {"interval", "cumulative"}
        for c in cp["criteria"]:
            assert set(c) >= {"name", "status", "value", "bound", "baseline_value", "reason"}
            assert c["status"] in ("pass", "fail", "no_data", "pending")
    durations = on_disk["checkpoints"][-1]["criteria"][1]
    assert durations["name"] == "under 10 minutes" and durations["bound"]["max"] == 600
    assert durations["baseline_value"] == 1800  # the baseline's longest run hit the timeout
    assert on_disk["risks"][0]["name"] == "DLQ filling up" and on_disk["risks"][0]["status"] == "ok"


def test_html_is_self_contained_and_escapes_what_came_from_messages(tmp_path: Path) -> None:
    doc, folder = _replay(tmp_path, error=SCRIPT)
    assert doc["verdict"] == "FAILED"  # a new error pattern
    patterns = [
        a
        for cp in doc["checkpoints"]
        for a in cp["anomalies"]
        if a["kind"] == "errors.new_patterns"
    ]
    assert patterns and "<script>" in patterns[0]["example"]
    page = (folder / "report.html").read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;" in page
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    # nothing is fetched when the page is viewed
    assert not re.search(r"\b(src|href)\s*=", page, re.I)
    assert set(re.findall(r"https?://[^\s\"'<)]+", page)) <= {
        "http://www.w3.org/2000/svg",
        "http://evil.example",  # the message's own text, escaped, not a link
    }
    assert page.count("<svg") >= 3  # durations, outcomes, rejections (queue: one sample)
    assert "limit 10m" in page
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        root = ElementTree.fromstring(svg)  # well-formed, whatever the messages said
        assert root.tag.endswith("svg") and len(root) >= 3


def test_markdown_escapes_message_text(tmp_path: Path) -> None:
    _, folder = _replay(tmp_path, error=SCRIPT)
    text = (folder / "report.md").read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "[link](http://evil.example)" not in text
    assert "# Stability watch: fix &lt;b&gt;bold&lt;/b&gt; \\| \\[x\\](y)" in text
    (line,) = [ln for ln in text.splitlines() if ln.startswith("- New error pattern")]
    assert "request\\_id \\| \\`x\\` \\[link\\](http://evil.example) \\*\\*b\\*\\*" in line


def test_md_helper() -> None:
    assert md("a|b") == "a\\|b"
    assert md("<img src=x>") == "&lt;img src=x&gt;"
    assert md("line\nbreak\x1b[31m") == "line break [31m".replace("[", "\\[")
    assert md("*x* _y_ `z` [w]") == "\\*x\\* \\_y\\_ \\`z\\` \\[w\\]"
    assert md(None) == ""


def test_markdown_has_the_incident_sections(tmp_path: Path) -> None:
    doc, _ = _replay(tmp_path, hang_at=T0 + 13 * HOUR)
    text = render_markdown(doc)
    for heading in (
        "## Before / after",
        "## Success criteria",
        "## Checkpoint schedule",
        "## Checkpoint 1:",
        "## Checkpoint 4:",
        "## Risks",
        "## Decision",
    ):
        assert heading in text
    assert "## Checkpoint 5:" not in text  # ended early at checkpoint 4
    assert "| Timed out | 10 | 1 |" in text
    assert "| Success rate | 16.7 % |" in text
    assert "❌ fail | no execution timed out (critical)" in text
    assert "⏭ skipped" in text
    assert "**FAILED: INVESTIGATE**" in text


def test_reports_are_rewritten_at_every_checkpoint(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    queue, store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", clock)
    store.write(incident_events())
    folder = tmp_path / "reports"
    seen: list[tuple[int, str | None]] = []

    class Spy(WatchObserver):
        def checkpoint(self, watch: Watch, record: CheckpointRecord) -> None:
            doc = json.loads((folder / "report.json").read_text())
            seen.append((doc["run"]["checkpoints_taken"], doc["verdict"]))
            assert f"## Checkpoint {record.index + 1}:" in (folder / "report.md").read_text()

    watch = Watch(
        parse_plan(plan_text()),
        store,
        queue,
        report_dir=folder,
        clock=clock,
        sleep=fake_sleep(clock),
        tick_s=3600,
        observer=Spy(),
    )
    result = watch.run()
    assert result.verdict is Verdict.PASSED
    assert seen == [(1, None), (2, None), (3, None), (4, None), (5, None), (6, "PASSED")]
    assert sorted(p.name for p in folder.iterdir()) == ["report.html", "report.json", "report.md"]
    page = (folder / "report.html").read_text()
    assert page.count("<svg") == 4  # a live run samples the queue: the backlog chart too
    queue.close()


def test_a_report_before_any_checkpoint_shows_pending(tmp_path: Path) -> None:
    clock = FakeClock(T0 - HOUR)
    queue, store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", clock)
    store.write([Event("log", T0 - 2 * DAY, severity="ERROR", message="old")])

    class Stop(BaseException):
        pass

    def sleep(seconds: float) -> None:
        raise Stop

    watch = Watch(
        parse_plan(plan_text()), store, queue, report_dir=tmp_path, clock=clock, sleep=sleep
    )
    with contextlib.suppress(Stop):
        watch.run()
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["verdict"] is None and doc["checkpoints"] == []
    assert {c["status"] for c in doc["criteria"]} == {"pending"}
    assert doc["run"]["next_checkpoint_at"] == "2027-01-15T12:00:00Z"
    assert "⏳ pending" in (tmp_path / "report.md").read_text()
    queue.close()


def _svgs(page: str) -> dict[str, ElementTree.Element]:
    """The page's charts by title."""
    found = {}
    for svg in re.findall(r"<svg.*?</svg>", page, re.S):
        root = ElementTree.fromstring(svg)
        found[root.get("aria-label") or ""] = root
    return found


def _texts(root: ElementTree.Element) -> list[ElementTree.Element]:
    return [e for e in root.iter() if e.tag.endswith("text")]


def test_a_short_plan_shows_its_exact_elapsed_times(tmp_path: Path) -> None:
    # three decimals of an hour (3.6 s) once showed a 6-second checkpoint as "+7.2s"
    clock = FakeClock(T0 + HOUR)
    queue, store = open_store(f"sqlite:///{tmp_path / 'db.sqlite'}", clock)
    store.write(incident_events())
    text = plan_text().replace('window = "24h"', 'window = "12s"')
    text = text.replace('checkpoint_every = "4h"', 'checkpoint_every = "6s"')
    result = run_watch(
        parse_plan(text), store, queue, tmp_path / "reports", clock=clock, replay=True
    )
    queue.close()
    doc = result.report
    assert [round(row["hours_elapsed"] * 3600, 3) for row in doc["schedule"]] == [6.0, 12.0]
    assert [round(cp["hours_elapsed"] * 3600, 3) for cp in doc["checkpoints"]] == [6.0, 12.0]
    report = (tmp_path / "reports" / "report.md").read_text()
    assert re.search(r"^\| 1 \| [^|]+ \| 6\.0s \|", report, re.M)
    assert re.search(r"^## Checkpoint 2: .* \(\+12s\)$", report, re.M)
    page = (tmp_path / "reports" / "report.html").read_text()
    assert "(+6.0s)" in page and "(+7.2s)" not in page


def test_html_marks_need_no_emoji_font(tmp_path: Path) -> None:
    _, folder = _replay(tmp_path, hang_at=T0 + 13 * HOUR)
    page = (folder / "report.html").read_text()
    # emoji are empty boxes on a machine without an emoji font (a headless browser, a server)
    assert not re.search("[\u2705\u274c\u2754\u23f3\u23ed]", page)
    assert "✓ pass" in page and "✗ fail" in page and "– skipped" in page
    assert "❌ fail" in (folder / "report.md").read_text()  # Markdown keeps its marks


def test_charts_of_a_hung_execution_are_not_blank(tmp_path: Path) -> None:
    doc, _ = _replay(tmp_path)
    for cp in doc["checkpoints"]:
        cp["figures"]["interval"]["details"]["durations"] = []
    last = doc["checkpoints"][-1]["figures"]
    last["interval"]["values"]["executions.running"] = 1
    last["cumulative"]["values"]["executions.running"] = 1
    page = render_html(doc)
    charts = _svgs(page)
    durations = charts["Execution durations over time"]  # drawn: axes and the limit line
    assert "limit 10m" in [t.text for t in _texts(durations)]
    assert "1 execution(s) still running at the last checkpoint" in page
    titles = [
        e.text
        for e in charts["Execution outcomes per checkpoint"].iter()
        if e.tag.endswith("title")
    ]
    assert "#6 still running: 1" in titles


def test_chart_labels_do_not_overlap_with_many_checkpoints(tmp_path: Path) -> None:
    doc, _ = _replay(tmp_path)
    first = doc["checkpoints"][0]
    many = []
    for i in range(150):
        cp = json.loads(json.dumps(first))
        cp["index"] = i + 1
        many.append(cp)
    doc["checkpoints"] = many
    doc["schedule"] = [  # 150 checkpoints over the 24-hour window
        {**doc["schedule"][0], "index": i + 1, "at": rfc3339(T0 + (i + 1) * 576)}
        for i in range(150)
    ]
    last = doc["checkpoints"][-1]["figures"]["cumulative"]["details"]
    last["rejected_by_reason"] = {f"a_rather_long_reason_code_number_{k}": k + 1 for k in range(15)}
    charts = _svgs(render_html(doc))
    for title in ("Execution durations over time", "Execution outcomes per checkpoint"):
        row = sorted(
            (float(t.get("x") or 0), t.text or "")
            for t in _texts(charts[title])
            if float(t.get("y") or 0) == H - PAD_B + 15
        )
        assert 4 <= len(row) <= 20, title
        for (x1, a), (x2, b) in itertools.pairwise(row):
            assert x2 - x1 >= 7 * (len(a) + len(b)) / 2, (title, a, b)
        lines = [e for e in charts[title].iter() if e.get("class") == "checkpoint"]
        assert len(lines) <= 25
    reasons = charts["Rejections by reason"]
    labels = [t for t in _texts(reasons) if t.get("text-anchor") == "end"]
    assert len(labels) == 12
    for t in labels:  # right-aligned at x: they fit in the room on their left
        assert float(t.get("x") or 0) - 7 * len(t.text or "") >= 0, t.text
    page = render_html(doc)
    assert "And 3 more reason(s)" in page


def test_html_and_markdown_drop_bidi_controls_and_escape_dollars(tmp_path: Path) -> None:
    sneaky = "ok \u202egnp.exe\u202c $x^2$ \x00"
    doc, _ = _replay(tmp_path, error=sneaky)
    page = render_html(doc)
    assert "\u202e" not in page and "\x00" not in page
    text = render_markdown(doc)
    assert "\u202e" not in text and "\\$x^2\\$" in text
