"""Health checks GrowthBook runs on every result, as flags with reasons.

- **Multiple exposures**: subjects seen in more than one arm. Flagged when
  they are at least ``multiple_exposure_minimum`` (10) subjects and at least
  ``multiple_exposure_share`` (1 %) of all subjects, GrowthBook's defaults.
  ``analyze`` leaves them out of the analysis and counts them.
- **Pre-exposure bias**: a pre-exposure covariate whose mean differs between
  a treatment arm and the control beyond chance (Welch's t-test), or an
  assignment attribute (stratum column) whose distribution differs between
  the arms (Pearson's chi-square test of independence). Flagged at
  p < ``bias_threshold`` (0.001, as the sample-ratio check: the test runs on
  every report, so a false alarm must be rare).
- **Suspicious uplift**: a relative effect larger than ``suspicious_uplift``
  (50 %, GrowthBook's "max percent change") in either direction, which is
  more often a broken metric or a logging change than a real effect.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from experiments.stats._distributions import chi2_sf, t_sf
from experiments.stats.frequentist import _welch_degrees_of_freedom
from experiments.stats.regression import LinAdjustedStatistic
from experiments.stats.statistics import RegressionAdjustedStatistic, centred_second_moment

SUSPICIOUS_UPLIFT = 0.5
BIAS_THRESHOLD = 0.001
MULTIPLE_EXPOSURE_SHARE = 0.01
MULTIPLE_EXPOSURE_MINIMUM = 10


@dataclass(frozen=True, slots=True)
class HealthFlag:
    check: str  # "multiple_exposures" | "pre_exposure_bias" | "suspicious_uplift"
    arm: str | None
    metric: str | None  # the metric, covariate or stratum column concerned
    reason: str

    def to_dict(self) -> dict:
        return {"check": self.check, "arm": self.arm, "metric": self.metric, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class BiasTest:
    arm: str
    column: str
    kind: str  # "covariate" (Welch t) or "stratum" (chi-square)
    statistic: float
    degrees_of_freedom: float
    p_value: float

    def to_dict(self) -> dict:
        return {
            "arm": self.arm,
            "column": self.column,
            "kind": self.kind,
            "statistic": self.statistic,
            "degrees_of_freedom": self.degrees_of_freedom,
            "p_value": self.p_value,
        }


@dataclass(frozen=True, slots=True)
class HealthReport:
    flags: tuple[HealthFlag, ...]
    multiple_exposures: int | None
    subjects: int
    bias_tests: tuple[BiasTest, ...]
    bias_threshold: float
    suspicious_uplift: float

    def to_dict(self) -> dict:
        return {
            "healthy": not self.flags,
            "flags": [flag.to_dict() for flag in self.flags],
            "multiple_exposures": self.multiple_exposures,
            "subjects": self.subjects,
            "pre_exposure_bias": {
                "threshold": self.bias_threshold,
                "tests": [test.to_dict() for test in self.bias_tests],
            },
            "suspicious_uplift": {"bound": self.suspicious_uplift},
        }


def _positive(value: object, name: str, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not value > 0 or (upper is not None and not value < upper):
        bound = f" and below {upper}" if upper is not None else ""
        raise ValueError(f"{name} must be positive{bound}, got {value!r}")
    return float(value)


def _covariate_moments(statistic: object) -> dict[str, tuple[int, float, float]]:
    """``{covariate: (n, Σx, Σx²)}`` carried by one arm's statistic."""
    if isinstance(statistic, RegressionAdjustedStatistic):
        return {"": (statistic.n, statistic.covariate_sum, statistic.covariate_sum_squares)}
    if isinstance(statistic, LinAdjustedStatistic):
        _, counts, sums, matrices = statistic._arrays
        m = len(statistic.outcomes)
        totals = sums.sum(axis=0)
        squares = matrices.sum(axis=0).diagonal()
        return {
            name: (statistic.n, float(totals[m + j]), float(squares[m + j]))
            for j, name in enumerate(statistic.covariates)
        }
    return {}


def _welch_bias(control: tuple[int, float, float], treatment: tuple[int, float, float]):
    variances = []
    for n, total, squares in (control, treatment):
        centred = centred_second_moment(n, total, squares, "pre-exposure covariate")
        variances.append(centred / (n - 1) / n if n > 1 else 0.0)
    variance = variances[0] + variances[1]
    if not variance > 0:
        return None
    difference = treatment[1] / treatment[0] - control[1] / control[0]
    statistic = difference / math.sqrt(variance)
    dof = _welch_degrees_of_freedom(variances[0], control[0], variances[1], treatment[0])
    return statistic, dof, min(1.0, 2.0 * float(t_sf(abs(statistic), dof)))


def _stratum_bias(control: LinAdjustedStatistic, treatment: LinAdjustedStatistic, position: int):
    levels = sorted(
        {key[position] for statistic in (control, treatment) for key in statistic._arrays[0]}
    )
    if len(levels) < 2:
        return None
    table = np.zeros((2, len(levels)))
    for row, statistic in enumerate((control, treatment)):
        keys, counts, _, _ = statistic._arrays
        for key, count in zip(keys, counts.tolist(), strict=True):
            table[row, levels.index(key[position])] += count
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    statistic = float(((table - expected) ** 2 / expected).sum())
    dof = len(levels) - 1
    return statistic, float(dof), chi2_sf(statistic, dof)


