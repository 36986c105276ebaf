"""Fixed-horizon comparison of a treatment arm with the control arm.

Every metric type is reduced to the same small set of *moments* of the
difference (estimate, its variance, Welch–Satterthwaite degrees of freedom, the
control mean and the relative lift's delta-method variance); the absolute and relative
effects are computed from those moments by one vectorised kernel, so a report
with hundreds of comparisons makes a handful of scipy calls, not hundreds.

Methods (formulas and references in docs/statistics.md):

- means and proportions: Welch's t-test on the two sample variances (unpooled);
- CUPED: the same test on ``y − θ·x`` with θ the OLS slope pooled within the two
  arms, whose difference equals the treatment coefficient of
  ``y ~ 1 + treatment + x``;
- ratio metrics: the delta method for each arm's ratio, Welch's degrees of
  freedom on the linearised per-subject values;
- relative lift ``(treatment − control)/|control|``: delta method, including
  the uncertainty of the control mean (and its covariance with the difference);
- CUPED++ (``LinAdjustedStatistic``): Lin's interacted regression with several
  covariates and strata (``experiments.stats.regression``), cell-averaged HC2.

p-values come from survival functions (``t.sf``), so a huge effect reports
``9e-112`` rather than ``0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from experiments.stats._distributions import norm_isf, t_isf, t_sf
from experiments.stats.regression import LinAdjustedStatistic, lin_difference
from experiments.stats.statistics import (
    InsufficientDataError,
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    Statistic,
    nonnegative_or_zero,
)

METHOD_WELCH = "welch_t"
METHOD_CUPED = "cuped_welch_t"
METHOD_RATIO = "delta_method_ratio"
METHOD_LIN = "lin_interacted_hc2"
METHOD_LIN_RATIO = "lin_interacted_hc2_ratio"

# The per-comparison result classes below are not frozen: a frozen dataclass
# pays an object.__setattr__ per field on construction, 5× slower, and a report
# builds thousands of them. Treat them as values all the same.


@dataclass(slots=True)
class Effect:
    """One effect with its (1 − alpha) interval and two-sided p-value.

    Every field is ``None`` only for a relative lift that is undefined (a control
    mean of zero, or a lift with zero variance); the comparison's ``notes`` say why.
    """

    estimate: float | None
    ci: tuple[float, float] | None
    p_value: float | None
    standard_error: float | None

    def to_dict(self) -> dict:
        return {
            "estimate": self.estimate,
            "ci": None if self.ci is None else [self.ci[0], self.ci[1]],
            "p_value": self.p_value,
            "standard_error": self.standard_error,
        }


@dataclass(slots=True)
class Comparison:
    """A treatment arm against the control on one metric.

    ``control_mean`` and ``treatment_mean`` are the observed means (the ratio
    for a ratio metric), also under CUPED, where ``absolute.estimate`` is the
    adjusted difference and therefore not exactly their difference.
    ``p_value_adjusted`` is set by the report and is ``None`` for a
    stand-alone comparison; ``significant`` uses the adjusted p-value when
    there is one. ``family`` names the multiple-testing family the report put
    the comparison in (``confirmatory``: the primary metric × arms, Holm;
    ``exploratory``: other metrics, Benjamini–Hochberg; ``segment``; ``all``:
    one Holm family when no primary metric is named). ``interval_level`` is the
    confidence level of ``absolute.ci`` and ``relative.ci``: ``1 − alpha``
    (unadjusted) except in the confirmatory family, whose intervals are
    widened to agree with the adjusted p-values (docs/statistics.md §8).
    """

    arm: str | None
    metric: str | None
    method: str
    cuped: bool
    alpha: float
    control_n: int
    treatment_n: int
    control_mean: float
    treatment_mean: float
    absolute: Effect
    relative: Effect
    degrees_of_freedom: float
    p_value_adjusted: float | None
    significant: bool
    theta: float | None = None
    variance_reduction: float | None = None
    cap: float | None = None
    notes: tuple[str, ...] = ()
    # CUPED++ only: {"covariates": [...], "strata": [...]} actually used.
    adjusted_for: dict | None = None
    family: str | None = None
    interval_level: float | None = None

    def to_dict(self) -> dict:
        return {
            "arm": self.arm,
            "metric": self.metric,
            "method": self.method,
            "cuped": self.cuped,
            "alpha": self.alpha,
            "control_n": self.control_n,
            "treatment_n": self.treatment_n,
            "control_mean": self.control_mean,
            "treatment_mean": self.treatment_mean,
            "absolute": self.absolute.to_dict(),
            "relative": self.relative.to_dict(),
            "degrees_of_freedom": self.degrees_of_freedom,
            "p_value_adjusted": self.p_value_adjusted,
            "significant": self.significant,
            "theta": self.theta,
            "variance_reduction": self.variance_reduction,
            "cap": self.cap,
            "notes": list(self.notes),
            "adjusted_for": self.adjusted_for,
            "family": self.family,
            "interval_level": self.interval_level,
        }


@dataclass(slots=True)
class DifferenceMoments:
    """Everything inference needs about ``treatment − control`` on one metric.

    ``relative_variance`` is the delta-method variance of the relative lift
    ``estimate/|control_mean|`` (None when the control mean is zero). Each
    method computes it as a sum of per-arm variances, never as a difference of
    terms, because the textbook form ``V/m² + Δ²·Var(m)/m⁴ − 2Δ·Cov/m³``
    cancels catastrophically when the treatment mean is near zero.
    """

    method: str
    control_n: int
    treatment_n: int
    control_mean: float
    treatment_mean: float
    estimate: float
    variance: float
    degrees_of_freedom: float
    control_mean_variance: float
    relative_variance: float | None
    theta: float | None = None
    variance_reduction: float | None = None
    notes: tuple[str, ...] = ()
    # The control arm's share of ``variance`` (what the comparisons of several
    # arms with one control have in common: Dunnett's correlations).
    control_variance: float | None = None
    adjusted_for: dict | None = None


def _welch_degrees_of_freedom(
    control_variance_of_mean: float,
    control_n: int,
    treatment_variance_of_mean: float,
    treatment_n: int,
) -> float:
    total = control_variance_of_mean + treatment_variance_of_mean
    denominator = control_variance_of_mean**2 / (control_n - 1) + treatment_variance_of_mean**2 / (
        treatment_n - 1
    )
    return total * total / denominator


def _require_subjects(control: Statistic, treatment: Statistic) -> None:
    if control.n >= 2 and treatment.n >= 2:
        return
    for role, statistic in (("control", control), ("treatment", treatment)):
        if statistic.n == 0:
            raise InsufficientDataError(f"the {role} arm has no subjects")
        if statistic.n == 1:
            raise InsufficientDataError(
                f"the {role} arm has 1 subject; at least 2 per arm are needed to estimate a variance"
            )


def _zero_variance_error() -> InsufficientDataError:
    return InsufficientDataError(
        "zero variance in both arms (every subject has the same value), so no test is "
        "possible; a constant metric carries no evidence either way"
    )


def _mean_moments(control: Statistic, treatment: Statistic) -> DifferenceMoments:
    control_var = control.variance / control.n
    treatment_var = treatment.variance / treatment.n
    variance = control_var + treatment_var
    if variance == 0:
        raise _zero_variance_error()
    control_mean = control.mean
    treatment_mean = treatment.mean
    return DifferenceMoments(
        method=METHOD_WELCH,
        control_n=control.n,
        treatment_n=treatment.n,
        control_mean=control_mean,
        treatment_mean=treatment_mean,
        estimate=treatment_mean - control_mean,
        variance=variance,
        degrees_of_freedom=_welch_degrees_of_freedom(
            control_var, control.n, treatment_var, treatment.n
        ),
        control_mean_variance=control_var,
        relative_variance=_plain_relative_variance(
            control_mean, control_var, treatment_mean, treatment_var
        ),
        control_variance=control_var,
    )


def _plain_relative_variance(
    control_mean: float, control_var: float, treatment_mean: float, treatment_var: float
) -> float | None:
    """Var(m_t/|m_c|) ≈ (Var(m_t) + (m_t/m_c)²·Var(m_c))/m_c², two non-negative terms."""
    if control_mean == 0:
        return None
    ratio = treatment_mean / control_mean
    return (treatment_var + ratio * ratio * control_var) / (control_mean * control_mean)


def cuped_slope(
    control: RegressionAdjustedStatistic, treatment: RegressionAdjustedStatistic
) -> float:
    """θ: the OLS slope of metric on covariate, pooled *within* the two arms.

    Pooling within arms (centring each arm on its own means) is what OLS with a
    treatment dummy does, so the adjusted difference equals that regression's
    treatment coefficient. A covariate that is constant in both arms carries no
    information: θ = 0 and the comparison is the unadjusted Welch test.
    """
    _, control_sxx, control_sxy = control.centred_moments()
    _, treatment_sxx, treatment_sxy = treatment.centred_moments()
    pooled_sxx = control_sxx + treatment_sxx
    if pooled_sxx == 0:
        return 0.0
    return (control_sxy + treatment_sxy) / pooled_sxx


def _cuped_moments(
    control: RegressionAdjustedStatistic, treatment: RegressionAdjustedStatistic
) -> DifferenceMoments:
    control_syy, control_sxx, control_sxy = control.centred_moments()
    treatment_syy, treatment_sxx, treatment_sxy = treatment.centred_moments()
    pooled_sxx = control_sxx + treatment_sxx
    # As in cuped_slope, inlined: a report computes thousands of these.
    theta = (control_sxy + treatment_sxy) / pooled_sxx if pooled_sxx > 0 else 0.0

    def residual_variance_of_mean(syy: float, sxx: float, sxy: float, n: int) -> float:
        # Σ((y − ȳ) − θ(x − x̄))², a sum of squares, so ≥ 0 up to rounding.
        residual = nonnegative_or_zero(
            syy - 2.0 * theta * sxy + theta * theta * sxx, syy + theta * theta * sxx
        )
        return residual / (n - 1) / n

    control_var = residual_variance_of_mean(control_syy, control_sxx, control_sxy, control.n)
    treatment_var = residual_variance_of_mean(
        treatment_syy, treatment_sxx, treatment_sxy, treatment.n
    )
    variance = control_var + treatment_var
    if variance == 0:
        raise InsufficientDataError(
            "zero residual variance in both arms after CUPED (the metric is an exact linear "
            "function of the covariate), so no test is possible"
        )
    control_mean = control.mean
    treatment_mean = treatment.mean
    estimate = (treatment_mean - control_mean) - theta * (
        treatment.covariate_mean - control.covariate_mean
    )
    unadjusted = (
        control_syy / (control.n - 1) / control.n + treatment_syy / (treatment.n - 1) / treatment.n
    )
    control_mean_variance = control_syy / (control.n - 1) / control.n
    relative_variance = None
    if control_mean != 0:
        # The relative lift g = Δ/|ȳ_c| moves with the control rows through
        # −((1 + k)·ȳ_c − θ·x̄_c)/|ȳ_c|, k = Δ/ȳ_c (θ treated as known, as for
        # the variance itself): the control's share is the variance of that
        # combination, a sum of squares computed directly.
        k1 = 1.0 + estimate / control_mean
        control_share = nonnegative_or_zero(
            k1 * k1 * control_syy - 2.0 * k1 * theta * control_sxy + theta * theta * control_sxx,
            k1 * k1 * control_syy + theta * theta * control_sxx,
        ) / ((control.n - 1) * control.n)
        relative_variance = (treatment_var + control_share) / (control_mean * control_mean)
    return DifferenceMoments(
        method=METHOD_CUPED,
        control_n=control.n,
        treatment_n=treatment.n,
        control_mean=control_mean,
        treatment_mean=treatment_mean,
        estimate=estimate,
        variance=variance,
        degrees_of_freedom=_welch_degrees_of_freedom(
            control_var, control.n, treatment_var, treatment.n
        ),
        control_mean_variance=control_mean_variance,
        relative_variance=relative_variance,
        theta=theta,
        variance_reduction=(1.0 - variance / unadjusted) if unadjusted > 0 else None,
        notes=()
        if control_sxx + treatment_sxx > 0
        else ("the covariate is constant in both arms: CUPED made no adjustment",),
        control_variance=control_var,
    )


def _ratio_variance_of_mean(statistic: RatioStatistic) -> float:
    """Delta-method ``Var(Σnum/Σden)``: the variance of the mean of ``(num − R·den)/d̄``."""
    snn, sdd, snd = statistic.centred_moments()
    ratio = statistic.mean
    denominator_mean = statistic.denominator_sum / statistic.n
    linearised = nonnegative_or_zero(
        snn - 2.0 * ratio * snd + ratio * ratio * sdd, snn + ratio * ratio * sdd
    )
    return linearised / (statistic.n - 1) / statistic.n / (denominator_mean * denominator_mean)


def _ratio_moments(control: RatioStatistic, treatment: RatioStatistic) -> DifferenceMoments:
    for role, statistic in (("control", control), ("treatment", treatment)):
        if statistic.denominator_sum == 0:
            raise InsufficientDataError(
                f"the ratio is undefined in the {role} arm: its denominator sums to zero"
            )
    control_var = _ratio_variance_of_mean(control)
    treatment_var = _ratio_variance_of_mean(treatment)
    variance = control_var + treatment_var
    if variance == 0:
        raise _zero_variance_error()
    control_ratio = control.mean
    treatment_ratio = treatment.mean
    return DifferenceMoments(
        method=METHOD_RATIO,
        control_n=control.n,
        treatment_n=treatment.n,
        control_mean=control_ratio,
        treatment_mean=treatment_ratio,
        estimate=treatment_ratio - control_ratio,
        variance=variance,
        degrees_of_freedom=_welch_degrees_of_freedom(
            control_var, control.n, treatment_var, treatment.n
        ),
        control_mean_variance=control_var,
        relative_variance=_plain_relative_variance(
            control_ratio, control_var, treatment_ratio, treatment_var
        ),
        control_variance=control_var,
    )


def _lin_moments(
    control: LinAdjustedStatistic, treatment: LinAdjustedStatistic
) -> DifferenceMoments:
    """CUPED++: the means reported are the adjusted ones (each arm's prediction at
    the pooled covariate mean), so the estimate is exactly their difference and
    the relative lift divides by the adjusted control mean."""
    difference = lin_difference(control, treatment)
    control_fit, treatment_fit = difference.control, difference.treatment
    notes = tuple(
        f"{name} is constant in both arms: not used in the adjustment"
        for name in difference.dropped
    )
    return DifferenceMoments(
        method=METHOD_LIN_RATIO if control.ratio else METHOD_LIN,
        control_n=control_fit.n,
        treatment_n=treatment_fit.n,
        control_mean=control_fit.adjusted_mean,
        treatment_mean=treatment_fit.adjusted_mean,
        estimate=difference.estimate,
        variance=difference.variance,
        degrees_of_freedom=difference.degrees_of_freedom,
        control_mean_variance=control_fit.variance,
        relative_variance=_plain_relative_variance(
            control_fit.adjusted_mean,
            control_fit.variance,
            treatment_fit.adjusted_mean,
            treatment_fit.variance,
        ),
        variance_reduction=difference.variance_reduction,
        notes=notes,
        control_variance=control_fit.variance,
        adjusted_for={
            "covariates": [
                name for name in difference.covariates if name not in difference.dropped
            ],
            "strata": list(difference.strata),
        },
    )


_MOMENTS_BY_TYPE = {
    SampleMeanStatistic: _mean_moments,
    ProportionStatistic: _mean_moments,
    RegressionAdjustedStatistic: _cuped_moments,
    RatioStatistic: _ratio_moments,
    LinAdjustedStatistic: _lin_moments,
}


def difference_moments(control: Statistic, treatment: Statistic) -> DifferenceMoments:
    """The moments of ``treatment − control`` for two statistics of the same type.

    Raises ``InsufficientDataError`` (a ``ValueError``) for an arm with fewer
    than two subjects, zero variance in both arms, or a ratio whose denominator
    sums to zero; ``ValueError`` for mismatched statistic types.
    """
    method = method_for(_MOMENTS_BY_TYPE, control, treatment)
    _require_subjects(control, treatment)
    return method(control, treatment)


def method_for(methods: Mapping[type, Callable], control: Statistic, treatment: Statistic) -> Callable:
    """The function of ``methods`` (keyed by statistic type) for two statistics of the same type."""
    if type(control) is not type(treatment):
        raise ValueError(
            f"control and treatment statistics differ in type: {type(control).__name__} "
            f"vs {type(treatment).__name__}"
        )
    method = methods.get(type(control))
    if method is None:
        raise ValueError(f"unsupported statistic type {type(control).__name__}")
    return method


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ValueError(f"alpha must be a number strictly between 0 and 1, got {alpha!r}")
    return float(alpha)


def t_inference(
    estimate: np.ndarray,
    variance: np.ndarray,
    degrees_of_freedom: np.ndarray,
    *,
    alpha: float,
    quantile: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised two-sided t inference: ``(standard_error, ci_low, ci_high, p_value)``.

    ``variance`` must be positive. The p-value is ``2·t.sf(|t|)``, accurate far
    into the tail. ``quantile`` (``t.isf(alpha/2, df)``) may be passed when
    already known: inverting t is the slowest step.
    """
    standard_error = np.sqrt(variance)
    t_statistic = np.abs(estimate) / standard_error
    p_value = np.minimum(1.0, 2.0 * t_sf(t_statistic, degrees_of_freedom))
    if quantile is None:
        quantile = t_isf(alpha / 2.0, degrees_of_freedom)
    half_width = quantile * standard_error
    return standard_error, estimate - half_width, estimate + half_width, p_value


