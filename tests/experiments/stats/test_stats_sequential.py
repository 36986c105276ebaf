"""Always-valid inference (normal-mixture mSPRT / confidence sequence)."""

import math

import numpy as np
import pytest
from scipy import integrate
from scipy import stats as scipy_stats

from experiments.stats import ProportionStatistic, sequential_test
from experiments.stats.sequential import (
    always_valid_p_value,
    confidence_sequence_half_width,
    mixing_scale_squared,
    mixture_log_likelihood_ratio,
)

from .stats_testkit import binomial_error, mean_statistic, normal_sample_statistics

ALPHA = 0.05


@pytest.mark.parametrize(("z", "information"), [(0.0, 1.0), (2.5, 3.0), (-4.0, 0.2), (1.0, 50.0)])
def test_mixture_ratio_equals_numerical_integration_over_the_prior(z, information):
    # Independent route: Λ = ∫ φ(Δ̂; δ, V)/φ(Δ̂; 0, V) dN(δ; 0, τ²), with V = 1
    # (z = Δ̂) and τ² = Nρ² (the mixing variance in units of V).
    def integrand(delta):
        likelihood_ratio = math.exp(-0.5 * (z - delta) ** 2 + 0.5 * z * z)
        prior = math.exp(-0.5 * delta * delta / information) / math.sqrt(2 * math.pi * information)
        return likelihood_ratio * prior

    numeric, _ = integrate.quad(integrand, -np.inf, np.inf, epsabs=1e-13, epsrel=1e-12)
    assert float(
        np.exp(mixture_log_likelihood_ratio(z, information, rho_squared=1.0))
    ) == pytest.approx(numeric, rel=1e-8)


def test_reference_value_by_hand():
    # Nρ² = 1, z = 3: Λ = 2^(−1/2)·exp(9/4) = 0.70710678·9.48773584 = 6.7087932...
    assert float(always_valid_p_value(3.0, 1.0, rho_squared=1.0)) == pytest.approx(
        1 / (math.exp(2.25) / math.sqrt(2)), rel=1e-12
    )
    # Tuning for α = 0.05 and 10 000 subjects: (2 ln 20 + ln(1 + 2 ln 20))/10 000.
    assert mixing_scale_squared(tuning_sample_size=10_000, alpha=0.05) == pytest.approx(
        (2 * math.log(20) + math.log(1 + 2 * math.log(20))) / 10_000, rel=1e-12
    )


def test_the_interval_excludes_the_null_exactly_when_p_is_below_alpha():
    rho_squared = mixing_scale_squared(tuning_sample_size=5000, alpha=ALPHA)
    z = np.linspace(-6, 6, 2001)
    for sample_size in (100, 5000, 200_000):
        p_values = always_valid_p_value(z, sample_size, rho_squared=rho_squared)
        half_width = confidence_sequence_half_width(
            1.0, sample_size, rho_squared=rho_squared, alpha=ALPHA
        )
        assert np.array_equal(p_values <= ALPHA, np.abs(z) >= half_width)
        # Wider than the fixed-horizon interval: the price of peeking.
        assert half_width > scipy_stats.norm.isf(ALPHA / 2)


def test_sequential_test_on_statistics_matches_the_kernel_and_keeps_the_running_minimum():
    rng = np.random.default_rng(1)
    control, treatment = (
        mean_statistic(rng.normal(0, 1, 800)),
        mean_statistic(rng.normal(0.2, 1, 800)),
    )
    result = sequential_test(control, treatment, tuning_sample_size=2000)
    se = math.sqrt(control.variance / 800 + treatment.variance / 800)
    z = (treatment.mean - control.mean) / se
    rho_squared = mixing_scale_squared(tuning_sample_size=2000, alpha=ALPHA)
    assert result.z == pytest.approx(z, rel=1e-12)
    assert result.p_value == pytest.approx(
        float(always_valid_p_value(z, 1600, rho_squared=rho_squared)), rel=1e-12
    )
    half_width = float(
        confidence_sequence_half_width(se, 1600, rho_squared=rho_squared, alpha=ALPHA)
    )
    assert result.confidence_sequence == pytest.approx(
        (result.estimate - half_width, result.estimate + half_width), rel=1e-12
    )
    later = sequential_test(
        control, control, tuning_sample_size=2000, previous_p_value=result.p_value
    )
    assert later.p_value == result.p_value  # the running minimum never goes back up
    assert later.reject is result.reject


