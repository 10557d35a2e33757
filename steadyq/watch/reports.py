"""The three reports of a watch, rewritten atomically after every checkpoint.

* ``report.json``: the whole run as data, in a versioned schema (``SCHEMA_VERSION``,
  documented in ``docs/watch.md``); the other two are rendered from it;
* ``report.md``: the living document the incident team kept by hand;
* ``report.html``: one self-contained page (inline CSS and SVG, no script, no network)
  with the same content and four charts.

Everything that came from a message or a plan (error texts, log templates, examples,
reasons, names) is escaped for the format it lands in: Markdown specials and HTML in
``report.md``, HTML by jinja2's autoescape in ``report.html``.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2

from steadyq._files import write_atomic
from steadyq.durations import format_duration, rfc3339
from steadyq.exit_codes import verdict_code
from steadyq.watch.judge import CriterionResult, fmt, pending, unit_of
from steadyq.watch.plan import Plan

if TYPE_CHECKING:
    from steadyq.watch.run import CheckpointRecord, RunState

SCHEMA_VERSION = 1
REPORT_FILES = ("report.json", "report.md", "report.html")

# the before/after table: (label, measure)
COMPARISON = (
    ("Executions", "executions.total"),
    ("Succeeded", "executions.succeeded"),
    ("Timed out", "executions.timed_out"),
    ("Other failures", "executions.failed"),
    ("Success rate", "executions.success_rate"),
    ("Longest execution", "executions.duration_s.max"),
    ("Invalid-input rejections", "messages.rejected"),
    ("Dead-lettered by the handler", "messages.dead_lettered"),
)

# the figures of a checkpoint's section, in both report.md and report.html: (label, measure)
CHECKPOINT_FIGURES = (
    ("Total executions", "executions.total"),
    ("Successes", "executions.succeeded"),
    ("Timeouts", "executions.timed_out"),
    ("Other failures", "executions.failed"),
    ("Still running", "executions.running"),
    ("Invalid-input rejections", "messages.rejected"),
    ("Execution time avg", "executions.duration_s.avg"),
    ("Execution time min", "executions.duration_s.min"),
    ("Execution time max", "executions.duration_s.max"),
    ("Startup time max", "executions.startup_s.max"),
    ("Messages succeeded", "messages.succeeded"),
    ("Dead-lettered by the handler", "messages.dead_lettered"),
    ("Rejection latency p99", "messages.rejection_latency_ms.p99"),
    ("Warnings and errors logged", "logs.warnings"),
)

# an execution's outcome: (legend, measure, colour); "still running" makes a bar as tall as
# the executions started in its interval, so a hung execution does not leave it empty
_OUTCOMES = (
    ("succeeded", "executions.succeeded", "#2e7d32"),
    ("timed out", "executions.timed_out", "#c62828"),
    ("other failures", "executions.failed", "#ef6c00"),
    ("interrupted", "executions.interrupted", "#757575"),
    ("still running", "executions.running", "#64b5f6"),
)


# -- the JSON document -----------------------------------------------------------------------


def _stamp(epoch: float | None) -> str | None:
    return None if epoch is None else rfc3339(epoch)


def _hours(seconds: float) -> float:
    """Hours elapsed, to the millisecond: three decimals of an hour (3.6 s) would turn a
    6-second checkpoint into "7.2s" in the reports of a short plan."""
    return round(seconds / 3600, 7)


def checkpoint_status(criteria: Sequence[CriterionResult]) -> str:
    """``fail`` when a counted criterion breached here, ``no_data`` when none had data."""
    counted = [r for r in criteria if not r.dry_run]
    if any(r.observed == "fail" for r in counted):
        return "fail"
    if counted and all(r.observed == "no_data" for r in counted):
        return "no_data"
    return "pass"


def _anomalies(record: CheckpointRecord) -> list[dict[str, Any]]:
    values = record.values("interval")
    details = record.interval.get("details") or {}
    found: list[dict[str, Any]] = []
    for measure, text in (
        ("executions.timed_out", "executions timed out"),
        ("requests.failed_in_multiple_executions", "requests failed in more than one execution"),
        ("messages.rejected.redelivered", "rejected messages were delivered more than once"),
        ("messages.timed_out", "handler calls hit their deadline"),
    ):
        count = values.get(measure)
        if isinstance(count, int | float) and count > 0:
            found.append({"kind": measure, "count": count, "text": f"{fmt(count)} {text}"})
    for pattern in details.get("new_patterns") or []:
        if isinstance(pattern, Mapping):
            found.append(
                {
                    "kind": "errors.new_patterns",
                    "count": pattern.get("count"),
                    "template": str(pattern.get("template", "")),
                    "example": str(pattern.get("example", "")),
                    "text": f"new error pattern, seen {pattern.get('count')} times",
                }
            )
    for r in record.criteria:
        if r.observed == "fail":
            found.append(
                {
                    "kind": "criterion",
                    "criterion": r.name,
                    "text": f"criterion {r.name!r} breached: {r.reason}",
                }
            )
    return found


def _notes(record: CheckpointRecord) -> str:
    parts = []
    failing = [r.name for r in record.criteria if r.observed == "fail" and not r.dry_run]
    if failing:
        parts.append("failing: " + ", ".join(failing))
    dry = [r.name for r in record.criteria if r.observed == "fail" and r.dry_run]
    if dry:
        parts.append("dry run breached: " + ", ".join(dry))
    patterns = (record.interval.get("details") or {}).get("new_patterns") or []
    if patterns:
        parts.append(f"{len(patterns)} new error pattern(s)")
    if record.queue_note and record.queue is None:
        parts.append("queue not sampled")
    if record.source_note:
        parts.append("taken late: the source was unavailable")
    if record.decision is not None:
        parts.append(
            f"{record.decision.verdict.value}" + (" (early)" if record.decision.early else "")
        )
    return "; ".join(parts) or "no breach"


def build_report(
    plan: Plan, run: RunState, times: Sequence[float], *, now: float
) -> dict[str, Any]:
    """The ``report.json`` document of a run (schema ``SCHEMA_VERSION``)."""
    start = run.window_start
    taken = {r.index: r for r in run.checkpoints}
    schedule = []
    for index, at in enumerate(times):
        record = taken.get(index)
        if record is not None:
            status, notes = checkpoint_status(record.criteria), _notes(record)
        elif run.verdict is not None:
            status, notes = "skipped", "not taken: the watch had ended"
        else:
            status, notes = "pending", ""
        schedule.append(
            {
                "index": index + 1,
                "at": rfc3339(at),
                "hours_elapsed": _hours(at - start),
                "status": status,
                "notes": notes,
            }
        )
    checkpoints = []
    for record in run.checkpoints:
        checkpoints.append(
            {
                "index": record.index + 1,
                "at": rfc3339(record.at),
                "taken_at": rfc3339(record.taken_at),
                "hours_elapsed": _hours(record.at - start),
                "status": checkpoint_status(record.criteria),
                "figures": {"interval": record.interval, "cumulative": record.cumulative},
                "queue": record.queue,
                "queue_note": record.queue_note,
                "source_note": record.source_note,
                "criteria": [r.to_dict() for r in record.criteria],
                "risks": record.risks,
                "anomalies": _anomalies(record),
                "decision": None if record.decision is None else record.decision.to_dict(),
            }
        )
    last = run.checkpoints[-1] if run.checkpoints else None
    criteria = last.criteria if last is not None else pending(plan)
    if last is not None:
        risks = last.risks
    else:
        from steadyq.watch.judge import judge_risk

        risks = [judge_risk(r, None) for r in plan.risks]
    before = (run.baseline or {}).get("values") or {}
    after = last.values() if last is not None else {}
    comparison = [
        {
            "label": label,
            "measure": measure,
            "unit": unit_of(measure),
            "before": before.get(measure) if run.baseline is not None else None,
            "after": after.get(measure),
        }
        for label, measure in COMPARISON
    ]
    next_at = None
    if run.verdict is None and len(run.checkpoints) < len(times):
        next_at = times[len(run.checkpoints)]
    status = run.status
    used = sorted({c.measure for c in plan.criteria} | {r.measure for r in plan.risks if r.measure})
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": rfc3339(now),
        "run": {
            "id": run.run_id,
            "mode": run.mode,
            "status": status,
            "window_start": rfc3339(run.window_start),
            "window_end": rfc3339(run.window_end),
            "created_at": rfc3339(run.created_at),
            "updated_at": rfc3339(run.updated_at),
            "checkpoints_taken": len(run.checkpoints),
            "checkpoints_planned": len(times),
            "next_checkpoint_at": _stamp(next_at),
        },
        "verdict": None if run.verdict is None else run.verdict.value,
        "verdict_reason": run.verdict_reason,
        "decision": None if run.verdict is None else run.verdict.decision,
        "exit_code": None if run.verdict is None else int(verdict_code(run.verdict)),
        "ended_early": run.ended_early,
        "plan": plan.to_doc(),
        "baseline": None
        if plan.baseline is None
        else {
            "start": rfc3339(plan.baseline.start),
            "end": rfc3339(plan.baseline.end),
            "figures": run.baseline,
        },
        "comparison": comparison,
        "schedule": schedule,
        "checkpoints": checkpoints,
        "criteria": [r.to_dict() for r in criteria],
        "risks": risks,
        "alerts": [{k: v for k, v in a.items() if k != "id"} for a in run.alerts],
        "measures": {
            name: {"unit": unit_of(name), "description": _description(name)} for name in used
        },
    }


def _description(name: str) -> str:
    try:
        from steadyq.watch.measures import MEASURES
    except ImportError:  # pragma: no cover
        return ""
    found = MEASURES.get(name)
    return str(getattr(found, "description", "")) if found is not None else ""


# -- Markdown ---------------------------------------------------------------------------------

# ``$`` too: GitHub renders ``$…$`` as mathematics
_MD_SPECIAL = re.compile(r"([\\`*_\[\]#|~$])")
# control characters, line separators and the bidirectional controls that can make a
# report show text in another order than it has ("Trojan Source")
_BIDI = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029{_BIDI}]")
_HTML_CONTROL = re.compile(f"[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f-\\x9f{_BIDI}]")


def md(value: object) -> str:
    """Text made inert for Markdown: one line, HTML escaped, Markdown specials escaped."""
    text = "" if value is None else str(value)
    text = _CONTROL.sub(" ", text)
    text = " ".join(text.split())
    text = html.escape(text, quote=False)
    return _MD_SPECIAL.sub(r"\\\1", text)


def _t(stamp: str | None) -> str:
    """An RFC 3339 time for people: to the second, ``2026-11-04 12:00:00Z``."""
    if not stamp:
        return "—"
    return stamp[:19].replace("T", " ") + "Z"


def _elapsed(hours: float) -> str:
    """Time since the window start: ``4h``, ``1h30m``, ``20s``."""
    return format_duration(hours * 3600) if hours > 0 else "0s"


def _num(value: Any, unit: str = "") -> str:
    if value is None:
        return "—"
    if unit in ("ratio", "fraction"):
        return f"{float(value) * 100:.1f} %"
    if unit == "%":
        return f"{float(value):.1f} %"
    if unit == "s" and isinstance(value, int | float):
        return format_duration(float(value))
    if unit == "ms":
        return f"{float(value):.1f} ms"
    return fmt(value)


def run_label(doc: Mapping[str, Any]) -> str:
    """How the run was made, for the header: a live run is 'live' only while it runs."""
    run = doc["run"]
    if run.get("mode") == "replay":
        return "replay of recorded telemetry"
    if doc.get("verdict") is None:
        status = run.get("status")
        return "live" if status == "running" else f"live, {status}"
    return "watched as it happened"


def _measure(values: Mapping[str, Any], name: str) -> str:
    return _num(values.get(name), unit_of(name))


_MARK = {"pass": "✅ pass", "fail": "❌ fail", "no_data": "❔ no data", "pending": "⏳ pending"}
_STATUS_MARK = {
    "pass": "✅ pass",
    "fail": "❌ fail",
    "no_data": "❔ no data",
    "pending": "⏳ pending",
    "skipped": "⏭ skipped",
}
# report.html's marks: no emoji, which many machines (servers, headless browsers, older
# desktops) draw as empty boxes; these glyphs are in every common font, and the colour
# comes from the page's CSS
_HTML_MARK = {
    "pass": "✓ pass",
    "fail": "✗ fail",
    "no_data": "? no data",
    "pending": "… pending",
    "skipped": "– skipped",
}


def _bound_md(c: Mapping[str, Any], plan_c: Mapping[str, Any] | None, esc: Any = None) -> str:
    """A criterion's bound in words; ``esc`` escapes plan text (default: for Markdown)."""
    esc = esc or md
    unit = unit_of(str(c["measure"]))
    parts = []
    bound = c.get("bound") or {}
    rel = plan_c or {}
    for side in ("max", "min"):
        value = bound.get(side)
        change = rel.get(f"{side}_vs_baseline")
        if value is not None:
            parts.append(
                f"{side} {_num(value, unit)}"
                + (f" (baseline {esc(change)})" if change is not None else "")
                + (f"; {EMPTY_COMPARISON}" if _empty_comparison(c, change) else "")
            )
        elif change is not None:
            parts.append(f"{side} baseline {esc(change)}")
    return " and ".join(parts) or "—"


