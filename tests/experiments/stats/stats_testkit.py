"""Helpers shared by the stats engine tests: statistics from rows, bulk simulation."""

from __future__ import annotations

import gc

import numpy as np
from scipy import stats as scipy_stats

from experiments.stats import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
)


def mean_statistic(values) -> SampleMeanStatistic:
    x = np.asarray(values, dtype=float)
    return SampleMeanStatistic(n=x.size, sum=float(x.sum()), sum_squares=float((x * x).sum()))


def proportion_statistic(values) -> ProportionStatistic:
    x = np.asarray(values, dtype=int)
    return ProportionStatistic(n=x.size, successes=int(x.sum()))


def cuped_statistic(metric, covariate) -> RegressionAdjustedStatistic:
    y = np.asarray(metric, dtype=float)
    x = np.asarray(covariate, dtype=float)
    return RegressionAdjustedStatistic(
        n=y.size,
        sum=float(y.sum()),
        sum_squares=float((y * y).sum()),
        covariate_sum=float(x.sum()),
        covariate_sum_squares=float((x * x).sum()),
        cross_product=float((x * y).sum()),
    )


def ratio_statistic(numerator, denominator) -> RatioStatistic:
    a = np.asarray(numerator, dtype=float)
    b = np.asarray(denominator, dtype=float)
    return RatioStatistic(
        n=a.size,
        numerator_sum=float(a.sum()),
        numerator_sum_squares=float((a * a).sum()),
        denominator_sum=float(b.sum()),
        denominator_sum_squares=float((b * b).sum()),
        cross_product=float((a * b).sum()),
    )


def normal_sample_statistics(
    rng: np.random.Generator, *, size: int, n: int, mean: float, sd: float
):
    """``size`` draws of (sum, sum of squares) of n iid N(mean, sd²) values, without the values.

    Exact in distribution: the sample mean is N(mean, sd²/n) and, independently,
    (n − 1)s²/sd² is chi-square with n − 1 degrees of freedom.
    """
    sample_mean = rng.normal(mean, sd / np.sqrt(n), size)
    centred = sd**2 * rng.chisquare(n - 1, size)
    return n * sample_mean, centred + n * sample_mean**2


def bivariate_normal_statistics(
    rng: np.random.Generator, *, size: int, n: int, means: tuple[float, float], cov: np.ndarray
):
    """``size`` draws of the sums of n iid bivariate normal (y, x) rows, without the rows.

    The sample mean vector is N(μ, Σ/n) and, independently, the scatter matrix
    Σ(r − r̄)(r − r̄)ᵀ is Wishart(n − 1, Σ). Returns (Σy, Σy², Σx, Σx², Σxy).
    """
    chol = np.linalg.cholesky(cov)
    sample_means = np.asarray(means) + rng.standard_normal((size, 2)) @ chol.T / np.sqrt(n)
    scatter = scipy_stats.wishart.rvs(df=n - 1, scale=cov, size=size, random_state=rng)
    my, mx = sample_means[:, 0], sample_means[:, 1]
    return (
        n * my,
        scatter[:, 0, 0] + n * my**2,
        n * mx,
        scatter[:, 1, 1] + n * mx**2,
        scatter[:, 0, 1] + n * mx * my,
    )


def orders_and_gmv_sums(
    rng: np.random.Generator, *, size: int, n: int, order_rate: float, order_value: float
):
    """Per-experiment sums for a ratio metric (GMV per order) from simulated subjects.

    Each subject places Poisson(order_rate) orders of Gamma(2, order_value/2)
    value each, so the subject's GMV is Gamma(2·orders, order_value/2) and the
    true ratio is ``order_value``. Returns (Σgmv, Σgmv², Σorders, Σorders², Σgmv·orders).
    """
    orders = rng.poisson(order_rate, (size, n)).astype(float)
    gmv = np.where(orders > 0, rng.gamma(np.maximum(2.0 * orders, 1e-12), order_value / 2.0), 0.0)
    return (
        gmv.sum(axis=1),
        (gmv * gmv).sum(axis=1),
        orders.sum(axis=1),
        (orders * orders).sum(axis=1),
        (gmv * orders).sum(axis=1),
    )


def multipletests_adjusted(p_values, method: str) -> np.ndarray:
    """statsmodels' adjusted p-values, without the cost of the gc.collect() its
    Holm branch runs: frozen objects are skipped, so the collection is instant
    instead of ~0.3 s over the test process's heap."""
    from statsmodels.stats.multitest import multipletests

    gc.freeze()
    try:
        return multipletests(p_values, method=method)[1]
    finally:
        gc.unfreeze()


def binomial_error(rate: float, trials: int) -> float:
    return float(np.sqrt(rate * (1 - rate) / trials))
