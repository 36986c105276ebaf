"""The Bayesian engine: GrowthBook's Gaussian effect model, from sufficient statistics.

Per comparison the data give an estimate of the effect and its variance (the
same as gbstats 0.8.0 ``EffectBayesianABTest`` computes them); the posterior
is Gaussian: with the flat (improper) prior it is ``N(estimate, variance)``,
with a proper Gaussian prior ``N(m, v)`` on the *relative* effect it is the
precision-weighted combination. From the posterior:

- ``chance_to_win`` = P(effect > 0) (P(effect < 0) for a metric where lower is
  better). It is **one-sided**: "significant at 95 % two-sided" corresponds to
  a chance above 97.5 % (or below 2.5 %), not above 95 % — the anchor a
  report's ``significant`` uses, so that under the flat prior it agrees exactly
  with the credible interval excluding zero;
- ``risk`` = the expected loss of each choice: ``{"control": E[max(effect, 0)],
  "treatment": E[max(−effect, 0)]}`` (swapped when lower is better);
- the (1 − alpha) credible interval, absolute and relative.

Where the engine differs from gbstats 0.8.0 on purpose (docs/statistics.md,
"Bayesian engine"): the relative CUPED lift uses the engine's own delta-method
estimator (gbstats 0.8.0 omits the covariate's covariance with the control
mean; later gbstats versions changed that formula); a negative control mean
divides by ``|control|``; CUPED++ and statistics gbstats has no counterpart
for use the frequentist estimator's moments with a normal posterior.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from experiments.stats._distributions import norm_cdf, norm_isf
from experiments.stats.frequentist import (
    METHOD_LIN,
    METHOD_LIN_RATIO,
    _check_alpha,
    _common_cap,
    _plain_relative_variance,
    _ratio_variance_of_mean,
    _relative_moments,
    _require_subjects,
    _zero_variance_error,
    difference_moments,
    method_for,
)
from experiments.stats.regression import LinAdjustedStatistic
from experiments.stats.report import (
    ArmStatistics,
    SegmentReport,
    SkippedComparison,
    _label,
    validated_report_arms,
    validated_segment,
)
from experiments.stats.srm import SRM_THRESHOLD, SrmResult
from experiments.stats.statistics import (
    InsufficientDataError,
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    Statistic,
)

ENGINES = ("frequentist", "bayesian")
_PRIOR_NEEDS_CONTROL_MEAN = (
    "a prior on the relative effect needs a defined relative effect (a control mean that is "
    "not zero, a relative lift with variance)"
)

METHOD_BAYES_MEAN = "bayesian_gaussian_mean"
METHOD_BAYES_PROPORTION = "bayesian_gaussian_proportion"
METHOD_BAYES_CUPED = "bayesian_gaussian_cuped"
METHOD_BAYES_RATIO = "bayesian_gaussian_ratio"
METHOD_BAYES_LIN = "bayesian_gaussian_lin"


def check_engine(engine: object) -> str:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {list(ENGINES)}, got {engine!r}")
    return str(engine)


@dataclass(frozen=True, slots=True)
class GaussianPrior:
    """A proper Gaussian prior ``N(mean, variance)`` on the relative effect (0.01 = +1 %)."""

    mean: float
    variance: float

    def __post_init__(self) -> None:
        for name in ("mean", "variance"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"prior {name} must be a number, got {value!r}")
            if not math.isfinite(float(value)):
                raise ValueError(f"prior {name} must be finite, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not self.variance > 0:
            raise ValueError(
                f"prior variance must be positive, got {self.variance} (omit the prior for the "
                "flat one)"
            )

    def to_dict(self) -> dict:
        return {"mean": self.mean, "variance": self.variance}


def gaussian_prior(prior: object) -> GaussianPrior | None:
    """``None`` (the flat prior), a ``GaussianPrior``, or ``{"mean": m, "variance": v}``."""
    if prior is None or isinstance(prior, GaussianPrior):
        return prior
    if not isinstance(prior, Mapping):
        raise ValueError(
            f"prior must be None or {{'mean': m, 'variance': v}}, got {type(prior).__name__}"
        )
    unknown = sorted(set(prior) - {"mean", "variance"})
    missing = sorted({"mean", "variance"} - set(prior))
    if unknown or missing:
        raise ValueError(
            f"prior must have exactly the keys 'mean' and 'variance' (missing {missing}, "
            f"unknown {unknown})"
        )
    return GaussianPrior(mean=prior["mean"], variance=prior["variance"])


@dataclass(slots=True)
class GaussianMoments:
    """The data's estimate and variance of the effect, absolute and relative.

    ``prior_scale`` is ``|control mean|`` (unadjusted, as gbstats), which turns
    the prior on the relative effect into one on the absolute effect.
    """

    method: str
    control_n: int
    treatment_n: int
    control_mean: float
    treatment_mean: float
    estimate: float
    variance: float
    relative_estimate: float | None
    relative_variance: float | None
    prior_scale: float
    theta: float | None = None
    variance_reduction: float | None = None
    notes: tuple[str, ...] = ()
    adjusted_for: dict | None = None


def _two_arm(
    method: str,
    control: Statistic,
    treatment: Statistic,
    control_mean: float,
    treatment_mean: float,
    control_var: float,
    treatment_var: float,
    **extra,
) -> GaussianMoments:
    """gbstats' ``frequentist_diff`` / ``frequentist_variance`` for independent arm means."""
    variance = control_var + treatment_var
    if not variance > 0:
        raise _zero_variance_error()
    relative_estimate = None
    if control_mean != 0:
        relative_estimate = (treatment_mean - control_mean) / abs(control_mean)
    relative_variance = _plain_relative_variance(
        control_mean, control_var, treatment_mean, treatment_var
    )
    return GaussianMoments(
        method=method,
        control_n=control.n,
        treatment_n=treatment.n,
        control_mean=control_mean,
        treatment_mean=treatment_mean,
        estimate=treatment_mean - control_mean,
        variance=variance,
        relative_estimate=relative_estimate,
        relative_variance=relative_variance,
        prior_scale=abs(control_mean),
        **extra,
    )