EMPTY_COMPARISON = "the baseline is 0, so a change in % of it is 0 too: the comparison is empty"


def _empty_comparison(c: Mapping[str, Any], change: object) -> bool:
    """A bound in % of a baseline of 0: whatever the percentage, it allows only 0."""
    base = c.get("baseline_value")
    return (
        isinstance(change, str)
        and change.strip().endswith("%")
        and isinstance(base, int | float)
        and base == 0
    )


def _flags(c: Mapping[str, Any]) -> str:
    flags = []
    if c.get("critical"):
        flags.append("critical")
    if c.get("dry_run"):
        flags.append("dry run")
    if c.get("scope") == "checkpoint":
        flags.append("per checkpoint")
    return f" ({', '.join(flags)})" if flags else ""


def render_markdown(doc: Mapping[str, Any]) -> str:
    """``report.md`` from a report document."""
    plan = doc["plan"]
    run = doc["run"]
    plan_criteria = {c["name"]: c for c in plan["criteria"]}
    out: list[str] = []
    add = out.append
    add(f"# Stability watch: {md(plan['name'])}")
    add("")
    if doc["verdict"] is None:
        state = "RUNNING" if run["status"] == "running" else run["status"].upper()
        nxt = run.get("next_checkpoint_at")
        add(
            f"**Status:** {state}: {run['checkpoints_taken']} of {run['checkpoints_planned']}"
            " checkpoints taken" + (f"; next at {_t(nxt)}" if nxt else "")
        )
    else:
        early = " (ended early)" if doc["ended_early"] else ""
        add(f"**Status:** finished: **{doc['verdict']}**{early}, {md(doc['decision'])}")
    add("")
    add(
        f"**Window:** {_t(run['window_start'])} → {_t(run['window_end'])}"
        f" ({format_duration(plan['window_s'])}, a checkpoint every"
        f" {format_duration(plan['checkpoint_every_s'])})  "
    )
    if plan.get("purpose"):
        add(f"**Purpose:** {md(plan['purpose'])}  ")
    if plan.get("description"):
        add(f"**Description:** {md(plan['description'])}  ")
    add(f"**Run:** {md(run['id'])} ({run_label(doc)}), report written {_t(doc['generated_at'])}")
    add("")

    add("## Before / after")
    add("")
    if doc["baseline"] is None:
        add("No baseline window in the plan: the table shows the window so far only.")
        add("")
    else:
        add(
            f"Before: {_t(doc['baseline']['start'])} → {_t(doc['baseline']['end'])}."
            " After: the watch window so far."
        )
        add("")
    add("| | Before | After |")
    add("|---|---:|---:|")
    for row in doc["comparison"]:
        add(
            f"| {row['label']} | {_num(row['before'], row['unit'])}"
            f" | {_num(row['after'], row['unit'])} |"
        )
    add("")

    add("## Success criteria")
    add("")
    add("| Status | Criterion | Measure | Bound | Value | Baseline | Reason |")
    add("|---|---|---|---|---:|---:|---|")
    for c in doc["criteria"]:
        unit = unit_of(str(c["measure"]))
        add(
            f"| {_MARK.get(c['status'], c['status'])} | {md(c['name'])}{_flags(c)}"
            f" | {md(c['measure'])} | {_bound_md(c, plan_criteria.get(c['name']))}"
            f" | {_num(c['value'], unit)} | {_num(c['baseline_value'], unit)} | {md(c['reason'])} |"
        )
    add("")

    add("## Checkpoint schedule")
    add("")
    add("| # | Time (UTC) | Elapsed | Status | Notes |")
    add("|---:|---|---:|---|---|")
    for row in doc["schedule"]:
        add(
            f"| {row['index']} | {_t(row['at'])} | {_elapsed(row['hours_elapsed'])}"
            f" | {_STATUS_MARK.get(row['status'], row['status'])} | {md(row['notes'])} |"
        )
    add("")

    for cp in doc["checkpoints"]:
        _checkpoint_md(cp, add)

    add("## Risks")
    add("")
    if not doc["risks"]:
        add("No risks in the plan.")
    else:
        add("| Risk | Probability | Impact | Mitigation | Measure | Status |")
        add("|---|---|---|---|---|---|")
        for r in doc["risks"]:
            measure = md(r["measure"]) if r.get("measure") else "—"
            add(
                f"| {md(r['name'])} | {md(r['probability'])} | {md(r['impact'])}"
                f" | {md(r['mitigation'])} | {measure} | {md(r['status'])}: {md(r['reason'])} |"
            )
    add("")

    if doc["alerts"]:
        add("## Alerts")
        add("")
        for a in doc["alerts"]:
            sent = a.get("deliveries")
            how = (
                "not sent yet"
                if sent is None
                else ", ".join(
                    f"{d['channel']} {'ok' if d['ok'] else 'FAILED'} ({md(d['detail'])})"
                    for d in sent
                )
                or "terminal only"
            )
            add(f"- {_t(a['at'])}: {md(a['message'])} [{how}]")
        add("")

    add("## Decision")
    add("")
    if doc["verdict"] is None:
        add(f"Pending: the watch ends at {_t(run['window_end'])}.")
    else:
        add(f"**{doc['verdict']}: {md(doc['decision']).upper()}**")
        add("")
        add(md(doc["verdict_reason"]))
    add("")
    return "\n".join(out)


