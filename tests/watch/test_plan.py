from __future__ import annotations

from pathlib import Path

import pytest

from steadyq.errors import ConfigError
from steadyq.watch.plan import RelativeBound, load_plan, parse_plan

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "plans" / "uuid-fix-24h.toml"

GOOD = """\
name = "p"
window = "24h"
checkpoint_every = "4h"

[[criteria]]
name = "no timeouts"
measure = "executions.timed_out"
max = 0
critical = true
"""


def test_the_incident_plan_loads() -> None:
    plan = load_plan(EXAMPLE)
    assert plan.window == 86400 and plan.checkpoint_every == 14400
    assert len(plan.checkpoint_times(0.0)) == 6
    assert plan.baseline is not None and plan.baseline.end > plan.baseline.start
    measures = {c.measure for c in plan.criteria}
    for needed in (
        "executions.timed_out",
        "executions.duration_s.max",
        "messages.rejected.redelivered",
        "messages.succeeded",
        "executions.startup_s.max",
        "requests.failed_in_multiple_executions",
        "errors.new_patterns",
        "queue.oldest_unacked_age_s",
    ):
        assert needed in measures
    timeouts = next(c for c in plan.criteria if c.measure == "executions.timed_out")
    assert timeouts.critical and timeouts.no_data_policy == "fail"
    dlq = next(r for r in plan.risks if r.name == "DLQ filling up")
    assert dlq.measure == "messages.to_dlq" and dlq.max is not None


def test_defaults_of_a_criterion() -> None:
    plan = parse_plan(
        GOOD + '\n[[criteria]]\nname = "x"\nmeasure = "messages.succeeded"\nmin = 1\n'
    )
    crit, plain = plan.criteria
    assert (crit.no_data_policy, plain.no_data_policy) == ("fail", "inconclusive")
    assert plain.scope == "cumulative" and not plain.dry_run and not plain.critical
    assert plan.start is None


def test_a_typo_in_a_key_names_its_line_and_the_right_key() -> None:
    text = GOOD.replace("max = 0", "maxx = 0")
    with pytest.raises(ConfigError) as info:
        parse_plan(text, source="plan.toml")
    message = str(info.value)
    assert "plan.toml:8:" in message
    assert "criteria[1] 'no timeouts'.maxx: unknown key (did you mean 'max'?)" in message


def test_a_typo_at_top_level_and_in_alerts() -> None:
    text = GOOD.replace('checkpoint_every = "4h"', 'checkpoint_evry = "4h"')
    text += '\n[alerts]\nwebhok = "http://127.0.0.1:1/x"\n'
    with pytest.raises(ConfigError) as info:
        parse_plan(text, source="p.toml")
    message = str(info.value)
    assert "p.toml:3: checkpoint_evry: unknown key (did you mean 'checkpoint_every'?)" in message
    assert "p.toml:12: alerts.webhok: unknown key (did you mean 'webhook'?)" in message


def test_an_unknown_measure_is_refused_with_a_suggestion() -> None:
    text = GOOD.replace("executions.timed_out", "executions.timedout")
    with pytest.raises(ConfigError, match=r"<plan>:7: .*unknown measure 'executions.timedout'"):
        parse_plan(text)
    with pytest.raises(ConfigError, match=r"did you mean 'executions\.timed_out'"):
        parse_plan(text)


def test_a_criterion_without_a_bound_points_at_its_table() -> None:
    text = GOOD + '\n[[criteria]]\nname = "loose"\nmeasure = "messages.succeeded"\n'
    with pytest.raises(ConfigError, match=r"<plan>:11: criteria\[2\] 'loose': no bound"):
        parse_plan(text)


def test_a_window_shorter_than_its_interval() -> None:
    with pytest.raises(ConfigError, match=r"<plan>:2: window: the window .* is shorter"):
        parse_plan(GOOD.replace('window = "24h"', 'window = "1h"'))


def test_a_relative_bound_needs_a_baseline_and_a_good_shape() -> None:
    text = GOOD.replace("max = 0", 'max_vs_baseline = "+10%"')
    with pytest.raises(ConfigError, match=r"<plan>:8: .*needs a \[baseline\] table"):
        parse_plan(text)
    text = GOOD.replace("max = 0", 'max_vs_baseline = "ten percent"')
    with pytest.raises(ConfigError, match=r"<plan>:8: .*not a change against the baseline"):
        parse_plan(text)


