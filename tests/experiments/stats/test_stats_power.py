"""Power and sample size, equal to statsmodels' normal power functions."""

import math

import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.power import NormalIndPower, normal_power_het, zt_ind_solve_power

from experiments.stats import (
    experiment_plan,
    minimum_detectable_effect,
    required_sample_size,
    statistical_power,
)


@pytest.mark.parametrize(
    ("effect", "n_control", "n_treatment", "alternative"),
    [
        (5.0, 400, 400, "two-sided"),
        (2.0, 1000, 3000, "two-sided"),
        (-4.0, 250, 500, "one-sided"),
        (0.5, 100, 100, "two-sided"),
    ],
)
def test_mean_power_equals_normal_ind_power(effect, n_control, n_treatment, alternative):
    sd = 40.0
    ours = statistical_power(
        metric_type="mean",
        baseline_mean=100.0,
        effect=effect,
        standard_deviation=sd,
        control_n=n_control,
        treatment_n=n_treatment,
        alternative=alternative,
    )
    theirs = NormalIndPower().power(
        abs(effect) / sd,
        nobs1=n_control,
        alpha=0.05,
        ratio=n_treatment / n_control,
        alternative="two-sided" if alternative == "two-sided" else "larger",
    )
    assert ours == pytest.approx(theirs, rel=1e-9)


@pytest.mark.parametrize(
    ("baseline", "effect", "n_control", "n_treatment"),
    [(0.10, 0.01, 5000, 5000), (0.03, 0.005, 20_000, 10_000), (0.5, -0.05, 800, 900)],
)
def test_proportion_power_equals_statsmodels_heterogeneous_normal_power(
    baseline, effect, n_control, n_treatment
):
    # Unpooled variances under both hypotheses, like the engine's test: in
    # statsmodels' normal_power_het, std_null = std_alternative = √(v_c + v_t·n_c/n_t).
    ours = statistical_power(
        metric_type="proportion",
        baseline_mean=baseline,
        effect=effect,
        control_n=n_control,
        treatment_n=n_treatment,
    )
    treated = baseline + effect
    std = math.sqrt(baseline * (1 - baseline) + treated * (1 - treated) * n_control / n_treatment)
    theirs = normal_power_het(abs(effect), n_control, 0.05, std_null=std, std_alternative=std)
    assert ours == pytest.approx(theirs, rel=1e-9)


@pytest.mark.parametrize(
    ("standardised", "ratio", "power", "alpha"),
    [(0.5, 1.0, 0.8, 0.05), (0.1, 2.0, 0.9, 0.05), (0.02, 1.0, 0.8, 0.01), (0.05, 0.5, 0.95, 0.1)],
)
def test_sample_size_equals_statsmodels_solve_power(standardised, ratio, power, alpha):
    ours = required_sample_size(
        metric_type="mean",
        baseline_mean=10.0,
        minimum_detectable_effect=standardised * 3.0,
        standard_deviation=3.0,
        alpha=alpha,
        power=power,
        treatment_to_control_ratio=ratio,
    )
    theirs = zt_ind_solve_power(effect_size=standardised, alpha=alpha, power=power, ratio=ratio)
    # statsmodels stops its root search at brentq's default tolerance (its
    # answer is off by ~1e-9 relative); ours solves to machine precision, which
    # statsmodels' own power function confirms.
    assert ours.control_n_exact == pytest.approx(theirs, rel=1e-8)
    achieved = NormalIndPower().power(
        standardised, nobs1=ours.control_n_exact, alpha=alpha, ratio=ratio
    )
    assert achieved == pytest.approx(power, rel=1e-12)
    assert ours.control_n == math.ceil(theirs)
    assert ours.treatment_n == math.ceil(theirs * ratio)


def test_sample_size_reference_value_by_hand():
    # Two-sided α = 0.05, power 0.8, d = 0.5, equal arms, normal approximation:
    # n = 2(z_0.975 + z_0.8)²/d² = 2(1.959963985 + 0.841621234)²/0.25 = 62.7907...
    # (the far tail lowers it by about 1e-4). Cohen's t-based table says 64.
    result = required_sample_size(
        metric_type="mean", baseline_mean=0.0, minimum_detectable_effect=0.5, standard_deviation=1.0
    )
    assert result.control_n_exact == pytest.approx(62.79, abs=0.01)
    assert (result.control_n, result.treatment_n) == (63, 63)


def test_proportion_sample_size_with_a_relative_effect():
    # 10 % baseline conversion, +5 % relative (→ 10.5 %), by hand with the
    # one-tail formula: (1.959964 + 0.841621)²·(0.09 + 0.093975)/0.005² = 57 759.9;
    # the far tail (Φ(−4.76) ≈ 1e-6 of extra power) lowers it by ~2.5e-6 relative.
    result = required_sample_size(
        metric_type="proportion", baseline_mean=0.10, minimum_detectable_effect=0.05, relative=True
    )
    one_tail = (
        (scipy_stats.norm.isf(0.025) + scipy_stats.norm.isf(0.2)) ** 2
        * (0.09 + 0.105 * 0.895)
        / 0.005**2
    )
    assert result.absolute_effect == pytest.approx(0.005)
    assert result.control_n_exact == pytest.approx(one_tail, rel=1e-5)
    assert result.control_n_exact < one_tail
    achieved = statistical_power(
        metric_type="proportion",
        baseline_mean=0.10,
        effect=0.005,
        control_n=result.control_n,
        treatment_n=result.treatment_n,
    )
    assert 0.8 <= achieved < 0.80002