def _relative_moments(moments: DifferenceMoments) -> tuple[float, float] | None:
    """Delta-method ``(estimate, variance)`` of ``Δ/|control mean|``, or None if undefined.

    Dividing by ``|control mean|`` keeps the lift's sign equal to the sign of
    the difference when the control mean is negative (net GMV after refunds);
    the variance is the same either way, since the sign enters squared.
    """
    if moments.control_mean == 0 or moments.relative_variance is None:
        return None
    if not moments.relative_variance > 0:
        return None
    return moments.estimate / abs(moments.control_mean), moments.relative_variance


def _notes_for(
    moments: DifferenceMoments, relative_defined: bool, normal_critical: float
) -> tuple[str, ...]:
    notes = list(moments.notes)
    if moments.control_mean == 0:
        notes.append("control mean is zero: the relative lift is undefined")
    elif not relative_defined:
        notes.append("the relative lift has zero variance: its interval and p-value are undefined")
    else:
        if moments.control_mean < 0:
            notes.append(
                "control mean is negative: the relative lift is (treatment − control)/|control|, "
                "so its sign matches the absolute difference"
            )
        # A control with no variance has an exactly known mean: nothing to warn about.
        control_sd = math.sqrt(moments.control_mean_variance)
        if control_sd > 0 and abs(moments.control_mean) / control_sd < normal_critical:
            notes.append(
                "the control mean is not distinguishable from zero: the delta-method interval of "
                "the relative lift is unreliable (Fieller's interval is unbounded)"
            )
    return tuple(notes)


