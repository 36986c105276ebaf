"""Heterogeneity: do segments differ at all, and does the effect change with exposure age?

- ``interaction_test``: the test of treatment × segment interaction for one
  dimension (platform, age band, ...): Cochran's Q over the segments'
  independent effect estimates, Q = Σ w_s (Δ_s − Δ̄_w)², w_s = 1/V_s, which is
  χ² with S − 1 degrees of freedom under "the effect is the same in every
  segment". It equals the Wald test of the interaction terms of the fully
  interacted OLS ``y ~ C(segment) * treatment`` with HC2 errors. A segment
  table should be read cell by cell only after this test says the segments
  differ (the cells are many, the interaction test is one).
- ``heterogeneity_tests(report)``: that test for every dimension × arm ×
  metric of a report's segments (labels ``"dimension=value"``, or a single
  dimension), Benjamini–Hochberg across them (exploratory).
- ``effect_by_exposure_day``: the effect on each day since first exposure,
  from per-day sufficient statistics, with a test of a linear trend (novelty
  or learning effects). The same subject appears on several days, so the
  per-day estimates are correlated and per-day statistics do not carry that
  correlation: the trend test bounds the variance of the slope under *any*
  correlation (Cauchy–Schwarz), which keeps its false-positive rate at most
  alpha (conservative), and says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from experiments.stats._distributions import chi2_sf, norm_sf
from experiments.stats.corrections import benjamini_hochberg_adjust
from experiments.stats.frequentist import Comparison
from experiments.stats.report import ArmStatistics, Report, analyze_statistics


@dataclass(frozen=True, slots=True)
class InteractionResult:
    dimension: str | None
    arm: str | None
    metric: str | None
    segments: tuple[str, ...]
    q: float
    degrees_of_freedom: int
    p_value: float
    pooled_effect: float  # the inverse-variance weighted mean effect
    p_value_adjusted: float | None = None

    def to_dict(self) -> dict:
        return {
            "dimension": self.dimension,
            "arm": self.arm,
            "metric": self.metric,
            "segments": list(self.segments),
            "q": self.q,
            "degrees_of_freedom": self.degrees_of_freedom,
            "p_value": self.p_value,
            "p_value_adjusted": self.p_value_adjusted,
            "pooled_effect": self.pooled_effect,
        }


def interaction_test(
    effects: Sequence[tuple[float, float]],
    *,
    segments: Sequence[str] | None = None,
    dimension: str | None = None,
    arm: str | None = None,
    metric: str | None = None,
) -> InteractionResult:
    """Cochran's Q test that independent effects ``(estimate, variance)`` are all equal."""
    if len(effects) < 2:
        raise ValueError("an interaction test needs at least two segments")
    estimates = np.array([e for e, _ in effects], float)
    variances = np.array([v for _, v in effects], float)
    if not (np.all(np.isfinite(estimates)) and np.all(np.isfinite(variances))):
        raise ValueError("effects must be finite (estimate, variance) pairs")
    if not np.all(variances > 0):
        raise ValueError("every segment's effect needs a positive variance")
    weights = 1.0 / variances
    pooled = float(np.sum(weights * estimates) / np.sum(weights))
    q = float(np.sum(weights * (estimates - pooled) ** 2))
    dof = len(effects) - 1
    return InteractionResult(
        dimension=dimension,
        arm=arm,
        metric=metric,
        segments=tuple(segments)
        if segments is not None
        else tuple(str(i) for i in range(len(effects))),
        q=q,
        degrees_of_freedom=dof,
        p_value=chi2_sf(q, dof),
        pooled_effect=pooled,
    )


def _dimension(label: str) -> str | None:
    name, separator, _ = label.partition("=")
    return name if separator else None


def heterogeneity_tests(report: Report) -> list[InteractionResult]:
    """Interaction tests per dimension × arm × metric of a report's segments.

    Segments are grouped by the text before ``=`` in their label
    (``"platform=android"``); labels without ``=`` form one dimension. A
    segment whose comparison was skipped takes no part; a dimension with
    fewer than two usable segments gives no test. ``p_value_adjusted`` is
    Benjamini–Hochberg over all the tests returned.
    """
    groups: dict[tuple[str | None, str | None, str | None], list[tuple[str, Comparison]]] = {}
    for segment in report.segments:
        for comparison in segment.comparisons:
            key = (_dimension(segment.segment), comparison.arm, comparison.metric)
            groups.setdefault(key, []).append((segment.segment, comparison))
    results = []
    for (dimension, arm, metric), members in groups.items():
        if len(members) < 2:
            continue
        results.append(
            interaction_test(
                [(c.absolute.estimate, c.absolute.standard_error**2) for _, c in members],
                segments=[label for label, _ in members],
                dimension=dimension,
                arm=arm,
                metric=metric,
            )
        )
    if results:
        adjusted = benjamini_hochberg_adjust([r.p_value for r in results])
        results = [
            InteractionResult(
                dimension=r.dimension,
                arm=r.arm,
                metric=r.metric,
                segments=r.segments,
                q=r.q,
                degrees_of_freedom=r.degrees_of_freedom,
                p_value=r.p_value,
                pooled_effect=r.pooled_effect,
                p_value_adjusted=float(p),
            )
            for r, p in zip(results, adjusted.tolist(), strict=True)
        ]
    return results


