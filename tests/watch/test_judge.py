from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from steadyq.watch.judge import (
    CriterionResult,
    Verdict,
    early_stop,
    final_verdict,
    judge_checkpoint,
    judge_risk,
)
from steadyq.watch.plan import Plan, Risk, plan_from_dict


def make_plan(*criteria: dict[str, Any], baseline: bool = False) -> Plan:
    data: dict[str, Any] = {
        "name": "t",
        "window": "3h",
        "checkpoint_every": "1h",
        "criteria": [{"name": f"c{i}", **c} for i, c in enumerate(criteria)],
    }
    if baseline:
        data["baseline"] = {"start": 0.0, "end": 100.0}
    return plan_from_dict(data)


def walk(
    plan: Plan,
    intervals: Sequence[Mapping[str, Any]],
    cumulatives: Sequence[Mapping[str, Any]] | None = None,
    baseline: Mapping[str, Any] | None = None,
) -> list[list[CriterionResult]]:
    """Judge every checkpoint in turn, as the run does."""
    out: list[list[CriterionResult]] = []
    previous = None
    for index, interval in enumerate(intervals):
        cumulative = cumulatives[index] if cumulatives is not None else interval
        previous = judge_checkpoint(plan, index, interval, cumulative, baseline, previous)
        out.append(previous)
    return out


TIMEOUTS = {"measure": "executions.timed_out", "max": 0}
SUCCEEDED = {"measure": "messages.succeeded", "min": 1}


def test_pass_and_fail_with_inclusive_bounds() -> None:
    plan = make_plan(TIMEOUTS, SUCCEEDED)
    (results,) = walk(plan, [{"executions.timed_out": 0, "messages.succeeded": 1}])
    assert [r.status for r in results] == ["pass", "pass"]
    assert "within max 0" in results[0].reason
    (results,) = walk(plan, [{"executions.timed_out": 2, "messages.succeeded": 0}])
    assert [r.status for r in results] == ["fail", "fail"]
    assert "above the bound (max 0)" in results[0].reason
    assert "below the bound (min 1)" in results[1].reason
    assert final_verdict(results).verdict is Verdict.FAILED


def test_range_with_both_bounds() -> None:
    plan = make_plan({"measure": "executions.duration_s.max", "min": 10, "max": 600})
    for value, status in ((9.9, "fail"), (10, "pass"), (600, "pass"), (600.5, "fail")):
        (results,) = walk(plan, [{"executions.duration_s.max": value}])
        assert results[0].status == status, value


def test_all_no_data_never_passes_whatever_the_policy() -> None:
    plan = make_plan({**TIMEOUTS, "no_data": "pass"}, {**SUCCEEDED, "no_data": "pass"})
    history = walk(plan, [{}, {}, {}])
    assert all(r.status == "no_data" for r in history[-1])
    decision = final_verdict(history[-1])
    assert decision.verdict is Verdict.INCONCLUSIVE
    assert "no criterion had any data" in decision.reason


def test_nan_and_non_numbers_are_no_data() -> None:
    plan = make_plan({**TIMEOUTS, "no_data": "pass"})
    (results,) = walk(plan, [{"executions.timed_out": math.nan}])
    assert results[0].status == "no_data" and results[0].value is None
    (results,) = walk(plan, [{"executions.timed_out": True}])
    assert results[0].status == "no_data"
    assert final_verdict(results).verdict is Verdict.INCONCLUSIVE


def test_no_data_policies_at_the_end() -> None:
    data = {"executions.timed_out": 0}
    # one criterion with data passes; the other has none: its policy decides
    for policy, verdict in (
        ("pass", Verdict.PASSED),
        ("fail", Verdict.FAILED),
        ("inconclusive", Verdict.INCONCLUSIVE),
    ):
        plan = make_plan(TIMEOUTS, {**SUCCEEDED, "no_data": policy})
        (results,) = walk(plan, [data])
        assert final_verdict(results).verdict is verdict, policy
    # a critical criterion without data fails by default
    plan = make_plan({**TIMEOUTS, "critical": True}, SUCCEEDED)
    (results,) = walk(plan, [{"messages.succeeded": 5}])
    decision = final_verdict(results)
    assert decision.verdict is Verdict.FAILED and "no-data policy is fail" in decision.reason


