"""Non-inferiority tests for guardrails.

A guardrail does not ask "did the treatment change opt-outs?" but "can we rule
out that it raised opt-outs by more than the margin?" (e.g. 0.5 percentage
points). That is a one-sided test of a shifted null:

- lower is better (opt-out): H0: Δ ≥ margin   vs  H1: Δ < margin,
  t = (Δ̂ − margin)/se, p = P(T ≤ t);
- higher is better (conversion, GMV): H0: Δ ≤ −margin  vs  H1: Δ > −margin,
  t = (Δ̂ + margin)/se, p = P(T ≥ t).

Δ̂, se and the Welch degrees of freedom are those of the fixed-horizon
comparison (so CUPED and ratio metrics work too). The treatment is
non-inferior when p < alpha, equivalently when the one-sided (1 − alpha)
bound lies on the good side of the margin. With ``relative=True`` the margin
is a fraction of the control mean and the test uses the delta-method relative
lift. References: Schuirmann (1987); FDA, *Non-Inferiority Clinical Trials to
Establish Effectiveness* (2016).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from experiments.stats._distributions import t_isf, t_sf
from experiments.stats.frequentist import _check_alpha, _relative_moments, difference_moments
from experiments.stats.statistics import InsufficientDataError, Statistic, _finite


@dataclass(frozen=True, slots=True)
class NonInferiorityResult:
    """``bound`` is the one-sided (1 − alpha) confidence bound on the harmful side."""

    estimate: float
    standard_error: float
    margin: float
    relative: bool
    higher_is_better: bool
    bound: float
    p_value: float
    noninferior: bool
    alpha: float
    degrees_of_freedom: float

    def to_dict(self) -> dict:
        return {
            "estimate": self.estimate,
            "standard_error": self.standard_error,
            "margin": self.margin,
            "relative": self.relative,
            "higher_is_better": self.higher_is_better,
            "bound": self.bound,
            "p_value": self.p_value,
            "noninferior": self.noninferior,
            "alpha": self.alpha,
            "degrees_of_freedom": self.degrees_of_freedom,
        }


def noninferiority_test(
    control: Statistic,
    treatment: Statistic,
    *,
    margin: float,
    higher_is_better: bool,
    alpha: float = 0.05,
    relative: bool = False,
) -> NonInferiorityResult:
    """Is the treatment no worse than the control by more than ``margin``?

    ``margin`` is a positive amount of tolerated harm, in the metric's units
    (0.005 for half a percentage point of a proportion) or, with
    ``relative=True``, as a fraction of the control mean (0.02 for 2 %).
    ``higher_is_better`` is required: getting the direction wrong silently
    inverts a guardrail.
    """
    alpha = _check_alpha(alpha)
    margin = _finite(margin, "margin")
    if not margin > 0:
        raise ValueError(f"margin must be positive (the tolerated harm), got {margin}")
    if not isinstance(higher_is_better, bool):
        raise ValueError("higher_is_better must be True or False")
    moments = difference_moments(control, treatment)
    if relative:
        relative_moments = _relative_moments(moments)
        if relative_moments is None:
            raise InsufficientDataError(
                "a relative margin needs a non-zero control mean and a defined relative lift"
            )
        estimate, variance = relative_moments
    else:
        estimate, variance = moments.estimate, moments.variance
    standard_error = math.sqrt(variance)
    dof = moments.degrees_of_freedom
    quantile = float(t_isf(alpha, dof))
    if higher_is_better:
        t_statistic = (estimate + margin) / standard_error
        p_value = float(t_sf(t_statistic, dof))
        bound = estimate - quantile * standard_error
    else:
        t_statistic = (estimate - margin) / standard_error
        p_value = float(t_sf(-t_statistic, dof))
        bound = estimate + quantile * standard_error
    return NonInferiorityResult(
        estimate=estimate,
        standard_error=standard_error,
        margin=margin,
        relative=relative,
        higher_is_better=higher_is_better,
        bound=bound,
        p_value=p_value,
        noninferior=p_value < alpha,
        alpha=alpha,
        degrees_of_freedom=dof,
    )
