"""Judging: each criterion at each checkpoint, and the verdict that ends a watch.

A criterion's ``status`` after a checkpoint is one of

* ``pass``: the measured value is within every bound;
* ``fail``: it is not (for ``scope = "checkpoint"``: this or any earlier checkpoint's
  interval breached, a breach is never forgotten);
* ``no_data``: nothing to judge yet (the measure had no data, or a bound relative to
  the baseline cannot be computed because the baseline had none);
* ``pending``: not judged yet (no checkpoint taken).

The verdict (:func:`final_verdict`, :func:`early_stop`):

1. a critical, non-dry-run criterion that fails at a checkpoint ends the watch at once,
   ``FAILED``;
2. at the end, a ``no_data`` criterion is resolved by its ``no_data`` policy (``fail``,
   ``pass`` or ``inconclusive``);
3. any failing non-dry-run criterion: ``FAILED``;
4. no non-dry-run criterion had any data in the whole run: ``INCONCLUSIVE``, whatever
   the policies say (a watch that measured nothing proves nothing);
5. any criterion left inconclusive: ``INCONCLUSIVE``;
6. nothing ran in the window (no execution, no message received): ``INCONCLUSIVE``
   (the counts are zero, which proves nothing); otherwise ``PASSED``.

Dry-run criteria are judged and reported the same way and never count.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from steadyq.watch.plan import Criterion, Plan, RelativeBound, Risk

Status = Literal["pass", "fail", "no_data", "pending"]
Value = float | int | None


class Verdict(enum.StrEnum):
    """How a watch ends (its process exit code: :func:`steadyq.exit_codes.verdict_code`)."""

    PASSED = "PASSED"
    FAILED = "FAILED"
    INCONCLUSIVE = "INCONCLUSIVE"

    @property
    def decision(self) -> str:
        """What the team does next, in the incident team's words."""
        return {
            "PASSED": "proceed",
            "FAILED": "investigate",
            "INCONCLUSIVE": "investigate: not enough evidence",
        }[self.value]


def fmt(value: Value, unit: str = "") -> str:
    """A value for a sentence: integers plain, others with up to 4 significant digits."""
    if value is None:
        return "no data"
    if unit == "ratio":
        return f"{value * 100:.4g} %"
    if isinstance(value, float) and not value.is_integer():
        text = f"{value:.4g}"
    else:
        text = f"{int(value)}" if abs(value) < 1e15 else f"{value:g}"
    if unit in ("", "count", "1"):
        return text
    return f"{text} {unit}"


def unit_of(measure: str) -> str:
    """The unit of a catalogue measure, or an empty string when unknown."""
    try:
        from steadyq.watch.measures import MEASURES
    except ImportError:  # pragma: no cover - the catalogue ships with the package
        return ""
    found = MEASURES.get(measure)
    return str(getattr(found, "unit", "")) if found is not None else ""