@dataclass(frozen=True, slots=True)
class TrendResult:
    arm: str
    metric: str
    days: tuple[int, ...]
    slope: float  # change of the effect per day since first exposure
    standard_error_bound: float  # the largest standard error any correlation allows
    p_value_bound: float  # conservative two-sided p-value of "no trend"
    significant: bool

    def to_dict(self) -> dict:
        return {
            "arm": self.arm,
            "metric": self.metric,
            "days": list(self.days),
            "slope": self.slope,
            "standard_error_bound": self.standard_error_bound,
            "p_value_bound": self.p_value_bound,
            "significant": self.significant,
            "method": "weighted least squares slope, variance bounded over every correlation",
        }


@dataclass(frozen=True, slots=True)
class ExposureDayEffects:
    alpha: float
    days: tuple[int, ...]
    comparisons: Mapping[int, tuple[Comparison, ...]]
    trends: tuple[TrendResult, ...]

    def to_dict(self) -> dict:
        return {
            "alpha": self.alpha,
            "days": [
                {"day": day, "comparisons": [c.to_dict() for c in self.comparisons[day]]}
                for day in self.days
            ],
            "trends": [trend.to_dict() for trend in self.trends],
        }


def effect_by_exposure_day(
    daily: Mapping[int, ArmStatistics],
    *,
    control: str,
    weights: Mapping[str, float],
    alpha: float = 0.05,
) -> ExposureDayEffects:
    """The effect on each day since first exposure and a conservative trend test.

    ``daily`` maps a day number (0 = the day of first exposure) to the usual
    ``{arm: {metric: statistic}}`` of the subjects who have reached that day,
    each statistic summing that day's values only. Each day's comparisons are
    a report of their own (Holm within the day, unadjusted intervals).
    """
    if not daily:
        raise ValueError("daily is empty: pass statistics for at least two days")
    days = sorted(daily)
    for day in days:
        if isinstance(day, bool) or not isinstance(day, int) or day < 0:
            raise ValueError(f"daily: days are whole numbers ≥ 0, got {day!r}")
    reports: dict[int, Report] = {}
    for day in days:
        try:
            reports[day] = analyze_statistics(
                daily[day], control=control, weights=weights, alpha=alpha
            )
        except ValueError as error:
            raise ValueError(f"daily: day {day}: {error}") from error
    by_pair: dict[tuple[str, str], list[tuple[int, Comparison]]] = {}
    for day in days:
        for comparison in reports[day].comparisons:
            by_pair.setdefault((comparison.arm, comparison.metric), []).append((day, comparison))
    trends = []
    for (arm, metric), members in by_pair.items():
        if len(members) < 2:
            continue
        x = np.array([day for day, _ in members], float)
        y = np.array([c.absolute.estimate for _, c in members], float)
        se = np.array([c.absolute.standard_error for _, c in members], float)
        w = 1.0 / (se * se)
        centre = np.sum(w * x) / np.sum(w)
        spread = np.sum(w * (x - centre) ** 2)
        coefficients = w * (x - centre) / spread
        slope = float(coefficients @ y)
        bound = float(np.abs(coefficients) @ se)  # sd of Σ c_d Δ_d under perfect correlation
        p_value = min(1.0, 2.0 * float(norm_sf(abs(slope) / bound))) if bound > 0 else 1.0
        trends.append(
            TrendResult(
                arm=arm,
                metric=metric,
                days=tuple(int(d) for d in x),
                slope=slope,
                standard_error_bound=bound,
                p_value_bound=p_value,
                significant=p_value < alpha and math.isfinite(p_value),
            )
        )
    return ExposureDayEffects(
        alpha=reports[days[0]].alpha,
        days=tuple(days),
        comparisons={day: reports[day].comparisons for day in days},
        trends=tuple(trends),
    )
