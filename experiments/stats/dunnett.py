"""Dunnett's many-to-one comparisons: several treatment arms against one control.

The k comparisons with a shared control are correlated: each contains the
control's mean. Dunnett (1955) adjusts for exactly that correlation instead
of Holm's worst case, so with 3 treatment arms it is less conservative:
the family-wise error rate is exactly alpha (not at most alpha) under the
normal model.

Two forms:

- ``pooled_variance=True`` is Dunnett's original test, as ``scipy.stats.dunnett``
  computes it: one pooled variance over all arms, ``df = N − (k + 1)``,
  correlations ``ρ_ij = 1/√((n₀/n_i + 1)(n₀/n_j + 1))``. Only for plain means and
  proportions (it needs a common variance).
- otherwise (the default) the engine's own unequal-variance comparisons
  (Welch, CUPED, ratio, CUPED++ moments): correlations ``ρ_ij = λ_i·λ_j`` with
  ``λ_i² = v₀,i / V_i`` (the control's share of comparison i's variance), and each
  comparison's p-value and critical value from the multivariate t with its own
  Welch degrees of freedom (Hasler & Hothorn 2008).

The probabilities are computed deterministically: the correlation has one
factor (the control), so P(max |T_i| ≤ c) is a two-dimensional integral (over
the control's standard normal and the variance estimate's chi distribution),
evaluated by Gauss–Hermite quadrature to about 1e-10 — unlike scipy's
randomised quasi-Monte Carlo, whose answers move in the fifth decimal.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import integrate, optimize, special

from experiments.stats.frequentist import DifferenceMoments, _check_alpha, difference_moments
from experiments.stats.statistics import (
    InsufficientDataError,
    ProportionStatistic,
    SampleMeanStatistic,
    Statistic,
)

ALTERNATIVES = ("two-sided", "greater", "less")
# Above this many degrees of freedom the t and the normal agree to ~1e-10.
_NORMAL_FROM = 1e8
_CONTROL_NODES, _CONTROL_WEIGHTS = special.roots_hermite(160)
_CONTROL_NODES = _CONTROL_NODES * math.sqrt(2.0)
_CONTROL_WEIGHTS = _CONTROL_WEIGHTS / math.sqrt(math.pi)


@functools.lru_cache(maxsize=8)
def _scale_rule(count: int) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = special.roots_hermite(count)
    return nodes * math.sqrt(2.0), weights / math.sqrt(math.pi)


def _scale_nodes(dof: float) -> int:
    # The chi distribution narrows as 1/√(2ν): fewer nodes suffice for large ν
    # (each choice checked against the exact t distribution in the tests).
    return 96 if dof < 200 else 48 if dof < 20_000 else 24


# Past this λ² the integrand over the control's normal is too steep for fixed
# nodes (a treatment arm far larger than the control): adaptive quadrature.
_STEEP = 0.9


def _inner(bound: np.ndarray, lam: np.ndarray, two_sided: bool) -> np.ndarray:
    """P(T_i ≤ bound (|T_i| ≤ bound if two-sided) for all i | no variance estimate), per bound."""
    slope = 1.0 / np.sqrt(1.0 - lam * lam)

    def integrand(z: np.ndarray | float) -> np.ndarray:
        shift = lam[:, None, None] * np.atleast_1d(z)[None, None, :]  # (k, 1, Z)
        upper = special.ndtr(slope[:, None, None] * (bound[None, :, None] - shift))
        if two_sided:
            upper = upper - special.ndtr(slope[:, None, None] * (-bound[None, :, None] - shift))
        return np.prod(upper, axis=0)  # (B, Z)

    if lam.size and float(np.max(lam * lam)) > _STEEP:

        def weighted(z: float) -> np.ndarray:
            return integrand(z)[:, 0] * math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)

        return integrate.quad_vec(weighted, -np.inf, np.inf, epsabs=1e-12, epsrel=1e-10)[0]
    return integrand(_CONTROL_NODES) @ _CONTROL_WEIGHTS


def _coverage(bounds: np.ndarray, lam: np.ndarray, dof: float, two_sided: bool) -> np.ndarray:
    """P(max T_i ≤ b) (of |T_i| if two-sided) under the one-factor multivariate t, per bound b."""
    bounds = np.atleast_1d(np.asarray(bounds, float))
    if math.isinf(dof) or dof > _NORMAL_FROM:
        return _inner(bounds, lam, two_sided)
    # S = √(χ²_ν/ν) through its quantile at a standard normal: exact, smooth in the node.
    nodes, weights = _scale_rule(_scale_nodes(dof))
    scale = np.sqrt(special.chdtri(dof, special.ndtr(-nodes)) / dof)
    inner = _inner((bounds[:, None] * scale[None, :]).ravel(), lam, two_sided)
    return inner.reshape(bounds.size, scale.size) @ weights


def _adjusted_p_values(
    statistics: np.ndarray, lam: np.ndarray, dof: float, alternative: str
) -> np.ndarray:
    if alternative == "two-sided":
        coverage = _coverage(np.abs(statistics), lam, dof, True)
    else:
        coverage = _coverage(
            statistics if alternative == "greater" else -statistics, lam, dof, False
        )
    return np.clip(1.0 - coverage, 0.0, 1.0)


def _critical_value(alpha: float, lam: np.ndarray, dof: float, two_sided: bool) -> float:
    return _cached_critical_value(alpha, tuple(lam.tolist()), dof, two_sided)


@functools.lru_cache(maxsize=256)
def _cached_critical_value(
    alpha: float, lam_values: tuple[float, ...], dof: float, two_sided: bool
) -> float:
    lam = np.asarray(lam_values)
    k = lam.size
    tail = alpha / 2.0 if two_sided else alpha
    # Bracketed by one test at alpha and Bonferroni over the k tests (Šidák's inequality).
    if math.isinf(dof) or dof > _NORMAL_FROM:
        low, high = -special.ndtri(tail), -special.ndtri(tail / k)
    else:
        low, high = -special.stdtrit(dof, tail), -special.stdtrit(dof, tail / k)

    def excess(c: float) -> float:
        return float(_coverage(np.array([c]), lam, dof, two_sided)[0]) - (1.0 - alpha)

    if k == 1:
        return float(low)
    return float(optimize.brentq(excess, low * (1 - 1e-9), high * (1 + 1e-9), xtol=1e-11))


@dataclass(frozen=True, slots=True)
class DunnettComparison:
    arm: str | None
    estimate: float
    standard_error: float
    statistic: float
    degrees_of_freedom: float
    p_value: float  # adjusted for the k comparisons
    critical_value: float
    ci: tuple[float, float]  # simultaneous (1 − alpha) interval
    significant: bool

    def to_dict(self) -> dict:
        return {
            "arm": self.arm,
            "estimate": self.estimate,
            "standard_error": self.standard_error,
            "statistic": self.statistic,
            "degrees_of_freedom": self.degrees_of_freedom,
            "p_value_adjusted": self.p_value,
            "critical_value": self.critical_value,
            "ci": [self.ci[0], self.ci[1]],
            "significant": self.significant,
        }


@dataclass(frozen=True, slots=True)
class DunnettResult:
    alpha: float
    alternative: str
    pooled_variance: bool
    correlation: tuple[tuple[float, ...], ...]
    comparisons: tuple[DunnettComparison, ...]

    def to_dict(self) -> dict:
        return {
            "method": "dunnett_pooled" if self.pooled_variance else "dunnett_unequal_variances",
            "alpha": self.alpha,
            "alternative": self.alternative,
            "correlation": [list(row) for row in self.correlation],
            "comparisons": [comparison.to_dict() for comparison in self.comparisons],
        }


def _check_alternative(alternative: str) -> str:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {list(ALTERNATIVES)}, got {alternative!r}")
    return alternative


def _result(
    arms: Sequence[str | None],
    estimates: np.ndarray,
    standard_errors: np.ndarray,
    lam: np.ndarray,
    dofs: np.ndarray,
    *,
    alpha: float,
    alternative: str,
    pooled: bool,
) -> DunnettResult:
    two_sided = alternative == "two-sided"
    comparisons = []
    statistics = estimates / standard_errors
    critical_by_dof: dict[float, float] = {}
    p_values = np.empty(statistics.size)
    for dof in set(dofs.tolist()):
        critical_by_dof[dof] = _critical_value(alpha, lam, dof, two_sided)
        same = dofs == dof
        p_values[same] = _adjusted_p_values(statistics[same], lam, dof, alternative)
    for arm, estimate, se, dof, statistic, p_value in zip(
        arms, estimates, standard_errors, dofs.tolist(), statistics, p_values.tolist(), strict=True
    ):
        critical = critical_by_dof[dof]
        if alternative == "two-sided":
            ci = (estimate - critical * se, estimate + critical * se)
        elif alternative == "greater":
            ci = (estimate - critical * se, math.inf)
        else:
            ci = (-math.inf, estimate + critical * se)
        comparisons.append(
            DunnettComparison(
                arm=arm,
                estimate=float(estimate),
                standard_error=float(se),
                statistic=float(statistic),
                degrees_of_freedom=float(dof),
                p_value=p_value,
                critical_value=critical,
                ci=(float(ci[0]), float(ci[1])),
                significant=p_value < alpha,
            )
        )
    correlation = np.outer(lam, lam)
    np.fill_diagonal(correlation, 1.0)
    return DunnettResult(
        alpha=alpha,
        alternative=alternative,
        pooled_variance=pooled,
        correlation=tuple(tuple(float(v) for v in row) for row in correlation),
        comparisons=tuple(comparisons),
    )


def dunnett_adjust(
    moments: Sequence[DifferenceMoments],
    *,
    arms: Sequence[str] | None = None,
    alpha: float = 0.05,
    alternative: str = "two-sided",
) -> DunnettResult:
    """Dunnett-adjusted p-values and simultaneous intervals for k comparisons with one control.

    ``moments`` are the k comparisons of one metric (``difference_moments``
    of the control with each treatment arm, any statistic type); ``arms``
    labels them. Unequal variances: the correlation comes from each
    comparison's control share of the variance, the degrees of freedom from
    each comparison's Welch value (Hasler & Hothorn 2008). The interval of a
    one-sided alternative is one-sided (an infinite end).
    """
    alpha = _check_alpha(alpha)
    alternative = _check_alternative(alternative)
    if not moments:
        raise ValueError("dunnett_adjust needs at least one comparison")
    if arms is not None and len(arms) != len(moments):
        raise ValueError(f"arms has {len(arms)} labels for {len(moments)} comparisons")
    variances = np.array([m.variance for m in moments], float)
    shares = np.array(
        [m.control_variance if m.control_variance is not None else math.nan for m in moments], float
    )
    if np.isnan(shares).any():
        raise ValueError("every comparison must carry its control_variance (DifferenceMoments)")
    lam = np.sqrt(np.clip(shares / variances, 0.0, 1.0 - 1e-12))
    return _result(
        list(arms) if arms is not None else [None] * len(moments),
        np.array([m.estimate for m in moments], float),
        np.sqrt(variances),
        lam,
        np.array([m.degrees_of_freedom for m in moments], float),
        alpha=alpha,
        alternative=alternative,
        pooled=False,
    )


def dunnett_test(
    control: Statistic,
    treatments: Sequence[Statistic],
    *,
    arms: Sequence[str] | None = None,
    alpha: float = 0.05,
    alternative: str = "two-sided",
    pooled_variance: bool = False,
) -> DunnettResult:
    """Dunnett's test of each treatment arm against the control on one metric.

    ``pooled_variance=True`` is the classic test (``scipy.stats.dunnett`` on
    the same rows); it needs ``SampleMeanStatistic`` or ``ProportionStatistic``.
    """
    alpha = _check_alpha(alpha)
    alternative = _check_alternative(alternative)
    if not treatments:
        raise ValueError("dunnett_test needs at least one treatment arm")
    if not pooled_variance:
        return dunnett_adjust(
            [difference_moments(control, treatment) for treatment in treatments],
            arms=arms,
            alpha=alpha,
            alternative=alternative,
        )
    groups = [control, *treatments]
    if not all(isinstance(group, SampleMeanStatistic | ProportionStatistic) for group in groups):
        raise ValueError(
            "pooled_variance=True is Dunnett's original test for plain means and proportions"
        )
    if any(type(group) is not type(control) for group in groups):
        raise ValueError("control and treatments must be statistics of the same type")
    counts = np.array([group.n for group in groups], float)
    if (counts < 1).any():
        raise InsufficientDataError("every arm needs at least one subject")
    dof = float(counts.sum() - len(groups))
    if dof < 1:
        raise InsufficientDataError("too few subjects for a pooled variance")
    centred = sum(group.sum_squares - group.sum * group.sum / group.n for group in groups)
    pooled = max(centred, 0.0) / dof
    if not pooled > 0:
        raise InsufficientDataError("zero variance in every arm: no test is possible")
    means = np.array([group.sum / group.n for group in groups])
    n_control, n_treatments = counts[0], counts[1:]
    standard_errors = np.sqrt(pooled * (1.0 / n_treatments + 1.0 / n_control))
    lam = np.sqrt(n_treatments / (n_treatments + n_control))  # ρ_ij = λ_i·λ_j, as scipy's
    return _result(
        list(arms) if arms is not None else [None] * len(treatments),
        means[1:] - means[0],
        standard_errors,
        lam,
        np.full(len(treatments), dof),
        alpha=alpha,
        alternative=alternative,
        pooled=True,
    )
