"""Power, sample size and duration for planning an experiment.

The planned test is the engine's own: a difference of means (or proportions)
with unpooled variances, judged against the normal distribution (at planning
sizes the Welch t and the normal agree to well under 1 %). With variances
``v_c`` and ``v_t`` per subject, ``n_t = r·n_c`` and ``se = √(v_c/n_c + v_t/n_t)``:

    two-sided power = Φ(|Δ|/se − z_{1−α/2}) + Φ(−|Δ|/se − z_{1−α/2})
    one-sided power = Φ(|Δ|/se − z_{1−α})

For a mean metric ``v_c = v_t = σ²`` (a planning assumption); for a proportion
``v_c = p(1 − p)`` and ``v_t = (p + Δ)(1 − p − Δ)``. The required size solves
the power equation exactly (both tails), as statsmodels' ``NormalIndPower``
does; it reduces to ``n_c = (z_{1−α/2} + z_{1−β})² (v_c + v_t/r) / Δ²`` when
the far tail is negligible. For a non-inferiority guardrail, plan a one-sided
test with the margin as the effect. References: Cohen (1988), *Statistical
Power Analysis for the Behavioral Sciences*; Chow, Shao & Wang (2008),
*Sample Size Calculations in Clinical Research*, ch. 3–4.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from scipy import optimize

from experiments.stats._distributions import norm_cdf, norm_isf, norm_sf
from experiments.stats.frequentist import _check_alpha
from experiments.stats.srm import validate_weights
from experiments.stats.statistics import _count, _finite

MetricType = Literal["proportion", "mean"]
Alternative = Literal["two-sided", "one-sided"]


@dataclass(frozen=True, slots=True)
class SampleSizeResult:
    """Subjects needed in the control and one treatment arm (rounded up).

    ``control_n_exact`` is the continuous solution before rounding.
    """

    control_n: int
    treatment_n: int
    control_n_exact: float
    absolute_effect: float
    alpha: float
    power: float
    alternative: str

    def to_dict(self) -> dict:
        return {
            "control_n": self.control_n,
            "treatment_n": self.treatment_n,
            "control_n_exact": self.control_n_exact,
            "absolute_effect": self.absolute_effect,
            "alpha": self.alpha,
            "power": self.power,
            "alternative": self.alternative,
        }


@dataclass(frozen=True, slots=True)
class ExperimentPlan:
    """Subjects per arm, total subjects and days at the given daily traffic."""

    subjects_per_arm: dict[str, int]
    total_subjects: int
    days: int
    daily_subjects: float
    alpha_per_comparison: float
    power: float
    absolute_effect: float

    def to_dict(self) -> dict:
        return {
            "subjects_per_arm": dict(self.subjects_per_arm),
            "total_subjects": self.total_subjects,
            "days": self.days,
            "daily_subjects": self.daily_subjects,
            "alpha_per_comparison": self.alpha_per_comparison,
            "power": self.power,
            "absolute_effect": self.absolute_effect,
        }


def _absolute_effect(baseline_mean: float, effect: float, relative: bool) -> float:
    effect = _finite(effect, "minimum_detectable_effect")
    if effect == 0:
        raise ValueError("the effect must not be zero")
    if not relative:
        return effect
    if baseline_mean == 0:
        raise ValueError("a relative effect needs a non-zero baseline mean")
    # Relative to |baseline|, the engine's sign convention for the relative lift.
    return effect * abs(baseline_mean)


def _variances(
    metric_type: str, baseline_mean: float, absolute_effect: float, standard_deviation: float | None
) -> tuple[float, float]:
    """Per-subject variances ``(v_c, v_t)`` under the alternative."""
    if metric_type == "proportion":
        if standard_deviation is not None:
            raise ValueError(
                "a proportion's standard deviation follows from its baseline; do not pass one"
            )
        if not 0 < baseline_mean < 1:
            raise ValueError(
                f"a baseline proportion must be strictly between 0 and 1, got {baseline_mean}"
            )
        treated = baseline_mean + absolute_effect
        if not 0 <= treated <= 1:
            raise ValueError(
                f"baseline {baseline_mean} plus the effect {absolute_effect} leaves [0, 1]"
            )
        return baseline_mean * (1 - baseline_mean), treated * (1 - treated)
    if metric_type == "mean":
        if standard_deviation is None:
            raise ValueError("a mean metric needs its standard_deviation (per subject)")
        standard_deviation = _finite(standard_deviation, "standard_deviation")
        if not standard_deviation > 0:
            raise ValueError(f"standard_deviation must be positive, got {standard_deviation}")
        return standard_deviation**2, standard_deviation**2
    raise ValueError(f"metric_type must be 'proportion' or 'mean', got {metric_type!r}")


def _critical_value(alpha: float, alternative: str) -> float:
    if alternative == "two-sided":
        return float(norm_isf(alpha / 2))
    if alternative == "one-sided":
        return float(norm_isf(alpha))
    raise ValueError(f"alternative must be 'two-sided' or 'one-sided', got {alternative!r}")


def _power_at(standardised_effect: float, critical: float, alternative: str) -> float:
    """Power for ``|Δ|/se = standardised_effect``."""
    power = norm_sf(critical - standardised_effect)
    if alternative == "two-sided":
        power += norm_cdf(-critical - standardised_effect)
    return float(power)


def statistical_power(
    *,
    metric_type: MetricType,
    baseline_mean: float,
    effect: float,
    control_n: int,
    treatment_n: int,
    standard_deviation: float | None = None,
    relative: bool = False,
    alpha: float = 0.05,
    alternative: Alternative = "two-sided",
) -> float:
    """Probability of a significant result when the true effect is ``effect``."""
    alpha = _check_alpha(alpha)
    baseline_mean = _finite(baseline_mean, "baseline_mean")
    absolute = _absolute_effect(baseline_mean, effect, relative)
    control_variance, treatment_variance = _variances(
        metric_type, baseline_mean, absolute, standard_deviation
    )
    control_n = _count(control_n, "control_n")
    treatment_n = _count(treatment_n, "treatment_n")
    if control_n == 0 or treatment_n == 0:
        raise ValueError("control_n and treatment_n must be positive")
    standard_error = math.sqrt(control_variance / control_n + treatment_variance / treatment_n)
    return _power_at(
        abs(absolute) / standard_error, _critical_value(alpha, alternative), alternative
    )


def _standardised_effect_for(power: float, critical: float, alternative: str) -> float:
    """The ``|Δ|/se`` at which the test has exactly ``power``."""
    one_tail = critical + float(norm_isf(1 - power))
    if alternative == "one-sided":
        return one_tail
    # The far tail only adds power, so the two-sided solution lies just below
    # the one-tail formula; power at 0 is alpha < power.
    return float(
        optimize.brentq(
            lambda d: _power_at(d, critical, alternative) - power,
            0.0,
            one_tail,
            xtol=1e-14,
            rtol=4 * 2.220446049250313e-16,
        )
    )


def _check_power(power: float, alpha: float, alternative: str) -> float:
    power = _finite(power, "power")
    if not 0 < power < 1:
        raise ValueError(f"power must be strictly between 0 and 1, got {power}")
    if power <= alpha:
        raise ValueError(
            f"power ({power}) must exceed alpha ({alpha}), which is the power at no effect"
        )
    return power


def required_sample_size(
    *,
    metric_type: MetricType,
    baseline_mean: float,
    minimum_detectable_effect: float,
    standard_deviation: float | None = None,
    relative: bool = False,
    alpha: float = 0.05,
    power: float = 0.8,
    treatment_to_control_ratio: float = 1.0,
    alternative: Alternative = "two-sided",
) -> SampleSizeResult:
    """Subjects per arm to detect ``minimum_detectable_effect`` with the given power.

    The effect is absolute (0.01 = one percentage point of a proportion) or,
    with ``relative=True``, a fraction of the baseline (0.05 = 5 % lift).
    ``treatment_to_control_ratio`` is ``n_t/n_c`` (the ratio of arm weights).
    """
    alpha = _check_alpha(alpha)
    power = _check_power(power, alpha, alternative)
    baseline_mean = _finite(baseline_mean, "baseline_mean")
    ratio = _finite(treatment_to_control_ratio, "treatment_to_control_ratio")
    if not ratio > 0:
        raise ValueError(f"treatment_to_control_ratio must be positive, got {ratio}")
    absolute = _absolute_effect(baseline_mean, minimum_detectable_effect, relative)
    control_variance, treatment_variance = _variances(
        metric_type, baseline_mean, absolute, standard_deviation
    )
    critical = _critical_value(alpha, alternative)
    standardised = _standardised_effect_for(power, critical, alternative)
    control_exact = standardised**2 * (control_variance + treatment_variance / ratio) / absolute**2
    # Round up, but not past an exact integer that float noise nudged upward.
    control_n = max(2, math.ceil(control_exact * (1 - 1e-12)))
    treatment_n = max(2, math.ceil(control_exact * ratio * (1 - 1e-12)))
    return SampleSizeResult(
        control_n=control_n,
        treatment_n=treatment_n,
        control_n_exact=control_exact,
        absolute_effect=absolute,
        alpha=alpha,
        power=power,
        alternative=alternative,
    )


def minimum_detectable_effect(
    *,
    metric_type: MetricType,
    baseline_mean: float,
    control_n: int,
    treatment_n: int,
    standard_deviation: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: Alternative = "two-sided",
    relative: bool = False,
    increase: bool = True,
) -> float:
    """The smallest effect (absolute, or relative to the baseline) detectable with ``power``.

    ``increase`` chooses the direction, which matters for proportions, whose
    variance depends on the effect.
    """
    alpha = _check_alpha(alpha)
    power = _check_power(power, alpha, alternative)
    baseline_mean = _finite(baseline_mean, "baseline_mean")
    control_n = _count(control_n, "control_n")
    treatment_n = _count(treatment_n, "treatment_n")
    if control_n == 0 or treatment_n == 0:
        raise ValueError("control_n and treatment_n must be positive")
    standardised = _standardised_effect_for(power, _critical_value(alpha, alternative), alternative)
    sign = 1.0 if increase else -1.0

    def shortfall(absolute: float) -> float:
        control_variance, treatment_variance = _variances(
            metric_type, baseline_mean, sign * absolute, standard_deviation
        )
        standard_error = math.sqrt(control_variance / control_n + treatment_variance / treatment_n)
        return absolute - standardised * standard_error

    if metric_type == "mean":
        absolute = -shortfall(0.0)  # the variance does not depend on the effect
    else:
        room = (1 - baseline_mean) if increase else baseline_mean
        if shortfall(room) < 0:
            raise ValueError("no detectable effect exists at these sample sizes")
        absolute = float(
            optimize.brentq(shortfall, 0.0, room, xtol=1e-15, rtol=4 * 2.220446049250313e-16)
        )
    if relative:
        if baseline_mean == 0:
            raise ValueError("a relative effect needs a non-zero baseline mean")
        return sign * absolute / abs(baseline_mean)
    return sign * absolute


def experiment_plan(
    *,
    metric_type: MetricType,
    baseline_mean: float,
    minimum_detectable_effect: float,
    weights: Mapping[str, float],
    control: str,
    daily_subjects: float,
    standard_deviation: float | None = None,
    relative: bool = False,
    alpha: float = 0.05,
    power: float = 0.8,
    alternative: Alternative = "two-sided",
    comparisons: int | None = None,
) -> ExperimentPlan:
    """Subjects per arm and days needed for every treatment arm to reach ``power``.

    ``daily_subjects`` is the number of new subjects entering the experiment
    per day (after targeting and coverage). Alpha is split over ``comparisons``
    (Bonferroni; default: the number of treatment arms), a slightly
    conservative stand-in for the Holm correction the report applies.
    """
    checked_weights = validate_weights(weights)
    if control not in checked_weights:
        raise ValueError(f"the control arm {control!r} is not among the weighted arms")
    treatments = [arm for arm in checked_weights if arm != control]
    if not treatments:
        raise ValueError("a plan needs at least one treatment arm")
    if any(weight == 0 for weight in checked_weights.values()):
        raise ValueError("every arm needs a positive weight")
    daily = _finite(daily_subjects, "daily_subjects")
    if not daily > 0:
        raise ValueError(f"daily_subjects must be positive, got {daily}")
    alpha = _check_alpha(alpha)
    comparisons = len(treatments) if comparisons is None else _count(comparisons, "comparisons")
    if comparisons == 0:
        raise ValueError("comparisons must be at least 1")
    alpha_per_comparison = alpha / comparisons
    total_weight = math.fsum(checked_weights.values())
    control_weight = checked_weights[control]

    total_exact = 0.0
    absolute = 0.0
    for arm in treatments:
        size = required_sample_size(
            metric_type=metric_type,
            baseline_mean=baseline_mean,
            minimum_detectable_effect=minimum_detectable_effect,
            standard_deviation=standard_deviation,
            relative=relative,
            alpha=alpha_per_comparison,
            power=power,
            treatment_to_control_ratio=checked_weights[arm] / control_weight,
            alternative=alternative,
        )
        absolute = size.absolute_effect
        # The smallest arm pair binds: it needs the most total traffic.
        total_exact = max(total_exact, size.control_n_exact * total_weight / control_weight)
    subjects = {
        arm: max(2, math.ceil(total_exact * weight / total_weight * (1 - 1e-12)))
        for arm, weight in checked_weights.items()
    }
    total = sum(subjects.values())
    return ExperimentPlan(
        subjects_per_arm=subjects,
        total_subjects=total,
        days=math.ceil(total / daily * (1 - 1e-12)),
        daily_subjects=daily,
        alpha_per_comparison=alpha_per_comparison,
        power=power,
        absolute_effect=absolute,
    )


# --- planning the decision rule ---------------------------------------------------------
#
# The plan sizes the experiment for the rule it will be judged by (docs/statistics.md §10):
# every test the rule needs must pass for an arm to ship, so the plan's power is the
# product of the tests' powers at the planned size (the tests are on different metrics
# and close to independent), for the least-favoured arm pair:
#
# - superiority: the primary metric's two-sided test at alpha/k (k treatment arms:
#   Bonferroni, which Holm's first step equals and its later steps only improve on),
#   at the minimum detectable effect;
# - noninferiority / privacy_first: the primary metric's one-sided non-inferiority
#   test at alpha/k, at a true difference of zero;
# - each guardrail: its one-sided non-inferiority test at alpha, at a true difference
#   of zero.
#
# In sequential mode the tests' critical values are the always-valid boundaries at the
# planned size (tuned for it, as the results job tunes them); power is read at that
# final look only, so it is conservative: an always-valid test can also cross earlier.


@dataclass(frozen=True, slots=True)
class PlannedTest:
    """One test of the rule as planned: its level, its effect or margin, and its power at the plan."""

    kind: str
    metric: str
    alpha: float
    alternative: str
    absolute: float  # the effect (superiority) or the margin (non-inferiority), in the metric's unit
    power: float

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "metric": self.metric,
            "alpha": self.alpha,
            "alternative": self.alternative,
            "absolute": self.absolute,
            "power": self.power,
        }


@dataclass(frozen=True, slots=True)
class DecisionPlan:
    """Subjects per arm and days for the whole rule to ship a good arm with ``power``."""

    rule: str
    sequential: bool
    planned_subjects_per_arm: int  # for an arm of average weight, as the experiment stores it
    subjects_per_arm: dict[str, int]
    total_subjects: int
    days: int
    daily_subjects: float
    power: float  # the rule's power at the plan, for the least-favoured arm
    tests: tuple[PlannedTest, ...]

    def to_dict(self) -> dict:
        return {
            "rule": self.rule,
            "sequential": self.sequential,
            "planned_subjects_per_arm": self.planned_subjects_per_arm,
            "subjects_per_arm": dict(self.subjects_per_arm),
            "total_subjects": self.total_subjects,
            "days": self.days,
            "daily_subjects": self.daily_subjects,
            "power": self.power,
            "tests": [test.to_dict() for test in self.tests],
        }


@dataclass(frozen=True, slots=True)
class _Planned:
    kind: str
    metric: str
    alpha: float
    alternative: str
    absolute: float  # effect or margin
    control_variance: float
    treatment_variance: float


def _guardrail_plan(spec: Mapping, alpha: float) -> _Planned:
    metric = spec.get("metric", "guardrail")
    where = f"guardrails[{metric!r}]"
    for key in ("metric_type", "baseline_mean", "margin"):
        if key not in spec:
            raise ValueError(f"{where}: {key!r} is required to plan it")
    baseline = _finite(spec["baseline_mean"], f"{where} baseline_mean")
    margin = _finite(spec["margin"], f"{where} margin")
    if not margin > 0:
        raise ValueError(f"{where} margin must be positive (the largest tolerated harm), got {margin:g}")
    absolute = margin * abs(baseline) if spec.get("relative") else margin
    if absolute == 0:
        raise ValueError(f"{where}: a relative margin needs a non-zero baseline")
    variance, _ = _variances(spec["metric_type"], baseline, 0.0, spec.get("standard_deviation"))
    return _Planned("guardrail", metric, alpha, "one-sided", absolute, variance, variance)


def _sequential_critical(alternative: str, total: float, alpha: float) -> float:
    """The always-valid test's critical |z| at ``total`` subjects, tuned for that size."""
    from experiments.stats.sequential import (
        confidence_sequence_half_width,
        mixing_scale_squared,
        one_sided_critical_z,
    )

    tuning = max(2, math.ceil(total))
    rho_squared = mixing_scale_squared(tuning_sample_size=tuning, alpha=alpha)
    if alternative == "one-sided":
        return one_sided_critical_z(total, rho_squared=rho_squared, alpha=alpha)
    return float(confidence_sequence_half_width(1.0, total, rho_squared=rho_squared, alpha=alpha))


