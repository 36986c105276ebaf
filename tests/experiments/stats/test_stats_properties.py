"""Invariants, property-based (hypothesis): swapping arms, scaling, intervals."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from experiments.stats import InsufficientDataError, compare, noninferiority_test, sequential_test

from .stats_testkit import cuped_statistic, mean_statistic, proportion_statistic, ratio_statistic

# Values on a 0.01 grid keep the sums exact enough that a property failure is
# a real failure, not float noise in Σx² − (Σx)²/n.
values = st.lists(st.integers(-100_000, 100_000), min_size=2, max_size=25).map(
    lambda xs: np.array(xs) / 100.0
)
positive_values = st.lists(st.integers(1, 100_000), min_size=2, max_size=25).map(
    lambda xs: np.array(xs) / 100.0
)
bits = st.lists(st.integers(0, 1), min_size=2, max_size=60).map(np.array)
scales = st.sampled_from([1e-3, 0.5, 3.0, 1e4, -1.0, -250.0])
PROPERTY_SETTINGS = settings(max_examples=75, deadline=None)


def analysable(make):
    try:
        return make()
    except InsufficientDataError:
        assume(False)


def close(a, b):
    return a == pytest.approx(b, rel=1e-7, abs=1e-9)


@PROPERTY_SETTINGS
@given(control=values, treatment=values)
def test_swapping_arms_flips_the_absolute_effect(control, treatment):
    forward = analysable(lambda: compare(mean_statistic(control), mean_statistic(treatment)))
    backward = compare(mean_statistic(treatment), mean_statistic(control))
    assert close(backward.absolute.estimate, -forward.absolute.estimate)
    assert close(backward.absolute.ci[0], -forward.absolute.ci[1])
    assert close(backward.absolute.ci[1], -forward.absolute.ci[0])
    assert close(backward.absolute.p_value, forward.absolute.p_value)
    assert close(backward.degrees_of_freedom, forward.degrees_of_freedom)
    # The relative lift's direction agrees with the absolute difference.
    for result in (forward, backward):
        if result.relative.estimate is not None:
            assert (
                math.copysign(1, result.relative.estimate)
                == math.copysign(1, result.absolute.estimate)
                or result.absolute.estimate == 0
            )


@PROPERTY_SETTINGS
@given(control=bits, treatment=bits)
def test_swapping_arms_flips_proportions(control, treatment):
    forward = analysable(
        lambda: compare(proportion_statistic(control), proportion_statistic(treatment))
    )
    backward = compare(proportion_statistic(treatment), proportion_statistic(control))
    assert close(backward.absolute.estimate, -forward.absolute.estimate)
    assert close(backward.absolute.p_value, forward.absolute.p_value)


@PROPERTY_SETTINGS
@given(num_c=positive_values, num_t=positive_values, data=st.data())
def test_swapping_arms_flips_ratio_and_cuped_effects(num_c, num_t, data):
    den_c = data.draw(
        st.lists(st.integers(1, 9), min_size=num_c.size, max_size=num_c.size).map(np.array)
    )
    den_t = data.draw(
        st.lists(st.integers(1, 9), min_size=num_t.size, max_size=num_t.size).map(np.array)
    )
    forward = analysable(
        lambda: compare(ratio_statistic(num_c, den_c), ratio_statistic(num_t, den_t))
    )
    backward = compare(ratio_statistic(num_t, den_t), ratio_statistic(num_c, den_c))
    assert close(backward.absolute.estimate, -forward.absolute.estimate)
    assert close(backward.absolute.p_value, forward.absolute.p_value)
    cuped_forward = analysable(
        lambda: compare(cuped_statistic(num_c, den_c), cuped_statistic(num_t, den_t))
    )
    cuped_backward = compare(cuped_statistic(num_t, den_t), cuped_statistic(num_c, den_c))
    assert close(cuped_backward.absolute.estimate, -cuped_forward.absolute.estimate)
    assert close(cuped_backward.theta, cuped_forward.theta)
    assert close(cuped_backward.absolute.p_value, cuped_forward.absolute.p_value)


@PROPERTY_SETTINGS
@given(control=values, treatment=values, scale=scales)
def test_scaling_a_metric_scales_the_estimates(control, treatment, scale):
    base = analysable(lambda: compare(mean_statistic(control), mean_statistic(treatment)))
    scaled = compare(mean_statistic(control * scale), mean_statistic(treatment * scale))
    assert close(scaled.control_mean, base.control_mean * scale)
    assert close(scaled.absolute.estimate, base.absolute.estimate * scale)
    assert close(scaled.absolute.standard_error, base.absolute.standard_error * abs(scale))
    assert sorted(scaled.absolute.ci) == pytest.approx(
        sorted(c * scale for c in base.absolute.ci), rel=1e-7, abs=1e-9
    )
    assert close(scaled.absolute.p_value, base.absolute.p_value)
    if base.relative.estimate is not None:
        # Relative to |control|: a unit change leaves it alone, a sign flip flips it.
        assert close(scaled.relative.estimate, base.relative.estimate * math.copysign(1, scale))
        assert close(scaled.relative.p_value, base.relative.p_value)


@PROPERTY_SETTINGS
@given(metric_c=values, metric_t=values, scale=scales, data=st.data())
def test_scaling_cuped_metric_and_covariate(metric_c, metric_t, scale, data):
    covariate_c = data.draw(
        st.lists(st.integers(-1000, 1000), min_size=metric_c.size, max_size=metric_c.size).map(
            np.array
        )
    )
    covariate_t = data.draw(
        st.lists(st.integers(-1000, 1000), min_size=metric_t.size, max_size=metric_t.size).map(
            np.array
        )
    )
    base = analysable(
        lambda: compare(
            cuped_statistic(metric_c, covariate_c), cuped_statistic(metric_t, covariate_t)
        )
    )
    scaled_metric = compare(
        cuped_statistic(metric_c * scale, covariate_c),
        cuped_statistic(metric_t * scale, covariate_t),
    )
    assert close(scaled_metric.absolute.estimate, base.absolute.estimate * scale)
    assert close(scaled_metric.theta, base.theta * scale)
    assert close(scaled_metric.absolute.p_value, base.absolute.p_value)
    # Rescaling the covariate changes θ, not the adjusted effect.
    scaled_covariate = compare(
        cuped_statistic(metric_c, covariate_c * scale),
        cuped_statistic(metric_t, covariate_t * scale),
    )
    assert close(scaled_covariate.absolute.estimate, base.absolute.estimate)
    assert close(scaled_covariate.absolute.p_value, base.absolute.p_value)


@PROPERTY_SETTINGS
@given(control=values, treatment=values, shift=st.integers(-10_000, 10_000))
def test_shifting_a_metric_leaves_the_absolute_effect_alone(control, treatment, shift):
    base = analysable(lambda: compare(mean_statistic(control), mean_statistic(treatment)))
    shifted = compare(mean_statistic(control + shift), mean_statistic(treatment + shift))
    assert shifted.absolute.estimate == pytest.approx(base.absolute.estimate, rel=1e-6, abs=1e-6)
    assert shifted.absolute.p_value == pytest.approx(base.absolute.p_value, rel=1e-5, abs=1e-9)


@PROPERTY_SETTINGS
@given(control=values, treatment=values, alpha=st.sampled_from([0.001, 0.01, 0.05, 0.2]))
def test_intervals_contain_the_estimate_and_agree_with_the_p_value(control, treatment, alpha):
    result = analysable(
        lambda: compare(mean_statistic(control), mean_statistic(treatment), alpha=alpha)
    )
    for effect in (result.absolute, result.relative):
        if effect.estimate is None:
            continue
        assert effect.ci[0] <= effect.estimate <= effect.ci[1]
        assert 0 <= effect.p_value <= 1
        # Duality: the (1 − α) interval excludes 0 exactly when p < α (up to rounding at the edge).
        if abs(effect.p_value - alpha) > 1e-9:
            assert (effect.p_value < alpha) == (effect.ci[0] > 0 or effect.ci[1] < 0)
    wider = compare(mean_statistic(control), mean_statistic(treatment), alpha=alpha / 2)
    assert (
        wider.absolute.ci[0] <= result.absolute.ci[0]
        and result.absolute.ci[1] <= wider.absolute.ci[1]
    )


@PROPERTY_SETTINGS
@given(num_c=positive_values, num_t=positive_values, data=st.data())
def test_ratio_and_sequential_intervals_contain_the_estimate(num_c, num_t, data):
    den_c = data.draw(
        st.lists(st.integers(0, 9), min_size=num_c.size, max_size=num_c.size).map(np.array)
    )
    den_t = data.draw(
        st.lists(st.integers(0, 9), min_size=num_t.size, max_size=num_t.size).map(np.array)
    )
    control, treatment = ratio_statistic(num_c, den_c), ratio_statistic(num_t, den_t)
    result = analysable(lambda: compare(control, treatment))
    assert result.absolute.ci[0] <= result.absolute.estimate <= result.absolute.ci[1]
    assert result.relative.ci[0] <= result.relative.estimate <= result.relative.ci[1]
    sequential = sequential_test(control, treatment, tuning_sample_size=100)
    low, high = sequential.confidence_sequence
    assert low <= sequential.estimate <= high
    # The time-uniform interval is wider than the fixed-horizon normal one
    # (its radius is at least √(2 log(1/α)) = 2.45 > 1.96 standard errors).
    radius = 1.959963984540054 * result.absolute.standard_error
    assert low <= result.absolute.estimate - radius and result.absolute.estimate + radius <= high


@PROPERTY_SETTINGS
@given(control=values, treatment=values, margin=st.sampled_from([0.01, 0.5, 5.0]))
def test_noninferiority_directions_mirror_each_other(control, treatment, margin):
    lower = analysable(
        lambda: noninferiority_test(
            mean_statistic(control),
            mean_statistic(treatment),
            margin=margin,
            higher_is_better=False,
        )
    )
    # "Lower is better" on x is "higher is better" on −x.
    higher = noninferiority_test(
        mean_statistic(-control), mean_statistic(-treatment), margin=margin, higher_is_better=True
    )
    assert close(higher.p_value, lower.p_value)
    assert close(higher.bound, -lower.bound)
    assert higher.noninferior == lower.noninferior
