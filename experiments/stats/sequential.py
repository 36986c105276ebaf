"""Always-valid inference for guardrails that are watched continuously.

A fixed-horizon p-value checked every hour crosses alpha by chance far more
often than alpha. The mixture sequential probability ratio test (mSPRT) with a
normal mixing distribution gives a p-value and an interval that are valid at
*every* look simultaneously, however often and whenever one looks (Robbins
1970; Johari, Koomen, Pekelis & Walsh 2017/2022). Inverting the same test gives
the normal-mixture confidence sequence of Howard, Ramdas, McAuliffe & Sekhon
(2021); with the variance estimated from the data it is the asymptotic
confidence sequence of Waudby-Smith et al. (2023).

With ``V`` the variance of the estimated difference, ``N = n_c + n_t`` and
``z = (Δ̂ − δ₀)/√V``, the mixture likelihood ratio against ``δ = δ₀`` is

    Λ = (1 + Nρ²)^(−1/2) · exp(z² · Nρ² / (2(1 + Nρ²)))

and the always-valid p-value is the running minimum of ``min(1, 1/Λ)``. The
confidence sequence is ``Δ̂ ± √V · √((1 + Nρ²)/(Nρ²) · (2 log(1/α) + log(1 + Nρ²)))``,
which excludes δ₀ exactly when ``1/Λ ≤ α``.

ρ (the mixing scale, in standard deviations per subject) is fixed *before* the
experiment from ``tuning_sample_size``, the total sample size at which the
boundary should be tightest (the approximate minimiser given by Howard et al.
2021 for the normal mixture; GrowthBook makes the same choice):
``ρ² = (2 log(1/α) + log(1 + 2 log(1/α))) / tuning_sample_size``. Choosing it
from the data as it arrives would void the guarantee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import log_ndtr

from experiments.stats.frequentist import _check_alpha, difference_moments
from experiments.stats.statistics import Statistic, _count, _finite


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """One look at a continuously monitored comparison.

    ``p_value`` is the always-valid p-value (running minimum over looks when
    ``previous_p_value`` is passed), so ``reject`` never flips back to False.
    ``confidence_sequence`` is this look's time-uniform (1 − alpha) interval.
    """

    estimate: float
    confidence_sequence: tuple[float, float]
    p_value: float
    reject: bool
    z: float
    null_difference: float
    alpha: float
    sample_size: int
    tuning_sample_size: int
    method: str

    def harms_beyond(self, harm: float, *, higher_is_better: bool) -> bool:
        """A breach of a margin: rejected, with the always-valid interval wholly on the harmful side of ``harm``."""
        low, high = self.confidence_sequence
        return bool(self.reject and (high < harm if higher_is_better else low > harm))

    def to_dict(self) -> dict:
        return {
            "estimate": self.estimate,
            "confidence_sequence": list(self.confidence_sequence),
            "p_value": self.p_value,
            "reject": self.reject,
            "z": self.z,
            "null_difference": self.null_difference,
            "alpha": self.alpha,
            "sample_size": self.sample_size,
            "tuning_sample_size": self.tuning_sample_size,
            "method": self.method,
        }


def mixing_scale_squared(*, tuning_sample_size: int, alpha: float) -> float:
    """ρ² that makes the normal-mixture boundary tightest at ``tuning_sample_size`` subjects."""
    alpha = _check_alpha(alpha)
    tuning_sample_size = _count(tuning_sample_size, "tuning_sample_size")
    if tuning_sample_size == 0:
        raise ValueError("tuning_sample_size must be positive")
    log_term = 2.0 * math.log(1.0 / alpha)
    return (log_term + math.log(1.0 + log_term)) / tuning_sample_size


def mixture_log_likelihood_ratio(
    z: np.ndarray | float, sample_size: np.ndarray | float, *, rho_squared: float
) -> np.ndarray:
    """``log Λ`` of the normal-mixture SPRT, vectorised over looks or experiments."""
    information = np.asarray(sample_size, dtype=float) * rho_squared
    z = np.asarray(z, dtype=float)
    return -0.5 * np.log1p(information) + z * z * information / (2.0 * (1.0 + information))


def always_valid_p_value(
    z: np.ndarray | float, sample_size: np.ndarray | float, *, rho_squared: float
) -> np.ndarray:
    """``min(1, 1/Λ)`` at each look (not yet the running minimum), vectorised."""
    log_ratio = mixture_log_likelihood_ratio(z, sample_size, rho_squared=rho_squared)
    return np.exp(-np.maximum(log_ratio, 0.0))


def confidence_sequence_half_width(
    standard_error: np.ndarray | float,
    sample_size: np.ndarray | float,
    *,
    rho_squared: float,
    alpha: float,
) -> np.ndarray:
    """Half-width of the time-uniform (1 − alpha) normal-mixture confidence sequence."""
    information = np.asarray(sample_size, dtype=float) * rho_squared
    radius = (
        (1.0 + information) / information * (2.0 * math.log(1.0 / alpha) + np.log1p(information))
    )
    return np.asarray(standard_error, dtype=float) * np.sqrt(radius)


def sequential_test(
    control: Statistic,
    treatment: Statistic,
    *,
    tuning_sample_size: int,
    alpha: float = 0.05,
    null_difference: float = 0.0,
    previous_p_value: float = 1.0,
) -> SequentialResult:
    """Always-valid test of ``treatment − control = null_difference`` at this look.

    Works for every statistic type (the difference and its variance come from
    the same Welch / CUPED / delta-method moments as the fixed-horizon test).
    Pass the previous look's ``p_value`` as ``previous_p_value`` to keep the
    running minimum; ``null_difference`` shifts the null (e.g. to a
    non-inferiority margin). The guardrail monitor stops when ``reject``.
    """
    alpha = _check_alpha(alpha)
    null_difference = _finite(null_difference, "null_difference")
    previous_p_value = _finite(previous_p_value, "previous_p_value")
    if not 0 <= previous_p_value <= 1:
        raise ValueError(f"previous_p_value must be in [0, 1], got {previous_p_value}")
    rho_squared = mixing_scale_squared(tuning_sample_size=tuning_sample_size, alpha=alpha)
    moments = difference_moments(control, treatment)
    standard_error = math.sqrt(moments.variance)
    sample_size = moments.control_n + moments.treatment_n
    z = (moments.estimate - null_difference) / standard_error
    p_now = float(always_valid_p_value(z, sample_size, rho_squared=rho_squared))
    p_value = min(previous_p_value, p_now)
    half_width = float(
        confidence_sequence_half_width(
            standard_error, sample_size, rho_squared=rho_squared, alpha=alpha
        )
    )
    return SequentialResult(
        estimate=moments.estimate,
        confidence_sequence=(moments.estimate - half_width, moments.estimate + half_width),
        p_value=p_value,
        reject=p_value <= alpha,
        z=z,
        null_difference=null_difference,
        alpha=alpha,
        sample_size=sample_size,
        tuning_sample_size=int(tuning_sample_size),
        method="msprt_normal_mixture",
    )


# --- one-sided: a half-normal mixture ------------------------------------------------
#
# For a one-sided question (is the treatment no worse than the margin? does it
# beat the control?) mixing only over alternatives on the favourable side,
# with a half-normal of the same scale ρ, gives with I = Nρ² and z measured
# towards the alternative
#
#     Λ = 2 (1 + I)^(−1/2) · exp(z² I / (2(1 + I))) · Φ(z √(I/(1 + I))).
#
# Under every null on the other side of δ₀ it is a non-negative supermartingale
# (each component's expectation is exp(N·a·(δ − δ₀)) ≤ 1 for a > 0, δ ≤ δ₀), so
# by Ville's inequality min(1, 1/Λ), kept as a running minimum, is an
# always-valid one-sided p-value (Robbins 1970; Howard et al. 2021, §3.5).
# Λ increases with z, so the one-sided confidence sequence is the estimate
# minus z*·se, with z* the root of Λ = 1/α.


def one_sided_log_likelihood_ratio(
    z: np.ndarray | float, sample_size: np.ndarray | float, *, rho_squared: float
) -> np.ndarray:
    """``log Λ`` of the half-normal mixture SPRT; ``z`` points towards the alternative."""
    information = np.asarray(sample_size, dtype=float) * rho_squared
    z = np.asarray(z, dtype=float)
    shrink = np.sqrt(information / (1.0 + information))
    return (
        math.log(2.0)
        - 0.5 * np.log1p(information)
        + z * z * information / (2.0 * (1.0 + information))
        + log_ndtr(z * shrink)
    )


def one_sided_always_valid_p_value(
    z: np.ndarray | float, sample_size: np.ndarray | float, *, rho_squared: float
) -> np.ndarray:
    """``min(1, 1/Λ)`` of the one-sided mixture at each look (not yet the running minimum)."""
    log_ratio = one_sided_log_likelihood_ratio(z, sample_size, rho_squared=rho_squared)
    return np.exp(-np.maximum(log_ratio, 0.0))


def one_sided_critical_z(sample_size: float, *, rho_squared: float, alpha: float) -> float:
    """The z at which the one-sided always-valid test rejects at ``alpha`` (Λ = 1/α).

    ``f(z) = log Λ(z) − log(1/α)`` is increasing and convex (its second derivative
    is I/(1 + I) times the variance of a truncated normal), and the two-sided
    boundary lies at or right of its root (there Φ ≥ ½, so the one-sided Λ is at
    least the two-sided one). Newton's method from there therefore steps down
    monotonically onto the root, in a handful of steps to machine precision
    (a report solves this for every non-inferiority test, at every look).
    """
    information = float(sample_size) * rho_squared
    slope = information / (1.0 + information)
    shrink = math.sqrt(slope)
    offset = math.log(2.0) - 0.5 * math.log1p(information) - math.log(1.0 / alpha)
    log_normal_density_constant = -0.5 * math.log(2.0 * math.pi)
    z = math.sqrt((2.0 * math.log(1.0 / alpha) + math.log1p(information)) / slope)
    for _ in range(100):
        x = z * shrink
        log_cdf = float(log_ndtr(x))
        excess = offset + 0.5 * slope * z * z + log_cdf
        derivative = slope * z + shrink * math.exp(log_normal_density_constant - 0.5 * x * x - log_cdf)
        step = excess / derivative
        if step <= 4.0 * 2.220446049250313e-16 * abs(z):  # on the root, or rounding put us just left of it
            break
        z -= step
    return z
