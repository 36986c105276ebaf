"""Sample-ratio mismatch: Pearson chi-square against the configured weights."""

import math

import pytest
from scipy import stats as scipy_stats

from experiments.stats import InsufficientDataError, srm_test


@pytest.mark.parametrize(
    ("observed", "weights"),
    [
        ({"control": 5050, "b": 4950}, {"control": 1, "b": 1}),
        (
            {"control": 10_321, "b": 9_877, "c": 10_102, "d": 9_990},
            {"control": 1, "b": 1, "c": 1, "d": 1},
        ),
        ({"control": 5_100, "b": 2_430, "c": 2_470}, {"control": 50, "b": 25, "c": 25}),
        ({"control": 812, "b": 97}, {"control": 0.9, "b": 0.1}),
    ],
)
def test_srm_equals_scipy_chisquare(observed, weights):
    result = srm_test(observed, weights)
    total = sum(observed.values())
    expected = [total * weights[arm] / sum(weights.values()) for arm in observed]
    reference = scipy_stats.chisquare(list(observed.values()), expected)
    assert result.chi2 == pytest.approx(reference.statistic, rel=1e-9)
    assert result.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    assert result.degrees_of_freedom == len(observed) - 1


def test_srm_reference_value():
    # By hand: 5050 vs 4950 at 1:1 → chi2 = 2·50²/5000 = 1, df = 1, and
    # P(chi2_1 > 1) = P(|Z| > 1) = erfc(1/√2) = 0.31731050786291...
    result = srm_test({"control": 5050, "b": 4950}, {"control": 1, "b": 1})
    assert result.chi2 == pytest.approx(1.0, rel=1e-12)
    assert result.p_value == pytest.approx(math.erfc(1 / math.sqrt(2)), rel=1e-12)
    assert not result.flag


def test_srm_flags_below_one_in_a_thousand():
    result = srm_test({"control": 5200, "b": 4800}, {"control": 1, "b": 1})
    # chi2 = 2·200²/5000 = 16 → p ≈ 6.3e-5
    assert result.chi2 == pytest.approx(16.0)
    assert result.flag and result.threshold == 0.001


def test_an_arm_with_no_subjects_is_flagged_not_a_crash():
    result = srm_test({"control": 1000}, {"control": 1, "b": 1})
    assert result.observed == {"control": 1000, "b": 0}
    assert result.chi2 == pytest.approx(1000.0)
    assert result.flag and 0 < result.p_value < 1e-200


def test_zero_weight_arms_must_be_empty_and_take_no_part():
    result = srm_test({"control": 500, "b": 500, "paused": 0}, {"control": 1, "b": 1, "paused": 0})
    assert result.degrees_of_freedom == 1 and result.chi2 == 0.0
    with pytest.raises(ValueError, match="weight 0 but 3 subjects"):
        srm_test({"control": 500, "b": 500, "paused": 3}, {"control": 1, "b": 1, "paused": 0})


@pytest.mark.parametrize(
    ("observed", "weights", "message"),
    [
        ({"control": 10, "b": 10}, {"control": 0, "b": 0}, "sum to a positive"),
        ({"control": 10, "b": 10}, {"control": -1, "b": 2}, "negative"),
        ({"control": 10, "b": 10}, {"control": math.nan, "b": 1}, "finite"),
        ({"control": 10, "b": 10}, {}, "empty"),
        ({"control": 10, "x": 10}, {"control": 1, "b": 1}, "no configured weight"),
        ({"control": -10, "b": 10}, {"control": 1, "b": 1}, "negative"),
        ({"control": 1.5, "b": 10}, {"control": 1, "b": 1}, "whole number"),
    ],
)
def test_bad_srm_input_is_a_value_error(observed, weights, message):
    with pytest.raises(ValueError, match=message):
        srm_test(observed, weights)


def test_no_subjects_at_all_is_insufficient_data():
    with pytest.raises(InsufficientDataError):
        srm_test({}, {"control": 1, "b": 1})