def compare_moments(
    moments: Sequence[DifferenceMoments],
    *,
    alpha: float = 0.05,
    labels: Sequence[tuple[str | None, str | None]] | None = None,
    caps: Sequence[float | None] | None = None,
    adjust: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[Comparison]:
    """Turn many ``DifferenceMoments`` into ``Comparison`` results in one vectorised pass.

    ``adjust`` (e.g. ``holm_adjust``) maps the absolute effects' p-values of
    this family to adjusted ones, which then decide ``significant``.
    """
    alpha = _check_alpha(alpha)
    count = len(moments)
    if count == 0:
        return []
    relative = [_relative_moments(m) for m in moments]
    # Absolute and relative effects in one call to the t functions.
    estimate = np.array(
        [m.estimate for m in moments] + [r[0] if r else 0.0 for r in relative], dtype=float
    )
    variance = np.array(
        [m.variance for m in moments] + [r[1] if r else 1.0 for r in relative], dtype=float
    )
    dof = np.array([m.degrees_of_freedom for m in moments], dtype=float)
    quantile = t_isf(alpha / 2.0, dof)  # shared: the relative lift uses the same df
    se, low, high, p = t_inference(
        estimate,
        variance,
        np.concatenate([dof, dof]),
        alpha=alpha,
        quantile=np.concatenate([quantile, quantile]),
    )
    abs_se, rel_se = se[:count], se[count:]
    abs_low, rel_low = low[:count], low[count:]
    abs_high, rel_high = high[:count], high[count:]
    abs_p, rel_p = p[:count], p[count:]
    adjusted = adjust(abs_p).tolist() if adjust is not None else [None] * count

    undefined = Effect(estimate=None, ci=None, p_value=None, standard_error=None)
    normal_critical = float(norm_isf(alpha / 2.0))
    # Plain Python lists: indexing numpy arrays element by element is slow and
    # would leak numpy scalars into the JSON.
    columns = zip(
        moments,
        abs_se.tolist(),
        abs_low.tolist(),
        abs_high.tolist(),
        abs_p.tolist(),
        relative,
        rel_se.tolist(),
        rel_low.tolist(),
        rel_high.tolist(),
        rel_p.tolist(),
        dof.tolist(),
        labels if labels is not None else [(None, None)] * count,
        caps if caps is not None else [None] * count,
        adjusted,
        strict=True,
    )
    results = []
    for (
        m,
        a_se,
        a_low,
        a_high,
        p_value,
        rel,
        r_se,
        r_low,
        r_high,
        r_p,
        df,
        label,
        cap,
        p_adj,
    ) in columns:
        results.append(
            Comparison(
                arm=label[0],
                metric=label[1],
                method=m.method,
                cuped=m.method in (METHOD_CUPED, METHOD_LIN, METHOD_LIN_RATIO),
                alpha=alpha,
                control_n=m.control_n,
                treatment_n=m.treatment_n,
                control_mean=m.control_mean,
                treatment_mean=m.treatment_mean,
                absolute=Effect(
                    estimate=m.estimate, ci=(a_low, a_high), p_value=p_value, standard_error=a_se
                ),
                relative=undefined
                if rel is None
                else Effect(estimate=rel[0], ci=(r_low, r_high), p_value=r_p, standard_error=r_se),
                degrees_of_freedom=df,
                p_value_adjusted=p_adj,
                significant=(p_value if p_adj is None else p_adj) < alpha,
                theta=m.theta,
                variance_reduction=m.variance_reduction,
                cap=cap,
                notes=_notes_for(m, rel is not None, normal_critical),
                adjusted_for=m.adjusted_for,
                interval_level=1.0 - alpha,
            )
        )
    return results


def compare(
    control: Statistic,
    treatment: Statistic,
    *,
    alpha: float = 0.05,
    arm: str | None = None,
    metric: str | None = None,
) -> Comparison:
    """Compare one treatment arm with the control on one metric.

    The method follows the statistic type: Welch for ``SampleMeanStatistic`` and
    ``ProportionStatistic``, CUPED for ``RegressionAdjustedStatistic``, the delta
    method for ``RatioStatistic``. ``arm`` and ``metric`` only label the result.
    """
    alpha = _check_alpha(alpha)
    moments = difference_moments(control, treatment)
    cap = _common_cap(control, treatment)
    return compare_moments([moments], alpha=alpha, labels=[(arm, metric)], caps=[cap])[0]


def compare_many(
    pairs: Sequence[tuple[Statistic, Statistic]], *, alpha: float = 0.05
) -> list[Comparison]:
    """``compare`` over many ``(control, treatment)`` pairs, vectorised (e.g. for simulations)."""
    alpha = _check_alpha(alpha)
    moments = [difference_moments(control, treatment) for control, treatment in pairs]
    caps = [_common_cap(control, treatment) for control, treatment in pairs]
    return compare_moments(moments, alpha=alpha, caps=caps)


def _common_cap(control: Statistic, treatment: Statistic) -> float | None:
    if control.cap != treatment.cap:
        raise ValueError(
            f"control and treatment were capped at different values ({control.cap} vs "
            f"{treatment.cap}); a cap must be computed once over all arms pooled"
        )
    return control.cap
