"""A run's health checks and heterogeneity, as the snapshot's ``health`` and ``heterogeneity`` entries.

- ``run_health``: the engine's three checks (``experiments.stats.health_checks``) on the
  analysed statistics and the report's comparisons, with the experiment's suspicious-uplift
  bound. Multiple exposures: the built-in database cannot have any (one exposure per subject
  and experiment, ``exposure_unique_subject``), so the count is 0 there; a data source's
  exposures are not checked (``None``).
- ``run_heterogeneity``: the treatment × segment interaction test per dimension × arm ×
  metric of the report's segments (Benjamini–Hochberg across them), and the effect by day
  since first exposure with its trend test (built-in database only: the per-day sums come
  from ``experiments.metrics.exposure_day_statistics``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from experiments.metrics.aggregate import MetricStatistics
from experiments.metrics.exposure_days import MAX_EXPOSURE_DAYS, exposure_day_statistics
from experiments.models import Experiment
from experiments.stats import (
    InsufficientDataError,
    Report,
    Statistic,
    difference_moments,
    effect_by_exposure_day,
    health_checks,
    heterogeneity_tests,
)


def _comparable(
    arms: Mapping[str, Mapping[str, Statistic]], control: str, included: Sequence[str]
) -> dict[str, dict[str, Statistic]]:
    """One day's statistics less the metrics some arm cannot be compared on that day
    (nobody ordered on day 9 in either arm); {} when none is left."""
    keep = []
    for metric in arms[control]:
        if metric not in included:
            continue
        try:
            for arm, metrics in arms.items():
                if arm != control:
                    difference_moments(arms[control][metric], metrics[metric])
        except InsufficientDataError:
            continue
        keep.append(metric)
    if not keep:
        return {}
    return {arm: {metric: metrics[metric] for metric in keep} for arm, metrics in arms.items()}


def run_health(
    *,
    statistics: Mapping[str, Mapping[str, Statistic]],
    report: Report,
    control: str,
    experiment: Experiment,
    source=None,
) -> dict:
    """The health document: ``{"healthy", "flags": [{check, arm, metric, reason}], …}``."""
    health = health_checks(
        statistics,
        control=control,
        comparisons=report.comparisons,
        multiple_exposures=0 if source is None else None,
        suspicious_uplift=experiment.suspicious_uplift,
    )
    return health.to_dict()


def run_heterogeneity(
    *,
    report: Report,
    experiment: Experiment,
    statistics: MetricStatistics,
    control: str,
    weights: Mapping[str, float],
    included: Sequence[str],
    source=None,
) -> dict:
    """The heterogeneity document: ``{"interaction_tests": [...], "exposure_days": {...} | None, "reason"}``."""
    document: dict = {
        "interaction_tests": [test.to_dict() for test in heterogeneity_tests(report)],
        "exposure_days": None,
        "exposure_days_reason": None,
    }
    if source is not None:
        document["exposure_days_reason"] = "the effect by exposure day is computed from the built-in database only"
        return document
    daily = exposure_day_statistics(
        experiment=experiment,
        window_end=statistics.window_end,
        gmv_cap=statistics.gmv_cap,
        days=MAX_EXPOSURE_DAYS,
    )
    daily = {day: _comparable(arms, control, included) for day, arms in daily.items()}
    daily = {day: arms for day, arms in daily.items() if arms}
    if len(daily) < 2:
        document["exposure_days_reason"] = "fewer than two days since first exposure with subjects in every arm"
        return document
    try:
        effects = effect_by_exposure_day(daily, control=control, weights=weights, alpha=experiment.alpha)
    except ValueError as error:  # a day whose statistics cannot be compared at all
        document["exposure_days_reason"] = str(error)
        return document
    document["exposure_days"] = effects.to_dict()
    return document
