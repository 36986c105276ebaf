"""A full experiment report from sufficient statistics.

``analyze_statistics`` is the core entry point the metric pipeline calls: it
takes ``{arm: {metric: statistic}}`` overall (and optionally per segment), the
control arm, the configured weights and alpha, and returns a ``Report`` whose
``to_dict()`` is the JSON contract of ``experiments.stats.analyze``.

Families for multiple comparisons (docs/statistics.md §8):

- with a ``primary`` metric, the **confirmatory** family is the primary metric
  × the treatment arms, Holm-adjusted (family-wise error rate), and its
  intervals are widened to agree with the adjusted p-values: an interval
  excludes zero exactly when the adjusted test rejects. The other metrics are
  **exploratory**: Benjamini–Hochberg across arms × metrics, with unadjusted
  intervals (``interval_level`` says so). This is the family the decision
  reads; guardrails are separate non-inferiority tests (``decide``);
- without a ``primary``, every overall comparison is one Holm family (``all``)
  with unadjusted intervals;
- every segment comparison (segments × arms × metrics) is one
  Benjamini–Hochberg family: segment results are exploration, and FDR control
  keeps 20 segments × 8 metrics from drowning in false positives without
  making each segment hopeless.

Failure policy: anything wrong overall raises ``ValueError`` naming the arm and
metric. A segment too thin for a test (an empty arm, one subject, no variance)
does not sink the report: that comparison is listed under the segment's
``skipped`` with the reason, and takes no part in the BH family.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from experiments.stats._distributions import t_isf
from experiments.stats.corrections import benjamini_hochberg_adjust, holm_adjust
from experiments.stats.frequentist import (
    Comparison,
    DifferenceMoments,
    Effect,
    _check_alpha,
    _common_cap,
    compare_moments,
    difference_moments,
)
from experiments.stats.srm import (
    SRM_THRESHOLD,
    SrmResult,
    _srm_test,
    srm_test,
    validate_weights,
)
from experiments.stats.statistics import InsufficientDataError, Statistic

ArmStatistics = Mapping[str, Mapping[str, Statistic]]
"""``{arm: {metric: statistic}}``."""


@dataclass(frozen=True, slots=True)
class SkippedComparison:
    arm: str | None
    metric: str | None
    reason: str

    def to_dict(self) -> dict:
        return {"arm": self.arm, "metric": self.metric, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class SegmentReport:
    segment: str
    arms: dict[str, int]
    srm: SrmResult | None
    comparisons: tuple[Comparison, ...]
    skipped: tuple[SkippedComparison, ...]

    def to_dict(self) -> dict:
        return {
            "segment": self.segment,
            "arms": dict(self.arms),
            "srm": None if self.srm is None else self.srm.to_dict(),
            "comparisons": [comparison.to_dict() for comparison in self.comparisons],
            "skipped": [skipped.to_dict() for skipped in self.skipped],
        }


FAMILY_CONFIRMATORY = "confirmatory"
FAMILY_EXPLORATORY = "exploratory"
FAMILY_ALL = "all"
FAMILY_SEGMENT = "segment"
ADJUSTMENTS = {
    FAMILY_CONFIRMATORY: "holm",
    FAMILY_EXPLORATORY: "benjamini-hochberg",
    FAMILY_ALL: "holm",
    FAMILY_SEGMENT: "benjamini-hochberg",
}


@dataclass(frozen=True, slots=True)
class Report:
    alpha: float
    control: str
    arms: dict[str, int]
    srm: SrmResult
    comparisons: tuple[Comparison, ...]
    segments: tuple[SegmentReport, ...]
    primary: str | None = None

    def to_dict(self) -> dict:
        if self.primary:
            adjustment = {
                FAMILY_CONFIRMATORY: ADJUSTMENTS[FAMILY_CONFIRMATORY],
                FAMILY_EXPLORATORY: ADJUSTMENTS[FAMILY_EXPLORATORY],
            }
        else:  # one Holm family over every overall comparison, as before families existed
            adjustment = {"comparisons": ADJUSTMENTS[FAMILY_ALL]}
        adjustment["segments"] = ADJUSTMENTS[FAMILY_SEGMENT]
        return {
            "alpha": self.alpha,
            "control": self.control,
            "primary": self.primary,
            "adjustment": adjustment,
            "srm": self.srm.to_dict(),
            "arms": dict(self.arms),
            "comparisons": [comparison.to_dict() for comparison in self.comparisons],
            "segments": [segment.to_dict() for segment in self.segments],
        }


def _arm_sizes(statistics: ArmStatistics, where: str) -> dict[str, int]:
    """Subjects per arm; every metric of an arm must count the same subjects."""
    sizes = {}
    for arm, metrics in statistics.items():
        counts = {statistic.n for statistic in metrics.values()}
        if len(counts) > 1:
            detail = ", ".join(
                f"{metric}: n={statistic.n}" for metric, statistic in metrics.items()
            )
            raise ValueError(
                f"{where}arm {arm!r}: the metrics count different numbers of subjects ({detail}); "
                "every metric must be aggregated over the same exposed subjects"
            )
        if not counts:
            raise ValueError(f"{where}arm {arm!r} has no metrics")
        sizes[arm] = counts.pop()
    return sizes


def _check_metric_types(
    metric_types: Mapping[str, type], statistics: ArmStatistics, where: str
) -> None:
    for arm, metrics in statistics.items():
        for metric, statistic in metrics.items():
            expected = metric_types.get(metric)
            if expected is not None and type(statistic) is not expected:
                raise ValueError(
                    f"{where}metric {metric!r}: arm {arm!r} has a {type(statistic).__name__} but "
                    f"the control has a {expected.__name__}"
                )


def _label(where: str, arm: str, metric: str) -> str:
    return f"{where}arm {arm!r}, metric {metric!r}"


@dataclass(frozen=True, slots=True)
class ValidatedArms:
    """The checked overall input of a report (shared by the frequentist and Bayesian engines)."""

    weights: dict[str, float]
    metric_names: list[str]
    metric_types: dict[str, type]
    arms: dict[str, int]
    srm: SrmResult


def validated_report_arms(
    statistics: ArmStatistics,
    *,
    control: str,
    weights: Mapping[str, float],
    srm_threshold: float,
) -> ValidatedArms:
    """Check a report's overall statistics against its weights; raise ``ValueError`` if wrong."""
    checked_weights = validate_weights(weights)
    if control not in checked_weights:
        raise ValueError(
            f"the control arm {control!r} is not among the weighted arms {list(checked_weights)}"
        )
    zero_weight = [arm for arm, weight in checked_weights.items() if weight == 0]
    if zero_weight:
        raise ValueError(f"arms {zero_weight} have weight 0; remove arms that receive no traffic")
    unknown = [arm for arm in statistics if arm not in checked_weights]
    if unknown:
        raise ValueError(f"arms {unknown} have statistics but no configured weight")
    if len(checked_weights) < 2:
        raise ValueError("an experiment needs a control and at least one treatment arm")
    if control not in statistics:
        raise ValueError(f"the control arm {control!r} is missing from the data")

    control_metrics = statistics[control]
    if not control_metrics:
        raise ValueError("the control arm has no metrics")
    metric_names = list(control_metrics)
    metric_types = {metric: type(statistic) for metric, statistic in control_metrics.items()}
    for arm, metrics in statistics.items():
        if set(metrics) != set(metric_names):
            raise ValueError(
                f"arm {arm!r} has metrics {sorted(metrics)} but the control has {sorted(metric_names)}"
            )
    _check_metric_types(metric_types, statistics, "")

    sizes = _arm_sizes(statistics, "")
    arms = {arm: sizes.get(arm, 0) for arm in checked_weights}
    srm = srm_test(arms, checked_weights, threshold=srm_threshold)
    empty = [arm for arm, n in arms.items() if n == 0]
    if empty:
        raise ValueError(
            f"arms {empty} have no subjects (sample-ratio mismatch: chi2={srm.chi2:.6g}, "
            f"p={srm.p_value:.3g}); no comparison is possible"
        )
    return ValidatedArms(checked_weights, metric_names, metric_types, arms, srm)


