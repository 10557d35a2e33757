"""Report polish from a newcomer's first hour: axis units, the run's header, and a
relative bound on a baseline of 0."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from steadyq.watch.reports import (
    EMPTY_COMPARISON,
    _bound_md,
    _ticks,
    duration_axis_format,
    render_html,
    render_markdown,
    run_label,
)
from tests.watch.test_reports import _replay


@pytest.mark.parametrize(
    ("ticks", "labels"),
    [
        ([0, 30, 60, 90], ["0s", "30s", "60s", "90s"]),
        ([0, 600, 1200, 1800], ["0m", "10m", "20m", "30m"]),
        ([0, 1800, 3600, 5400], ["0m", "30m", "60m", "90m"]),
        ([0, 3600, 7200], ["0h", "1h", "2h"]),
        ([0, 0.5, 1.0, 1.5], ["0s", "0.5s", "1s", "1.5s"]),
    ],
)
def test_a_duration_axis_has_one_unit(ticks: list[float], labels: list[str]) -> None:
    label = duration_axis_format(ticks)
    assert [label(t) for t in ticks] == labels


@pytest.mark.parametrize("high", [0.7, 4.2, 13.0, 95.0, 700.0, 5000.0, 30000.0])
def test_every_duration_axis_the_reports_draw_has_one_unit(high: float) -> None:
    ticks = _ticks(high, seconds=True)
    label = duration_axis_format(ticks)
    units = {re.sub(r"[\d.]", "", label(t)) for t in ticks}
    assert len(units) == 1, [label(t) for t in ticks]


def test_the_drawn_duration_chart_labels_share_a_unit(tmp_path: Path) -> None:
    doc, _ = _replay(tmp_path)
    page = render_html(doc)
    chart = re.search(r"<svg.*?</svg>", page, re.S)
    assert chart is not None
    labels = re.findall(r'text-anchor="end"[^>]*>([^<]+)<', chart.group(0))
    ticks = [x for x in labels if re.fullmatch(r"[\d.]+[smhd]", x)]
    assert len(ticks) >= 3 and len({t[-1] for t in ticks}) == 1, labels


def test_a_finished_run_is_not_called_live(tmp_path: Path) -> None:
    doc, _ = _replay(tmp_path)
    assert doc["verdict"] is not None
    live = copy.deepcopy(doc)
    live["run"]["mode"] = "live"
    for text in (render_markdown(live), render_html(live)):
        assert "(live)" not in text and "watched as it happened" in text
    assert "replay of recorded telemetry" in render_markdown(doc)
    running = copy.deepcopy(live)
    running["verdict"] = None
    running["run"]["status"] = "running"
    assert run_label(running) == "live"
    running["run"]["status"] = "interrupted"
    assert run_label(running) == "live, interrupted"


def test_a_relative_bound_on_a_baseline_of_zero_says_the_comparison_is_empty() -> None:
    criterion = {
        "measure": "executions.failure_rate",
        "bound": {"max": 0.0, "min": None},
        "baseline_value": 0.0,
    }
    text = _bound_md(criterion, {"max_vs_baseline": "+10%"})
    assert EMPTY_COMPARISON in text
    assert "comparison is empty" in text
    absolute = _bound_md({**criterion, "baseline_value": 0.0}, {"max_vs_baseline": "+3"})
    assert "comparison is empty" not in absolute, "'+3' of 0 is a real bound"
    nonzero = _bound_md({**criterion, "baseline_value": 0.2}, {"max_vs_baseline": "+10%"})
    assert "comparison is empty" not in nonzero


def test_a_replay_only_reads_the_store(tmp_path: Path) -> None:
    import hashlib

    from steadyq.brokers import open_queue, store_for
    from steadyq.watch.plan import parse_plan
    from steadyq.watch.run import run_watch
    from tests.conftest import FakeClock
    from tests.watch.test_run import DAY, T0, incident_events, open_store, plan_text

    clock = FakeClock(T0 + DAY + 10)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    queue, store = open_store(url, clock)
    store.write(incident_events())
    queue.close()
    before = hashlib.sha256((tmp_path / "db.sqlite").read_bytes()).hexdigest()
    queue = open_queue(url, read_only=True)
    with queue:
        result = run_watch(
            parse_plan(plan_text()),
            store_for(queue, read_only=True),
            queue,
            tmp_path / "reports",
            clock=clock,
            replay=True,
        )
    assert result.report["verdict"] == "PASSED"
    after = hashlib.sha256((tmp_path / "db.sqlite").read_bytes()).hexdigest()
    assert after == before, "nothing was written to the store"