def _checkpoint_md(cp: Mapping[str, Any], add: Any) -> None:
    interval = cp["figures"]["interval"].get("values") or {}
    cumulative = cp["figures"]["cumulative"].get("values") or {}
    details = cp["figures"]["interval"].get("details") or {}
    add(f"## Checkpoint {cp['index']}: {_t(cp['at'])} (+{_elapsed(cp['hours_elapsed'])})")
    add("")
    add(f"Status: {_STATUS_MARK.get(cp['status'], cp['status'])}. Taken at {_t(cp['taken_at'])}.")
    add("")
    if cp.get("source_note"):
        add(f"Source: {md(cp['source_note'])}.")
        add("")
    add("| Figure | This interval | Window so far |")
    add("|---|---:|---:|")
    for label, name in CHECKPOINT_FIGURES:
        add(f"| {label} | {_measure(interval, name)} | {_measure(cumulative, name)} |")
    add("")
    by_reason = details.get("rejected_by_reason") or {}
    if by_reason:
        add(
            "Rejections by reason: "
            + ", ".join(f"{md(k)} {fmt(v)}" for k, v in sorted(by_reason.items()))
            + "."
        )
        add("")
    queue = cp.get("queue")
    if queue:
        add(
            "Queue: "
            + ", ".join(
                f"{label} {_num(queue.get(name), unit_of(name))}"
                for label, name in (
                    ("ready", "queue.ready"),
                    ("in flight", "queue.in_flight"),
                    ("oldest unacked", "queue.oldest_unacked_age_s"),
                    ("DLQ size", "dlq.size"),
                )
            )
            + "."
        )
    else:
        add(f"Queue: not sampled ({md(cp.get('queue_note') or 'no sample')}).")
    add("")
    anomalies = cp["anomalies"]
    add("Anomalies:" if anomalies else "Anomalies: none.")
    for a in anomalies:
        if a["kind"] == "errors.new_patterns":
            add(
                f"- New error pattern ({fmt(a.get('count'))}×): {md(a['template'])};"
                f" example: {md(a['example'])}"
            )
        else:
            add(f"- {md(a['text'])}")
    add("")
    add("| Criterion | Status | Value | Reason |")
    add("|---|---|---:|---|")
    for c in cp["criteria"]:
        add(
            f"| {md(c['name'])}{_flags(c)} | {_MARK.get(c['status'], c['status'])}"
            f" | {_num(c['value'], unit_of(str(c['measure'])))} | {md(c['reason'])} |"
        )
    add("")
    if cp.get("decision"):
        add(
            f"Decision at this checkpoint: **{cp['decision']['verdict']}**:"
            f" {md(cp['decision']['reason'])}"
        )
        add("")


