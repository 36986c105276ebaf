"""Holm and Benjamini–Hochberg, equal to statsmodels' multipletests."""

import numpy as np
import pytest

from experiments.stats import benjamini_hochberg_adjust, holm_adjust

from .stats_testkit import multipletests_adjusted

CASES = [
    [0.01, 0.04, 0.03, 0.005, 0.2, 0.5],
    [0.01, 0.01, 0.01, 0.5],  # ties
    [1e-120, 0.049, 0.051, 1.0, 0.0],
    [0.3],
    list(np.random.default_rng(0).uniform(0, 0.1, 480)),  # 20 segments × 8 metrics × 3 arms
    list(np.random.default_rng(1).beta(0.3, 3, 37)),
]


@pytest.mark.parametrize("p_values", CASES)
def test_holm_equals_statsmodels(p_values):
    expected = multipletests_adjusted(p_values, "holm")
    np.testing.assert_allclose(holm_adjust(p_values), expected, rtol=1e-9, atol=0)


@pytest.mark.parametrize("p_values", CASES)
def test_benjamini_hochberg_equals_statsmodels(p_values):
    expected = multipletests_adjusted(p_values, "fdr_bh")
    np.testing.assert_allclose(benjamini_hochberg_adjust(p_values), expected, rtol=1e-9, atol=0)


def test_holm_by_hand():
    # Sorted 0.01, 0.02, 0.04 with m = 3: 3·0.01 = 0.03, 2·0.02 = 0.04, 1·0.04 = 0.04.
    assert holm_adjust([0.04, 0.01, 0.02]).tolist() == pytest.approx([0.04, 0.03, 0.04])
    # BH: 0.04·3/3 = 0.04, 0.02·3/2 = 0.03, 0.01·3/1 = 0.03 (step-up minimum).
    assert benjamini_hochberg_adjust([0.04, 0.01, 0.02]).tolist() == pytest.approx(
        [0.04, 0.03, 0.03]
    )


def test_empty_families_are_empty():
    assert holm_adjust([]).size == 0 and benjamini_hochberg_adjust([]).size == 0


@pytest.mark.parametrize("bad", [[0.1, np.nan], [1.2], [-0.1], [[0.1, 0.2]]])
def test_invalid_p_values_are_rejected(bad):
    with pytest.raises(ValueError):
        holm_adjust(bad)
    with pytest.raises(ValueError):
        benjamini_hochberg_adjust(bad)