@dataclass(frozen=True, slots=True)
class SegmentPair:
    """One (arm, metric) of a segment: both statistics, or why one is missing."""

    arm: str
    metric: str
    control: Statistic | None
    treatment: Statistic | None
    missing: SkippedComparison | None


@dataclass(frozen=True, slots=True)
class ValidatedSegment:
    where: str
    arms: dict[str, int]
    srm: SrmResult | None
    srm_skipped: tuple[SkippedComparison, ...]
    pairs: tuple[SegmentPair, ...]


def validated_segment(
    segment: str,
    statistics: ArmStatistics,
    *,
    control: str,
    weights: dict[str, float],
    metric_names: list[str],
    metric_types: dict[str, type],
    srm_threshold: float,
) -> ValidatedSegment:
    """Check one segment's statistics and list its (arm, metric) pairs in report order."""
    where = f"segment {segment!r}: "
    unknown = [arm for arm in statistics if arm not in weights]
    if unknown:
        raise ValueError(f"{where}arms {unknown} have statistics but no configured weight")
    unknown_metrics = sorted(
        {m for metrics in statistics.values() for m in metrics} - set(metric_names)
    )
    if unknown_metrics:
        raise ValueError(f"{where}metrics {unknown_metrics} are not in the overall report")
    _check_metric_types(metric_types, statistics, where)
    sizes = _arm_sizes({arm: m for arm, m in statistics.items() if m}, where)
    arms = {arm: sizes.get(arm, 0) for arm in weights}
    srm_skipped: tuple[SkippedComparison, ...] = ()
    try:
        srm: SrmResult | None = _srm_test(arms, weights, srm_threshold)
    except InsufficientDataError as error:
        srm = None
        srm_skipped = (
            SkippedComparison(arm=None, metric=None, reason=f"sample-ratio test: {error}"),
        )
    control_metrics = statistics.get(control, {})
    pairs = []
    for arm in (arm for arm in weights if arm != control):
        treatment_metrics = statistics.get(arm, {})
        for metric in metric_names:
            if metric not in control_metrics or metric not in treatment_metrics:
                missing = control if metric not in control_metrics else arm
                reason = f"no data for arm {missing!r}"
                skipped = SkippedComparison(arm=arm, metric=metric, reason=reason)
                pairs.append(SegmentPair(arm, metric, None, None, skipped))
            else:
                pairs.append(
                    SegmentPair(
                        arm, metric, control_metrics[metric], treatment_metrics[metric], None
                    )
                )
    return ValidatedSegment(where, arms, srm, srm_skipped, tuple(pairs))


