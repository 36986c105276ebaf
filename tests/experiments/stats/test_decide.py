"""The decision engine on hand-made statistics: each rule in both modes, finality, running minima, bad input.

The statistics are built from exact moments (``mean_arm``: n subjects with a given mean
and standard deviation), so each case sits clearly on one side of its test; the comments
give the z-values that make the outcome certain.
"""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.stats import (
    DECISION_VERSION,
    Decision,
    ProportionStatistic,
    SampleMeanStatistic,
    decide,
    decide_statistics,
    srm_test,
)
from experiments.stats.__main__ import main

REPO = Path(__file__).resolve().parents[3]
N = 2000  # subjects per arm; GMV sd 10 → the difference of two means has se 0.316 (0.32 % of 100)
GUARDRAILS = {"opt_out": {"margin": 0.03, "higher_is_better": False}}  # at most +3 pp of opt-outs
# Opt-out 5 % in two arms of 2,000: the difference has se 0.0069, so "no change" is 4.4 se inside the margin.


def mean_arm(n: int, mean: float, sd: float = 10.0) -> SampleMeanStatistic:
    """n subjects whose values have exactly this mean and sample standard deviation."""
    return SampleMeanStatistic(n=n, sum=n * mean, sum_squares=(n - 1) * sd * sd + n * mean * mean)


def arm(gmv: float, opt_out: float = 0.05, n: int = N) -> dict:
    return {"gmv": mean_arm(n, gmv), "opt_out": ProportionStatistic(n=n, successes=round(n * opt_out))}


def verdict(statistics: dict, **settings) -> Decision:
    arguments = {
        "control": "control",
        "weights": dict.fromkeys(statistics, 1),
        "primary": "gmv",
        "guardrails": GUARDRAILS,
        "planned_subjects_per_arm": N,
        **settings,
    }
    return decide_statistics(statistics, **arguments)


def find_test(decision: Decision, arm_key: str, kind: str | None = None):
    return next(t for t in decision.tests if t.arm == arm_key and (kind is None or t.kind == kind))


# --- superiority -------------------------------------------------------------------------


@pytest.mark.parametrize("sequential", [False, True])
def test_superiority_ships_the_best_significant_arm_whose_guardrails_pass(sequential):
    decision = verdict(
        {
            "control": arm(100.0),
            "b": arm(101.5),  # +1.5: z ≈ 4.7
            "c": arm(102.0, opt_out=0.12),  # better still, but opt-outs +7 pp: 4.6 se beyond the +3 pp margin
            "d": arm(100.1),  # z ≈ 0.3
        },
        sequential=sequential,
    )
    assert (decision.outcome, decision.arm, decision.final) == ("ship", "b", True)
    assert decision.mode == ("sequential" if sequential else "fixed")
    assert find_test(decision, "c", "superiority").passed
    guardrail = find_test(decision, "c", "guardrail")
    assert not guardrail.passed and guardrail.ruled_out
    assert decision.summary.startswith("Ship b: it raises gmv by +1.5")
    assert "opt_out guardrail passes" in decision.summary
    # Holm over the three arms: the smallest p-value is multiplied by 3.
    family = sorted((t for t in decision.tests if t.family == "confirmatory"), key=lambda t: t.p_value)
    assert [t.kind for t in family] == ["superiority"] * 3
    assert family[0].p_value_adjusted == pytest.approx(3 * family[0].p_value)


def test_superiority_in_fixed_mode_keeps_the_control_at_the_planned_size_when_nothing_is_significant():
    decision = verdict({"control": arm(100.0), "b": arm(100.2), "c": arm(99.9)})
    assert (decision.outcome, decision.arm, decision.final) == ("keep_control", None, True)
    assert decision.progress.ready and decision.progress.share == 1.0


def test_fixed_mode_reads_nothing_before_the_planned_size():
    decision = verdict({"control": arm(100.0), "b": arm(105.0)}, planned_subjects_per_arm=2 * N)
    assert (decision.outcome, decision.final) == ("continue", False)
    assert decision.progress.share == pytest.approx(0.5) and not decision.progress.ready
    assert "50% of the planned subjects" in decision.summary
    # The tests are still computed (the pages show the numbers), just not read.
    assert find_test(decision, "b", "superiority").passed


