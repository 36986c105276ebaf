"""The sufficient-statistic dataclasses reject bad input at construction."""

import math

import numpy as np
import pytest

from experiments.stats import (
    InsufficientDataError,
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
)

from .stats_testkit import cuped_statistic, mean_statistic


@pytest.mark.parametrize("n", [-1, 2.5, math.nan, math.inf, "10", None, True])
def test_counts_must_be_non_negative_whole_numbers(n):
    with pytest.raises(ValueError, match="n must"):
        SampleMeanStatistic(n=n, sum=1.0, sum_squares=1.0)


def test_whole_floats_and_numpy_integers_are_accepted_as_counts():
    assert SampleMeanStatistic(n=np.int64(3), sum=3.0, sum_squares=5.0).n == 3
    statistic = ProportionStatistic(n=10.0, successes=np.int32(4))
    assert (statistic.n, statistic.successes) == (10, 4)
    assert type(statistic.n) is int and type(statistic.successes) is int


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_sums_must_be_finite(bad):
    with pytest.raises(ValueError, match="finite"):
        SampleMeanStatistic(n=3, sum=bad, sum_squares=1.0)
    with pytest.raises(ValueError, match="finite"):
        RegressionAdjustedStatistic(
            n=3,
            sum=1.0,
            sum_squares=1.0,
            covariate_sum=1.0,
            covariate_sum_squares=1.0,
            cross_product=bad,
        )
    with pytest.raises(ValueError, match="finite"):
        RatioStatistic(
            n=3,
            numerator_sum=1.0,
            numerator_sum_squares=1.0,
            denominator_sum=bad,
            denominator_sum_squares=1.0,
            cross_product=1.0,
        )


def test_proportion_successes_cannot_exceed_subjects_or_be_negative():
    with pytest.raises(ValueError, match="exceed"):
        ProportionStatistic(n=10, successes=11)
    with pytest.raises(ValueError, match="negative"):
        ProportionStatistic(n=10, successes=-1)


def test_inconsistent_second_moments_are_rejected():
    # Σx² < (Σx)²/n is impossible for real data.
    with pytest.raises(ValueError, match="inconsistent"):
        SampleMeanStatistic(n=4, sum=10.0, sum_squares=20.0)
    with pytest.raises(ValueError, match="must not be negative"):
        SampleMeanStatistic(n=4, sum=0.0, sum_squares=-1.0)
    with pytest.raises(ValueError, match="n is 0"):
        SampleMeanStatistic(n=0, sum=1.0, sum_squares=1.0)


def test_cross_products_beyond_cauchy_schwarz_are_rejected():
    good = cuped_statistic([1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 4.0, 3.0])
    with pytest.raises(ValueError, match="Cauchy"):
        RegressionAdjustedStatistic(
            n=good.n,
            sum=good.sum,
            sum_squares=good.sum_squares,
            covariate_sum=good.covariate_sum,
            covariate_sum_squares=good.covariate_sum_squares,
            cross_product=good.cross_product + 50.0,
        )
    with pytest.raises(ValueError, match="Cauchy"):
        RatioStatistic(
            n=4,
            numerator_sum=10.0,
            numerator_sum_squares=30.0,
            denominator_sum=4.0,
            denominator_sum_squares=4.0,
            cross_product=20.0,
        )


def test_a_constant_metric_has_exactly_zero_variance_despite_rounding():
    # 0.1 is not representable; Σx² − (Σx)²/n leaves rounding noise that must
    # count as zero, or a constant metric would get a spurious, tiny variance.
    statistic = mean_statistic([0.1] * 7)
    assert statistic.variance == 0.0
    assert statistic.mean == pytest.approx(0.1)


def test_variances_are_the_unbiased_sample_variances():
    values = np.array([2.0, 4.0, 4.0, 5.0, 9.0])
    assert mean_statistic(values).variance == pytest.approx(np.var(values, ddof=1), rel=1e-12)
    assert ProportionStatistic(n=8, successes=3).variance == pytest.approx(
        np.var([1, 1, 1, 0, 0, 0, 0, 0], ddof=1), rel=1e-12
    )


def test_thin_statistics_raise_insufficient_data_on_use():
    with pytest.raises(InsufficientDataError):
        _ = SampleMeanStatistic(n=0, sum=0.0, sum_squares=0.0).mean
    with pytest.raises(InsufficientDataError):
        _ = SampleMeanStatistic(n=1, sum=2.0, sum_squares=4.0).variance
    assert issubclass(InsufficientDataError, ValueError)


def test_statistics_are_frozen():
    statistic = ProportionStatistic(n=10, successes=3)
    with pytest.raises(AttributeError):
        statistic.n = 11  # type: ignore[misc]


def test_decimal_sums_from_postgresql_are_accepted():
    # SUM over integer columns comes back from psycopg as Decimal.
    from decimal import Decimal

    statistic = SampleMeanStatistic(n=Decimal("4"), sum=Decimal("10"), sum_squares=Decimal("30.5"))
    assert (statistic.n, statistic.sum, statistic.sum_squares) == (4, 10.0, 30.5)
    assert type(statistic.sum) is float
    assert ProportionStatistic(n=Decimal(10), successes=Decimal(3)).successes == 3
    with pytest.raises(ValueError, match="whole number"):
        ProportionStatistic(n=Decimal("10.5"), successes=3)
    with pytest.raises(ValueError, match="finite"):
        SampleMeanStatistic(n=3, sum=Decimal("NaN"), sum_squares=1.0)