@dataclass(slots=True)
class CriterionResult:
    """One criterion after one checkpoint; ``to_dict`` is its ``report.json`` form."""

    name: str
    measure: str
    status: Status
    value: Value
    bound: dict[str, float | None]
    baseline_value: Value
    reason: str
    critical: bool = False
    dry_run: bool = False
    scope: str = "cumulative"
    no_data_policy: str = "inconclusive"
    observed: Status = "pending"
    breached_at: list[int] = field(default_factory=list)
    data_at: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measure": self.measure,
            "status": self.status,
            "value": _json_number(self.value),
            "bound": {k: _json_number(v) for k, v in self.bound.items()},
            "baseline_value": _json_number(self.baseline_value),
            "reason": self.reason,
            "critical": self.critical,
            "dry_run": self.dry_run,
            "scope": self.scope,
            "no_data_policy": self.no_data_policy,
            "observed": self.observed,
            "breached_at": list(self.breached_at),
            "data_at": list(self.data_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CriterionResult:
        return cls(
            name=data["name"],
            measure=data["measure"],
            status=data["status"],
            value=data["value"],
            bound=dict(data["bound"]),
            baseline_value=data["baseline_value"],
            reason=data["reason"],
            critical=bool(data.get("critical", False)),
            dry_run=bool(data.get("dry_run", False)),
            scope=str(data.get("scope", "cumulative")),
            no_data_policy=str(data.get("no_data_policy", "inconclusive")),
            observed=data.get("observed", data["status"]),
            breached_at=[int(i) for i in data.get("breached_at", [])],
            data_at=[int(i) for i in data.get("data_at", [])],
        )


def _json_number(value: Value) -> Value:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _number(value: object) -> Value:
    """A measured value as a number, or None when there is none (or it is not finite)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value if math.isfinite(value) else None
    return None


def pending(plan: Plan) -> list[CriterionResult]:
    """Every criterion before the first checkpoint."""
    out = []
    for c in plan.criteria:
        out.append(
            CriterionResult(
                name=c.name,
                measure=c.measure,
                status="pending",
                value=None,
                bound={"max": c.max, "min": c.min},
                baseline_value=None,
                reason="not judged yet: no checkpoint taken",
                critical=c.critical,
                dry_run=c.dry_run,
                scope=c.scope,
                no_data_policy=c.no_data_policy,
            )
        )
    return out


def bounds(c: Criterion, baseline_value: Value) -> tuple[float | None, float | None, str | None]:
    """The effective (max, min) of a criterion, and why they cannot be computed, if so.

    A criterion with both an absolute and a relative bound on one side keeps the tighter.
    """
    high, low = c.max, c.min
    rel_high, rel_low = c.relative_max, c.relative_min
    if rel_high is not None or rel_low is not None:
        if baseline_value is None:
            return high, low, "the baseline has no value for it, so the relative bound is unknown"
        if rel_high is not None:
            value = rel_high.apply(float(baseline_value))
            high = value if high is None else min(high, value)
        if rel_low is not None:
            value = rel_low.apply(float(baseline_value))
            low = value if low is None else max(low, value)
    return high, low, None


def _bound_text(c: Criterion, high: float | None, low: float | None, base: Value) -> str:
    unit = unit_of(c.measure)
    parts = []
    for side, value, rel in (("max", high, c.relative_max), ("min", low, c.relative_min)):
        if value is None:
            continue
        text = f"{side} {fmt(value, unit)}"
        if rel is not None and base is not None and _is(rel, value, base):
            text += f" (baseline {fmt(base, unit)} {rel.text})"
        parts.append(text)
    return " and ".join(parts)


def _is(rel: RelativeBound, value: float, base: Value) -> bool:
    return base is not None and math.isclose(rel.apply(float(base)), value)


def _compare(value: float, high: float | None, low: float | None) -> str | None:
    """Why ``value`` breaks a bound, or None when it is within them (bounds inclusive)."""
    if high is not None and value > high + 1e-9 * max(1.0, abs(high)):
        return "above"
    if low is not None and value < low - 1e-9 * max(1.0, abs(low)):
        return "below"
    return None


def judge_criterion(
    c: Criterion,
    index: int,
    interval: Mapping[str, Any],
    cumulative: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    previous: CriterionResult | None = None,
) -> CriterionResult:
    """Judge one criterion at checkpoint ``index`` (0-based) given the figures so far.

    ``previous`` is the same criterion's result at the checkpoint before, if any; it
    carries the breaches a ``checkpoint``-scoped criterion never forgets.
    """
    figures = interval if c.scope == "checkpoint" else cumulative
    value = _number(figures.get(c.measure))
    base = None if baseline is None else _number(baseline.get(c.measure))
    high, low, bound_problem = bounds(c, base)
    unit = unit_of(c.measure)
    breached_at = list(previous.breached_at) if previous is not None else []
    data_at = list(previous.data_at) if previous is not None else []
    where = "in this checkpoint's interval" if c.scope == "checkpoint" else "in the window so far"
    observed: Status
    if value is None:
        observed = "no_data"
        reason = f"no data for {c.measure} {where}"
    elif bound_problem is not None:
        observed = "no_data"  # a value without a bound judges nothing
        reason = f"{c.measure} = {fmt(value, unit)}, but {bound_problem}"
    else:
        data_at.append(index)
        side = _compare(float(value), high, low)
        bound_text = _bound_text(c, high, low, base)
        if side is None:
            observed = "pass"
            reason = f"{c.measure} = {fmt(value, unit)}, within {bound_text}"
        else:
            observed = "fail"
            breached_at.append(index)
            reason = f"{c.measure} = {fmt(value, unit)}, {side} the bound ({bound_text})"
    status: Status = observed
    if c.scope == "checkpoint" and breached_at and observed != "fail":
        status = "fail"
        marks = ", ".join(str(i + 1) for i in breached_at)
        reason = f"breached at checkpoint {marks}; this checkpoint: {reason}"
    elif c.scope == "checkpoint" and observed == "no_data" and data_at and not breached_at:
        status = "pass"
        reason = f"passed at every checkpoint that had data; this checkpoint: {reason}"
    return CriterionResult(
        name=c.name,
        measure=c.measure,
        status=status,
        value=value,
        bound={"max": high, "min": low},
        baseline_value=base,
        reason=reason,
        critical=c.critical,
        dry_run=c.dry_run,
        scope=c.scope,
        no_data_policy=c.no_data_policy,
        observed=observed,
        breached_at=breached_at,
        data_at=data_at,
    )


def judge_checkpoint(
    plan: Plan,
    index: int,
    interval: Mapping[str, Any],
    cumulative: Mapping[str, Any],
    baseline: Mapping[str, Any] | None,
    previous: Sequence[CriterionResult] | None = None,
) -> list[CriterionResult]:
    """Every criterion of ``plan`` at checkpoint ``index``, in plan order."""
    before = {r.name: r for r in previous or ()}
    return [
        judge_criterion(c, index, interval, cumulative, baseline, before.get(c.name))
        for c in plan.criteria
    ]


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict and the sentence that explains it."""

    verdict: Verdict
    reason: str
    early: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict.value, "reason": self.reason, "early": self.early}