def _proportion(control: ProportionStatistic, treatment: ProportionStatistic) -> GaussianMoments:
    # gbstats: the Bernoulli variance p(1 − p), without the n/(n − 1) of the t-test.
    def variance_of_mean(statistic: ProportionStatistic) -> float:
        p = statistic.successes / statistic.n
        return p * (1.0 - p) / statistic.n

    return _two_arm(
        METHOD_BAYES_PROPORTION,
        control,
        treatment,
        control.mean,
        treatment.mean,
        variance_of_mean(control),
        variance_of_mean(treatment),
    )


def _mean(control: SampleMeanStatistic, treatment: SampleMeanStatistic) -> GaussianMoments:
    return _two_arm(
        METHOD_BAYES_MEAN,
        control,
        treatment,
        control.mean,
        treatment.mean,
        control.variance / control.n,
        treatment.variance / treatment.n,
    )


def _ratio(control: RatioStatistic, treatment: RatioStatistic) -> GaussianMoments:
    for role, statistic in (("control", control), ("treatment", treatment)):
        if statistic.denominator_sum == 0:
            raise InsufficientDataError(
                f"the ratio is undefined in the {role} arm: its denominator sums to zero"
            )
    return _two_arm(
        METHOD_BAYES_RATIO,
        control,
        treatment,
        control.mean,
        treatment.mean,
        _ratio_variance_of_mean(control),
        _ratio_variance_of_mean(treatment),
    )