def test_bad_values_and_missing_keys() -> None:
    with pytest.raises(ConfigError, match=r"<plan>:3: checkpoint_every: not a duration"):
        parse_plan(GOOD.replace('"4h"', '"four hours"'))
    with pytest.raises(ConfigError, match=r"<plan>:\d+: criteria\[1\].*no_data"):
        parse_plan(GOOD.replace("critical = true", 'no_data = "maybe"'))
    with pytest.raises(ConfigError, match=r"name: required key is missing"):
        parse_plan(GOOD.replace('name = "p"\n', ""))
    with pytest.raises(ConfigError, match="at least one"):
        parse_plan(GOOD.split("[[criteria]]")[0])
    with pytest.raises(ConfigError, match="not a valid TOML plan"):
        parse_plan(GOOD + "\nthis is not toml\n")


def test_every_problem_is_listed_with_its_line() -> None:
    text = GOOD.replace("max = 0", "maxx = 0").replace('window = "24h"', 'window = "1h"')
    with pytest.raises(ConfigError) as info:
        parse_plan(text, source="f.toml")
    message = str(info.value)
    assert "f.toml:8:" in message and "maxx" in message
    # the window check runs only on a plan that parsed; the key typo is reported first
    assert message.startswith("bad plan")


def test_baseline_and_start() -> None:
    text = (
        "start = 2026-11-04T12:00:00Z\n"
        + GOOD
        + '\n[baseline]\nstart = 2026-11-03T12:00:00Z\nend = "2026-11-04T13:00:00Z"\n'
    )
    with pytest.raises(ConfigError, match=r"<plan>:14: baseline.end: .*before the watch window"):
        parse_plan(text)
    plan = parse_plan(text.replace("T13:00", "T12:00"))
    assert plan.start == 1793793600.0
    assert plan.baseline is not None and plan.baseline.end == plan.start


def test_risks_need_measure_and_bound_together() -> None:
    text = GOOD + '\n[[risks]]\nname = "dlq"\nmeasure = "messages.dead_lettered"\n'
    with pytest.raises(ConfigError, match=r"<plan>:13: risks\[1\] 'dlq'.measure: .*max or min"):
        parse_plan(text)
    ok = parse_plan(text + 'max = 5\nprobability = "low"\n')
    assert ok.risks[0].max == 5


def test_webhook_must_be_http() -> None:
    with pytest.raises(ConfigError, match=r"alerts.webhook: the webhook must be"):
        parse_plan(GOOD + '\n[alerts]\nwebhook = "file:///etc/passwd"\n')


def test_checkpoint_times_end_at_the_window_end() -> None:
    plan = parse_plan(GOOD.replace('"24h"', '"10h"'))
    assert plan.checkpoint_times(100.0) == [100 + 14400, 100 + 28800, 100 + 36000]


def test_identity_hash_ignores_words_and_alerts_not_criteria() -> None:
    base = parse_plan(GOOD).identity_hash()
    assert parse_plan('purpose = "why"\n' + GOOD).identity_hash() == base
    assert (
        parse_plan(GOOD + '\n[alerts]\nwebhook = "http://127.0.0.1:9/x"\n').identity_hash() == base
    )
    assert parse_plan(GOOD.replace("max = 0", "max = 1")).identity_hash() != base


@pytest.mark.parametrize(
    ("text", "base", "bound"),
    [
        ("+10%", 50.0, 55.0),
        ("-5%", 200.0, 190.0),
        ("+3", 4.0, 7.0),
        ("-2", 4.0, 2.0),
        (3, 1.0, 4.0),
    ],
)
def test_relative_bounds(text: str | int, base: float, bound: float) -> None:
    assert RelativeBound.parse(text).apply(base) == pytest.approx(bound)


def test_a_time_without_zone_is_utc_and_a_date_alone_is_refused() -> None:
    plan = parse_plan("start = 2026-11-04T12:00:00\n" + GOOD)
    assert plan.start == 1793793600.0
    with pytest.raises(ConfigError, match=r"<plan>:1: start: give a date and a time"):
        parse_plan("start = 2026-11-04\n" + GOOD)


def test_the_command_lists_each_plan_problem_on_its_own_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from steadyq.cli import app

    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nwindow = "1h"\nchekpoint_every = "2h"\n')
    result = CliRunner().invoke(app, ["watch", str(bad), "--url", f"sqlite:///{tmp_path}/s.db"])
    assert result.exit_code == 3
    lines = result.stderr.splitlines()
    assert "\\n" not in result.stderr
    assert any(line.strip().endswith("checkpoint_every: required key is missing") for line in lines)
    assert any(":3: chekpoint_every: unknown key" in line for line in lines)