def test_a_failure_wins_over_inconclusive() -> None:
    plan = make_plan(TIMEOUTS, SUCCEEDED)
    (results,) = walk(plan, [{"executions.timed_out": 1}])
    assert final_verdict(results).verdict is Verdict.FAILED


def test_dry_run_is_reported_but_never_counts() -> None:
    plan = make_plan({**TIMEOUTS, "dry_run": True, "critical": True}, SUCCEEDED)
    (results,) = walk(plan, [{"executions.timed_out": 3, "messages.succeeded": 4}])
    assert results[0].status == "fail" and results[0].dry_run
    assert early_stop(results, 0) is None
    assert final_verdict(results).verdict is Verdict.PASSED
    # dry runs alone prove nothing, even when they pass
    plan = make_plan({**TIMEOUTS, "dry_run": True})
    (results,) = walk(plan, [{"executions.timed_out": 0}])
    assert final_verdict(results).verdict is Verdict.INCONCLUSIVE
    # and the only data being a dry run's is still "no criterion had data"
    plan = make_plan({**TIMEOUTS, "dry_run": True}, {**SUCCEEDED, "no_data": "pass"})
    (results,) = walk(plan, [{"executions.timed_out": 0}])
    assert final_verdict(results).verdict is Verdict.INCONCLUSIVE


def test_critical_breach_stops_early_non_critical_does_not() -> None:
    plan = make_plan({**TIMEOUTS, "critical": True}, SUCCEEDED)
    first, second = walk(plan, [{"executions.timed_out": 0}, {"executions.timed_out": 1}])
    assert early_stop(first, 0) is None
    decision = early_stop(second, 1)
    assert decision is not None and decision.early and decision.verdict is Verdict.FAILED
    assert "checkpoint 2" in decision.reason and "'c0'" in decision.reason
    plan = make_plan(TIMEOUTS, SUCCEEDED)
    (results,) = walk(plan, [{"executions.timed_out": 1}])
    assert early_stop(results, 0) is None


def test_cumulative_scope_judges_the_window_and_can_recover() -> None:
    plan = make_plan({"measure": "executions.success_rate", "min": 0.9})
    intervals = [{"executions.success_rate": 0.5}, {"executions.success_rate": 1.0}]
    cumulatives = [{"executions.success_rate": 0.5}, {"executions.success_rate": 0.95}]
    first, last = walk(plan, intervals, cumulatives)
    assert first[0].status == "fail" and first[0].value == 0.5
    assert last[0].status == "pass" and last[0].value == 0.95
    assert final_verdict(last).verdict is Verdict.PASSED


def test_checkpoint_scope_never_forgets_a_breach() -> None:
    plan = make_plan({**TIMEOUTS, "scope": "checkpoint"})
    intervals = [
        {"executions.timed_out": 0},
        {"executions.timed_out": 2},
        {"executions.timed_out": 0},
    ]
    # cumulative figures are ignored by a checkpoint-scoped criterion
    cumulatives = [{"executions.timed_out": 0}] * 3
    history = walk(plan, intervals, cumulatives)
    assert [h[0].status for h in history] == ["pass", "fail", "fail"]
    assert [h[0].observed for h in history] == ["pass", "fail", "pass"]
    assert history[-1][0].breached_at == [1]
    assert "breached at checkpoint 2" in history[-1][0].reason
    assert final_verdict(history[-1]).verdict is Verdict.FAILED


def test_checkpoint_scope_with_gaps_in_the_data() -> None:
    plan = make_plan({"measure": "queue.oldest_unacked_age_s", "max": 60, "scope": "checkpoint"})
    history = walk(plan, [{}, {"queue.oldest_unacked_age_s": 5.0}, {}])
    assert [h[0].status for h in history] == ["no_data", "pass", "pass"]
    assert history[-1][0].data_at == [1]
    assert final_verdict(history[-1]).verdict is Verdict.PASSED