def test_fixed_mode_without_a_plan_never_reads_the_tests():
    decision = verdict({"control": arm(100.0), "b": arm(105.0)}, planned_subjects_per_arm=None)
    assert (decision.outcome, decision.final) == ("continue", False)
    assert "no planned sample size" in decision.summary


@pytest.mark.parametrize("sequential", [False, True])
def test_no_verdict_before_the_minimum_runtime(sequential):
    decision = verdict(
        {"control": arm(100.0), "b": arm(105.0)}, sequential=sequential, runtime_days=3.0, minimum_runtime_days=7
    )
    assert (decision.outcome, decision.final) == ("continue", False)
    assert "3.0 of the minimum 7 days" in decision.summary
    assert decision.progress.days_remaining == pytest.approx(4.0)


def test_sequential_superiority_ships_before_the_planned_size_once_an_arm_wins():
    decision = verdict(
        {"control": arm(100.0), "b": arm(102.0), "c": arm(100.0)},  # b: z ≈ 6.3; c pending
        sequential=True,
        planned_subjects_per_arm=10 * N,
    )
    assert (decision.outcome, decision.arm, decision.final) == ("ship", "b", True)
    assert find_test(decision, "b").method == "msprt_normal_mixture"


def test_sequential_superiority_continues_while_an_arm_may_still_win():
    decision = verdict({"control": arm(100.0), "b": arm(100.3), "c": arm(97.0)}, sequential=True,
                       planned_subjects_per_arm=10 * N)
    assert (decision.outcome, decision.final) == ("continue", False)
    assert find_test(decision, "c").ruled_out and not find_test(decision, "b").ruled_out
    assert "b may still show an improvement" in decision.summary


def test_sequential_superiority_keeps_the_control_early_when_every_arm_is_significantly_worse():
    decision = verdict({"control": arm(100.0), "b": arm(97.0), "c": arm(96.0)}, sequential=True,
                       planned_subjects_per_arm=10 * N)
    assert (decision.outcome, decision.final) == ("keep_control", True)
    assert "every treatment arm is significantly worse" in decision.summary


def test_sequential_mode_is_final_at_the_planned_size_with_nothing_pending():
    decision = verdict({"control": arm(100.0), "b": arm(100.3)}, sequential=True)
    assert (decision.outcome, decision.final) == ("keep_control", True)


def test_a_significantly_worse_arm_never_ships_when_its_estimate_drifts_back_above_zero():
    # Look 1: b is far worse (z ≈ −9.5, always-valid p ≈ 1e-12); c is level.
    settings = {"sequential": True, "planned_subjects_per_arm": 10 * N, "guardrails": None}
    first = verdict({"control": arm(100.0), "b": arm(97.0), "c": arm(100.0)}, **settings)
    assert find_test(first, "b").ruled_out and first.outcome == "continue"
    # Look 2: b's estimate is +0.05, nowhere near significant. The harmful-side rejection
    # of look 1 must not be read as evidence of an improvement.
    second = verdict(
        {"control": arm(100.0, n=2 * N), "b": arm(100.05, n=2 * N), "c": arm(100.0, n=2 * N)},
        previous=first.running_minima(),
        **settings,
    )
    assert (second.outcome, second.final) == ("continue", False), second.summary
    assert not find_test(second, "b").passed


def test_ties_on_the_primary_metric_ship_the_first_arm_in_weight_order():
    decision = verdict({"control": arm(100.0), "c": arm(102.0), "b": arm(102.0)})
    assert decision.arm == "c"


# --- do no harm (noninferiority) -------------------------------------------------------------


@pytest.mark.parametrize("sequential", [False, True])
def test_noninferiority_ships_the_best_arm_within_the_margin(sequential):
    decision = verdict(
        {
            "control": arm(100.0),
            "b": arm(99.0),  # −1 %: 12.6 se inside the −5 % margin
            "c": arm(98.0),  # −2 %: also inside, but worse than b
            "d": arm(92.0),  # −8 %: 9.5 se beyond the margin
        },
        rule="noninferiority",
        margin=0.05,
        sequential=sequential,
    )
    assert (decision.outcome, decision.arm, decision.final) == ("ship", "b", True)
    primary = find_test(decision, "b", "noninferiority")
    assert primary.relative and primary.family == "confirmatory"
    assert primary.estimate == pytest.approx(-0.01)
    assert primary.bound > -0.05
    assert find_test(decision, "d", "noninferiority").ruled_out
    assert "stays within −5.0% of the control" in decision.summary


