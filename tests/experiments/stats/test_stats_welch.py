"""Means and proportions: Welch's t-test, equal to statsmodels on the same rows."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from experiments.stats import (
    InsufficientDataError,
    ProportionStatistic,
    SampleMeanStatistic,
    compare,
)

from .stats_testkit import mean_statistic, proportion_statistic

TOLERANCE = 1e-9


def statsmodels_welch(control, treatment, alpha=0.05):
    compared = CompareMeans(DescrStatsW(treatment), DescrStatsW(control))
    t_statistic, p_value, dof = compared.ttest_ind(usevar="unequal")
    low, high = compared.tconfint_diff(alpha=alpha, usevar="unequal")
    return t_statistic, p_value, dof, low, high


@pytest.mark.parametrize(
    ("seed", "n_control", "n_treatment", "sd_treatment", "alpha"),
    [
        (1, 50, 50, 1.0, 0.05),
        (2, 30, 400, 3.0, 0.05),
        (3, 1000, 250, 0.2, 0.01),
        (4, 5, 7, 10.0, 0.1),
    ],
)
def test_welch_equals_statsmodels_compare_means(seed, n_control, n_treatment, sd_treatment, alpha):
    rng = np.random.default_rng(seed)
    control = rng.normal(10.0, 1.0, n_control)
    treatment = rng.normal(10.4, sd_treatment, n_treatment)
    result = compare(mean_statistic(control), mean_statistic(treatment), alpha=alpha)
    t_statistic, p_value, dof, low, high = statsmodels_welch(control, treatment, alpha)
    assert result.absolute.estimate == pytest.approx(
        treatment.mean() - control.mean(), rel=TOLERANCE
    )
    assert result.absolute.estimate / result.absolute.standard_error == pytest.approx(
        t_statistic, rel=TOLERANCE
    )
    assert result.absolute.p_value == pytest.approx(p_value, rel=TOLERANCE)
    assert result.degrees_of_freedom == pytest.approx(dof, rel=TOLERANCE)
    assert result.absolute.ci[0] == pytest.approx(low, rel=TOLERANCE)
    assert result.absolute.ci[1] == pytest.approx(high, rel=TOLERANCE)
    assert result.control_mean == pytest.approx(control.mean(), rel=TOLERANCE)
    assert result.treatment_mean == pytest.approx(treatment.mean(), rel=TOLERANCE)


def test_welch_equals_scipy_ttest_ind_unequal_var():
    rng = np.random.default_rng(7)
    control, treatment = rng.exponential(2.0, 300), rng.exponential(2.3, 200)
    result = compare(mean_statistic(control), mean_statistic(treatment))
    reference = scipy_stats.ttest_ind(treatment, control, equal_var=False)
    assert result.absolute.p_value == pytest.approx(reference.pvalue, rel=TOLERANCE)
    low, high = reference.confidence_interval(0.95)
    assert result.absolute.ci == pytest.approx((low, high), rel=TOLERANCE)


def test_welch_matches_published_r_output_for_the_sleep_data():
    # Provenance: R's documented example `t.test(extra ~ group, data = sleep)`
    # (Welch by default), printed output: t = -1.8608, df = 17.776,
    # p-value = 0.07939, 95 percent CI -3.3654832 0.2054832 for group1 - group2.
    # Data: Cushny & Peebles (1905), as shipped in R's datasets::sleep.
    group1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    group2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    result = compare(mean_statistic(group1), mean_statistic(group2))  # group2 - group1
    assert result.control_mean == pytest.approx(0.75, abs=1e-12)
    assert result.treatment_mean == pytest.approx(2.33, abs=1e-12)
    assert result.absolute.estimate / result.absolute.standard_error == pytest.approx(
        1.8608, abs=5e-5
    )
    assert result.degrees_of_freedom == pytest.approx(17.776, abs=5e-4)
    assert result.absolute.p_value == pytest.approx(0.07939, abs=5e-6)
    assert result.absolute.ci[0] == pytest.approx(-0.2054832, abs=5e-8)
    assert result.absolute.ci[1] == pytest.approx(3.3654832, abs=5e-8)


@pytest.mark.parametrize(
    ("n_control", "p_control", "n_treatment", "p_treatment"),
    [(2000, 0.1, 2100, 0.115), (80, 0.5, 60, 0.3), (5000, 0.02, 5000, 0.021)],
)
def test_proportion_equals_welch_on_the_zero_one_rows(
    n_control, p_control, n_treatment, p_treatment
):
    # The proportion test is Welch on the Bernoulli sample variances (unpooled):
    # exactly statsmodels' unequal-variance t-test on the 0/1 rows.
    rng = np.random.default_rng(11)
    control = (rng.random(n_control) < p_control).astype(int)
    treatment = (rng.random(n_treatment) < p_treatment).astype(int)
    result = compare(proportion_statistic(control), proportion_statistic(treatment))
    t_statistic, p_value, dof, low, high = statsmodels_welch(
        control.astype(float), treatment.astype(float)
    )
    assert result.absolute.p_value == pytest.approx(p_value, rel=TOLERANCE)
    assert result.degrees_of_freedom == pytest.approx(dof, rel=TOLERANCE)
    assert result.absolute.ci == pytest.approx((low, high), rel=TOLERANCE)
    # ...and the same numbers as treating the 0/1 column as a mean metric.
    as_mean = compare(mean_statistic(control), mean_statistic(treatment))
    assert result.absolute.p_value == pytest.approx(as_mean.absolute.p_value, rel=TOLERANCE)


def test_proportion_is_close_to_the_unpooled_wald_z_test_at_scale():
    # statsmodels' unpooled Wald test differs only by n/(n−1) in each variance
    # and the normal instead of t reference: negligible at marketplace sizes.
    from statsmodels.stats.proportion import test_proportions_2indep

    result = compare(
        ProportionStatistic(n=40_000, successes=4_000),
        ProportionStatistic(n=40_000, successes=4_200),
    )
    reference = test_proportions_2indep(4_200, 40_000, 4_000, 40_000, method="wald", compare="diff")
    assert result.absolute.p_value == pytest.approx(reference.pvalue, rel=1e-3)


def test_huge_effect_reports_a_tiny_p_value_not_zero():
    # t ≈ 22.5 on ~5000 df: the two-sided p is about 1e-106; 1 − cdf would give 0.
    control = SampleMeanStatistic(n=2500, sum=2500 * 10.0, sum_squares=2500 * (100.0 + 1.0) - 1.0)
    treatment = SampleMeanStatistic(
        n=2500, sum=2500 * 10.64, sum_squares=2500 * (10.64**2 + 1.0) - 1.0
    )
    result = compare(control, treatment)
    t_statistic = result.absolute.estimate / result.absolute.standard_error
    assert 0 < result.absolute.p_value < 1e-100
    assert result.absolute.p_value == pytest.approx(
        2 * scipy_stats.t.sf(t_statistic, result.degrees_of_freedom), rel=1e-12
    )
    assert result.significant


def test_one_arm_with_zero_variance_still_has_a_test():
    # Control all zero (no conversions): Welch's df collapse to the other arm's n − 1.
    result = compare(ProportionStatistic(n=50, successes=0), ProportionStatistic(n=60, successes=9))
    assert result.degrees_of_freedom == pytest.approx(59, rel=TOLERANCE)
    assert 0 < result.absolute.p_value < 1
    # ... but the relative lift on a zero control mean is undefined, and says so.
    assert (
        result.relative.estimate is None
        and result.relative.ci is None
        and result.relative.p_value is None
    )
    assert any("control mean is zero" in note for note in result.notes)


def test_zero_variance_in_both_arms_is_an_error_not_a_nan():
    with pytest.raises(InsufficientDataError, match="zero variance in both arms"):
        compare(ProportionStatistic(n=100, successes=0), ProportionStatistic(n=100, successes=0))
    with pytest.raises(ValueError, match="zero variance"):
        compare(mean_statistic([3.0] * 5), mean_statistic([4.0] * 7))


@pytest.mark.parametrize(("control_n", "treatment_n"), [(0, 10), (10, 0), (1, 10), (10, 1)])
def test_empty_or_single_subject_arms_are_errors(control_n, treatment_n):
    control = SampleMeanStatistic(
        n=control_n, sum=float(control_n), sum_squares=float(control_n) * 2
    )
    treatment = SampleMeanStatistic(
        n=treatment_n, sum=float(treatment_n), sum_squares=float(treatment_n) * 2
    )
    with pytest.raises(ValueError, match="subject"):
        compare(control, treatment)


def test_mismatched_statistic_types_are_rejected():
    with pytest.raises(ValueError, match="differ in type"):
        compare(ProportionStatistic(n=10, successes=3), mean_statistic(np.arange(10.0)))


@pytest.mark.parametrize("alpha", [0, 1, -0.1, 1.5, math.nan, "0.05", True])
def test_alpha_must_be_a_probability(alpha):
    with pytest.raises(ValueError, match="alpha"):
        compare(mean_statistic([1.0, 2.0, 3.0]), mean_statistic([2.0, 3.0, 5.0]), alpha=alpha)


def test_stand_alone_comparison_is_significant_on_the_raw_p_value():
    rng = np.random.default_rng(3)
    result = compare(mean_statistic(rng.normal(0, 1, 400)), mean_statistic(rng.normal(0.5, 1, 400)))
    assert result.p_value_adjusted is None
    assert result.significant is (result.absolute.p_value < 0.05)
    assert result.absolute.ci[0] > 0