def test_null_difference_shifts_the_test_to_a_margin():
    control = ProportionStatistic(n=40_000, successes=1200)
    treatment = ProportionStatistic(n=40_000, successes=1210)
    at_margin = sequential_test(
        control, treatment, tuning_sample_size=80_000, null_difference=0.005
    )
    assert at_margin.reject  # far below +0.5 pp
    assert at_margin.confidence_sequence[1] < 0.005
    assert not sequential_test(control, treatment, tuning_sample_size=80_000).reject


def simulate_looks(rng, *, experiments, looks, per_look, effect):
    """Cumulative Welch z at each look for many experiments, from bulk-simulated sums."""
    shape = (experiments, looks)
    sums_c, squares_c = normal_sample_statistics(
        rng, size=experiments * looks, n=per_look, mean=0.0, sd=1.0
    )
    sums_t, squares_t = normal_sample_statistics(
        rng, size=experiments * looks, n=per_look, mean=effect, sd=1.0
    )
    n = per_look * np.arange(1, looks + 1)
    totals = [np.cumsum(a.reshape(shape), axis=1) for a in (sums_c, squares_c, sums_t, squares_t)]
    mean_c, mean_t = totals[0] / n, totals[2] / n
    var_c = (totals[1] - n * mean_c**2) / (n - 1)
    var_t = (totals[3] - n * mean_t**2) / (n - 1)
    return (mean_t - mean_c) / np.sqrt(var_c / n + var_t / n), 2 * n


def test_peeking_twenty_times_keeps_the_false_positive_rate_below_alpha():
    rng = np.random.default_rng(20)
    experiments, looks = 4000, 20
    z, sample_size = simulate_looks(
        rng, experiments=experiments, looks=looks, per_look=250, effect=0.0
    )
    rho_squared = mixing_scale_squared(tuning_sample_size=int(sample_size[-1]), alpha=ALPHA)
    always_valid = always_valid_p_value(z, sample_size, rho_squared=rho_squared)
    false_positive_rate = np.mean(np.min(always_valid, axis=1) <= ALPHA)
    assert false_positive_rate <= ALPHA
    # The simulation has teeth: the fixed-horizon test peeked at 20 times fails.
    naive = np.mean(np.any(2 * scipy_stats.norm.sf(np.abs(z)) <= ALPHA, axis=1))
    assert naive > ALPHA + 5 * binomial_error(ALPHA, experiments)


def test_the_sequential_test_finds_a_real_effect():
    rng = np.random.default_rng(21)
    z, sample_size = simulate_looks(rng, experiments=1000, looks=20, per_look=250, effect=0.15)
    rho_squared = mixing_scale_squared(tuning_sample_size=int(sample_size[-1]), alpha=ALPHA)
    detected = np.mean(
        np.min(always_valid_p_value(z, sample_size, rho_squared=rho_squared), axis=1) <= ALPHA
    )
    assert detected > 0.9


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tuning_sample_size": 0}, "tuning_sample_size"),
        ({"tuning_sample_size": -5}, "tuning_sample_size"),
        ({"tuning_sample_size": 100, "previous_p_value": 1.5}, "previous_p_value"),
        ({"tuning_sample_size": 100, "alpha": 0}, "alpha"),
        ({"tuning_sample_size": 100, "null_difference": float("inf")}, "null_difference"),
    ],
)
def test_bad_sequential_input(kwargs, message):
    statistic = ProportionStatistic(n=100, successes=10)
    with pytest.raises(ValueError, match=message):
        sequential_test(statistic, statistic, **kwargs)