@pytest.mark.parametrize("sequential", [False, True])
def test_noninferiority_keeps_the_control_when_no_arm_stays_within_the_margin(sequential):
    decision = verdict({"control": arm(100.0), "b": arm(91.0), "c": arm(92.0)}, rule="noninferiority",
                       margin=0.05, sequential=sequential, planned_subjects_per_arm=10 * N)
    # Fixed mode: before the planned size nothing is read; sequential: both arms are ruled out already.
    if sequential:
        assert (decision.outcome, decision.final) == ("keep_control", True)
    else:
        assert (decision.outcome, decision.final) == ("continue", False)
    at_plan = verdict({"control": arm(100.0), "b": arm(91.0), "c": arm(92.0)}, rule="noninferiority",
                      margin=0.05, sequential=sequential)
    assert (at_plan.outcome, at_plan.final) == ("keep_control", True)
    assert "no treatment arm keeps gmv within −5.0% of the control" in at_plan.summary


def test_sequential_noninferiority_continues_while_the_bound_straddles_the_margin():
    # −4.5 %: 1.6 se from the margin on either side, so neither shown within nor beyond it.
    decision = verdict({"control": arm(100.0), "b": arm(95.5)}, rule="noninferiority", margin=0.05,
                       sequential=True, planned_subjects_per_arm=10 * N)
    assert (decision.outcome, decision.final) == ("continue", False)
    assert "may still show non-inferiority" in decision.summary
    assert find_test(decision, "b").method == "msprt_normal_mixture_one_sided"


# --- privacy first ---------------------------------------------------------------------------

ORDER = ["dp", "cohort", "control"]  # most private first


def privacy(statistics: dict, order=ORDER, **settings) -> Decision:
    return verdict(statistics, rule="privacy_first", margin=0.05, privacy_order=order, **settings)


@pytest.mark.parametrize("sequential", [False, True])
def test_privacy_first_ships_the_most_private_qualifying_design_over_a_better_earning_one(sequential):
    decision = privacy({"control": arm(100.0), "cohort": arm(100.5), "dp": arm(98.5)}, sequential=sequential)
    assert (decision.outcome, decision.arm, decision.final) == ("ship", "dp", True)
    assert decision.summary.startswith("Ship dp: the most private design whose gmv stays within −5.0%")
    assert "dp > cohort > control" in decision.rule_text


@pytest.mark.parametrize("sequential", [False, True])
def test_privacy_first_walks_past_a_more_private_design_that_loses_too_much(sequential):
    decision = privacy({"control": arm(100.0), "cohort": arm(99.0), "dp": arm(91.0)}, sequential=sequential)
    assert (decision.outcome, decision.arm, decision.final) == ("ship", "cohort", True)


@pytest.mark.parametrize("sequential", [False, True])
def test_privacy_first_walks_past_a_design_whose_guardrail_fails(sequential):
    decision = privacy({"control": arm(100.0), "cohort": arm(99.0), "dp": arm(100.0, opt_out=0.12)},
                       sequential=sequential)
    assert decision.arm == "cohort"
    assert not find_test(decision, "dp", "guardrail").passed


@pytest.mark.parametrize("sequential", [False, True])
def test_privacy_first_keeps_the_control_when_it_is_more_private_than_every_qualifying_arm(sequential):
    decision = privacy({"control": arm(100.0), "cohort": arm(100.0), "dp": arm(91.0)},
                       order=["dp", "control", "cohort"], sequential=sequential)
    assert (decision.outcome, decision.arm, decision.final) == ("keep_control", None, True)
    assert "no design more private than the control (dp)" in decision.summary


def test_privacy_first_keeps_the_control_at_once_when_the_control_is_the_most_private_design():
    decision = privacy({"control": arm(100.0), "cohort": arm(100.0), "dp": arm(100.0)},
                       order=["control", "dp", "cohort"], sequential=True, planned_subjects_per_arm=10 * N)
    assert (decision.outcome, decision.final) == ("keep_control", True)
    assert "the control is the most private design" in decision.summary