def health_checks(
    statistics: Mapping[str, Mapping[str, object]],
    *,
    control: str,
    comparisons: Sequence[object] = (),
    multiple_exposures: int | None = None,
    suspicious_uplift: float = SUSPICIOUS_UPLIFT,
    bias_threshold: float = BIAS_THRESHOLD,
    multiple_exposure_share: float = MULTIPLE_EXPOSURE_SHARE,
    multiple_exposure_minimum: int = MULTIPLE_EXPOSURE_MINIMUM,
) -> HealthReport:
    """Run the three checks on a report's overall statistics and comparisons.

    ``statistics`` is the report input ``{arm: {metric: statistic}}``: the
    covariates of CUPED and CUPED++ statistics and the strata of CUPED++ ones
    are tested for balance, each covariate once (from the first metric that
    carries it). ``comparisons`` are the report's comparisons (frequentist
    or Bayesian); ``multiple_exposures`` the number of subjects seen in more
    than one arm (``None``: not known, not checked).
    """
    suspicious_uplift = _positive(suspicious_uplift, "suspicious_uplift")
    bias_threshold = _positive(bias_threshold, "bias_threshold", upper=1.0)
    multiple_exposure_share = _positive(multiple_exposure_share, "multiple_exposure_share", 1.0)
    if control not in statistics:
        raise ValueError(f"the control arm {control!r} is missing from the statistics")
    subjects = sum(next(iter(metrics.values())).n for metrics in statistics.values() if metrics)
    flags: list[HealthFlag] = []
    if multiple_exposures is not None:
        if (
            isinstance(multiple_exposures, bool)
            or not isinstance(multiple_exposures, int)
            or (multiple_exposures < 0)
        ):
            raise ValueError(f"multiple_exposures must be a count ≥ 0, got {multiple_exposures!r}")
        total = subjects + multiple_exposures
        share = multiple_exposures / total if total else 0.0
        if multiple_exposures >= multiple_exposure_minimum and share >= multiple_exposure_share:
            flags.append(
                HealthFlag(
                    check="multiple_exposures",
                    arm=None,
                    metric=None,
                    reason=f"{multiple_exposures} subjects ({share:.1%}) were exposed to more "
                    f"than one arm (flagged from {multiple_exposure_share:.0%} and "
                    f"{multiple_exposure_minimum} subjects); they are left out of the analysis, "
                    "so check the assignment and the exposure logging",
                )
            )

    tests: list[BiasTest] = []
    control_metrics = statistics[control]
    seen_covariates: set[str] = set()
    seen_strata: set[str] = set()
    for metric, control_statistic in control_metrics.items():
        covariates = _covariate_moments(control_statistic)
        names = {name: (f"{metric}'s covariate" if name == "" else name) for name in covariates}
        strata = (
            control_statistic.strata if isinstance(control_statistic, LinAdjustedStatistic) else ()
        )
        for arm, metrics in statistics.items():
            if arm == control or metric not in metrics:
                continue
            treatment_covariates = _covariate_moments(metrics[metric])
            for name, moments in covariates.items():
                if names[name] in seen_covariates or name not in treatment_covariates:
                    continue
                result = _welch_bias(moments, treatment_covariates[name])
                if result is not None:
                    tests.append(BiasTest(arm, names[name], "covariate", *result))
            for position, column in enumerate(strata):
                if column in seen_strata:
                    continue
                result = _stratum_bias(control_statistic, metrics[metric], position)
                if result is not None:
                    tests.append(BiasTest(arm, column, "stratum", *result))
        seen_covariates.update(names.values())
        seen_strata.update(strata)
    for test in tests:
        if test.p_value < bias_threshold:
            what = (
                "its mean differs from the control's"
                if test.kind == "covariate"
                else "its distribution differs from the control's"
            )
            flags.append(
                HealthFlag(
                    check="pre_exposure_bias",
                    arm=test.arm,
                    metric=test.column,
                    reason=f"pre-exposure {test.kind} {test.column!r}: {what} beyond chance "
                    f"(p = {test.p_value:.2g} < {bias_threshold:g}); the arms were not comparable "
                    "before exposure, so check the assignment",
                )
            )

    for comparison in comparisons:
        estimate = comparison.relative.estimate
        if estimate is not None and abs(estimate) > suspicious_uplift:
            flags.append(
                HealthFlag(
                    check="suspicious_uplift",
                    arm=comparison.arm,
                    metric=comparison.metric,
                    reason=f"relative effect {estimate:+.1%} is beyond ±{suspicious_uplift:.0%}: "
                    "more often a broken metric or a logging change than a real effect",
                )
            )
    return HealthReport(
        flags=tuple(flags),
        multiple_exposures=multiple_exposures,
        subjects=subjects,
        bias_tests=tuple(tests),
        bias_threshold=bias_threshold,
        suspicious_uplift=suspicious_uplift,
    )
