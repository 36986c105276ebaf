"""Multiple-comparison adjustments of p-values.

- Holm (1979) controls the family-wise error rate: used across arms × metrics of
  a report, where a single false "ship it" is costly.
- Benjamini–Hochberg (1995) controls the false discovery rate: used across
  segments, which are exploratory and many.

Both return adjusted p-values (compare them with alpha), equal to
``statsmodels.stats.multitest.multipletests(method="holm" | "fdr_bh")``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _checked(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    values = np.asarray(p_values, dtype=float)
    if values.ndim != 1:
        raise ValueError("p-values must be a one-dimensional sequence")
    # One pass: NaN fails both comparisons, infinities the range.
    if not ((values >= 0) & (values <= 1)).all():
        raise ValueError("p-values must be finite numbers in [0, 1]")
    return values


def holm_adjust(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values: ``max_{j≤i} min(1, (m − j + 1)·p_(j))``."""
    values = _checked(p_values)
    m = values.size
    if m == 0:
        return values
    order = np.argsort(values, kind="stable")
    stepped = (m - np.arange(m)) * values[order]
    adjusted_sorted = np.minimum(1.0, np.maximum.accumulate(stepped))
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted


def benjamini_hochberg_adjust(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg step-up adjusted p-values: ``min_{j≥i} min(1, m/j·p_(j))``."""
    values = _checked(p_values)
    m = values.size
    if m == 0:
        return values
    order = np.argsort(values, kind="stable")
    stepped = values[order] * m / np.arange(1, m + 1)
    adjusted_sorted = np.minimum(1.0, np.minimum.accumulate(stepped[::-1])[::-1])
    adjusted = np.empty(m)
    adjusted[order] = adjusted_sorted
    return adjusted
