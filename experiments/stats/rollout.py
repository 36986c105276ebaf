"""A ramp step's health: the shipped treatment against the previous default (docs/surfaces.md, "Shipping").

Pure: sufficient statistics in, a verdict out. The sample ratio is the Pearson
test of ``srm``; each guardrail (and the primary metric's margin) is watched by
the always-valid test of ``sequential`` with the rule the experiment monitor
uses: breached when the always-valid interval lies wholly on the harmful side
of the margin. Always valid, so it may be looked at on every beat of the ramp.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from experiments.stats.sequential import sequential_test
from experiments.stats.srm import SRM_THRESHOLD, srm_test
from experiments.stats.statistics import InsufficientDataError


@dataclass(frozen=True, slots=True)
class WatchedMetric:
    metric: str
    margin: float  # the tolerated harm: in the metric's unit, or a fraction of the default's mean when relative
    relative: bool
    higher_is_better: bool


@dataclass(frozen=True, slots=True)
class RolloutVerdict:
    srm_p_value: float | None
    srm: bool
    breaches: tuple[dict, ...]
    untestable: tuple[str, ...]  # metrics not testable yet (too few subjects), by name

    @property
    def healthy(self) -> bool:
        return not self.srm and not self.breaches


def rollout_check(
    *,
    counts: Mapping[str, int],
    percent: float,
    statistics: Mapping[str, tuple[object, object]],
    watched: Sequence[WatchedMetric],
    alpha: float,
    tuning_sample_size: int,
    srm_threshold: float = SRM_THRESHOLD,
) -> RolloutVerdict:
    """``counts``: subjects per group (``rollout``, ``default``); ``statistics``: metric → (default, rollout)."""
    srm_p = None
    srm_flag = False
    if 0 < percent < 100 and sum(counts.values()) > 0:
        result = srm_test(dict(counts), {"rollout": percent, "default": 100 - percent}, threshold=srm_threshold)
        srm_p, srm_flag = result.p_value, result.flag
    breaches, untestable = [], []
    for watch in watched:
        if watch.metric not in statistics:
            untestable.append(watch.metric)
            continue
        control, treatment = statistics[watch.metric]
        try:
            margin = watch.margin * abs(control.mean) if watch.relative else watch.margin
            if margin == 0:
                raise InsufficientDataError("a relative margin needs a non-zero mean")
            harm = -margin if watch.higher_is_better else margin
            seq = sequential_test(control, treatment, tuning_sample_size=tuning_sample_size, alpha=alpha,
                                  null_difference=harm)
        except InsufficientDataError:
            untestable.append(watch.metric)
            continue
        if seq.harms_beyond(harm, higher_is_better=watch.higher_is_better):
            low, high = seq.confidence_sequence
            breaches.append({"metric": watch.metric, "estimate": seq.estimate, "interval": [low, high],
                             "tolerated": harm, "p_value": seq.p_value})
    return RolloutVerdict(srm_p_value=srm_p, srm=srm_flag, breaches=tuple(breaches), untestable=tuple(untestable))