# -- HTML and its charts -----------------------------------------------------------------------

# A chart's drawing size. The page shows it at this size (two side by side on a wide screen)
# and only shrinks it on a narrow one, so its 12px text stays 12px on screen.
W, H = 480, 280
PAD_L, PAD_R, PAD_T, PAD_B = 58, 18, 30, 46
_CHAR_W = 7.0  # the width of a character of the charts' 12px text, a little generously
_MAX_LINES = 24  # checkpoint lines drawn at most: more would paint the plot grey


def _shape(tag: str, text: str = "", **attrs: Any) -> dict[str, Any]:
    clean = {k.rstrip("_").replace("_", "-"): v for k, v in attrs.items()}
    return {"tag": tag, "attrs": sorted(clean.items()), "text": text}


_SECOND_STEPS = (
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    14400,
    21600,
    43200,
    86400,
)


def _ticks(high: float, count: int = 5, *, seconds: bool = False) -> list[float]:
    """Round values from 0 to ``high`` for an axis; whole minutes and hours for durations."""
    if high <= 0:
        return [0.0]
    if seconds:
        step = float(next((s for s in _SECOND_STEPS if high / s <= count), 0.0))
        if not step:  # longer than days: whole days
            step = 86400.0 * math.ceil(high / 86400 / count)
        return [round(step * i, 6) for i in range(int(high / step) + 1)]
    step = 10 ** math.floor(math.log10(high / count))
    for mult in (1, 2, 5, 10):
        if high / (step * mult) <= count:
            step *= mult
            break
    step = max(step, 1.0)  # every other axis counts things
    return [step * i for i in range(int(high / step) + 1)]