def test_privacy_first_waits_for_a_more_private_pending_arm_in_sequential_mode():
    settings = {"sequential": True, "planned_subjects_per_arm": 10 * N}
    # dp at −4.5 % is pending (neither within nor beyond the margin yet); cohort qualifies.
    waiting = privacy({"control": arm(100.0), "cohort": arm(99.5), "dp": arm(95.5)}, **settings)
    assert (waiting.outcome, waiting.final) == ("continue", False)
    assert "cohort qualifies, but the more private dp may still qualify" in waiting.summary
    assert find_test(waiting, "cohort").passed and not find_test(waiting, "dp").ruled_out
    # A later look rules dp out (−8 %): now cohort ships, final.
    later = privacy(
        {"control": arm(100.0, n=2 * N), "cohort": arm(99.5, n=2 * N), "dp": arm(92.0, n=2 * N)},
        previous=waiting.running_minima(),
        **settings,
    )
    assert (later.outcome, later.arm, later.final) == ("ship", "cohort", True)
    # In fixed mode at the planned size nothing is pending: the same first look ships cohort.
    fixed = privacy({"control": arm(100.0), "cohort": arm(99.5), "dp": arm(95.5)})
    assert (fixed.outcome, fixed.arm, fixed.final) == ("ship", "cohort", True)


def test_privacy_first_at_the_planned_size_a_pending_arm_no_longer_blocks():
    decision = privacy({"control": arm(100.0), "cohort": arm(99.5), "dp": arm(95.5)}, sequential=True)
    assert (decision.outcome, decision.arm, decision.final) == ("ship", "cohort", True)


def test_privacy_first_ties_on_the_privacy_ladder_follow_the_arm_order():
    from types import SimpleNamespace

    from experiments.privacy_ladder import arms_privacy_order

    def treatment(level, **extra):
        fields = {"personalization_level": level, "dp_epsilon": None, "cohort_k": None,
                  "sensitive_category_policy": "exclude", "retention_days": 30,
                  "default_personalization_consent": False, **extra}
        return SimpleNamespace(**fields)

    arms = [
        SimpleNamespace(key="control", treatment=treatment("full")),
        SimpleNamespace(key="popular", treatment=treatment("popularity")),
        SimpleNamespace(key="session", treatment=treatment("session")),  # ties with popularity
        SimpleNamespace(key="dp", treatment=treatment("dp_popularity", dp_epsilon=1.0)),
    ]
    order = arms_privacy_order(arms)
    assert order == ["popular", "session", "dp", "control"]
    assert arms_privacy_order([arms[0], arms[2], arms[1], arms[3]])[:2] == ["session", "popular"]
    statistics = {"control": arm(100.0), "popular": arm(99.0), "session": arm(99.0), "dp": arm(99.0)}
    assert privacy(statistics, order=order).arm == "popular"


# --- running minima --------------------------------------------------------------------------


def test_sequential_p_values_are_running_minima_over_the_looks():
    settings = {"rule": "noninferiority", "margin": 0.05, "sequential": True, "planned_subjects_per_arm": 10 * N}
    first = verdict({"control": arm(100.0), "b": arm(100.0)}, **settings)
    assert first.outcome == "ship"
    minima = first.running_minima()
    assert set(minima) == {"noninferiority:b:gmv", "guardrail:b:opt_out"}
    p_first = minima["noninferiority:b:gmv"]["p_value"]
    # A later look whose data alone would not qualify b keeps the earlier minimum.
    worse = {"control": arm(100.0, n=2 * N), "b": arm(95.5, n=2 * N)}
    alone = verdict(worse, **settings)
    assert not find_test(alone, "b", "noninferiority").passed
    carried = verdict(worse, previous=minima, **settings)
    primary = find_test(carried, "b", "noninferiority")
    assert primary.p_value == p_first and primary.passed
    assert primary.ruled_out_p_value <= minima["noninferiority:b:gmv"]["ruled_out_p_value"]


