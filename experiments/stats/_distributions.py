"""The few distribution functions the engine needs, as bare scipy.special ufuncs.

These are exactly what ``scipy.stats.t.sf``, ``t.isf``, ``norm.sf``,
``norm.isf`` and ``chi2.sf`` evaluate internally (``stdtr``, ``stdtrit``,
``ndtr``, ``ndtri``, ``chdtrc``), without the ~0.1 ms of argument checking
and broadcasting each ``scipy.stats`` call adds; a report makes thousands.
Tail probabilities are computed directly (never ``1 − cdf``), so a huge
effect reports p = 9e-112, not 0.
"""

from __future__ import annotations

import numpy as np
from scipy import special


def t_sf(x: np.ndarray | float, df: np.ndarray | float) -> np.ndarray:
    """P(T > x) for Student's t with ``df`` degrees of freedom."""
    return special.stdtr(df, -np.asarray(x, dtype=float))


def t_isf(q: np.ndarray | float, df: np.ndarray | float) -> np.ndarray:
    """The x with P(T > x) = q."""
    return -special.stdtrit(df, q)


def norm_sf(x: np.ndarray | float) -> np.ndarray:
    return special.ndtr(-np.asarray(x, dtype=float))


def norm_cdf(x: np.ndarray | float) -> np.ndarray:
    return special.ndtr(x)


def norm_isf(q: np.ndarray | float) -> np.ndarray:
    return -special.ndtri(q)


def chi2_sf(x: float, df: int) -> float:
    return float(special.chdtrc(df, x))