_AXIS_UNITS = (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0))


def duration_axis_format(ticks: Sequence[float]) -> Any:
    """One unit for every label of a duration axis (``0s 30s 60s 90s``, ``0m 10m 20m``,
    never ``1.0s`` beside ``10s`` or ``1m30s``): the largest unit that divides each tick,
    seconds with decimals below one second."""
    unit, size = "s", 1.0
    for name, length in _AXIS_UNITS:
        if all(abs(t / length - round(t / length)) < 1e-9 for t in ticks):
            unit, size = name, length
            break

    def label(value: float) -> str:
        return f"{value / size:g}{unit}"

    return label


def _axes(
    shapes: list[dict[str, Any]],
    y_high: float,
    y_label: str,
    y_fmt: Any,
    *,
    seconds: bool = False,
) -> None:
    shapes.append(_shape("line", x1=PAD_L, y1=H - PAD_B, x2=W - PAD_R, y2=H - PAD_B, class_="axis"))
    shapes.append(_shape("line", x1=PAD_L, y1=PAD_T, x2=PAD_L, y2=H - PAD_B, class_="axis"))
    for tick in _ticks(y_high, seconds=seconds):
        y = _y(tick, y_high)
        shapes.append(_shape("line", x1=PAD_L - 4, y1=y, x2=W - PAD_R, y2=y, class_="grid"))
        shapes.append(_shape("text", y_fmt(tick), x=PAD_L - 7, y=y + 4, text_anchor="end"))
    # above the plot, where no tick label can run into it
    shapes.append(_shape("text", y_label, x=4, y=14, class_="label"))


def _stride(count: int, room: float, label_w: float) -> int:
    """Label every n-th of ``count`` evenly spread items so that labels do not touch."""
    if count <= 1:
        return 1
    return max(1, math.ceil(label_w / max(room / count, 1e-9)))


def _time_axis(
    shapes: list[dict[str, Any]], times: Sequence[float], start: float, end: float
) -> None:
    """The x axis of a chart over the window: a dashed line and ``#k`` at each checkpoint
    (thinned when there are many), the window's start and end times below."""
    n = len(times)
    lines = math.ceil(n / _MAX_LINES)
    labels = _stride(n, W - PAD_L - PAD_R, _CHAR_W * (len(str(n)) + 2) + 6)
    for i, at in enumerate(times):
        x = _x(at, start, end)
        last = i == n - 1
        if i % lines == 0 or last:
            shapes.append(_shape("line", x1=x, y1=PAD_T, x2=x, y2=H - PAD_B, class_="checkpoint"))
        if (i + 1) % labels == 0:
            shapes.append(_shape("text", f"#{i + 1}", x=x, y=H - PAD_B + 15, text_anchor="middle"))
    shapes.append(_shape("text", _t(rfc3339(start)), x=PAD_L, y=H - 6, class_="time"))
    shapes.append(
        _shape("text", _t(rfc3339(end)), x=W - PAD_R, y=H - 6, text_anchor="end", class_="time")
    )


