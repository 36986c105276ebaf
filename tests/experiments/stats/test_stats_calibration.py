"""Seeded simulation calibration, vectorised over thousands of experiments.

Sufficient statistics are simulated in bulk (exactly in distribution where a
closed form exists: normal means and χ² scatter, binomial counts, Wishart
scatter) and analysed through the public ``compare_many``. Longer versions
with more experiments run in benchmarks/bench_stats.py.
"""

import numpy as np
import pytest

from experiments.stats import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    compare_many,
)

from .stats_testkit import (
    binomial_error,
    bivariate_normal_statistics,
    normal_sample_statistics,
    orders_and_gmv_sums,
)

ALPHA = 0.05
AA_EXPERIMENTS = 4000  # binomial error of a 5 % rate: 0.34 points
COVERAGE_EXPERIMENTS = 10_000  # binomial error of 95 %: 0.22 points, so ±1 point is > 4.5 errors


def mean_pairs(rng, size, n, control_mean, treatment_mean, sd):
    control = normal_sample_statistics(rng, size=size, n=n, mean=control_mean, sd=sd)
    treatment = normal_sample_statistics(rng, size=size, n=n, mean=treatment_mean, sd=sd)
    return [
        (
            SampleMeanStatistic(n=n, sum=cs, sum_squares=css),
            SampleMeanStatistic(n=n, sum=ts, sum_squares=tss),
        )
        for cs, css, ts, tss in zip(*(a.tolist() for a in (*control, *treatment)), strict=True)
    ]


def proportion_pairs(rng, size, n, control_rate, treatment_rate):
    control, treatment = rng.binomial(n, control_rate, size), rng.binomial(n, treatment_rate, size)
    return [
        (ProportionStatistic(n=n, successes=c), ProportionStatistic(n=n, successes=t))
        for c, t in zip(control.tolist(), treatment.tolist(), strict=True)
    ]


def cuped_pairs(rng, size, n, effect, rho):
    cov = np.array([[1.0, rho], [rho, 1.0]]) * 400.0
    control = bivariate_normal_statistics(rng, size=size, n=n, means=(100.0, 100.0), cov=cov)
    treatment = bivariate_normal_statistics(
        rng, size=size, n=n, means=(100.0 + effect, 100.0), cov=cov
    )

    def statistic(sums):
        return RegressionAdjustedStatistic(
            n=n,
            sum=sums[0],
            sum_squares=sums[1],
            covariate_sum=sums[2],
            covariate_sum_squares=sums[3],
            cross_product=sums[4],
        )

    control_rows = zip(*(a.tolist() for a in control), strict=True)
    treatment_rows = zip(*(a.tolist() for a in treatment), strict=True)
    return [(statistic(c), statistic(t)) for c, t in zip(control_rows, treatment_rows, strict=True)]


def ratio_pairs(rng, size, n, control_value, treatment_value):
    def statistics(order_value):
        sums = orders_and_gmv_sums(rng, size=size, n=n, order_rate=1.2, order_value=order_value)
        return [
            RatioStatistic(
                n=n,
                numerator_sum=a,
                numerator_sum_squares=b,
                denominator_sum=c,
                denominator_sum_squares=d,
                cross_product=e,
            )
            for a, b, c, d, e in zip(*(x.tolist() for x in sums), strict=True)
        ]

    return list(zip(statistics(control_value), statistics(treatment_value), strict=True))


def false_positive_rate(pairs):
    return np.mean([c.absolute.p_value < ALPHA for c in compare_many(pairs, alpha=ALPHA)])


def assert_within_binomial_error(rate, expected, trials, errors=3.0):
    assert abs(rate - expected) <= errors * binomial_error(expected, trials), (
        f"rate {rate:.4f} vs {expected}"
    )


@pytest.mark.parametrize(
    "make_pairs",
    [
        pytest.param(
            lambda rng: mean_pairs(rng, AA_EXPERIMENTS, 200, 10.0, 10.0, 3.0), id="normal-means"
        ),
        pytest.param(
            lambda rng: proportion_pairs(rng, AA_EXPERIMENTS, 1000, 0.05, 0.05), id="proportions"
        ),
        pytest.param(lambda rng: cuped_pairs(rng, AA_EXPERIMENTS, 200, 0.0, 0.7), id="cuped"),
        pytest.param(lambda rng: ratio_pairs(rng, 2000, 400, 150.0, 150.0), id="ratio"),
    ],
)
def test_aa_false_positive_rate_is_alpha_within_binomial_error(make_pairs):
    rng = np.random.default_rng(4)
    pairs = make_pairs(rng)
    assert_within_binomial_error(false_positive_rate(pairs), ALPHA, len(pairs))