def early_stop(results: Sequence[CriterionResult], index: int) -> Decision | None:
    """FAILED at once when a critical, counted criterion breached at checkpoint ``index``."""
    breached = [r for r in results if r.critical and not r.dry_run and r.observed == "fail"]
    if not breached:
        return None
    what = "; ".join(f"{r.name!r}: {r.reason}" for r in breached)
    return Decision(
        Verdict.FAILED,
        f"critical criterion breached at checkpoint {index + 1}, watch ended early: {what}",
        early=True,
    )


def failing(results: Sequence[CriterionResult]) -> list[CriterionResult]:
    """Counted criteria whose value breached at this checkpoint (what an alert reports)."""
    return [r for r in results if not r.dry_run and r.observed == "fail"]


def newly_failing(
    results: Sequence[CriterionResult], previous: Sequence[CriterionResult] | None
) -> list[CriterionResult]:
    """What to alert on: counted criteria that breached here and were not failing before.

    A checkpoint-scoped criterion alerts at every breaching checkpoint (each interval is
    news); a cumulative one alerts once when it turns to fail, not again while it stays.
    """
    before = {r.name: r.status for r in previous or ()}
    return [
        r
        for r in failing(results)
        if r.scope == "checkpoint" or r.critical or before.get(r.name) != "fail"
    ]


def resolved(result: CriterionResult) -> str:
    """A criterion's final standing: pass, fail or inconclusive (no-data policy applied)."""
    if result.status in ("pass", "fail"):
        return result.status
    return result.no_data_policy


def final_verdict(results: Sequence[CriterionResult], *, activity: bool = True) -> Decision:
    """The verdict at the end of the window, from each criterion's last result.

    ``activity`` is False when nothing ran in the window (no execution, no message): a
    count of zero is then no evidence, and the verdict cannot be PASSED.
    """
    counted = [r for r in results if not r.dry_run]
    failed = [r for r in counted if resolved(r) == "fail"]
    if failed:
        parts = []
        for r in failed:
            if r.status == "fail":
                parts.append(f"{r.name!r}: {r.reason}")
            else:
                parts.append(f"{r.name!r}: no data, and its no-data policy is fail")
        return Decision(Verdict.FAILED, "failed: " + "; ".join(parts))
    if not any(r.data_at for r in counted):
        if not counted:
            return Decision(
                Verdict.INCONCLUSIVE, "inconclusive: every criterion is a dry run, none counts"
            )
        return Decision(
            Verdict.INCONCLUSIVE,
            "inconclusive: no criterion had any data in the whole window;"
            " a watch that measured nothing cannot pass",
        )
    unsure = [r for r in counted if resolved(r) == "inconclusive"]
    if unsure:
        names = ", ".join(repr(r.name) for r in unsure)
        return Decision(Verdict.INCONCLUSIVE, f"inconclusive: no data for {names}")
    if not activity:
        return Decision(
            Verdict.INCONCLUSIVE,
            "inconclusive: nothing ran in the window (no execution, no message),"
            " so zero failures prove nothing",
        )
    by_policy = [r for r in counted if r.status != "pass"]
    note = ""
    if by_policy:
        note = " (" + ", ".join(repr(r.name) for r in by_policy) + " passed by no-data policy)"
    return Decision(Verdict.PASSED, f"passed: every criterion held for the whole window{note}")


# -- risks -------------------------------------------------------------------------------

RiskStatus = Literal["ok", "triggered", "no_data", "not_measured", "pending"]


def judge_risk(risk: Risk, cumulative: Mapping[str, Any] | None) -> dict[str, Any]:
    """A risk's current status from the cumulative figures (risks never change a verdict)."""
    doc: dict[str, Any] = {
        "name": risk.name,
        "probability": risk.probability,
        "impact": risk.impact,
        "mitigation": risk.mitigation,
        "measure": risk.measure,
        "bound": {"max": risk.max, "min": risk.min},
        "value": None,
    }
    status: RiskStatus
    if risk.measure is None:
        status, reason = "not_measured", "kept in view by people; no measure attached"
    elif cumulative is None:
        status, reason = "pending", "no checkpoint taken yet"
    else:
        value = _number(cumulative.get(risk.measure))
        doc["value"] = value
        unit = unit_of(risk.measure)
        if value is None:
            status, reason = "no_data", f"no data for {risk.measure}"
        else:
            side = _compare(float(value), risk.max, risk.min)
            if side is None:
                status, reason = "ok", f"{risk.measure} = {fmt(value, unit)}, within bounds"
            else:
                limit = risk.max if side == "above" else risk.min
                status = "triggered"
                reason = f"{risk.measure} = {fmt(value, unit)}, {side} {fmt(limit, unit)}"
    doc["status"] = status
    doc["reason"] = reason
    return doc


__all__ = [
    "CriterionResult",
    "Decision",
    "Verdict",
    "early_stop",
    "failing",
    "final_verdict",
    "judge_checkpoint",
    "judge_criterion",
    "judge_risk",
    "pending",
]