def test_a_test_passed_at_an_earlier_look_shows_the_bound_that_passed_it():
    settings = {"rule": "noninferiority", "margin": 0.05, "sequential": True, "planned_subjects_per_arm": 10 * N}
    first = verdict({"control": arm(100.0), "b": arm(100.0)}, **settings)
    passed_at = find_test(first, "b", "noninferiority")
    assert passed_at.passed and passed_at.bound > -0.05
    worse = {"control": arm(100.0, n=2 * N), "b": arm(95.5, n=2 * N)}
    assert find_test(verdict(worse, **settings), "b", "noninferiority").bound < -0.05  # this look alone fails
    carried = find_test(verdict(worse, previous=first.running_minima(), **settings), "b", "noninferiority")
    # Passed on the earlier look's evidence: the bound shown is that evidence, never one beyond the margin.
    assert carried.passed and carried.bound == passed_at.bound > -0.05
    assert carried.estimate == pytest.approx(-0.045)  # the estimate is this look's


def test_previous_values_that_are_not_probabilities_count_as_no_evidence():
    settings = {"sequential": True, "planned_subjects_per_arm": 10 * N, "guardrails": None}
    statistics = {"control": arm(100.0), "b": arm(100.1)}
    fresh = verdict(statistics, **settings)
    garbage = {"superiority:b:gmv": {"p_value": 2.0, "ruled_out_p_value": None}, "superiority:x:gmv": {"p_value": 0}}
    assert verdict(statistics, previous=garbage, **settings).tests == fresh.tests


def test_fixed_mode_has_no_running_minima():
    assert verdict({"control": arm(100.0), "b": arm(101.0)}).running_minima() == {}


# --- the stored document ---------------------------------------------------------------------


@pytest.mark.parametrize("rule", ["superiority", "noninferiority", "privacy_first"])
def test_a_decision_survives_its_json_round_trip(rule):
    settings = {"rule": rule, "sequential": rule != "superiority"}
    if rule != "superiority":
        settings["margin"] = 0.05
    if rule == "privacy_first":
        settings["privacy_order"] = ORDER
    decision = verdict({"control": arm(100.0), "cohort": arm(100.5), "dp": arm(98.5)}, **settings)
    document = json.loads(json.dumps(decision.to_dict(), allow_nan=False))
    assert document["version"] == DECISION_VERSION
    assert Decision.from_dict(document) == decision
    stamped = decision.with_extra(final_since="2026-12-01T00:00:00+00:00")
    again = Decision.from_dict(json.loads(json.dumps(stamped.to_dict())))
    assert again == stamped and again.extra == {"final_since": "2026-12-01T00:00:00+00:00"}


def test_a_schema_1_decision_still_reads():
    old = {
        "rule": "Ship the arm with the best significant improvement of GMV per subject.",
        "primary_metric": "gmv",
        "outcome": "inconclusive",
        "arm": None,
        "reasons": ["No arm differs significantly on GMV per subject.", "Keep running."],
    }
    decision = Decision.from_dict(old)
    assert (decision.outcome, decision.arm, decision.final, decision.version) == ("continue", None, False, 0)
    assert decision.summary == "No arm differs significantly on GMV per subject. Keep running."
    assert decision.rule_text == old["rule"] and decision.tests == () and decision.running_minima() == {}
    shipped = Decision.from_dict({**old, "outcome": "ship", "arm": "b"})
    # A schema-1 verdict was never checked for finality: it reads, but not as final.
    assert (shipped.outcome, shipped.arm, shipped.final) == ("ship", "b", False)


def test_a_sample_ratio_mismatch_is_invalid_and_an_empty_arm_continues():
    mismatch = verdict({"control": arm(100.0, n=2000), "b": arm(105.0, n=1700)})
    assert (mismatch.outcome, mismatch.final, mismatch.tests) == ("invalid", False, ())
    assert "Sample-ratio mismatch" in mismatch.summary
    # An arm without subjects is the clearest mismatch of all...
    assert verdict({"control": arm(100.0)}, weights={"control": 1, "b": 1}).outcome == "invalid"
    # ... and when the caller's own sample-ratio test does not flag it (the results job
    # reports empty arms before deciding), the verdict waits for the arm.
    calm = srm_test({"control": 10, "b": 10}, {"control": 1, "b": 1})
    empty = verdict({"control": arm(100.0)}, weights={"control": 1, "b": 1}, srm=calm)
    assert (empty.outcome, empty.final) == ("continue", False)
    assert "b have no subjects" in empty.summary


# --- bad input -------------------------------------------------------------------------------

STATISTICS = {"control": arm(100.0), "cohort": arm(100.0), "dp": arm(100.0)}