def test_aa_false_positive_rate_on_heavy_tailed_gmv():
    # Log-normal GMV (σ = 1) with many zero-GMV subjects: the skew Welch must survive.
    rng = np.random.default_rng(5)
    size, n = 2000, 500
    rows = np.where(rng.random((size, 2, n)) < 0.3, rng.lognormal(11.0, 1.0, (size, 2, n)), 0.0)
    sums, squares = rows.sum(axis=2).tolist(), (rows * rows).sum(axis=2).tolist()
    pairs = [
        (
            SampleMeanStatistic(n=n, sum=s[0], sum_squares=q[0]),
            SampleMeanStatistic(n=n, sum=s[1], sum_squares=q[1]),
        )
        for s, q in zip(sums, squares, strict=True)
    ]
    assert_within_binomial_error(false_positive_rate(pairs), ALPHA, size)


def coverage(comparisons, true_absolute, true_relative):
    absolute = np.mean([c.absolute.ci[0] <= true_absolute <= c.absolute.ci[1] for c in comparisons])
    relative = np.mean([c.relative.ci[0] <= true_relative <= c.relative.ci[1] for c in comparisons])
    return absolute, relative


@pytest.mark.parametrize(
    ("make_pairs", "true_absolute", "true_relative", "experiments"),
    [
        pytest.param(
            lambda rng: mean_pairs(rng, COVERAGE_EXPERIMENTS, 300, 10.0, 10.5, 3.0),
            0.5,
            0.05,
            COVERAGE_EXPERIMENTS,
            id="normal-means",
        ),
        pytest.param(
            lambda rng: proportion_pairs(rng, COVERAGE_EXPERIMENTS, 2000, 0.10, 0.12),
            0.02,
            0.2,
            COVERAGE_EXPERIMENTS,
            id="proportions",
        ),
        pytest.param(
            lambda rng: cuped_pairs(rng, COVERAGE_EXPERIMENTS, 300, 2.0, 0.8),
            2.0,
            0.02,
            COVERAGE_EXPERIMENTS,
            id="cuped",
        ),
        pytest.param(
            lambda rng: ratio_pairs(rng, COVERAGE_EXPERIMENTS, 300, 150.0, 157.5),
            7.5,
            0.05,
            COVERAGE_EXPERIMENTS,
            id="ratio",
        ),
    ],
)
def test_95_percent_intervals_cover_the_true_effect(
    make_pairs, true_absolute, true_relative, experiments
):
    rng = np.random.default_rng(6)
    comparisons = compare_many(make_pairs(rng), alpha=ALPHA)
    absolute, relative = coverage(comparisons, true_absolute, true_relative)
    # The tolerance is ±1 point; the binomial error is 0.22 points.
    assert abs(absolute - 0.95) < 0.01, absolute
    assert abs(relative - 0.95) < 0.01, relative
    assert len(comparisons) == experiments


@pytest.mark.parametrize("rho", [0.3, 0.6, 0.9])
def test_cuped_shrinks_the_variance_by_rho_squared(rho):
    rng = np.random.default_rng(7)
    pairs = cuped_pairs(rng, 2000, 400, 0.0, rho)
    cuped = compare_many(pairs)
    plain = compare_many(
        [
            tuple(SampleMeanStatistic(n=s.n, sum=s.sum, sum_squares=s.sum_squares) for s in pair)
            for pair in pairs
        ]
    )
    # Reported: the variance reduction each experiment estimates for itself.
    assert np.mean([c.variance_reduction for c in cuped]) == pytest.approx(rho**2, abs=0.01)
    # Realised: the spread of the estimates across experiments.
    realised = np.var([c.absolute.estimate for c in cuped]) / np.var(
        [c.absolute.estimate for c in plain]
    )
    assert realised == pytest.approx(1 - rho**2, abs=0.05)
