"""CUPED: equal to OLS with a treatment dummy; variance from each arm's residuals."""

import math

import numpy as np
import pytest
import statsmodels.api as sm
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from experiments.stats import InsufficientDataError, compare, cuped_slope

from .stats_testkit import cuped_statistic, mean_statistic

TOLERANCE = 1e-9


def correlated_rows(rng, n, *, rho, shift=0.0, scale=1.0):
    covariate = rng.normal(100.0, 20.0, n)
    noise = rng.normal(0.0, 20.0, n)
    metric = 50.0 + shift + scale * (rho * (covariate - 100.0) + math.sqrt(1 - rho**2) * noise)
    return metric, covariate


def ols_with_treatment_dummy(y_control, x_control, y_treatment, x_treatment, cov_type="nonrobust"):
    y = np.concatenate([y_control, y_treatment])
    treated = np.concatenate([np.zeros(y_control.size), np.ones(y_treatment.size)])
    x = np.concatenate([x_control, x_treatment])
    return sm.OLS(y, np.column_stack([np.ones_like(y), treated, x])).fit(cov_type=cov_type)


@pytest.mark.parametrize(
    ("seed", "n_control", "n_treatment", "rho"),
    [(1, 500, 500, 0.7), (2, 300, 900, 0.3), (3, 2000, 1500, 0.95)],
)
def test_cuped_estimate_and_slope_equal_ols_with_a_treatment_dummy(
    seed, n_control, n_treatment, rho
):
    rng = np.random.default_rng(seed)
    y_c, x_c = correlated_rows(rng, n_control, rho=rho)
    y_t, x_t = correlated_rows(rng, n_treatment, rho=rho, shift=1.5, scale=1.3)
    fit = ols_with_treatment_dummy(y_c, x_c, y_t, x_t)
    control, treatment = cuped_statistic(y_c, x_c), cuped_statistic(y_t, x_t)
    result = compare(control, treatment)
    assert result.cuped and result.method == "cuped_welch_t"
    assert result.absolute.estimate == pytest.approx(fit.params[1], rel=TOLERANCE)
    assert result.theta == pytest.approx(fit.params[2], rel=TOLERANCE)
    assert cuped_slope(control, treatment) == pytest.approx(fit.params[2], rel=TOLERANCE)


def test_cuped_inference_is_welch_on_the_residualised_rows():
    # With θ from the pooled OLS, the test equals statsmodels' unequal-variance
    # t-test on y − θ·x, row by row.
    rng = np.random.default_rng(4)
    y_c, x_c = correlated_rows(rng, 400, rho=0.6)
    y_t, x_t = correlated_rows(rng, 650, rho=0.6, shift=2.0, scale=1.4)
    theta = ols_with_treatment_dummy(y_c, x_c, y_t, x_t).params[2]
    compared = CompareMeans(DescrStatsW(y_t - theta * x_t), DescrStatsW(y_c - theta * x_c))
    t_statistic, p_value, dof = compared.ttest_ind(usevar="unequal")
    low, high = compared.tconfint_diff(usevar="unequal")
    result = compare(cuped_statistic(y_c, x_c), cuped_statistic(y_t, x_t))
    assert result.absolute.estimate / result.absolute.standard_error == pytest.approx(
        t_statistic, rel=TOLERANCE
    )
    assert result.absolute.p_value == pytest.approx(p_value, rel=TOLERANCE)
    assert result.degrees_of_freedom == pytest.approx(dof, rel=TOLERANCE)
    assert result.absolute.ci == pytest.approx((low, high), rel=TOLERANCE)


def test_cuped_standard_error_agrees_with_heteroskedasticity_robust_ols_at_scale():
    # Not the same estimator (we treat θ as known), so not to 1e-9: at these
    # sizes θ's own error contributes well under 1 %.
    rng = np.random.default_rng(8)
    y_c, x_c = correlated_rows(rng, 5000, rho=0.7)
    y_t, x_t = correlated_rows(rng, 3000, rho=0.7, shift=1.0, scale=1.5)
    robust = ols_with_treatment_dummy(y_c, x_c, y_t, x_t, cov_type="HC2")
    result = compare(cuped_statistic(y_c, x_c), cuped_statistic(y_t, x_t))
    assert result.absolute.standard_error == pytest.approx(robust.bse[1], rel=0.01)