BAD_SETTINGS = [
    ({"rule": "noninferiority", "margin": -0.05}, "margin must be positive"),
    ({"rule": "privacy_first", "margin": 0.0, "privacy_order": ORDER}, "margin must be positive"),
    ({"rule": "noninferiority", "margin": 5.0}, "margin is a relative loss below 1"),
    ({"rule": "noninferiority", "margin": float("nan")}, "margin must be finite"),
    ({"rule": "noninferiority", "margin": "5%"}, "margin must be a real number"),
    ({"rule": "noninferiority", "margin": None}, "margin is required by the noninferiority rule"),
    ({"rule": "privacy_first", "margin": None, "privacy_order": ORDER}, "margin is required by the privacy_first rule"),
    ({"rule": "superiority", "margin": 0.05}, "margin: the superiority rule takes no margin"),
    ({"rule": "privacy_first", "margin": 0.05, "privacy_order": None},
     "privacy_order is required by the privacy_first rule"),
    ({"rule": "privacy_first", "margin": 0.05, "privacy_order": ["dp", "cohort", "control", "full"]},
     "privacy_order names unknown arms ['full']"),
    ({"rule": "privacy_first", "margin": 0.05, "privacy_order": ["dp", "control"]},
     "privacy_order must list every arm; missing ['cohort']"),
    ({"rule": "privacy_first", "margin": 0.05, "privacy_order": ["dp", "dp", "cohort", "control"]},
     "privacy_order names arms ['dp'] more than once"),
    ({"rule": "privacy_first", "margin": 0.05, "privacy_order": "dp,cohort,control"},
     "privacy_order must be a list"),
    ({"planned_subjects_per_arm": 0}, "planned_subjects_per_arm must be at least 1"),
    ({"planned_subjects_per_arm": -5}, "planned_subjects_per_arm must be a whole number of subjects, at least 1"),
    ({"planned_subjects_per_arm": 10.5}, "planned_subjects_per_arm must be a whole number"),
    ({"planned_subjects_per_arm": True}, "planned_subjects_per_arm must be a whole number"),
    ({"planned_subjects_per_arm": "2000"}, "planned_subjects_per_arm must be a whole number"),
    ({"rule": "bayesian"}, "rule must be one of superiority, noninferiority, privacy_first, got 'bayesian'"),
    ({"guardrails": {"opt_out": {"margin": -0.01, "higher_is_better": False}}},
     "guardrails['opt_out'] margin must be positive"),
    ({"guardrails": {"opt_out": {"higher_is_better": False}}}, "guardrails['opt_out']: 'margin' is required"),
    ({"guardrails": {"opt_out": {"margin": 0.01}}}, "guardrails['opt_out']: 'higher_is_better' must be"),
    ({"guardrails": {"refunds": {"margin": 0.01, "higher_is_better": False}}},
     "guardrails: 'refunds' is not one of the metrics"),
    ({"primary": "revenue"}, "primary: 'revenue' is not one of the metrics"),
    ({"control": "baseline"}, "control: 'baseline' is not among the weighted arms"),
    ({"alpha": 0.0}, "alpha must be a number strictly between 0 and 1"),
    ({"sequential": "yes"}, "sequential must be true or false"),
]


@pytest.mark.parametrize(("settings", "message"), BAD_SETTINGS)
def test_bad_settings_raise_a_value_error_naming_the_argument(settings, message):
    with pytest.raises(ValueError) as error:
        verdict(STATISTICS, **settings)
    assert message in str(error.value)