def _y(value: float, high: float) -> float:
    return round(H - PAD_B - (value / high if high > 0 else 0) * (H - PAD_T - PAD_B), 1)


def _x(value: float, low: float, high: float) -> float:
    span = high - low if high > low else 1.0
    return round(PAD_L + (value - low) / span * (W - PAD_L - PAD_R), 1)


def _legend(name: str, colour: str, kind: str = "box") -> dict[str, str]:
    return {"name": name, "colour": colour, "kind": kind}


def _duration_limit(doc: Mapping[str, Any]) -> float:
    """The ``executions.duration_s.max`` criterion's ``max`` (as resolved when it is relative
    to the baseline), else 10 minutes."""
    names = ("executions.duration_s.max", "executions.duration_s.p95")
    for c in doc["plan"]["criteria"]:
        if c["measure"] in names and c.get("max") is not None:
            return float(c["max"])
    for c in doc["criteria"]:
        bound = (c.get("bound") or {}).get("max")
        if c.get("measure") in names and isinstance(bound, int | float) and bound > 0:
            return float(bound)
    return 600.0


def chart_durations(
    doc: Mapping[str, Any], times: Sequence[float], start: float, end: float
) -> dict[str, Any]:
    """Each finished execution's duration at its finishing time, against the limit line."""
    limit = _duration_limit(doc)
    points: list[tuple[float, float, str]] = []
    for cp in doc["checkpoints"]:
        for row in (cp["figures"]["interval"].get("details") or {}).get("durations") or []:
            try:
                points.append((float(row[0]), float(row[1]), str(row[2])))
            except (TypeError, ValueError, IndexError):
                continue
    high = max([limit * 1.15] + [p[1] * 1.1 for p in points])
    shapes: list[dict[str, Any]] = []
    ticks = _ticks(high, seconds=True)
    _axes(shapes, high, "duration", duration_axis_format(ticks), seconds=True)
    _time_axis(shapes, times, start, end)
    y = _y(limit, high)
    shapes.append(_shape("line", x1=PAD_L, y1=y, x2=W - PAD_R, y2=y, class_="limit"))
    shapes.append(
        _shape(
            "text",
            f"limit {format_duration(limit)}",
            x=W - PAD_R - 4,
            y=y - 5,
            text_anchor="end",
            class_="limit-label",
        )
    )
    colours = {"succeeded": "#2e7d32", "timed_out": "#c62828", "failed": "#ef6c00"}
    for at, duration, status in points:
        shapes.append(
            _shape(
                "circle",
                f"{status.replace('_', ' ')}: {format_duration(duration)}"
                f" (ended {_t(rfc3339(at))})",
                cx=_x(min(max(at, start), end), start, end),
                cy=_y(min(duration, high), high),
                r=4 if len(points) <= 200 else 2.5,
                fill=colours.get(status, "#757575"),
            )
        )
    note = ""
    if not points:
        note = "No execution finished in the window yet."
    if doc["checkpoints"]:
        running = (doc["checkpoints"][-1]["figures"]["cumulative"].get("values") or {}).get(
            "executions.running"
        )
        if isinstance(running, int | float) and running > 0:
            note += (
                f" {fmt(running)} execution(s) still running at the last checkpoint,"
                " not drawn until they end."
            )
    return {
        "title": "Execution durations over time",
        "shapes": shapes,
        "empty": "",
        "note": note.strip(),
        "legend": [
            _legend("succeeded", "#2e7d32", "dot"),
            _legend("timed out", "#c62828", "dot"),
            _legend("other failure", "#ef6c00", "dot"),
            _legend(f"limit {format_duration(limit)}", "#c62828", "dash"),
        ],
    }