def test_cuped_relative_lift_uses_the_covariance_with_the_control_mean():
    # Independent route: delta method on (adjusted treatment, adjusted control,
    # raw control mean) with their covariance estimated by numpy from the rows.
    rng = np.random.default_rng(9)
    y_c, x_c = correlated_rows(rng, 800, rho=0.8)
    y_t, x_t = correlated_rows(rng, 700, rho=0.8, shift=3.0)
    result = compare(cuped_statistic(y_c, x_c), cuped_statistic(y_t, x_t))
    theta = result.theta
    r_t, r_c = y_t - theta * x_t, y_c - theta * x_c
    difference = r_t.mean() - r_c.mean()
    m_c = y_c.mean()
    control_block = np.cov(np.vstack([r_c, y_c]), ddof=1) / y_c.size
    covariance = np.zeros((3, 3))
    covariance[0, 0] = np.var(r_t, ddof=1) / r_t.size
    covariance[1:, 1:] = control_block
    gradient = np.array([1 / m_c, -1 / m_c, -difference / m_c**2])
    assert result.relative.estimate == pytest.approx(difference / m_c, rel=TOLERANCE)
    assert result.relative.standard_error == pytest.approx(
        math.sqrt(gradient @ covariance @ gradient), rel=TOLERANCE
    )
    # The raw means are reported; the adjusted difference is not their difference.
    assert result.control_mean == pytest.approx(m_c) and result.treatment_mean == pytest.approx(
        y_t.mean()
    )


def test_cuped_reports_its_variance_reduction():
    rng = np.random.default_rng(10)
    y_c, x_c = correlated_rows(rng, 3000, rho=0.8)
    y_t, x_t = correlated_rows(rng, 3000, rho=0.8)
    cuped = compare(cuped_statistic(y_c, x_c), cuped_statistic(y_t, x_t))
    plain = compare(mean_statistic(y_c), mean_statistic(y_t))
    assert cuped.variance_reduction == pytest.approx(
        1 - (cuped.absolute.standard_error / plain.absolute.standard_error) ** 2, rel=TOLERANCE
    )
    assert cuped.variance_reduction == pytest.approx(0.64, abs=0.03)


def test_a_constant_covariate_means_no_adjustment():
    rng = np.random.default_rng(12)
    y_c, y_t = rng.normal(5, 1, 100), rng.normal(5.3, 1, 120)
    cuped = compare(cuped_statistic(y_c, np.zeros(100)), cuped_statistic(y_t, np.zeros(120)))
    plain = compare(mean_statistic(y_c), mean_statistic(y_t))
    assert cuped.theta == 0.0
    assert cuped.absolute.p_value == pytest.approx(plain.absolute.p_value, rel=TOLERANCE)
    assert cuped.absolute.ci == pytest.approx(plain.absolute.ci, rel=TOLERANCE)
    assert any("CUPED made no adjustment" in note for note in cuped.notes)


def test_a_metric_that_is_exactly_linear_in_the_covariate_cannot_be_tested():
    x_c, x_t = np.arange(10.0), np.arange(12.0) + 3
    with pytest.raises(InsufficientDataError, match="zero residual variance"):
        compare(cuped_statistic(2 * x_c + 1, x_c), cuped_statistic(2 * x_t + 1, x_t))


@pytest.mark.parametrize("scale", [1.0, 0.1, 3.7, 1e-3, 1e4])
def test_an_exact_fit_is_recognised_despite_rounding_noise(scale):
    # Control: two points, so the pooled slope (the treatment's covariate is
    # constant) fits them exactly; treatment: constant. The true residual
    # variance is 0 in both arms; float arithmetic leaves ~1e-17 of noise, which
    # must not turn into a t-statistic of 1e14 (found by hypothesis).
    control = cuped_statistic(np.array([0.1, 0.7]) * scale, [0.0, 3.0])
    treatment = cuped_statistic(np.array([0.3, 0.3]) * scale, [0.0, 0.0])
    with pytest.raises(InsufficientDataError, match="zero residual variance"):
        compare(control, treatment)