@pytest.mark.parametrize(
    ("change", "base", "value", "status"),
    [
        ("+10%", 100.0, 110.0, "pass"),
        ("+10%", 100.0, 110.5, "fail"),
        ("+3", 4, 7, "pass"),
        ("+3", 4, 8, "fail"),
        ("+10%", 0, 0, "pass"),
        ("+10%", 0, 1, "fail"),
    ],
)
def test_max_vs_baseline(change: str, base: float, value: float, status: str) -> None:
    plan = make_plan(
        {"measure": "executions.duration_s.avg", "max_vs_baseline": change}, baseline=True
    )
    (results,) = walk(
        plan, [{"executions.duration_s.avg": value}], baseline={"executions.duration_s.avg": base}
    )
    assert results[0].status == status
    assert results[0].baseline_value == base


def test_min_vs_baseline_and_the_tighter_bound_wins() -> None:
    plan = make_plan(
        {"measure": "executions.success_rate", "min_vs_baseline": "-5%", "min": 0.5}, baseline=True
    )
    (results,) = walk(
        plan, [{"executions.success_rate": 0.86}], baseline={"executions.success_rate": 0.9}
    )
    assert results[0].status == "pass"
    assert results[0].bound["min"] == pytest.approx(0.855)
    (results,) = walk(
        plan, [{"executions.success_rate": 0.8}], baseline={"executions.success_rate": 0.9}
    )
    assert results[0].status == "fail" and results[0].bound["min"] == pytest.approx(0.855)


def test_relative_bound_without_baseline_data_is_no_data_not_data() -> None:
    plan = make_plan(
        {"measure": "executions.duration_s.avg", "max_vs_baseline": "+10%", "no_data": "pass"},
        baseline=True,
    )
    (results,) = walk(plan, [{"executions.duration_s.avg": 50.0}], baseline={})
    assert results[0].status == "no_data"
    assert "baseline has no value" in results[0].reason
    # a bound that could not be computed judged nothing: not PASSED, even by policy
    assert final_verdict(results).verdict is Verdict.INCONCLUSIVE


def test_results_survive_a_round_trip() -> None:
    plan = make_plan({**TIMEOUTS, "scope": "checkpoint", "critical": True})
    history = walk(plan, [{"executions.timed_out": 1}, {"executions.timed_out": 0}])
    again = [CriterionResult.from_dict(r.to_dict()) for r in history[-1]]
    assert again == history[-1]


def test_verdict_codes() -> None:
    from steadyq.exit_codes import verdict_code

    # the codes live in the one exit-code layer; the judge keeps the verdicts
    assert [verdict_code(v) for v in Verdict] == [0, 1, 2]
    assert not hasattr(Verdict.PASSED, "exit_code")
    assert Verdict.FAILED.decision == "investigate"


def test_risks() -> None:
    risk = Risk(name="dlq", measure="messages.dead_lettered", max=5)
    assert judge_risk(risk, None)["status"] == "pending"
    assert judge_risk(risk, {"messages.dead_lettered": 5})["status"] == "ok"
    assert judge_risk(risk, {"messages.dead_lettered": 6})["status"] == "triggered"
    assert judge_risk(risk, {})["status"] == "no_data"
    assert judge_risk(Risk(name="people"), {})["status"] == "not_measured"


def test_nothing_ran_is_inconclusive_even_with_zero_failures() -> None:
    plan = make_plan(TIMEOUTS)
    (results,) = walk(plan, [{"executions.timed_out": 0}])
    assert final_verdict(results).verdict is Verdict.PASSED
    decision = final_verdict(results, activity=False)
    assert decision.verdict is Verdict.INCONCLUSIVE and "nothing ran" in decision.reason
    # a failure is still a failure
    (results,) = walk(plan, [{"executions.timed_out": 1}])
    assert final_verdict(results, activity=False).verdict is Verdict.FAILED