def subject_rows(seed: int = 1, n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    arms = rng.choice(["control", "cohort", "dp"], n)
    return pd.DataFrame({
        "arm": arms,
        "gmv": rng.gamma(2.0, 50.0, n) * np.where(arms == "dp", 0.99, 1.0),
        "opt_out": (rng.random(n) < 0.05).astype(int),
    })


ROW_SETTINGS = {
    "control": "control",
    "weights": {"control": 1, "cohort": 1, "dp": 1},
    "metrics": {"gmv": "mean", "opt_out": "proportion"},
    "primary": "gmv",
    "guardrails": {"opt_out": {"margin": 0.05, "higher_is_better": False}},
    "rule": "privacy_first",
    "margin": 0.2,
    "privacy_order": ORDER,
    "planned_subjects_per_arm": 150,
}


@pytest.mark.parametrize(("settings", "message"), [
    *BAD_SETTINGS[:14],
    ({"planned_subjects_per_arm": None}, "planned_subjects_per_arm is required in fixed-horizon mode"),
])
def test_decide_on_rows_raises_the_same_errors(settings, message):
    arguments = {**ROW_SETTINGS, **settings}
    if arguments["rule"] != "privacy_first" and "privacy_order" not in settings:
        arguments["privacy_order"] = None
    with pytest.raises(ValueError) as error:
        decide(subject_rows(), **arguments)
    assert message in str(error.value)


def test_decide_on_rows_is_decide_statistics_with_the_report_beside_it():
    from experiments.stats import statistics_from_frame

    result = decide(subject_rows(), **ROW_SETTINGS)
    statistics, _ = statistics_from_frame(subject_rows(), metrics=ROW_SETTINGS["metrics"])
    expected = decide_statistics(
        statistics, **{k: v for k, v in ROW_SETTINGS.items() if k != "metrics"}
    ).to_dict()
    assert {key: value for key, value in result.items() if key != "report"} == expected
    assert result["report"]["primary"] == "gmv"
    assert result["report"]["adjustment"]["confirmatory"] == "holm"
    assert result["outcome"] in ("ship", "keep_control") and result["final"] is True
    json.dumps(result, allow_nan=False)


# --- the command line ----------------------------------------------------------------------------


@pytest.fixture
def rows_csv(tmp_path):
    path = tmp_path / "rows.csv"
    subject_rows().to_csv(path, index=False)
    return path


def cli_arguments(path, *extra: str, guardrail: str = "opt_out:0.05:lower") -> list[str]:
    return [
        "decide", str(path), "--control", "control", "--weights", "control=1,cohort=1,dp=1",
        "--metric", "gmv:mean", "opt_out:proportion", "--primary", "gmv", "--guardrail", guardrail, *extra,
    ]


def test_cli_decide_prints_the_same_verdict_as_decide(rows_csv, capsys):
    code = main(cli_arguments(rows_csv, "--rule", "privacy_first", "--margin", "0.2", "--privacy-order",
                              "dp,cohort,control", "--planned", "150"))
    assert code == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(decide(subject_rows(), **ROW_SETTINGS)))


@pytest.mark.parametrize(("extra", "message"), [
    (["--rule", "noninferiority", "--margin", "-0.05", "--planned", "150"], "margin must be positive"),
    (["--rule", "noninferiority", "--planned", "150"], "margin is required by the noninferiority rule"),
    (["--rule", "privacy_first", "--margin", "0.05", "--privacy-order", "dp,cohort,control,full", "--planned",
      "150"], "privacy_order names unknown arms ['full']"),
    (["--rule", "privacy_first", "--margin", "0.05", "--privacy-order", "dp,control", "--planned", "150"],
     "privacy_order must list every arm; missing ['cohort']"),
    (["--planned", "0"], "planned_subjects_per_arm must be at least 1"),
    ([], "planned_subjects_per_arm is required in fixed-horizon mode"),
    (["--rule", "bayesian", "--planned", "150"], "rule must be one of superiority, noninferiority, privacy_first"),
    (["--planned", "150", "--guardrail", "opt_out:-0.01:lower"], "guardrails['opt_out'] margin must be positive"),
    (["--planned", "150", "--guardrail", "opt_out:0.01:worse"], "--guardrail must look like METRIC:MARGIN:higher|lower"),
    (["--planned", "150", "--primary", "revenue"], "primary: 'revenue' is not one of the metrics"),
])
def test_cli_decide_bad_input_exits_2_with_the_message_on_stderr(rows_csv, capsys, extra, message):
    if "--guardrail" in extra:  # replaces the default guardrail
        at = extra.index("--guardrail")
        arguments = cli_arguments(rows_csv, *extra[:at], *extra[at + 2:], guardrail=extra[at + 1])
    else:
        arguments = cli_arguments(rows_csv, *extra)
    assert main(arguments) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ") and message in captured.err


def test_cli_decide_as_a_process_exits_2(rows_csv):
    completed = subprocess.run(
        [sys.executable, "-m", "experiments.stats", *cli_arguments(rows_csv, "--planned", "0")],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert "planned_subjects_per_arm must be at least 1" in completed.stderr
    assert "Traceback" not in completed.stderr
