"""Dunnett's many-to-one test against scipy.stats.dunnett, and its family-wise error rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from experiments.stats import (
    SampleMeanStatistic,
    difference_moments,
    dunnett_adjust,
    dunnett_test,
)
from experiments.stats.dunnett import _coverage

from .stats_testkit import binomial_error, cuped_statistic, mean_statistic, normal_sample_statistics


def _samples(seed: int, sizes=(30, 40, 50, 60), shifts=(0.0, 0.3, 0.6, 0.9)):
    rng = np.random.default_rng(seed)
    return [rng.normal(shift, 1.0, size) for size, shift in zip(sizes, shifts, strict=True)]


@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_pooled_form_equals_scipy_dunnett(alternative):
    control, *treatments = _samples(5)
    ours = dunnett_test(
        mean_statistic(control),
        [mean_statistic(s) for s in treatments],
        pooled_variance=True,
        alternative=alternative,
    )
    theirs = stats.dunnett(*treatments, control=control, alternative=alternative, rng=1)
    assert [c.statistic for c in ours.comparisons] == pytest.approx(theirs.statistic, rel=1e-12)
    assert np.asarray(ours.correlation) == pytest.approx(theirs._rho, rel=1e-12)
    assert ours.comparisons[0].degrees_of_freedom == theirs._df
    # scipy integrates by randomised quasi-Monte Carlo (abs. error ~1e-5 at its
    # default 3,000 points); the same multivariate t integrated by scipy with
    # 10⁶ points agrees with ours to 1e-6.
    assert [c.p_value for c in ours.comparisons] == pytest.approx(theirs.pvalue, abs=1e-4)
    if alternative == "two-sided":
        mvt = stats.multivariate_t(shape=theirs._rho, df=theirs._df, seed=3)
        for comparison in ours.comparisons:
            bound = np.full(3, abs(comparison.statistic))
            exact = 1 - mvt.cdf(bound, lower_limit=-bound, maxpts=1_000_000)
            assert comparison.p_value == pytest.approx(exact, abs=1e-6)
    if alternative == "two-sided":
        interval = theirs.confidence_interval(0.95)
        assert [c.ci[0] for c in ours.comparisons] == pytest.approx(interval.low, abs=1e-3)
        assert [c.ci[1] for c in ours.comparisons] == pytest.approx(interval.high, abs=1e-3)


def test_one_treatment_arm_is_the_plain_t_test():
    control, treatment = _samples(6, sizes=(40, 55), shifts=(0.0, 0.4))
    ours = dunnett_test(mean_statistic(control), [mean_statistic(treatment)], pooled_variance=True)
    pooled = stats.ttest_ind(treatment, control, equal_var=True)
    assert ours.comparisons[0].p_value == pytest.approx(pooled.pvalue, rel=1e-9)
    welch = dunnett_test(mean_statistic(control), [mean_statistic(treatment)])
    assert welch.comparisons[0].p_value == pytest.approx(
        stats.ttest_ind(treatment, control, equal_var=False).pvalue, rel=1e-9
    )


@pytest.mark.parametrize(
    "dof", [2.0, 5.0, 30.0, 199.0, 200.0, 5000.0, 19_999.0, 20_000.0, 1e6, 1e9]
)
@pytest.mark.parametrize("bound", [0.4, 2.0, 4.5])
def test_one_comparison_integrates_to_the_exact_t_distribution(dof, bound):
    ours = float(_coverage(np.array([bound]), np.array([0.6]), dof, True)[0])
    assert ours == pytest.approx(1 - 2 * stats.t.sf(bound, dof), abs=1e-9)


@pytest.mark.parametrize(
    ("lam2", "dof"), [(0.5, 20.0), (0.5, math.inf), (0.95, math.inf), (0.3, 1e6)]
)
def test_the_quadrature_equals_scipys_multivariate_t(lam2, dof):
    lam = np.sqrt(np.array([lam2, 0.5, 0.3]))
    rho = np.outer(lam, lam)
    np.fill_diagonal(rho, 1.0)
    c = 2.3
    ours = float(_coverage(np.array([c]), lam, dof, True)[0])
    if math.isinf(dof):
        reference = stats.multivariate_normal(cov=rho, seed=2).cdf(
            np.full(3, c), lower_limit=np.full(3, -c)
        )
        assert ours == pytest.approx(reference, abs=2e-5)  # scipy's own QMC accuracy
    else:
        reference = stats.multivariate_t(shape=rho, df=dof, seed=2).cdf(
            np.full(3, c), lower_limit=np.full(3, -c), maxpts=1_000_000
        )
        assert ours == pytest.approx(reference, abs=1e-6)


def test_unequal_variance_form_uses_each_comparisons_control_share():
    rng = np.random.default_rng(8)
    x = [rng.gamma(2, 10, n) for n in (500, 400, 450)]
    y = [0.6 * xi + rng.gamma(2, 5, xi.size) for xi in x]
    control = cuped_statistic(y[0], x[0])
    treatments = [cuped_statistic(y[i], x[i]) for i in (1, 2)]
    moments = [difference_moments(control, t) for t in treatments]
    result = dunnett_adjust(moments, arms=["b", "c"])
    expected = math.sqrt(
        moments[0].control_variance
        * moments[1].control_variance
        / (moments[0].variance * moments[1].variance)
    )
    assert result.correlation[0][1] == pytest.approx(expected, rel=1e-12)
    for comparison, m in zip(result.comparisons, moments, strict=True):
        single = 2 * stats.t.sf(abs(m.estimate) / math.sqrt(m.variance), m.degrees_of_freedom)
        assert single <= comparison.p_value <= min(1.0, 2 * single)  # between none and Bonferroni
    assert result.to_dict()["method"] == "dunnett_unequal_variances"


def test_family_wise_error_rate_is_alpha_and_intervals_are_simultaneous():
    """A/A with 3 treatment arms: any false rejection in 2,000 experiments, at 5 %."""
    rng = np.random.default_rng(9)
    size, n = 2000, 200
    arms = [normal_sample_statistics(rng, size=size, n=n, mean=1.0, sd=2.0) for _ in range(4)]
    any_rejection = 0
    for index in range(size):
        statistics = [
            SampleMeanStatistic(n=n, sum=float(s[index]), sum_squares=float(q[index]))
            for s, q in arms
        ]
        result = dunnett_test(statistics[0], statistics[1:], pooled_variance=True)
        any_rejection += any(c.significant for c in result.comparisons)
        assert all(c.significant == (not c.ci[0] <= 0 <= c.ci[1]) for c in result.comparisons)
    rate = any_rejection / size
    assert abs(rate - 0.05) < 3 * binomial_error(0.05, size)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alternative": "bigger"}, "alternative must be one of"),
        ({"alpha": 1.5}, "alpha"),
    ],
)
def test_bad_arguments_are_value_errors(kwargs, message):
    control, treatment = _samples(1, sizes=(20, 20), shifts=(0, 0))
    with pytest.raises(ValueError, match=message):
        dunnett_test(mean_statistic(control), [mean_statistic(treatment)], **kwargs)