def analyze_statistics(
    statistics: ArmStatistics,
    *,
    control: str,
    weights: Mapping[str, float],
    alpha: float = 0.05,
    segments: Mapping[str, ArmStatistics] | None = None,
    srm_threshold: float = SRM_THRESHOLD,
    primary: str | None = None,
) -> Report:
    """The experiment report from sufficient statistics.

    ``statistics`` maps every arm to ``{metric: statistic}``; the control's
    metrics define the metric list and order, and every other arm must have the
    same metrics with the same statistic types. Arms are those of ``weights``
    (its order is the report's arm order); an arm of ``weights`` missing from
    ``statistics`` has zero subjects. ``segments`` maps a segment label (e.g.
    ``"platform=android"``) to the same structure restricted to that segment.
    ``primary`` (one of the metrics) makes the primary metric × arms the
    confirmatory family and the other metrics exploratory (module docstring).
    """
    alpha = _check_alpha(alpha)
    validated = validated_report_arms(
        statistics, control=control, weights=weights, srm_threshold=srm_threshold
    )
    checked_weights, metric_names = validated.weights, validated.metric_names
    metric_types, arms, srm = validated.metric_types, validated.arms, validated.srm
    if primary is not None and primary not in metric_names:
        raise ValueError(f"primary: {primary!r} is not one of the metrics {metric_names}")
    control_metrics = statistics[control]

    treatments = [arm for arm in checked_weights if arm != control]
    moments: list[DifferenceMoments] = []
    labels: list[tuple[str, str]] = []
    caps: list[float | None] = []
    for arm in treatments:
        for metric in metric_names:
            control_statistic = control_metrics[metric]
            treatment_statistic = statistics[arm][metric]
            try:
                moments.append(difference_moments(control_statistic, treatment_statistic))
                caps.append(_common_cap(control_statistic, treatment_statistic))
            except ValueError as error:
                raise ValueError(f"{_label('', arm, metric)}: {error}") from error
            labels.append((arm, metric))
    comparisons = compare_moments(moments, alpha=alpha, labels=labels, caps=caps)
    _adjust_families(comparisons, alpha=alpha, primary=primary)

    segment_reports = (
        _segment_reports(
            segments,
            control=control,
            weights=checked_weights,
            alpha=alpha,
            metric_names=metric_names,
            metric_types=metric_types,
            srm_threshold=srm_threshold,
        )
        if segments
        else ()
    )
    return Report(
        alpha=alpha,
        control=control,
        arms=arms,
        srm=srm,
        comparisons=tuple(comparisons),
        segments=segment_reports,
        primary=primary,
    )


