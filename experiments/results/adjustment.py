"""Which variance adjustment each metric of a run gets, and how much variance it removed.

The results job analyses every metric with CUPED++ (``experiments.stats.LinAdjustedStatistic``:
Lin's interacted regression on the pre-exposure covariates and the assignment attributes,
docs/statistics.md "CUPED++") when the pipeline returned its stratum cells. Where that
adjustment is not identified for some arm (a province with subjects in one arm only, an
exactly fitted cell), the metric falls back, the same for every arm: covariates without the
strata, then the pipeline's single-covariate statistics (CUPED on the pre-exposure GMV for
GMV, none for the others: what runs before schema 5 used, and what a warehouse source gives).
The fallback's reason is kept with the metric.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from experiments.metrics.aggregate import MetricStatistics
from experiments.stats import (
    InsufficientDataError,
    LinAdjustedStatistic,
    RegressionAdjustedStatistic,
    Statistic,
    difference_moments,
)

# The assignment attributes CUPED++ post-stratifies on (the customer segment is derived from
# the pre-exposure orders, which the covariates already carry).
ADJUSTMENT_STRATA = ("age_band", "province", "platform")
# Lin's estimator fits a slope per regressor in each arm: with few subjects per regressor the
# fit follows the noise (an HC2 interval then undercovers). CUPED++ is used only when every arm
# has at least this many subjects per regressor (the intercept counted), else fewer regressors.
SUBJECTS_PER_REGRESSOR = 20


class Method:
    CUPED_PLUS_PLUS = "cuped++"  # Lin: covariates, with or without strata
    STRATIFICATION = "stratification"  # Lin: strata only (no pre-exposure window)
    CUPED = "cuped"  # the single pre-exposure GMV covariate (schema 1–4 runs)
    NONE = "none"


@dataclass(frozen=True, slots=True)
class MetricAdjustment:
    """What one metric's comparisons were adjusted for, per treatment arm the variance removed."""

    metric: str
    method: str
    covariates: tuple[str, ...]
    strata: tuple[str, ...]
    variance_reduction: Mapping[str, float | None]  # {arm: 1 − V_adjusted / V_unadjusted}
    fallback_reason: str | None = None  # why a fuller adjustment was not used

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "method": self.method,
            "covariates": list(self.covariates),
            "strata": list(self.strata),
            "variance_reduction": dict(self.variance_reduction),
            "fallback_reason": self.fallback_reason,
        }


def _legacy_method(statistic: Statistic) -> tuple[str, tuple[str, ...]]:
    if isinstance(statistic, RegressionAdjustedStatistic):
        return Method.CUPED, ("pre_gmv",)
    return Method.NONE, ()


def _adjustment(
    metric: str, by_arm: Mapping[str, Statistic], control: str, fallback_reason: str | None
) -> MetricAdjustment:
    """The adjustment ``by_arm`` carries, from the engine's own moments of each comparison."""
    reductions: dict[str, float | None] = {}
    covariates: set[str] = set()
    strata: set[str] = set()
    for arm, statistic in by_arm.items():
        if arm == control:
            continue
        try:
            moments = difference_moments(by_arm[control], statistic)
        except InsufficientDataError:
            reductions[arm] = None
            continue
        reductions[arm] = moments.variance_reduction
        if moments.adjusted_for:
            covariates.update(moments.adjusted_for.get("covariates", ()))
            strata.update(moments.adjusted_for.get("strata", ()))
    sample = by_arm[control]
    if isinstance(sample, LinAdjustedStatistic):
        used_covariates = tuple(name for name in sample.covariates if name in covariates)
        used_strata = tuple(name for name in sample.strata if name in strata)
        if used_covariates:
            method = Method.CUPED_PLUS_PLUS
        elif used_strata:
            method = Method.STRATIFICATION
        else:
            method = Method.NONE
        return MetricAdjustment(metric, method, used_covariates, used_strata, reductions, fallback_reason)
    method, legacy_covariates = _legacy_method(sample)
    if method == Method.NONE:
        reductions = {arm: None for arm in reductions}
    return MetricAdjustment(metric, method, legacy_covariates, (), reductions, fallback_reason)


def _regressors(by_arm: Mapping[str, Statistic]) -> int:
    """Covariates plus stratum dummies (levels present in any arm, less one per column)."""
    sample = next(iter(by_arm.values()))
    if not isinstance(sample, LinAdjustedStatistic):
        return 0
    levels = [set() for _ in sample.strata]
    for statistic in by_arm.values():
        for key in statistic.cells:
            for position, level in enumerate(key):
                levels[position].add(level)
    return len(sample.covariates) + sum(max(len(present) - 1, 0) for present in levels)