def test_sequential_test_uses_the_cuped_and_ratio_variances():
    from experiments.stats import compare

    from .stats_testkit import cuped_statistic, ratio_statistic

    rng = np.random.default_rng(2)
    x_c, x_t = rng.normal(100, 20, 600), rng.normal(100, 20, 600)
    y_c, y_t = 0.8 * x_c + rng.normal(0, 10, 600), 0.8 * x_t + rng.normal(1.5, 10, 600)
    for control, treatment in (
        (cuped_statistic(y_c, x_c), cuped_statistic(y_t, x_t)),
        (ratio_statistic(y_c, x_c), ratio_statistic(y_t, x_t)),
    ):
        fixed = compare(control, treatment)
        result = sequential_test(control, treatment, tuning_sample_size=1200)
        assert result.estimate == fixed.absolute.estimate
        assert result.z == pytest.approx(
            fixed.absolute.estimate / fixed.absolute.standard_error, rel=1e-12
        )


# --- one-sided: the half-normal mixture (non-inferiority questions) --------------------------


@pytest.mark.parametrize(("z", "information"), [(0.0, 1.0), (2.5, 3.0), (-4.0, 0.2), (1.0, 50.0), (3.2, 8.0)])
def test_one_sided_ratio_equals_numerical_integration_over_the_half_normal_prior(z, information):
    from experiments.stats.sequential import one_sided_log_likelihood_ratio

    # Λ = ∫₀^∞ exp(zδ − δ²/2) · 2 φ(δ; 0, τ²) dδ with V = 1 and τ² = Nρ²: only alternatives
    # on the favourable side of the null carry weight.
    def integrand(delta):
        prior = 2 * math.exp(-0.5 * delta * delta / information) / math.sqrt(2 * math.pi * information)
        return math.exp(z * delta - 0.5 * delta * delta) * prior

    numeric, _ = integrate.quad(integrand, 0, np.inf, epsabs=1e-13, epsrel=1e-12)
    assert float(
        np.exp(one_sided_log_likelihood_ratio(z, information, rho_squared=1.0))
    ) == pytest.approx(numeric, rel=1e-8)


@pytest.mark.parametrize("alpha", [0.2, 0.05, 0.01, 1e-4, 1e-9])
@pytest.mark.parametrize("sample_size", [2, 40, 10_000, 1e8])
def test_the_one_sided_boundary_is_where_the_test_starts_to_reject(alpha, sample_size):
    from experiments.stats.sequential import (
        one_sided_always_valid_p_value,
        one_sided_critical_z,
        one_sided_log_likelihood_ratio,
    )

    rho_squared = mixing_scale_squared(tuning_sample_size=10_000, alpha=0.05)
    critical = one_sided_critical_z(sample_size, rho_squared=rho_squared, alpha=alpha)
    assert float(one_sided_log_likelihood_ratio(critical, sample_size, rho_squared=rho_squared)) == pytest.approx(
        math.log(1 / alpha), rel=1e-12
    )
    z = critical * np.array([0.999, 0.99999, 1.00001, 1.001])
    rejects = one_sided_always_valid_p_value(z, sample_size, rho_squared=rho_squared) <= alpha
    assert rejects.tolist() == [False, False, True, True]
    # Narrower than the two-sided boundary (it spends nothing on the other side), wider
    # than the fixed-horizon one-sided test (the price of peeking).
    two_sided = float(confidence_sequence_half_width(1.0, sample_size, rho_squared=rho_squared, alpha=alpha))
    assert scipy_stats.norm.isf(alpha) < critical < two_sided


def test_one_sided_peeking_at_the_margin_keeps_the_false_positive_rate_below_alpha():
    from experiments.stats.sequential import one_sided_always_valid_p_value

    # The true difference sits on the null's boundary (harm exactly equal to the margin):
    # z measured from the margin is the A/A z.
    rng = np.random.default_rng(22)
    experiments = 4000
    z, sample_size = simulate_looks(rng, experiments=experiments, looks=20, per_look=250, effect=0.0)
    rho_squared = mixing_scale_squared(tuning_sample_size=int(sample_size[-1]), alpha=ALPHA)
    p_values = one_sided_always_valid_p_value(z, sample_size, rho_squared=rho_squared)
    assert np.mean(np.min(p_values, axis=1) <= ALPHA) <= ALPHA
    naive = np.mean(np.any(scipy_stats.norm.sf(z) <= ALPHA, axis=1))
    assert naive > ALPHA + 5 * binomial_error(ALPHA, experiments)