def test_minimum_detectable_effect_inverts_the_sample_size():
    for metric_type, baseline, sd in (("mean", 120_000.0, 300_000.0), ("proportion", 0.03, None)):
        size = required_sample_size(
            metric_type=metric_type,
            baseline_mean=baseline,
            minimum_detectable_effect=0.04,
            relative=True,
            standard_deviation=sd,
        )
        mde = minimum_detectable_effect(
            metric_type=metric_type,
            baseline_mean=baseline,
            control_n=size.control_n,
            treatment_n=size.treatment_n,
            standard_deviation=sd,
            relative=True,
        )
        assert mde == pytest.approx(0.04, rel=1e-3) and mde <= 0.04


def test_experiment_plan_for_three_arms_and_daily_traffic():
    # Opt-out guardrail planning: baseline 3 %, detect +0.5 pp, weights 2:1:1,
    # 4000 new subjects a day. Alpha is split over the two treatment arms.
    plan = experiment_plan(
        metric_type="proportion",
        baseline_mean=0.03,
        minimum_detectable_effect=0.005,
        weights={"control": 2, "b": 1, "c": 1},
        control="control",
        daily_subjects=4000,
    )
    single = required_sample_size(
        metric_type="proportion",
        baseline_mean=0.03,
        minimum_detectable_effect=0.005,
        alpha=0.025,
        treatment_to_control_ratio=0.5,
    )
    assert plan.alpha_per_comparison == 0.025
    assert plan.subjects_per_arm["control"] == math.ceil(single.control_n_exact)
    assert (
        plan.subjects_per_arm["b"]
        == plan.subjects_per_arm["c"]
        == math.ceil(single.control_n_exact / 2)
    )
    assert plan.total_subjects == sum(plan.subjects_per_arm.values())
    assert plan.days == math.ceil(plan.total_subjects / 4000)
    assert plan.to_dict()["days"] == plan.days


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"metric_type": "mean", "baseline_mean": 1.0, "minimum_detectable_effect": 0.1},
            "standard_deviation",
        ),
        (
            {
                "metric_type": "mean",
                "baseline_mean": 1.0,
                "minimum_detectable_effect": 0.1,
                "standard_deviation": 0,
            },
            "standard_deviation",
        ),
        (
            {"metric_type": "proportion", "baseline_mean": 1.2, "minimum_detectable_effect": 0.1},
            "between 0 and 1",
        ),
        (
            {"metric_type": "proportion", "baseline_mean": 0.95, "minimum_detectable_effect": 0.1},
            "leaves",
        ),
        (
            {"metric_type": "proportion", "baseline_mean": 0.5, "minimum_detectable_effect": 0.0},
            "zero",
        ),
        (
            {
                "metric_type": "proportion",
                "baseline_mean": 0.5,
                "minimum_detectable_effect": 0.1,
                "power": 1.0,
            },
            "power",
        ),
        (
            {
                "metric_type": "proportion",
                "baseline_mean": 0.5,
                "minimum_detectable_effect": 0.1,
                "power": 0.01,
            },
            "exceed alpha",
        ),
        (
            {
                "metric_type": "proportion",
                "baseline_mean": 0.5,
                "minimum_detectable_effect": 0.1,
                "treatment_to_control_ratio": 0,
            },
            "ratio",
        ),
        (
            {
                "metric_type": "proportion",
                "baseline_mean": 0.5,
                "minimum_detectable_effect": 0.1,
                "alternative": "larger",
            },
            "alternative",
        ),
        (
            {"metric_type": "median", "baseline_mean": 0.5, "minimum_detectable_effect": 0.1},
            "metric_type",
        ),
        (
            {
                "metric_type": "mean",
                "baseline_mean": 0.0,
                "minimum_detectable_effect": 0.1,
                "standard_deviation": 1.0,
                "relative": True,
            },
            "non-zero baseline",
        ),
    ],
)
def test_bad_planning_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        required_sample_size(**kwargs)


def test_bad_plan_traffic():
    arguments = {
        "metric_type": "proportion",
        "baseline_mean": 0.1,
        "minimum_detectable_effect": 0.01,
        "weights": {"control": 1, "b": 1},
        "control": "control",
    }
    with pytest.raises(ValueError, match="daily_subjects"):
        experiment_plan(**arguments, daily_subjects=0)
    with pytest.raises(ValueError, match="control arm"):
        experiment_plan(**(arguments | {"control": "x"}), daily_subjects=100)
