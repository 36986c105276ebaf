"""Non-inferiority with a margin, equal to statsmodels' shifted one-sided Welch test."""

import numpy as np
import pytest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from experiments.stats import (
    InsufficientDataError,
    ProportionStatistic,
    compare,
    noninferiority_test,
)

from .stats_testkit import mean_statistic, proportion_statistic


def test_opt_out_guardrail_equals_statsmodels_one_sided_shifted_welch():
    # Opt-out may not rise by more than 0.5 percentage points: H0 Δ ≥ 0.005.
    rng = np.random.default_rng(1)
    control = (rng.random(20_000) < 0.030).astype(float)
    treatment = (rng.random(20_000) < 0.031).astype(float)
    result = noninferiority_test(
        proportion_statistic(control),
        proportion_statistic(treatment),
        margin=0.005,
        higher_is_better=False,
    )
    _, p_value, dof = CompareMeans(DescrStatsW(treatment), DescrStatsW(control)).ttest_ind(
        alternative="smaller", usevar="unequal", value=0.005
    )
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    assert result.degrees_of_freedom == pytest.approx(dof, rel=1e-9)
    assert result.noninferior == (p_value < 0.05)
    # The one-sided 95 % upper bound is the upper end of the two-sided 90 % interval.
    two_sided_90 = compare(
        proportion_statistic(control), proportion_statistic(treatment), alpha=0.10
    )
    assert result.bound == pytest.approx(two_sided_90.absolute.ci[1], rel=1e-12)
    assert result.noninferior == (result.bound < 0.005)


def test_higher_is_better_equals_statsmodels_larger_alternative():
    rng = np.random.default_rng(2)
    control, treatment = rng.gamma(2.0, 50.0, 3000), rng.gamma(2.0, 49.0, 2500)
    result = noninferiority_test(
        mean_statistic(control), mean_statistic(treatment), margin=3.0, higher_is_better=True
    )
    _, p_value, _ = CompareMeans(DescrStatsW(treatment), DescrStatsW(control)).ttest_ind(
        alternative="larger", usevar="unequal", value=-3.0
    )
    assert result.p_value == pytest.approx(p_value, rel=1e-9)
    lower_90 = compare(mean_statistic(control), mean_statistic(treatment), alpha=0.10).absolute.ci[
        0
    ]
    assert result.bound == pytest.approx(lower_90, rel=1e-12)
    assert result.noninferior == (result.bound > -3.0)


def test_clear_harm_is_not_noninferior_and_clear_safety_is():
    control = ProportionStatistic(n=50_000, successes=1_500)  # 3.0 %
    harmful = ProportionStatistic(n=50_000, successes=2_000)  # 4.0 %: +1 pp > 0.5 pp
    safe = ProportionStatistic(n=50_000, successes=1_480)  # 2.96 %
    assert not noninferiority_test(
        control, harmful, margin=0.005, higher_is_better=False
    ).noninferior
    assert noninferiority_test(control, safe, margin=0.005, higher_is_better=False).noninferior
    # The direction matters: a fall in conversion of 1 pp is not non-inferior at 0.5 pp.
    assert not noninferiority_test(
        harmful, control, margin=0.005, higher_is_better=True
    ).noninferior


def test_relative_margin_uses_the_delta_method_lift():
    rng = np.random.default_rng(3)
    control, treatment = rng.normal(100, 30, 20_000), rng.normal(100.5, 30, 20_000)
    result = noninferiority_test(
        mean_statistic(control),
        mean_statistic(treatment),
        margin=0.02,
        higher_is_better=True,
        relative=True,
    )
    lift = compare(mean_statistic(control), mean_statistic(treatment), alpha=0.10).relative
    assert result.estimate == pytest.approx(lift.estimate, rel=1e-12)
    assert result.bound == pytest.approx(lift.ci[0], rel=1e-12)
    assert result.relative and result.noninferior


@pytest.mark.parametrize("margin", [0, -0.01, float("nan")])
def test_margin_must_be_a_positive_amount_of_harm(margin):
    statistic = ProportionStatistic(n=100, successes=10)
    with pytest.raises(ValueError, match="margin"):
        noninferiority_test(statistic, statistic, margin=margin, higher_is_better=False)


def test_direction_is_required_and_boolean():
    statistic = ProportionStatistic(n=100, successes=10)
    with pytest.raises(TypeError):
        noninferiority_test(statistic, statistic, margin=0.01)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="higher_is_better"):
        noninferiority_test(statistic, statistic, margin=0.01, higher_is_better="yes")


def test_relative_margin_on_a_zero_control_is_an_error():
    with pytest.raises(InsufficientDataError, match="non-zero control mean"):
        noninferiority_test(
            ProportionStatistic(n=100, successes=0),
            ProportionStatistic(n=100, successes=3),
            margin=0.1,
            higher_is_better=False,
            relative=True,
        )