def chart_outcomes(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Execution outcomes per checkpoint interval (the baseline first, when there is one)."""
    bars: list[tuple[str, list[tuple[str, float, str]]]] = []
    baseline = doc.get("baseline")
    if baseline and baseline.get("figures"):
        values = baseline["figures"].get("values") or {}
        bars.append(("before", [(n, float(values.get(m) or 0), c) for n, m, c in _OUTCOMES]))
    for cp in doc["checkpoints"]:
        values = cp["figures"]["interval"].get("values") or {}
        bars.append(
            (f"#{cp['index']}", [(n, float(values.get(m) or 0), c) for n, m, c in _OUTCOMES])
        )
    high = max([1.0] + [sum(v for _, v, _ in parts) * 1.1 for _, parts in bars])
    shapes: list[dict[str, Any]] = []
    _axes(shapes, high, "executions", lambda v: fmt(v))
    room = W - PAD_L - PAD_R
    slot = room / max(1, len(bars))
    width = min(48.0, slot * 0.6)
    widest = max([len(label) for label, _ in bars] + [1])
    stride = _stride(len(bars), room, _CHAR_W * widest + 6)
    for i, (label, parts) in enumerate(bars):
        x = PAD_L + slot * i + (slot - width) / 2
        base = 0.0
        for name, value, colour in parts:
            if value <= 0:
                continue
            top, bottom = _y(base + value, high), _y(base, high)
            shapes.append(
                _shape(
                    "rect",
                    f"{label} {name}: {fmt(value)}",
                    x=round(x, 1),
                    y=top,
                    width=round(max(width, 0.5), 2),
                    height=round(bottom - top, 1),
                    fill=colour,
                )
            )
            base += value
        if i % stride == 0:
            shapes.append(
                _shape(
                    "text", label, x=round(x + width / 2, 1), y=H - PAD_B + 15, text_anchor="middle"
                )
            )
    return {
        "title": "Execution outcomes per checkpoint",
        "shapes": shapes,
        "empty": "" if bars else "no checkpoint taken yet",
        "legend": [_legend(n, c) for n, _, c in _OUTCOMES],
        "note": "Each bar: the executions that ended in the checkpoint's interval, and those"
        " still running at it.",
    }


def chart_queue(
    doc: Mapping[str, Any], start: float, end: float, times: Sequence[float]
) -> dict[str, Any]:
    """Queue backlog (ready, in flight) at each checkpoint that sampled the queue."""
    samples = [
        (times[cp["index"] - 1], cp["queue"]) for cp in doc["checkpoints"] if cp.get("queue")
    ]
    series = (
        ("ready", "queue.ready", "#1565c0"),
        ("in flight", "queue.in_flight", "#8e24aa"),
        ("DLQ size", "dlq.size", "#c62828"),
    )
    high = max([1.0] + [float(s.get(m) or 0) * 1.15 for _, s in samples for _, m, _ in series])
    shapes: list[dict[str, Any]] = []
    _axes(shapes, high, "messages", lambda v: fmt(v))
    _time_axis(shapes, times, start, end)
    for name, measure, colour in series:
        pts = [
            (_x(at, start, end), _y(float(s.get(measure) or 0), high), s.get(measure), at)
            for at, s in samples
        ]
        if len(pts) > 1:
            shapes.append(
                _shape(
                    "polyline",
                    points=" ".join(f"{x},{y}" for x, y, _, _ in pts),
                    fill="none",
                    stroke=colour,
                    stroke_width=2,
                )
            )
        for x, y, v, at in pts:
            shapes.append(
                _shape(
                    "circle",
                    f"{name}: {fmt(v)} at {_t(rfc3339(at))}",
                    cx=x,
                    cy=y,
                    r=4 if len(pts) <= 40 else 2,
                    fill=colour,
                )
            )
    ages = [s.get("queue.oldest_unacked_age_s") for _, s in samples]
    return {
        "title": "Queue backlog over time",
        "shapes": shapes,
        "empty": ""
        if samples
        else "the queue was not sampled at any checkpoint"
        " (a replay samples only a checkpoint that is now)",
        "legend": [_legend(n, c, "dot") for n, _, c in series],
        "note": "Oldest unacked message at each sample: " + ", ".join(_num(a, "s") for a in ages)
        if samples
        else "",
    }


def _clip(text: str, room: float) -> str:
    """``text`` cut to fit ``room`` pixels of the charts' text, with an ellipsis."""
    most = max(4, int(room / _CHAR_W))
    return text if len(text) <= most else text[: most - 1] + "…"


def chart_rejections(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Rejected messages by the gate's reason code, over the window so far."""
    by_reason: dict[str, float] = {}
    if doc["checkpoints"]:
        cumulative = doc["checkpoints"][-1]["figures"]["cumulative"]
        raw = (cumulative.get("details") or {}).get("rejected_by_reason") or {}
        if not raw:
            prefix = "messages.rejected."
            raw = {
                k[len(prefix) :]: v
                for k, v in (cumulative.get("values") or {}).items()
                if k.startswith(prefix) and k != prefix + "redelivered"
            }
        by_reason = {str(k): float(v or 0) for k, v in raw.items() if v}
    ranked = sorted(by_reason.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = 12
    rows = ranked[:shown]
    row_h = 24
    top = 8
    height = max(60, top + row_h * len(rows) + 8)
    high = max([1.0] + [v for _, v in rows])
    left = 176
    count_w = _CHAR_W * max([len(fmt(v)) for _, v in rows] + [1]) + 10
    shapes: list[dict[str, Any]] = []
    for i, (reason, value) in enumerate(rows):
        y = top + i * row_h
        width = round((value / high) * (W - left - 8 - count_w), 1)
        shapes.append(
            _shape("text", _clip(reason, left - 12), x=left - 8, y=y + 16, text_anchor="end")
        )
        shapes.append(
            _shape(
                "rect",
                f"{reason}: {fmt(value)}",
                x=left,
                y=y + 4,
                width=max(width, 1),
                height=row_h - 8,
                fill="#6d4c41",
            )
        )
        shapes.append(_shape("text", fmt(value), x=left + max(width, 1) + 6, y=y + 16))
    rest = ranked[shown:]
    return {
        "title": "Rejections by reason",
        "shapes": shapes,
        "height": height,
        "empty": "" if rows else "no message was rejected in the window",
        "legend": [],
        "note": f"And {len(rest)} more reason(s), {fmt(sum(v for _, v in rest))} rejection(s)."
        if rest
        else "",
    }


# The page's template ships beside this module (package data); autoescape is always on.
def _inert(value: Any) -> Any:
    """Every value the page prints, before autoescape: without the control characters that
    are not allowed in HTML and the bidirectional controls that could reorder its text."""
    return _HTML_CONTROL.sub("\ufffd", value) if isinstance(value, str) else value


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("steadyq.watch", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    finalize=_inert,
)
_ENV.filters["t"] = _t
_ENV.filters["elapsed"] = _elapsed


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def render_html(doc: Mapping[str, Any]) -> str:
    """``report.html`` from a report document: one file, no script, no network."""
    plan = doc["plan"]
    run = doc["run"]
    start, end = _epoch(run["window_start"]), _epoch(run["window_end"])
    times = [_epoch(row["at"]) for row in doc["schedule"]]
    plan_criteria = {c["name"]: c for c in plan["criteria"]}

    def crit(c: Mapping[str, Any]) -> dict[str, Any]:
        unit = unit_of(str(c["measure"]))
        tags = [
            t
            for t, on in (
                ("critical", c.get("critical")),
                ("dry run", c.get("dry_run")),
                ("per checkpoint", c.get("scope") == "checkpoint"),
            )
            if on
        ]
        return {
            "name": c["name"],
            "measure": c["measure"],
            "status": c["status"],
            "mark": _HTML_MARK.get(c["status"], c["status"]),
            "tags": tags,
            "bound": _bound_md(c, plan_criteria.get(c["name"]), str),
            "value": _num(c["value"], unit),
            "baseline": _num(c["baseline_value"], unit),
            "reason": c["reason"],
        }

    checkpoints = []
    for cp in doc["checkpoints"]:
        interval = cp["figures"]["interval"].get("values") or {}
        cumulative = cp["figures"]["cumulative"].get("values") or {}
        rows = [
            (label, _measure(interval, name), _measure(cumulative, name))
            for label, name in CHECKPOINT_FIGURES
        ]
        queue = cp.get("queue")
        checkpoints.append(
            {
                "index": cp["index"],
                "at": cp["at"],
                "taken_at": cp["taken_at"],
                "hours": _elapsed(cp["hours_elapsed"]),
                "status": cp["status"],
                "rows": rows,
                "by_reason": [
                    (reason, fmt(count))
                    for reason, count in sorted(
                        (
                            (cp["figures"]["interval"].get("details") or {}).get(
                                "rejected_by_reason"
                            )
                            or {}
                        ).items()
                    )
                ],
                "queue": None
                if not queue
                else [
                    (label, _num(queue.get(name), unit_of(name)))
                    for label, name in (
                        ("ready", "queue.ready"),
                        ("in flight", "queue.in_flight"),
                        ("oldest unacked", "queue.oldest_unacked_age_s"),
                        ("DLQ size", "dlq.size"),
                    )
                ],
                "queue_note": cp.get("queue_note") or "no sample",
                "anomalies": cp["anomalies"],
                "criteria": [crit(c) for c in cp["criteria"]],
                "decision": cp.get("decision"),
            }
        )
    alerts = []
    for a in doc["alerts"]:
        sent = a.get("deliveries")
        alerts.append(
            {
                "at": a.get("at"),
                "message": a.get("message"),
                "deliveries": "not sent yet"
                if sent is None
                else "; ".join(
                    f"{d.get('channel')} {'ok' if d.get('ok') else 'FAILED'} ({d.get('detail')})"
                    for d in sent
                )
                or "terminal only",
            }
        )
    charts = [
        chart_durations(doc, times, start, end),
        chart_outcomes(doc),
        chart_queue(doc, start, end, times),
        chart_rejections(doc),
    ]
    for chart in charts:
        chart.setdefault("note", "")
        chart.setdefault("height", H)
    return _ENV.get_template("report.html.j2").render(
        doc=doc,
        plan=plan,
        run=run,
        run_label=run_label(doc),
        window=format_duration(plan["window_s"]),
        every=format_duration(plan["checkpoint_every_s"]),
        comparison=[
            {
                "label": r["label"],
                "before": _num(r["before"], r["unit"]),
                "after": _num(r["after"], r["unit"]),
            }
            for r in doc["comparison"]
        ],
        criteria=[crit(c) for c in doc["criteria"]],
        checkpoints=checkpoints,
        charts=charts,
        alerts=alerts,
        marks=_HTML_MARK,
        W=W,
        H=H,
    )


def write_reports(doc: Mapping[str, Any], report_dir: str | Path) -> dict[str, Path]:
    """Write the three reports into ``report_dir`` (created), each atomically."""
    folder = Path(report_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": folder / "report.json",
        "md": folder / "report.md",
        "html": folder / "report.html",
    }
    write_atomic(
        paths["json"],
        (json.dumps(doc, indent=2, ensure_ascii=True, default=str) + "\n").encode("ascii"),
    )
    write_atomic(paths["md"], render_markdown(doc).encode("utf-8"))
    write_atomic(paths["html"], render_html(doc).encode("utf-8"))
    return paths


__all__ = [
    "REPORT_FILES",
    "SCHEMA_VERSION",
    "build_report",
    "md",
    "render_html",
    "render_markdown",
    "write_reports",
]
