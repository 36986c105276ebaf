"""Ratio metrics (average order value, CTR): the delta method on per-subject sums."""

import numpy as np
import pytest
from scipy import stats as scipy_stats
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from experiments.stats import InsufficientDataError, RatioStatistic, compare

from .stats_testkit import mean_statistic, ratio_statistic

TOLERANCE = 1e-9


def orders_and_gmv(rng, n, *, order_rate, order_value):
    orders = rng.poisson(order_rate, n).astype(float)
    gmv = np.array([rng.gamma(2.0, order_value / 2.0, int(k)).sum() for k in orders])
    return gmv, orders


def linearised(numerator, denominator):
    """Deng et al. (2018): the ratio's influence values (num − R·den)/mean(den)."""
    ratio = numerator.sum() / denominator.sum()
    return (numerator - ratio * denominator) / denominator.mean()


def test_ratio_variance_equals_the_variance_of_the_linearised_rows():
    rng = np.random.default_rng(1)
    gmv_c, orders_c = orders_and_gmv(rng, 800, order_rate=1.2, order_value=150.0)
    gmv_t, orders_t = orders_and_gmv(rng, 900, order_rate=1.1, order_value=165.0)
    result = compare(ratio_statistic(gmv_c, orders_c), ratio_statistic(gmv_t, orders_t))
    aov_c, aov_t = gmv_c.sum() / orders_c.sum(), gmv_t.sum() / orders_t.sum()
    assert result.method == "delta_method_ratio"
    assert result.control_mean == pytest.approx(aov_c, rel=TOLERANCE)
    assert result.absolute.estimate == pytest.approx(aov_t - aov_c, rel=TOLERANCE)
    l_c, l_t = linearised(gmv_c, orders_c), linearised(gmv_t, orders_t)
    variance = np.var(l_c, ddof=1) / l_c.size + np.var(l_t, ddof=1) / l_t.size
    assert result.absolute.standard_error == pytest.approx(np.sqrt(variance), rel=TOLERANCE)
    # Welch degrees of freedom of the linearised rows, as statsmodels computes them.
    _, _, dof = CompareMeans(DescrStatsW(l_t), DescrStatsW(l_c)).ttest_ind(usevar="unequal")
    assert result.degrees_of_freedom == pytest.approx(dof, rel=TOLERANCE)
    t_statistic = result.absolute.estimate / result.absolute.standard_error
    assert result.absolute.p_value == pytest.approx(
        2 * scipy_stats.t.sf(abs(t_statistic), dof), rel=TOLERANCE
    )


def test_ratio_relative_lift_is_the_delta_method_of_the_two_ratios():
    rng = np.random.default_rng(2)
    gmv_c, orders_c = orders_and_gmv(rng, 600, order_rate=1.5, order_value=100.0)
    gmv_t, orders_t = orders_and_gmv(rng, 600, order_rate=1.5, order_value=110.0)
    result = compare(ratio_statistic(gmv_c, orders_c), ratio_statistic(gmv_t, orders_t))
    r_c, r_t = gmv_c.sum() / orders_c.sum(), gmv_t.sum() / orders_t.sum()
    var_c = np.var(linearised(gmv_c, orders_c), ddof=1) / 600
    var_t = np.var(linearised(gmv_t, orders_t), ddof=1) / 600
    assert result.relative.estimate == pytest.approx(r_t / r_c - 1, rel=TOLERANCE)
    assert result.relative.standard_error == pytest.approx(
        np.sqrt(var_t / r_c**2 + r_t**2 * var_c / r_c**4), rel=TOLERANCE
    )


def test_a_ratio_over_a_denominator_of_one_is_the_mean_metric():
    rng = np.random.default_rng(3)
    control, treatment = rng.normal(3, 1, 50), rng.normal(3.2, 2, 70)
    as_ratio = compare(
        ratio_statistic(control, np.ones(50)), ratio_statistic(treatment, np.ones(70))
    )
    as_mean = compare(mean_statistic(control), mean_statistic(treatment))
    assert as_ratio.absolute.p_value == pytest.approx(as_mean.absolute.p_value, rel=TOLERANCE)
    assert as_ratio.absolute.ci == pytest.approx(as_mean.absolute.ci, rel=TOLERANCE)
    assert as_ratio.relative.standard_error == pytest.approx(
        as_mean.relative.standard_error, rel=TOLERANCE
    )


def test_ratio_with_a_zero_denominator_in_an_arm_is_an_error():
    zero = RatioStatistic(
        n=10,
        numerator_sum=0,
        numerator_sum_squares=0,
        denominator_sum=0,
        denominator_sum_squares=0,
        cross_product=0,
    )
    other = ratio_statistic([1.0, 2.0, 3.0], [1.0, 1.0, 2.0])
    with pytest.raises(InsufficientDataError, match="denominator sums to zero"):
        compare(zero, other)


def test_click_through_rate_on_impressions():
    # CTR = clicks / impressions per subject; n counts subjects, not impressions.
    rng = np.random.default_rng(4)
    impressions_c = rng.poisson(20, 1000).astype(float)
    impressions_t = rng.poisson(20, 1000).astype(float)
    clicks_c = rng.binomial(impressions_c.astype(int), 0.05).astype(float)
    clicks_t = rng.binomial(impressions_t.astype(int), 0.06).astype(float)
    result = compare(
        ratio_statistic(clicks_c, impressions_c), ratio_statistic(clicks_t, impressions_t)
    )
    assert result.control_n == 1000
    assert result.absolute.ci[0] < result.absolute.estimate < result.absolute.ci[1]
    assert result.absolute.estimate == pytest.approx(
        clicks_t.sum() / impressions_t.sum() - clicks_c.sum() / impressions_c.sum()
    )