def gbstats_theta(
    control: RegressionAdjustedStatistic, treatment: RegressionAdjustedStatistic
) -> float:
    """gbstats' CUPED slope: covariance over variance of the two arms *pooled*
    (centred on the grand means, not within arms as the frequentist engine's
    OLS slope); 0 when either pooled variance is 0."""
    n = control.n + treatment.n
    y_sum = control.sum + treatment.sum
    x_sum = control.covariate_sum + treatment.covariate_sum
    y_var = control.sum_squares + treatment.sum_squares - y_sum * y_sum / n
    x_var = control.covariate_sum_squares + treatment.covariate_sum_squares - x_sum * x_sum / n
    if not (x_var > 0 and y_var > 0):
        return 0.0
    covariance = control.cross_product + treatment.cross_product - y_sum * x_sum / n
    return covariance / x_var


def _cuped(
    control: RegressionAdjustedStatistic, treatment: RegressionAdjustedStatistic
) -> GaussianMoments:
    theta = gbstats_theta(control, treatment)
    if theta == 0:
        plain = _mean(
            SampleMeanStatistic(n=control.n, sum=control.sum, sum_squares=control.sum_squares),
            SampleMeanStatistic(
                n=treatment.n, sum=treatment.sum, sum_squares=treatment.sum_squares
            ),
        )
        plain.method = METHOD_BAYES_CUPED
        plain.theta = 0.0
        plain.notes = ("the covariate carries no variance: CUPED made no adjustment",)
        return plain

    def adjusted(statistic: RegressionAdjustedStatistic) -> tuple[float, float, float]:
        syy, sxx, sxy = statistic.centred_moments()
        residual = max(syy - 2.0 * theta * sxy + theta * theta * sxx, 0.0)
        mean = statistic.mean - theta * statistic.covariate_mean
        return (
            mean,
            residual / (statistic.n - 1) / statistic.n,
            syy / (statistic.n - 1) / statistic.n,
        )

    control_adjusted, control_var, control_plain = adjusted(control)
    treatment_adjusted, treatment_var, treatment_plain = adjusted(treatment)
    variance = control_var + treatment_var
    if not variance > 0:
        raise InsufficientDataError(
            "zero residual variance in both arms after CUPED (the metric is an exact linear "
            "function of the covariate), so no test is possible"
        )
    # The relative lift: the engine's own delta-method estimator (within-arm
    # slope, covariance with the control mean included), not gbstats 0.8.0's.
    relative = _relative_moments(difference_moments(control, treatment))
    unadjusted = control_plain + treatment_plain
    return GaussianMoments(
        method=METHOD_BAYES_CUPED,
        control_n=control.n,
        treatment_n=treatment.n,
        control_mean=control.mean,
        treatment_mean=treatment.mean,
        estimate=treatment_adjusted - control_adjusted,
        variance=variance,
        relative_estimate=None if relative is None else relative[0],
        relative_variance=None if relative is None else relative[1],
        prior_scale=abs(control.mean),
        theta=theta,
        variance_reduction=1.0 - variance / unadjusted if unadjusted > 0 else None,
        notes=(
            "relative lift: the engine's delta-method CUPED estimator (within-arm slope), "
            "not gbstats 0.8.0's formula",
        ),
    )


def _lin(control: LinAdjustedStatistic, treatment: LinAdjustedStatistic) -> GaussianMoments:
    moments = difference_moments(control, treatment)
    assert moments.method in (METHOD_LIN, METHOD_LIN_RATIO)
    relative = _relative_moments(moments)
    return GaussianMoments(
        method=METHOD_BAYES_LIN,
        control_n=moments.control_n,
        treatment_n=moments.treatment_n,
        control_mean=moments.control_mean,
        treatment_mean=moments.treatment_mean,
        estimate=moments.estimate,
        variance=moments.variance,
        relative_estimate=None if relative is None else relative[0],
        relative_variance=None if relative is None else relative[1],
        prior_scale=abs(moments.control_mean),
        variance_reduction=moments.variance_reduction,
        notes=moments.notes,
        adjusted_for=moments.adjusted_for,
    )


_GAUSSIAN_BY_TYPE = {
    ProportionStatistic: _proportion,
    SampleMeanStatistic: _mean,
    RatioStatistic: _ratio,
    RegressionAdjustedStatistic: _cuped,
    LinAdjustedStatistic: _lin,
}