def _identified(by_arm: Mapping[str, Statistic], control: str) -> str | None:
    """None when every treatment can be compared with the control; else the first reason."""
    if control not in by_arm:
        return f"the control arm {control!r} has no subjects here"
    regressors = _regressors(by_arm)
    needed = SUBJECTS_PER_REGRESSOR * (regressors + 1)
    smallest = min(statistic.n for statistic in by_arm.values())
    if regressors and smallest < needed:
        return (
            f"{regressors} regressors need {needed} subjects per arm ({SUBJECTS_PER_REGRESSOR} per "
            f"regressor), the smallest arm has {smallest}"
        )
    for arm, statistic in by_arm.items():
        if arm == control:
            continue
        try:
            difference_moments(by_arm[control], statistic)
        except InsufficientDataError as error:
            return f"arm {arm!r}: {error}"
    return None


def adjusted_statistics(
    *,
    statistics: MetricStatistics,
    control: str,
    segment: str | None = None,
    like: Mapping[str, type] | None = None,
) -> tuple[dict[str, dict[str, Statistic]], dict[str, MetricAdjustment]]:
    """Per arm and metric the statistic to analyse (of one segment), and each metric's adjustment.

    Candidates in order: CUPED++ with the covariates and the strata; with the covariates
    only; the pipeline's single-covariate statistics (``statistics.arms`` or the segment's).
    Each metric takes the first candidate every treatment arm can be compared on. ``like``
    (the overall choice's statistic type per metric) keeps a segment's statistics of the
    overall's type, as a report requires: a segment of a CUPED++ metric that cannot take
    the strata takes fewer, down to none (Lin's estimator without regressors: the
    unadjusted difference), and is left to the report to skip when even that fails.
    """
    legacy = statistics.arms if segment is None else statistics.segments.get(segment, {})
    candidates: list[tuple[str, dict[str, dict[str, Statistic]]]] = []
    if statistics.cells:
        covariates = statistics.covariates
        ladder = [("covariates and strata", covariates, ADJUSTMENT_STRATA)]
        if covariates:
            ladder.append(("covariates", covariates, ()))
        if like is not None:
            ladder.append(("no regressor", (), ()))
        candidates += [
            (name, statistics.lin_statistics(covariates=names, strata=strata, segment=segment))
            for name, names, strata in ladder
        ]
    candidates.append(("single covariate", legacy))
    if control not in legacy:
        # A segment without control subjects: nothing to compare (the report skips it), but
        # its statistics still take the overall's types.
        return {
            arm: {
                metric: next(
                    (
                        candidate[arm][metric]
                        for _, candidate in candidates
                        if arm in candidate and (like is None or type(candidate[arm][metric]) is like.get(metric))
                    ),
                    statistic,
                )
                for metric, statistic in metrics.items()
            }
            for arm, metrics in legacy.items()
        }, {}
    metrics = list(legacy[control])
    chosen: dict[str, dict[str, Statistic]] = {arm: {} for arm in legacy}
    adjustments: dict[str, MetricAdjustment] = {}
    for metric in metrics:
        reasons = []
        picked: dict[str, Statistic] | None = None
        fitting = []
        for name, candidate in candidates:
            by_arm = {arm: candidate[arm][metric] for arm in legacy if arm in candidate and metric in candidate[arm]}
            if len(by_arm) != len(legacy):
                reasons.append(f"{name}: an arm has no subjects in the cells")
                continue
            if like is not None and metric in like and type(by_arm[control]) is not like[metric]:
                continue
            fitting.append(by_arm)
            reason = _identified(by_arm, control)
            if reason is None:
                picked = by_arm
                break
            reasons.append(f"{name}: {reason}")
        if picked is None:
            picked = fitting[-1] if fitting else {arm: legacy[arm][metric] for arm in legacy}
        for arm, statistic in picked.items():
            chosen[arm][metric] = statistic
        adjustments[metric] = _adjustment(metric, picked, control, "; ".join(reasons) or None)
    return chosen, adjustments


def adjustment_summary(adjustments: Mapping[str, MetricAdjustment]) -> dict:
    """The snapshot's ``adjustment`` entry: per metric what was used and the variance removed."""
    return {metric: adjustment.to_dict() for metric, adjustment in adjustments.items()}