def _adjust_families(comparisons: list[Comparison], *, alpha: float, primary: str | None) -> None:
    """Adjust the overall comparisons' p-values within their families (in place)."""
    if primary is None:
        families = {FAMILY_ALL: list(range(len(comparisons)))}
    else:
        families = {FAMILY_CONFIRMATORY: [], FAMILY_EXPLORATORY: []}
        for index, comparison in enumerate(comparisons):
            family = FAMILY_CONFIRMATORY if comparison.metric == primary else FAMILY_EXPLORATORY
            families[family].append(index)
    for family, indexes in families.items():
        if not indexes:
            continue
        raw = np.array([comparisons[i].absolute.p_value for i in indexes], dtype=float)
        adjust = holm_adjust if ADJUSTMENTS[family] == "holm" else benjamini_hochberg_adjust
        for i, adjusted in zip(indexes, adjust(raw).tolist(), strict=True):
            comparison = comparisons[i]
            comparison.family = family
            comparison.p_value_adjusted = adjusted
            comparison.significant = adjusted < alpha
            if family == FAMILY_CONFIRMATORY:
                _widen_to_adjusted(comparison, alpha=alpha, members=len(indexes))


def adjusted_level(p_value: float, p_value_adjusted: float, *, alpha: float, members: int) -> float:
    """The test level γ = α·p/p̃ whose unadjusted test agrees with the adjusted one.

    An unadjusted test at level γ rejects exactly when ``p < γ``, that is when
    ``p̃ < α``; so an interval at confidence ``1 − γ`` excludes the null
    exactly when the adjusted test rejects. For Holm's first step (and for
    Bonferroni) γ = α/m. A p-value that underflowed to zero takes α/m.
    """
    if p_value > 0 and p_value_adjusted > 0:
        return min(alpha, alpha * p_value / p_value_adjusted)
    return alpha / members


def _widen_to_adjusted(comparison: Comparison, *, alpha: float, members: int) -> None:
    gamma = adjusted_level(
        comparison.absolute.p_value, comparison.p_value_adjusted, alpha=alpha, members=members
    )
    quantile = float(t_isf(gamma / 2.0, comparison.degrees_of_freedom))
    comparison.interval_level = 1.0 - gamma
    for name in ("absolute", "relative"):
        effect: Effect = getattr(comparison, name)
        if effect.estimate is None or effect.standard_error is None:
            continue
        half_width = quantile * effect.standard_error
        effect.ci = (effect.estimate - half_width, effect.estimate + half_width)


def _segment_reports(
    segments: Mapping[str, ArmStatistics],
    *,
    control: str,
    weights: dict[str, float],
    alpha: float,
    metric_names: list[str],
    metric_types: dict[str, type],
    srm_threshold: float,
) -> tuple[SegmentReport, ...]:
    partial = []  # (segment, arms, srm, comparisons, skipped)
    all_moments: list[DifferenceMoments] = []
    all_labels: list[tuple[str, str]] = []
    all_caps: list[float | None] = []
    owner: list[int] = []
    for index, (segment, statistics) in enumerate(segments.items()):
        checked = validated_segment(
            segment,
            statistics,
            control=control,
            weights=weights,
            metric_names=metric_names,
            metric_types=metric_types,
            srm_threshold=srm_threshold,
        )
        where, arms, srm = checked.where, checked.arms, checked.srm
        skipped: list[SkippedComparison] = list(checked.srm_skipped)
        for pair in checked.pairs:
            arm, metric = pair.arm, pair.metric
            if pair.missing is not None:
                skipped.append(pair.missing)
                continue
            try:
                all_moments.append(difference_moments(pair.control, pair.treatment))
            except InsufficientDataError as error:
                skipped.append(SkippedComparison(arm=arm, metric=metric, reason=str(error)))
                continue
            except ValueError as error:
                raise ValueError(f"{_label(where, arm, metric)}: {error}") from error
            try:
                all_caps.append(_common_cap(pair.control, pair.treatment))
            except ValueError as error:
                all_moments.pop()
                raise ValueError(f"{_label(where, arm, metric)}: {error}") from error
            all_labels.append((arm, metric))
            owner.append(index)
        partial.append((segment, arms, srm, skipped))

    comparisons = compare_moments(
        all_moments, alpha=alpha, labels=all_labels, caps=all_caps, adjust=benjamini_hochberg_adjust
    )
    for comparison in comparisons:
        comparison.family = FAMILY_SEGMENT
    by_segment: list[list[Comparison]] = [[] for _ in partial]
    for segment_index, comparison in zip(owner, comparisons, strict=True):
        by_segment[segment_index].append(comparison)
    return tuple(
        SegmentReport(
            segment=str(segment),
            arms=arms,
            srm=srm,
            comparisons=tuple(by_segment[index]),
            skipped=tuple(skipped),
        )
        for index, (segment, arms, srm, skipped) in enumerate(partial)
    )