def gaussian_moments(control: Statistic, treatment: Statistic) -> GaussianMoments:
    """The data's estimate and variance of ``treatment − control``, as gbstats computes them."""
    method = method_for(_GAUSSIAN_BY_TYPE, control, treatment)
    _require_subjects(control, treatment)
    return method(control, treatment)


@dataclass(slots=True)
class BayesianEffect:
    """The posterior of one effect (absolute or relative)."""

    estimate: float | None  # the posterior mean
    ci: tuple[float, float] | None  # the (1 − alpha) credible interval
    standard_error: float | None  # the posterior standard deviation
    chance_to_win: float | None
    risk: tuple[float, float] | None  # (choosing control, choosing treatment)

    def to_dict(self) -> dict:
        return {
            "estimate": self.estimate,
            "ci": None if self.ci is None else [self.ci[0], self.ci[1]],
            "standard_error": self.standard_error,
            "chance_to_win": self.chance_to_win,
            "risk": None
            if self.risk is None
            else {"control": self.risk[0], "treatment": self.risk[1]},
        }


_UNDEFINED = BayesianEffect(None, None, None, None, None)


@dataclass(slots=True)
class BayesianComparison:
    """A treatment arm against the control on one metric, Bayesian.

    ``chance_to_win`` and ``risk`` are those of the relative effect (as
    GrowthBook reports them), or of the absolute effect when the relative one
    is undefined (``risk_type`` says which). ``significant`` is
    ``chance_to_win ≥ 1 − alpha/2`` or ``≤ alpha/2``.
    """

    arm: str | None
    metric: str | None
    method: str
    cuped: bool
    alpha: float
    prior: GaussianPrior | None
    higher_is_better: bool
    control_n: int
    treatment_n: int
    control_mean: float
    treatment_mean: float
    absolute: BayesianEffect
    relative: BayesianEffect
    chance_to_win: float
    risk: tuple[float, float]
    risk_type: str
    significant: bool
    theta: float | None = None
    variance_reduction: float | None = None
    cap: float | None = None
    notes: tuple[str, ...] = ()
    adjusted_for: dict | None = None

    def to_dict(self) -> dict:
        return {
            "arm": self.arm,
            "metric": self.metric,
            "engine": "bayesian",
            "method": self.method,
            "cuped": self.cuped,
            "alpha": self.alpha,
            "prior": None if self.prior is None else self.prior.to_dict(),
            "higher_is_better": self.higher_is_better,
            "control_n": self.control_n,
            "treatment_n": self.treatment_n,
            "control_mean": self.control_mean,
            "treatment_mean": self.treatment_mean,
            "absolute": self.absolute.to_dict(),
            "relative": self.relative.to_dict(),
            "chance_to_win": self.chance_to_win,
            "chance_to_win_threshold": 1.0 - self.alpha / 2.0,
            "risk": {"control": self.risk[0], "treatment": self.risk[1]},
            "risk_type": self.risk_type,
            "significant": self.significant,
            "theta": self.theta,
            "variance_reduction": self.variance_reduction,
            "cap": self.cap,
            "notes": list(self.notes),
            "adjusted_for": self.adjusted_for,
        }


