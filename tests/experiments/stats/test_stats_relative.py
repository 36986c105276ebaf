"""The relative lift: delta method with the control mean's own uncertainty."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from experiments.stats import SampleMeanStatistic, compare

from .stats_testkit import mean_statistic


def statistic_with(n: int, mean: float, variance: float) -> SampleMeanStatistic:
    return SampleMeanStatistic(n=n, sum=n * mean, sum_squares=(n - 1) * variance + n * mean * mean)


def test_relative_lift_matches_a_hand_computed_delta_method_value():
    # Computed by hand: control mean 10 with Var(mean) = 4/100 = 0.04, treatment
    # mean 11 with Var(mean) = 5/100 = 0.05.
    #   lift = 11/10 − 1 = 0.1
    #   Var  = 0.05/10² + 11²·0.04/10⁴ = 0.0005 + 0.000484 = 0.000984
    #   se   = √0.000984 = 0.0313687742...
    #   Welch df = 0.09² / ((0.04² + 0.05²)/99) = 0.0081·99/0.0041 = 195.5853658...
    result = compare(statistic_with(100, 10.0, 4.0), statistic_with(100, 11.0, 5.0))
    assert result.relative.estimate == pytest.approx(0.1, rel=1e-12)
    assert result.relative.standard_error == pytest.approx(math.sqrt(0.000984), rel=1e-12)
    assert result.degrees_of_freedom == pytest.approx(0.0081 * 99 / 0.0041, rel=1e-12)
    quantile = scipy_stats.t.isf(0.025, 0.0081 * 99 / 0.0041)
    assert result.relative.ci[0] == pytest.approx(0.1 - quantile * math.sqrt(0.000984), rel=1e-12)
    assert result.relative.p_value == pytest.approx(
        2 * scipy_stats.t.sf(0.1 / math.sqrt(0.000984), 0.0081 * 99 / 0.0041), rel=1e-10
    )
    # Not the naive absolute interval divided by the control mean (se 0.3/10 = 0.03).
    assert result.relative.standard_error != pytest.approx(0.03, rel=1e-3)


def test_relative_lift_equals_the_delta_method_on_the_raw_rows():
    # Independent route: the gradient of m_t/m_c − 1 against the covariance of
    # the two sample means estimated with numpy from the rows.
    rng = np.random.default_rng(5)
    control, treatment = rng.gamma(2.0, 3.0, 700), rng.gamma(2.2, 3.0, 500)
    m_c, m_t = control.mean(), treatment.mean()
    covariance = np.diag(
        [np.var(treatment, ddof=1) / treatment.size, np.var(control, ddof=1) / control.size]
    )
    gradient = np.array([1 / m_c, -m_t / m_c**2])
    result = compare(mean_statistic(control), mean_statistic(treatment))
    assert result.relative.estimate == pytest.approx(m_t / m_c - 1, rel=1e-9)
    assert result.relative.standard_error == pytest.approx(
        math.sqrt(gradient @ covariance @ gradient), rel=1e-9
    )


def test_negative_control_mean_keeps_the_sign_of_the_absolute_difference():
    # Net GMV after refunds can be negative. −10 → −9 is an increase: +10 %,
    # not the −10 % that 9/10 − 1 would silently report.
    result = compare(statistic_with(200, -10.0, 4.0), statistic_with(200, -9.0, 4.0))
    assert result.absolute.estimate == pytest.approx(1.0)
    assert result.relative.estimate == pytest.approx(0.1)
    assert result.relative.ci[0] < 0.1 < result.relative.ci[1]
    assert any("control mean is negative" in note for note in result.notes)
    mirrored = compare(statistic_with(200, 10.0, 4.0), statistic_with(200, 11.0, 4.0))
    # Var(g) does not depend on the sign of the control mean... but it does on m_t:
    # (−9)² vs 11² in the second term; check the formula directly.
    expected = math.sqrt(0.02 / 100 + 81 * 0.02 / 10_000)
    assert result.relative.standard_error == pytest.approx(expected, rel=1e-12)
    assert mirrored.relative.standard_error == pytest.approx(
        math.sqrt(0.02 / 100 + 121 * 0.02 / 10_000), rel=1e-12
    )


def test_zero_control_mean_makes_the_relative_lift_undefined_not_infinite():
    result = compare(statistic_with(50, 0.0, 1.0), statistic_with(50, 0.5, 1.0))
    assert result.relative.to_dict() == {
        "estimate": None,
        "ci": None,
        "p_value": None,
        "standard_error": None,
    }
    assert result.absolute.estimate == pytest.approx(0.5)
    assert any("control mean is zero" in note for note in result.notes)


def test_a_control_mean_indistinguishable_from_zero_is_flagged():
    result = compare(statistic_with(20, 0.1, 4.0), statistic_with(20, 1.0, 4.0))
    assert result.relative.estimate is not None
    assert any("Fieller" in note for note in result.notes)
    clear = compare(statistic_with(2000, 10.0, 4.0), statistic_with(2000, 10.2, 4.0))
    assert clear.notes == ()