def _planned_power(test: _Planned, control_n: float, ratio: float, sequential: bool) -> float:
    standard_error = math.sqrt(test.control_variance / control_n + test.treatment_variance / (control_n * ratio))
    if sequential:
        critical = _sequential_critical(test.alternative, control_n * (1 + ratio), test.alpha)
    else:
        critical = _critical_value(test.alpha, test.alternative)
    return _power_at(abs(test.absolute) / standard_error, critical, test.alternative)


def decision_plan(
    *,
    rule: str,
    metric_type: MetricType,
    baseline_mean: float,
    weights: Mapping[str, float],
    control: str,
    daily_subjects: float,
    standard_deviation: float | None = None,
    minimum_detectable_effect: float | None = None,
    margin: float | None = None,
    guardrails: Sequence[Mapping] = (),
    alpha: float = 0.05,
    power: float = 0.8,
    sequential: bool = False,
    minimum_runtime_days: int = 7,
) -> DecisionPlan:
    """The sample size and duration at which ``rule`` ships a truly good arm with ``power``.

    ``minimum_detectable_effect`` (superiority) and ``margin`` (the other rules)
    are relative to ``baseline_mean`` (0.05 = 5 %). Each guardrail is
    ``{"metric", "metric_type", "baseline_mean", "margin", "relative"?,
    "standard_deviation"?}`` with its margin in the metric's unit (or relative).
    Days are rounded up to whole weeks and to at least ``minimum_runtime_days``.
    """
    from experiments.stats.decide import RULES

    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    alpha = _check_alpha(alpha)
    power = _check_power(power, alpha, "one-sided")
    checked_weights = validate_weights(weights)
    if control not in checked_weights:
        raise ValueError(f"control: {control!r} is not among the weighted arms")
    treatments = [arm for arm in checked_weights if arm != control]
    if not treatments:
        raise ValueError("weights: a plan needs at least one treatment arm")
    if any(weight == 0 for weight in checked_weights.values()):
        raise ValueError("weights: every arm needs a positive weight")
    daily = _finite(daily_subjects, "daily_subjects")
    if not daily > 0:
        raise ValueError(f"daily_subjects must be positive, got {daily:g}")
    baseline_mean = _finite(baseline_mean, "baseline_mean")
    minimum_runtime_days = _count(minimum_runtime_days, "minimum_runtime_days")
    k = len(treatments)
    if rule == "superiority":
        if minimum_detectable_effect is None:
            raise ValueError("minimum_detectable_effect is required to plan the superiority rule (e.g. 0.05 = +5%)")
        effect = _absolute_effect(baseline_mean, minimum_detectable_effect, relative=True)
        control_variance, treatment_variance = _variances(metric_type, baseline_mean, effect, standard_deviation)
        primary = _Planned("superiority", "primary", alpha / k, "two-sided", effect, control_variance,
                           treatment_variance)
    else:
        if margin is None:
            raise ValueError(f"margin is required to plan the {rule} rule (e.g. 0.05 = at most 5% worse)")
        margin = _finite(margin, "margin")
        if not 0 < margin < 1:
            raise ValueError(f"margin must be a relative loss between 0 and 1, got {margin:g}")
        absolute = _absolute_effect(baseline_mean, margin, relative=True)
        variance, _ = _variances(metric_type, baseline_mean, 0.0, standard_deviation)
        primary = _Planned("noninferiority", "primary", alpha / k, "one-sided", absolute, variance, variance)
    planned = [primary] + [_guardrail_plan(spec, alpha) for spec in guardrails]
    control_weight = checked_weights[control]
    ratios = [checked_weights[arm] / control_weight for arm in treatments]

    def rule_power(control_n: float) -> float:
        return min(
            math.prod(_planned_power(test, control_n, ratio, sequential) for test in planned) for ratio in ratios
        )

    low, high = 2.0, 4.0
    while rule_power(high) < power:
        low, high = high, high * 2
        if high > 1e12:
            raise ValueError("no sample size reaches that power: check the margins and baselines")
    for _ in range(200):
        if high - low <= max(1e-9 * high, 0.5):
            break
        middle = math.sqrt(low * high)
        if rule_power(middle) >= power:
            high = middle
        else:
            low = middle
    control_n = math.ceil(high)
    while control_n > 2 and rule_power(control_n - 1) >= power:
        control_n -= 1
    while rule_power(control_n) < power:
        control_n += 1
    subjects = {arm: max(2, math.ceil(control_n * weight / control_weight - 1e-9))
                for arm, weight in checked_weights.items()}
    mean_weight = math.fsum(checked_weights.values()) / len(checked_weights)
    total = sum(subjects.values())
    days = max(minimum_runtime_days, math.ceil(total / daily - 1e-9))
    days = 7 * math.ceil(days / 7)
    worst_ratio = min(ratios, key=lambda ratio: math.prod(
        _planned_power(test, control_n, ratio, sequential) for test in planned))
    return DecisionPlan(
        rule=rule,
        sequential=sequential,
        planned_subjects_per_arm=math.ceil(control_n * mean_weight / control_weight - 1e-9),
        subjects_per_arm=subjects,
        total_subjects=total,
        days=days,
        daily_subjects=daily,
        power=rule_power(control_n),
        tests=tuple(
            PlannedTest(kind=test.kind, metric=test.metric, alpha=test.alpha, alternative=test.alternative,
                        absolute=test.absolute, power=_planned_power(test, control_n, worst_ratio, sequential))
            for test in planned
        ),
    )