def expected_gain_and_loss(mean: np.ndarray, sd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(E[max(X, 0)], E[max(−X, 0)])`` for X ~ N(mean, sd²), without cancellation.

    The smaller of the two is sd·g(−|z|), z = mean/sd, g(z) = φ(z) + z·Φ(z),
    computed as φ(z)·(1 + z·√(π/2)·erfcx(−z/√2)) (Φ/φ through the scaled
    complementary error function, accurate far into the tail); the larger is
    the smaller plus |mean|, since E[max(X, 0)] − E[max(−X, 0)] = mean.
    """
    z = -np.abs(mean / sd)
    density = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    g = density * (1.0 + z * math.sqrt(math.pi / 2.0) * special.erfcx(-z / math.sqrt(2.0)))
    small = sd * np.maximum(g, 0.0)
    large = small + np.abs(mean)
    positive = mean > 0
    return np.where(positive, large, small), np.where(positive, small, large)


def posterior_summaries(
    estimate: np.ndarray,
    variance: np.ndarray,
    *,
    prior_mean: np.ndarray | None,
    prior_variance: np.ndarray | None,
    alpha: float,
    higher_is_better: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Vectorised Gaussian posteriors: ``(mean, sd, ci_low, ci_high, chance_to_win,
    risk_control, risk_treatment)`` for data ``N(estimate, variance)`` and a
    prior ``N(prior_mean, prior_variance)`` (``None``: flat)."""
    if prior_mean is None:
        mean, posterior_variance = estimate, variance
    else:
        precision = 1.0 / variance + 1.0 / prior_variance
        mean = (estimate / variance + prior_mean / prior_variance) / precision
        posterior_variance = 1.0 / precision
    sd = np.sqrt(posterior_variance)
    quantile = float(norm_isf(alpha / 2.0))
    above = norm_cdf(mean / sd)  # P(effect > 0)
    # E[max(effect, 0)] is what keeping the control loses; E[max(−effect, 0)]
    # what choosing the treatment loses.
    gain, loss = expected_gain_and_loss(mean, sd)
    chance = np.where(higher_is_better, above, norm_cdf(-mean / sd))
    risk_control = np.where(higher_is_better, gain, loss)
    risk_treatment = np.where(higher_is_better, loss, gain)
    return (
        mean,
        sd,
        mean - quantile * sd,
        mean + quantile * sd,
        chance,
        risk_control,
        risk_treatment,
    )


def _relative_defined(moments: GaussianMoments) -> bool:
    return (
        moments.relative_estimate is not None
        and moments.relative_variance is not None
        and moments.relative_variance > 0
    )


def _prior_applies(moments: GaussianMoments) -> bool:
    """A prior on the relative effect needs a relative effect (and a scale for the absolute one)."""
    return moments.prior_scale != 0 and _relative_defined(moments)


def bayesian_compare_moments(
    moments: Sequence[GaussianMoments],
    *,
    prior: GaussianPrior | None = None,
    alpha: float = 0.05,
    higher_is_better: Sequence[bool] | None = None,
    labels: Sequence[tuple[str | None, str | None]] | None = None,
    caps: Sequence[float | None] | None = None,
) -> list[BayesianComparison]:
    """Posteriors for many comparisons in one vectorised pass."""
    alpha = _check_alpha(alpha)
    count = len(moments)
    if count == 0:
        return []
    better = np.array(
        [True] * count if higher_is_better is None else list(higher_is_better), dtype=bool
    )
    relative_defined = [_relative_defined(m) for m in moments]
    if prior is not None and not all(_prior_applies(m) for m in moments):
        raise InsufficientDataError(_PRIOR_NEEDS_CONTROL_MEAN)
    absolute = np.array([m.estimate for m in moments], float)
    absolute_var = np.array([m.variance for m in moments], float)
    relative = np.array(
        [
            m.relative_estimate if ok else 0.0
            for m, ok in zip(moments, relative_defined, strict=True)
        ],
        float,
    )
    relative_var = np.array(
        [
            m.relative_variance if ok else 1.0
            for m, ok in zip(moments, relative_defined, strict=True)
        ],
        float,
    )
    if prior is None:
        prior_mean = prior_variance = None
    else:
        # gbstats' rescaling of a relative prior to the absolute scale: × |control mean|.
        scale = np.array([m.prior_scale for m in moments], float)
        prior_mean = np.concatenate([prior.mean * scale, np.full(count, prior.mean)])
        prior_variance = np.concatenate(
            [prior.variance * scale * scale, np.full(count, prior.variance)]
        )
    columns = posterior_summaries(
        np.concatenate([absolute, relative]),
        np.concatenate([absolute_var, relative_var]),
        prior_mean=prior_mean,
        prior_variance=prior_variance,
        alpha=alpha,
        higher_is_better=np.concatenate([better, better]),
    )
    mean, sd, low, high, chance, risk_control, risk_treatment = (c.tolist() for c in columns)
    labels = labels if labels is not None else [(None, None)] * count
    caps = caps if caps is not None else [None] * count
    threshold_high, threshold_low = 1.0 - alpha / 2.0, alpha / 2.0
    results = []
    for index, m in enumerate(moments):
        effects = []
        for offset in (0, count):
            at = index + offset
            effects.append(
                BayesianEffect(
                    estimate=mean[at],
                    ci=(low[at], high[at]),
                    standard_error=sd[at],
                    chance_to_win=chance[at],
                    risk=(risk_control[at], risk_treatment[at]),
                )
            )
        absolute_effect, relative_effect = effects
        notes = list(m.notes)
        if not relative_defined[index]:
            relative_effect = _UNDEFINED
            notes.append(
                "control mean is zero: the relative lift is undefined"
                if m.control_mean == 0
                else "the relative lift has zero variance: it is undefined"
            )
        headline = relative_effect if relative_defined[index] else absolute_effect
        results.append(
            BayesianComparison(
                arm=labels[index][0],
                metric=labels[index][1],
                method=m.method,
                cuped=m.method in (METHOD_BAYES_CUPED, METHOD_BAYES_LIN),
                alpha=alpha,
                prior=prior,
                higher_is_better=bool(better[index]),
                control_n=m.control_n,
                treatment_n=m.treatment_n,
                control_mean=m.control_mean,
                treatment_mean=m.treatment_mean,
                absolute=absolute_effect,
                relative=relative_effect,
                chance_to_win=headline.chance_to_win,
                risk=headline.risk,
                risk_type="relative" if relative_defined[index] else "absolute",
                significant=headline.chance_to_win >= threshold_high
                or headline.chance_to_win <= threshold_low,
                theta=m.theta,
                variance_reduction=m.variance_reduction,
                cap=caps[index],
                notes=tuple(notes),
                adjusted_for=m.adjusted_for,
            )
        )
    return results


def bayesian_compare(
    control: Statistic,
    treatment: Statistic,
    *,
    prior: GaussianPrior | Mapping | None = None,
    alpha: float = 0.05,
    higher_is_better: bool = True,
    arm: str | None = None,
    metric: str | None = None,
) -> BayesianComparison:
    """One Bayesian comparison (gbstats' ``EffectBayesianABTest``, relative prior).

    ``higher_is_better=False`` is gbstats' ``inverse``: the chance to win is
    P(effect < 0) and the risks swap.
    """
    alpha = _check_alpha(alpha)
    if not isinstance(higher_is_better, bool):
        raise ValueError("higher_is_better must be True or False")
    checked_prior = gaussian_prior(prior)
    moments = gaussian_moments(control, treatment)
    return bayesian_compare_moments(
        [moments],
        prior=checked_prior,
        alpha=alpha,
        higher_is_better=[higher_is_better],
        labels=[(arm, metric)],
        caps=[_common_cap(control, treatment)],
    )[0]


@dataclass(frozen=True, slots=True)
class BayesianReport:
    alpha: float
    control: str
    prior: GaussianPrior | None
    arms: dict[str, int]
    srm: SrmResult
    comparisons: tuple[BayesianComparison, ...]
    segments: tuple[SegmentReport, ...]  # of BayesianComparison

    def to_dict(self) -> dict:
        return {
            "engine": "bayesian",
            "alpha": self.alpha,
            "control": self.control,
            "prior": None if self.prior is None else self.prior.to_dict(),
            # Posteriors are not adjusted for multiplicity (as in GrowthBook).
            "adjustment": {"comparisons": None, "segments": None},
            "srm": self.srm.to_dict(),
            "arms": dict(self.arms),
            "comparisons": [comparison.to_dict() for comparison in self.comparisons],
            "segments": [segment.to_dict() for segment in self.segments],
        }


def bayesian_report(
    statistics: ArmStatistics,
    *,
    control: str,
    weights: Mapping[str, float],
    prior: GaussianPrior | Mapping | None = None,
    alpha: float = 0.05,
    segments: Mapping[str, ArmStatistics] | None = None,
    srm_threshold: float = SRM_THRESHOLD,
    lower_is_better: Sequence[str] = (),
) -> BayesianReport:
    """The Bayesian experiment report from sufficient statistics.

    The same input and checks as ``analyze_statistics``; ``lower_is_better``
    names the metrics whose chance to win is P(effect < 0) (opt-out rate).
    """
    alpha = _check_alpha(alpha)
    checked_prior = gaussian_prior(prior)
    overall = validated_report_arms(
        statistics, control=control, weights=weights, srm_threshold=srm_threshold
    )
    unknown = sorted(set(lower_is_better) - set(overall.metric_names))
    if unknown:
        raise ValueError(f"lower_is_better names metrics {unknown} that are not in the report")
    inverse = set(lower_is_better)
    treatments = [arm for arm in overall.weights if arm != control]
    moments, labels, caps = [], [], []
    for arm in treatments:
        for metric in overall.metric_names:
            control_statistic = statistics[control][metric]
            treatment_statistic = statistics[arm][metric]
            try:
                moments.append(gaussian_moments(control_statistic, treatment_statistic))
                caps.append(_common_cap(control_statistic, treatment_statistic))
                if checked_prior is not None and not _prior_applies(moments[-1]):
                    raise InsufficientDataError(_PRIOR_NEEDS_CONTROL_MEAN)
            except ValueError as error:
                raise ValueError(f"{_label('', arm, metric)}: {error}") from error
            labels.append((arm, metric))
    comparisons = bayesian_compare_moments(
        moments,
        prior=checked_prior,
        alpha=alpha,
        higher_is_better=[metric not in inverse for _, metric in labels],
        labels=labels,
        caps=caps,
    )
    segment_reports = []
    for segment, segment_statistics in (segments or {}).items():
        checked = validated_segment(
            segment,
            segment_statistics,
            control=control,
            weights=overall.weights,
            metric_names=overall.metric_names,
            metric_types=overall.metric_types,
            srm_threshold=srm_threshold,
        )
        skipped = list(checked.srm_skipped)
        segment_moments, segment_labels, segment_caps = [], [], []
        for pair in checked.pairs:
            if pair.missing is not None:
                skipped.append(pair.missing)
                continue
            label = _label(checked.where, pair.arm, pair.metric)
            try:
                moment = gaussian_moments(pair.control, pair.treatment)
                if checked_prior is not None and not _prior_applies(moment):
                    raise InsufficientDataError(_PRIOR_NEEDS_CONTROL_MEAN)
            except InsufficientDataError as error:
                skipped.append(
                    SkippedComparison(arm=pair.arm, metric=pair.metric, reason=str(error))
                )
                continue
            except ValueError as error:
                raise ValueError(f"{label}: {error}") from error
            try:
                segment_caps.append(_common_cap(pair.control, pair.treatment))
            except ValueError as error:
                raise ValueError(f"{label}: {error}") from error
            segment_moments.append(moment)
            segment_labels.append((pair.arm, pair.metric))
        segment_reports.append(
            SegmentReport(
                segment=str(segment),
                arms=checked.arms,
                srm=checked.srm,
                comparisons=tuple(
                    bayesian_compare_moments(
                        segment_moments,
                        prior=checked_prior,
                        alpha=alpha,
                        higher_is_better=[m not in inverse for _, m in segment_labels],
                        labels=segment_labels,
                        caps=segment_caps,
                    )
                ),
                skipped=tuple(skipped),
            )
        )
    return BayesianReport(
        alpha=alpha,
        control=control,
        prior=checked_prior,
        arms=overall.arms,
        srm=overall.srm,
        comparisons=tuple(comparisons),
        segments=tuple(segment_reports),
    )
