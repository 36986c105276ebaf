"""The decision engine: from sufficient statistics to a verdict a product manager can act on.

``decide_statistics`` is the one place a verdict is made (the results job
calls it and stores its ``Decision`` in the snapshot; the pages, the exports
and the demo render that and never re-derive it). ``decide`` is the same on
per-subject rows (a notebook, ``python -m experiments.stats decide``).

Rules (docs/statistics.md §15):

- ``superiority``: ship the treatment arm with the best significant
  improvement of the primary metric whose guardrails all pass;
- ``noninferiority`` ("do no harm"): ship a treatment arm whose primary metric
  is non-inferior to the control within ``margin`` (a relative loss) and whose
  guardrails pass (the best such arm on the primary metric);
- ``privacy_first``: among the control and the arms that qualify as for
  ``noninferiority``, ship the most privacy-preserving one by
  ``privacy_order``; when that is the control, keep the control.

When a verdict is final:

- fixed horizon: only once every arm has its planned subjects and the
  minimum runtime has passed; the tests are then read once. Before that the
  outcome is ``continue`` with the progress;
- sequential: always-valid tests (mixture SPRT: two-sided for superiority,
  one-sided half-normal mixtures for every non-inferiority question), whose
  p-values are running minima over the looks (``previous``), so a verdict may
  be final at any look after the minimum runtime.

Families: the confirmatory family is the primary metric × the treatment arms
(Holm, on whichever test the rule asks: superiority or non-inferiority);
each guardrail is a one-sided non-inferiority test at the full ``alpha`` (no
split: its power belongs in the plan).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np

from experiments.stats._distributions import norm_cdf, norm_isf, t_isf, t_sf
from experiments.stats.bayesian import (
    bayesian_compare_moments,
    bayesian_report,
    check_engine,
    gaussian_moments,
    gaussian_prior,
)
from experiments.stats.corrections import holm_adjust
from experiments.stats.frequentist import (
    DifferenceMoments,
    _check_alpha,
    _relative_moments,
    difference_moments,
)
from experiments.stats.report import Report, adjusted_level, analyze_statistics
from experiments.stats.sequential import (
    always_valid_p_value,
    confidence_sequence_half_width,
    mixing_scale_squared,
    one_sided_always_valid_p_value,
    one_sided_critical_z,
)
from experiments.stats.srm import SRM_THRESHOLD, SrmResult, srm_test, validate_weights
from experiments.stats.statistics import (
    InsufficientDataError,
    ProportionStatistic,
    RatioStatistic,
    Statistic,
    _count,
    _finite,
)

DECISION_VERSION = 1


# The decision vocabulary. Defined here, in the pure engine, and imported upwards: the models'
# choices, the results and the dashboard use these values (str enums: they compare and serialize
# as their values).
class Rule(StrEnum):
    SUPERIORITY = "superiority"
    NONINFERIORITY = "noninferiority"
    PRIVACY_FIRST = "privacy_first"


class Outcome(StrEnum):
    SHIP = "ship"
    KEEP_CONTROL = "keep_control"
    CONTINUE = "continue"
    INVALID = "invalid"


class Mode(StrEnum):
    FIXED = "fixed"
    SEQUENTIAL = "sequential"


class Question(StrEnum):
    """Which question a planned test asks: the primary metric's (by the rule) or a guardrail's."""

    SUPERIORITY = "superiority"
    NONINFERIORITY = "noninferiority"
    GUARDRAIL = "guardrail"


class Family(StrEnum):
    """The multiplicity family a test belongs to (docs/statistics.md §9)."""

    CONFIRMATORY = "confirmatory"
    GUARDRAIL = "guardrail"


RULES = tuple(Rule)
OUTCOMES = tuple(Outcome)
FINAL_OUTCOMES = (Outcome.SHIP, Outcome.KEEP_CONTROL)  # the verdicts a final decision records
SHIP, KEEP_CONTROL, CONTINUE, INVALID = OUTCOMES
FIXED, SEQUENTIAL = tuple(Mode)
# The always-valid tests are tuned for this many subjects (both arms) without a plan.
DEFAULT_TUNING_SAMPLE_SIZE = 10_000
# Bayesian superiority: the largest expected relative loss of choosing the treatment (0.25 %).
DEFAULT_RISK_THRESHOLD = 0.0025

ArmStatistics = Mapping[str, Mapping[str, Statistic]]


# --- inputs --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GuardrailRule:
    """A metric that may not get worse than ``margin`` (positive, in the metric's unit).

    With ``relative`` the margin is a fraction of the control mean (0.02 = 2 %).
    """

    metric: str
    margin: float
    higher_is_better: bool
    relative: bool = False

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "margin": self.margin,
            "higher_is_better": self.higher_is_better,
            "relative": self.relative,
        }


def _guardrail_rules(guardrails: Mapping | None, metrics: Sequence[str], primary: str) -> list[GuardrailRule]:
    if guardrails is None:
        return []
    if not isinstance(guardrails, Mapping):
        raise ValueError("guardrails must map a metric to {'margin': M, 'higher_is_better': bool}")
    rules = []
    for metric, spec in guardrails.items():
        if metric not in metrics:
            raise ValueError(f"guardrails: {metric!r} is not one of the metrics {list(metrics)}")
        if isinstance(spec, GuardrailRule):
            spec = spec.to_dict()
        if not isinstance(spec, Mapping):
            raise ValueError(f"guardrails[{metric!r}] must be a mapping with 'margin' and 'higher_is_better'")
        unknown = set(spec) - {"margin", "higher_is_better", "relative", "metric"}
        if unknown:
            raise ValueError(f"guardrails[{metric!r}]: unknown keys {sorted(unknown)}")
        if "margin" not in spec:
            raise ValueError(f"guardrails[{metric!r}]: 'margin' is required (the largest tolerated harm)")
        try:
            margin = _finite(spec["margin"], f"guardrails[{metric!r}] margin")
        except ValueError as error:
            raise ValueError(str(error)) from None
        if not margin > 0:
            raise ValueError(
                f"guardrails[{metric!r}] margin must be positive (the largest tolerated harm), got {margin:g}"
            )
        higher = spec.get("higher_is_better")
        if not isinstance(higher, bool):
            raise ValueError(f"guardrails[{metric!r}]: 'higher_is_better' must be true or false")
        relative = spec.get("relative", False)
        if not isinstance(relative, bool):
            raise ValueError(f"guardrails[{metric!r}]: 'relative' must be true or false")
        rules.append(GuardrailRule(metric=metric, margin=margin, higher_is_better=higher, relative=relative))
    return rules


def _check_rule(rule: object, margin: object) -> float | None:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}, got {rule!r}")
    if rule == Rule.SUPERIORITY:
        if margin is not None:
            raise ValueError("margin: the superiority rule takes no margin (leave it out)")
        return None
    if margin is None:
        raise ValueError(f"margin is required by the {rule} rule: the largest tolerated relative loss, e.g. 0.05")
    value = _finite(margin, "margin")
    if not value > 0:
        raise ValueError(
            f"margin must be positive: the largest tolerated relative loss of the primary metric "
            f"(0.05 = at most 5% worse), got {value:g}"
        )
    if value >= 1:
        raise ValueError(f"margin is a relative loss below 1 (0.05 = 5%), got {value:g}")
    return value


def _check_privacy_order(rule: str, privacy_order: object, arms: Sequence[str]) -> tuple[str, ...]:
    if privacy_order is None:
        if rule == "privacy_first":
            raise ValueError("privacy_order is required by the privacy_first rule: every arm, most private first")
        return ()
    if isinstance(privacy_order, str) or not isinstance(privacy_order, Sequence):
        raise ValueError("privacy_order must be a list of arm keys, most private first")
    order = tuple(str(arm) for arm in privacy_order)
    unknown = [arm for arm in order if arm not in arms]
    if unknown:
        raise ValueError(f"privacy_order names unknown arms {unknown}; the arms are {list(arms)}")
    repeated = sorted({arm for arm in order if order.count(arm) > 1})
    if repeated:
        raise ValueError(f"privacy_order names arms {repeated} more than once")
    missing = [arm for arm in arms if arm not in order]
    if missing:
        raise ValueError(f"privacy_order must list every arm; missing {missing}")
    return order


def _check_planned(planned: object, sequential: bool, *, required: bool) -> int | None:
    if planned is None:
        if required and not sequential:
            raise ValueError(
                "planned_subjects_per_arm is required in fixed-horizon mode (the tests are read once, at the "
                "planned size); pass it, or sequential=True"
            )
        return None
    if isinstance(planned, bool):
        raise ValueError("planned_subjects_per_arm must be a whole number of subjects, at least 1")
    try:
        value = _count(planned, "planned_subjects_per_arm")
    except ValueError:
        raise ValueError(
            f"planned_subjects_per_arm must be a whole number of subjects, at least 1, got {planned!r}"
        ) from None
    if value < 1:
        raise ValueError(f"planned_subjects_per_arm must be at least 1, got {value}")
    return value


# --- results -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecisionTest:
    """One hypothesis test the rule reads, for one arm and metric.

    ``kind``: ``superiority`` (primary metric, two-sided), ``noninferiority``
    (primary metric within the rule's relative margin) or ``guardrail``.
    ``estimate``, ``bound`` and ``margin`` are in the test's scale: relative
    (a fraction of the control mean) when ``relative``, else the metric's unit.
    ``bound`` is the one-sided confidence bound on the harmful side (for
    superiority the interval's bound towards "worse") at ``level``, which in the
    confirmatory family agrees with ``p_value_adjusted``. ``passed``: the test
    rejected in the favourable direction. ``ruled_out``: the arm is shown to
    fail this test's question (significantly worse; beyond the margin), which
    lets a sequential verdict stop waiting for it.
    """

    kind: str
    arm: str
    metric: str
    relative: bool
    higher_is_better: bool
    estimate: float | None
    margin: float | None
    bound: float | None
    interval: tuple[float, float] | None
    level: float | None
    p_value: float | None
    p_value_adjusted: float | None
    passed: bool
    ruled_out: bool
    ruled_out_p_value: float | None
    method: str
    family: str
    reason: str = ""
    chance_to_win: float | None = None  # the Bayesian engine's P(the favourable side), else None
    risk: float | None = None  # Bayesian: the expected relative loss of choosing the treatment

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "arm": self.arm,
            "metric": self.metric,
            "relative": self.relative,
            "higher_is_better": self.higher_is_better,
            "estimate": self.estimate,
            "margin": self.margin,
            "bound": self.bound,
            "interval": None if self.interval is None else list(self.interval),
            "level": self.level,
            "p_value": self.p_value,
            "p_value_adjusted": self.p_value_adjusted,
            "passed": self.passed,
            "ruled_out": self.ruled_out,
            "ruled_out_p_value": self.ruled_out_p_value,
            "method": self.method,
            "family": self.family,
            "reason": self.reason,
            "chance_to_win": self.chance_to_win,
            "risk": self.risk,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> DecisionTest:
        interval = data.get("interval")
        return cls(
            kind=data["kind"], arm=data["arm"], metric=data["metric"], relative=bool(data.get("relative")),
            higher_is_better=bool(data.get("higher_is_better", True)), estimate=data.get("estimate"),
            margin=data.get("margin"), bound=data.get("bound"),
            interval=None if interval is None else (interval[0], interval[1]), level=data.get("level"),
            p_value=data.get("p_value"), p_value_adjusted=data.get("p_value_adjusted"),
            passed=bool(data.get("passed")), ruled_out=bool(data.get("ruled_out")),
            ruled_out_p_value=data.get("ruled_out_p_value"), method=data.get("method", ""),
            family=data.get("family", ""), reason=data.get("reason", ""),
            chance_to_win=data.get("chance_to_win"), risk=data.get("risk"),
        )

    @property
    def key(self) -> str:
        """Identifies the test across looks (the running minimum of its p-values)."""
        return f"{self.kind}:{self.arm}:{self.metric}"


@dataclass(frozen=True, slots=True)
class Progress:
    """How far the experiment is from a readable verdict."""

    subjects: dict[str, int]
    targets: dict[str, int] | None  # planned subjects of each arm (weights considered)
    share: float | None  # the least-advanced arm's share of its target
    runtime_days: float | None
    minimum_runtime_days: float
    days_remaining: float | None  # at the traffic so far, until every condition holds
    ready: bool  # every condition for reading the tests holds (fixed horizon)

    def to_dict(self) -> dict:
        return {
            "subjects": dict(self.subjects),
            "targets": None if self.targets is None else dict(self.targets),
            "share": self.share,
            "runtime_days": self.runtime_days,
            "minimum_runtime_days": self.minimum_runtime_days,
            "days_remaining": self.days_remaining,
            "ready": self.ready,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Progress:
        return cls(
            subjects=dict(data.get("subjects") or {}), targets=data.get("targets"), share=data.get("share"),
            runtime_days=data.get("runtime_days"), minimum_runtime_days=data.get("minimum_runtime_days", 0),
            days_remaining=data.get("days_remaining"), ready=bool(data.get("ready")),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """The verdict, whether it is final, and everything behind it (stored in the snapshot).

    ``summary`` is the verdict in words with its numbers; ``rule_text`` the rule
    in words; ``reasons`` the rest of the story, one sentence each.
    """

    outcome: str
    arm: str | None
    final: bool
    rule: str
    mode: str
    alpha: float
    primary_metric: str
    primary_higher_is_better: bool
    margin: float | None
    privacy_order: tuple[str, ...]
    summary: str
    rule_text: str
    reasons: tuple[str, ...]
    tests: tuple[DecisionTest, ...]
    progress: Progress | None
    guardrails: tuple[GuardrailRule, ...] = ()
    engine: str = "frequentist"
    version: int = DECISION_VERSION
    extra: dict = field(default_factory=dict)  # set by the caller (e.g. when the verdict became final)

    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "outcome": self.outcome,
            "arm": self.arm,
            "final": self.final,
            "rule": self.rule,
            "mode": self.mode,
            "alpha": self.alpha,
            "primary_metric": self.primary_metric,
            "primary_higher_is_better": self.primary_higher_is_better,
            "margin": self.margin,
            "privacy_order": list(self.privacy_order),
            "summary": self.summary,
            "rule_text": self.rule_text,
            "reasons": list(self.reasons),
            "tests": [test.to_dict() for test in self.tests],
            "progress": None if self.progress is None else self.progress.to_dict(),
            "guardrails": [guardrail.to_dict() for guardrail in self.guardrails],
            "engine": self.engine,
            **self.extra,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> Decision:
        """Read a stored decision, including those of schema-1 snapshots (before versions)."""
        if "version" not in data:  # schema 1: {"rule", "primary_metric", "outcome", "arm", "reasons"}
            outcome = {"inconclusive": CONTINUE}.get(data.get("outcome"), data.get("outcome", CONTINUE))
            reasons = tuple(data.get("reasons") or ())
            return cls(
                outcome=outcome, arm=data.get("arm"), final=False, rule=Rule.SUPERIORITY, mode=FIXED, alpha=0.05,
                primary_metric=data.get("primary_metric", ""), primary_higher_is_better=True, margin=None,
                privacy_order=(), summary=" ".join(reasons), rule_text=data.get("rule", ""), reasons=reasons,
                tests=(), progress=None, version=0,
            )
        return cls(
            outcome=data["outcome"], arm=data.get("arm"), final=bool(data.get("final")), rule=data["rule"],
            mode=data.get("mode", FIXED), alpha=data.get("alpha", 0.05), primary_metric=data["primary_metric"],
            primary_higher_is_better=bool(data.get("primary_higher_is_better", True)), margin=data.get("margin"),
            privacy_order=tuple(data.get("privacy_order") or ()), summary=data.get("summary", ""),
            rule_text=data.get("rule_text", ""), reasons=tuple(data.get("reasons") or ()),
            tests=tuple(DecisionTest.from_dict(test) for test in data.get("tests") or ()),
            progress=None if not data.get("progress") else Progress.from_dict(data["progress"]),
            guardrails=tuple(GuardrailRule(**guardrail) for guardrail in data.get("guardrails") or ()),
            engine=data.get("engine", "frequentist"),
            version=int(data["version"]),
            extra={key: value for key, value in data.items() if key not in _DECISION_KEYS},
        )

    def with_extra(self, **extra) -> Decision:
        return replace(self, extra={**self.extra, **extra})

    def running_minima(self) -> dict[str, dict[str, float | None]]:
        """What the next look needs of this one: each test's running-minimum p-values and best bound.

        Only tests that could be run at this look; a caller keeping minima across looks
        merges these over the previous ones, so a look that could not test keeps them.
        """
        return {
            test.key: {"p_value": test.p_value, "ruled_out_p_value": test.ruled_out_p_value, "bound": test.bound}
            for test in self.tests
            if test.method.startswith("msprt") and test.p_value is not None
        }


_DECISION_KEYS = frozenset(
    ("version", "outcome", "arm", "final", "rule", "mode", "alpha", "primary_metric", "primary_higher_is_better",
     "margin", "privacy_order", "summary", "rule_text", "reasons", "tests", "progress", "guardrails", "engine")
)


# --- words ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wording:
    """How to name and print each metric: its label and whether it is a proportion or has a unit."""

    labels: Mapping[str, str]
    kinds: Mapping[str, str]  # "proportion" | "mean" | "ratio"
    units: Mapping[str, str]  # e.g. {"gmv": "IDR"}

    def label(self, metric: str) -> str:
        return self.labels.get(metric, metric)

    def difference(self, metric: str, value: float | None, *, relative: bool) -> str:
        if value is None:
            return "—"
        if relative:
            return _signed(value * 100, "%")
        if self.kinds.get(metric) == "proportion":
            return _signed(value * 100, " pp")
        unit = self.units.get(metric)
        if unit:  # a currency, written before the amount as the pages do: "+IDR 14,114"
            return _signed(value, "", grouped=True, prefix=f"{unit} ")
        return _signed(value, "")

    def margin(self, metric: str, *, higher_is_better: bool, relative: bool, margin: float) -> str:
        """The tolerated harm as a signed bound: "−5%" of GMV, "+0.5 pp" of opt-outs."""
        return self.difference(metric, -margin if higher_is_better else margin, relative=relative)


def _signed(value: float, suffix: str, *, grouped: bool = False, prefix: str = "") -> str:
    magnitude = abs(value)
    if grouped and magnitude >= 100:
        text = f"{magnitude:,.0f}"
    elif magnitude >= 1:
        text = f"{magnitude:.1f}"
    elif magnitude >= 0.01 or magnitude == 0:
        text = f"{magnitude:.2f}"
    else:
        text = f"{magnitude:.2g}"
    sign = "−" if value < 0 and float(text.replace(",", "")) != 0 else "+"
    return f"{sign}{prefix}{text}{suffix}"


def _p(value: float | None) -> str:
    """"p < 0.001" or "p = 0.012"."""
    if value is None:
        return "p —"
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"


# --- the tests -----------------------------------------------------------------------


def _moments(statistics: ArmStatistics, control: str, arm: str, metric: str) -> DifferenceMoments:
    return difference_moments(statistics[control][metric], statistics[arm][metric])


def _scale(moments: DifferenceMoments, relative: bool) -> tuple[float, float]:
    """(estimate, standard error) of the absolute difference or the relative lift."""
    if not relative:
        return moments.estimate, math.sqrt(moments.variance)
    rel = _relative_moments(moments)
    if rel is None:
        raise InsufficientDataError("a relative margin needs a non-zero control mean and a defined relative lift")
    return rel[0], math.sqrt(rel[1])


@dataclass(slots=True)
class _Raw:
    """One test before its family is adjusted (filled in pass by pass, so not frozen: ``replace`` costs 10×)."""

    kind: str
    arm: str
    metric: str
    relative: bool
    higher_is_better: bool
    margin: float | None
    estimate: float | None = None
    standard_error: float | None = None
    dof: float | None = None
    sample_size: int | None = None
    # Of H0 "harmful side" (NI) or "no difference" (superiority; in sequential mode counted only at looks whose
    # estimate is favourable, as ruled_out_p_value only at looks whose estimate is harmful).
    p_value: float | None = None
    ruled_out_p_value: float | None = None
    reason: str = ""


def _family_arrays(raws: Sequence[_Raw]) -> tuple[np.ndarray, ...]:
    """(estimate, standard error, sign towards better, margin (0 for superiority), is superiority) as arrays."""
    estimate = np.array([raw.estimate for raw in raws], dtype=float)
    standard_error = np.array([raw.standard_error for raw in raws], dtype=float)
    sign = np.array([1.0 if raw.higher_is_better else -1.0 for raw in raws])
    margin = np.array([raw.margin if raw.kind != Question.SUPERIORITY else 0.0 for raw in raws], dtype=float)
    superiority = np.array([raw.kind == Question.SUPERIORITY for raw in raws], dtype=bool)
    return estimate, standard_error, sign, margin, superiority


def _fixed_p_values(raws: Sequence[_Raw]) -> None:
    """Fixed-horizon Welch t for every testable test at once: one-sided non-inferiority, or two-sided superiority."""
    if not raws:
        return
    estimate, standard_error, sign, margin, superiority = _family_arrays(raws)
    dof = np.array([raw.dof for raw in raws], dtype=float)
    two_sided = np.minimum(1.0, 2.0 * t_sf(np.abs(estimate / standard_error), dof))
    # Non-inferiority. H0: the arm is worse than the margin (sign·Δ ≤ −margin), on the favourable t;
    # ruled out: shown to be worse than the margin (sign·Δ < −margin).
    t_good = (sign * estimate + margin) / standard_error
    good, bad = t_sf(t_good, dof), t_sf(-t_good, dof)
    for index, raw in enumerate(raws):
        if superiority[index]:
            raw.p_value = float(two_sided[index])
            # Significantly worse: the same two-sided test, towards harm.
            raw.ruled_out_p_value = raw.p_value if sign[index] * raw.estimate < 0 else 1.0
        else:
            raw.p_value, raw.ruled_out_p_value = float(good[index]), float(bad[index])


def _sequential_p_values(
    raws: Sequence[_Raw], *, rho_squared: float, previous: Mapping[str, Mapping] | None
) -> None:
    """Always-valid mSPRT for every testable test at once, with running minima over the looks."""
    if not raws:
        return
    estimate, standard_error, sign, margin, superiority = _family_arrays(raws)
    sample_size = np.array([raw.sample_size for raw in raws], dtype=float)
    if superiority.any():
        two_sided = always_valid_p_value(estimate / standard_error, sample_size, rho_squared=rho_squared)
    if not superiority.all():
        z_good = (sign * estimate + margin) / standard_error
        good = one_sided_always_valid_p_value(z_good, sample_size, rho_squared=rho_squared)
        bad = one_sided_always_valid_p_value(-z_good, sample_size, rho_squared=rho_squared)
    previous = previous or {}
    for index, raw in enumerate(raws):
        if superiority[index]:
            # Each direction keeps its own running minimum: a look that showed the arm significantly worse must
            # not count as evidence of an improvement once its estimate drifts back above zero.
            towards_better = sign[index] * raw.estimate
            p_now = float(two_sided[index]) if towards_better > 0 else 1.0
            worse_now = float(two_sided[index]) if towards_better < 0 else 1.0
        else:
            p_now, worse_now = float(good[index]), float(bad[index])
        before = previous.get(f"{raw.kind}:{raw.arm}:{raw.metric}") or {}
        raw.p_value = min(p_now, _previous(before.get("p_value")))
        raw.ruled_out_p_value = min(worse_now, _previous(before.get("ruled_out_p_value")))


def _previous(value: object) -> float:
    if value is None:
        return 1.0
    value = float(value)
    return value if 0.0 <= value <= 1.0 else 1.0


def _bound(raw: _Raw, *, level_alpha: float, sequential: bool, rho_squared: float) -> tuple[float, tuple]:
    """The harmful-side bound and the interval at test level ``level_alpha``."""
    est, se = raw.estimate, raw.standard_error
    sign = 1.0 if raw.higher_is_better else -1.0
    if raw.kind == Question.SUPERIORITY:
        if sequential:
            half = float(
                confidence_sequence_half_width(se, raw.sample_size, rho_squared=rho_squared, alpha=level_alpha)
            )
        else:
            half = float(t_isf(level_alpha / 2.0, raw.dof)) * se
    elif sequential:
        half = one_sided_critical_z(raw.sample_size, rho_squared=rho_squared, alpha=level_alpha) * se
    else:
        half = float(t_isf(level_alpha, raw.dof)) * se
    interval = (est - half, est + half)
    return (interval[0] if sign > 0 else interval[1]), interval


def _tests(
    statistics: ArmStatistics,
    *,
    control: str,
    treatments: Sequence[str],
    primary: str,
    primary_higher_is_better: bool,
    rule: str,
    margin: float | None,
    guardrails: Sequence[GuardrailRule],
    alpha: float,
    sequential: bool,
    rho_squared: float,
    previous: Mapping[str, Mapping] | None,
) -> list[DecisionTest]:
    primary_kind = Question.SUPERIORITY if rule == Rule.SUPERIORITY else Question.NONINFERIORITY
    planned = [
        _Raw(kind=primary_kind, arm=arm, metric=primary, relative=primary_kind == Question.NONINFERIORITY,
             higher_is_better=primary_higher_is_better, margin=margin)
        for arm in treatments
    ] + [
        _Raw(kind=Question.GUARDRAIL, arm=arm, metric=g.metric, relative=g.relative, higher_is_better=g.higher_is_better,
             margin=g.margin)
        for g in guardrails
        for arm in treatments
    ]
    done: list[_Raw] = planned
    testable: list[_Raw] = []
    for raw in planned:
        try:
            moments = _moments(statistics, control, raw.arm, raw.metric)
            raw.estimate, raw.standard_error = _scale(moments, raw.relative)
        except InsufficientDataError as error:
            raw.reason = f"not testable yet: {error}"
            continue
        raw.dof = moments.degrees_of_freedom
        raw.sample_size = moments.control_n + moments.treatment_n
        testable.append(raw)
    if sequential:
        _sequential_p_values(testable, rho_squared=rho_squared, previous=previous)
    else:
        _fixed_p_values(testable)
    # Holm within the confirmatory family (primary × arms), on the p-values of the rule's question.
    confirmatory = [i for i, raw in enumerate(done) if raw.kind == primary_kind and raw.p_value is not None]
    adjusted: dict[int, float] = {}
    if confirmatory:
        values = holm_adjust(np.array([done[i].p_value for i in confirmatory], dtype=float)).tolist()
        adjusted = dict(zip(confirmatory, values, strict=True))
        # Ruled out within the family too: "significantly worse" is read at the same error rate.
        worse = holm_adjust(np.array([done[i].ruled_out_p_value for i in confirmatory], dtype=float)).tolist()
        worse_adjusted = dict(zip(confirmatory, worse, strict=True))
    tests = []
    method = "msprt_normal_mixture" if sequential else "welch_t"

    def rejects(p_value: float) -> bool:
        # Always-valid tests reject at p ≤ α (Ville's inequality); fixed-horizon ones at p < α.
        return p_value <= alpha if sequential else p_value < alpha
    for index, raw in enumerate(done):
        family = Family.CONFIRMATORY if raw.kind == primary_kind else Family.GUARDRAIL
        if raw.p_value is None:
            tests.append(DecisionTest(
                kind=raw.kind, arm=raw.arm, metric=raw.metric, relative=raw.relative,
                higher_is_better=raw.higher_is_better, estimate=None, margin=raw.margin, bound=None, interval=None,
                level=None, p_value=None, p_value_adjusted=None, passed=False, ruled_out=False,
                ruled_out_p_value=None, method=method, family=family, reason=raw.reason,
            ))
            continue
        if family == Family.CONFIRMATORY:
            p_adjusted = adjusted[index]
            level_alpha = adjusted_level(raw.p_value, p_adjusted, alpha=alpha, members=len(confirmatory))
            ruled_out = rejects(worse_adjusted[index])
        else:
            p_adjusted, level_alpha = None, alpha
            ruled_out = rejects(raw.ruled_out_p_value)
        passed = rejects(p_adjusted if p_adjusted is not None else raw.p_value)
        if raw.kind == Question.SUPERIORITY:
            sign = 1.0 if raw.higher_is_better else -1.0
            passed = passed and sign * raw.estimate > 0
            ruled_out = ruled_out and sign * raw.estimate < 0
        bound, interval = _bound(raw, level_alpha=level_alpha, sequential=sequential, rho_squared=rho_squared)
        if sequential:
            # The running minimum of the p-value may come from an earlier look: so does the bound shown,
            # the best so far on the favourable side, so "passes" never sits beside a bound that fails.
            before = (previous or {}).get(f"{raw.kind}:{raw.arm}:{raw.metric}") or {}
            earlier = before.get("bound")
            if earlier is not None and math.isfinite(earlier):
                sign = 1.0 if raw.higher_is_better else -1.0
                bound = sign * max(sign * bound, sign * float(earlier))
        tests.append(DecisionTest(
            kind=raw.kind, arm=raw.arm, metric=raw.metric, relative=raw.relative,
            higher_is_better=raw.higher_is_better, estimate=raw.estimate, margin=raw.margin, bound=bound,
            interval=interval, level=1.0 - level_alpha, p_value=raw.p_value, p_value_adjusted=p_adjusted,
            passed=bool(passed), ruled_out=bool(ruled_out), ruled_out_p_value=raw.ruled_out_p_value,
            method=method + ("_one_sided" if sequential and raw.kind != Question.SUPERIORITY else ""),
            family=family,
        ))
    return tests


def _bayesian_tests(
    statistics: ArmStatistics,
    *,
    control: str,
    treatments: Sequence[str],
    primary: str,
    primary_higher_is_better: bool,
    rule: str,
    margin: float | None,
    guardrails: Sequence[GuardrailRule],
    alpha: float,
    prior,
    risk_threshold: float,
) -> list[DecisionTest]:
    """The rule's tests read from Gaussian posteriors (the Bayesian engine, gbstats' model).

    Superiority: the chance to beat the control ≥ 1 − α/2 (one-sided, as a
    two-sided test at α) and the risk of choosing the arm ≤ ``risk_threshold``;
    significantly worse when the chance ≤ α/2. Non-inferiority (the primary
    metric under the other rules, and every guardrail): the one-sided (1 − α)
    credible bound on the harmful side beyond the margin; ruled out when the
    opposite bound is beyond it. ``p_value`` is the posterior probability of the
    question's harmful side; nothing is Holm-adjusted (a posterior is read per arm).
    """
    primary_kind = Question.SUPERIORITY if rule == Rule.SUPERIORITY else Question.NONINFERIORITY
    planned = [(primary_kind, arm, primary, primary_kind == Question.NONINFERIORITY, primary_higher_is_better, margin)
               for arm in treatments]
    planned += [(Question.GUARDRAIL, arm, g.metric, g.relative, g.higher_is_better, g.margin)
                for g in guardrails for arm in treatments]
    z = float(norm_isf(alpha))
    method = "bayesian_gaussian"
    tests = []
    for kind, arm, metric, relative, higher, test_margin in planned:
        family = Family.CONFIRMATORY if kind == primary_kind else Family.GUARDRAIL
        try:
            moments = gaussian_moments(statistics[control][metric], statistics[arm][metric])
            posterior = bayesian_compare_moments([moments], prior=prior, alpha=alpha, higher_is_better=[higher])[0]
            effect = posterior.relative if relative or kind == Question.SUPERIORITY else posterior.absolute
            if effect.estimate is None:
                if kind == Question.SUPERIORITY:
                    effect = posterior.absolute
                else:
                    raise InsufficientDataError(
                        "a relative margin needs a non-zero control mean and a defined relative lift"
                    )
        except InsufficientDataError as error:
            tests.append(DecisionTest(
                kind=kind, arm=arm, metric=metric, relative=relative, higher_is_better=higher, estimate=None,
                margin=test_margin, bound=None, interval=None, level=None, p_value=None, p_value_adjusted=None,
                passed=False, ruled_out=False, ruled_out_p_value=None, method=method, family=family,
                reason=f"not testable yet: {error}",
            ))
            continue
        sign = 1.0 if higher else -1.0
        mean, sd = effect.estimate, effect.standard_error
        scale_relative = effect is posterior.relative
        if kind == Question.SUPERIORITY:
            chance = posterior.chance_to_win
            passed = chance >= 1.0 - alpha / 2.0 and posterior.risk[1] <= risk_threshold
            ruled_out = chance <= alpha / 2.0
            p_value, worse = 1.0 - chance, chance
            half = float(norm_isf(alpha / 2.0)) * sd
            interval = (mean - half, mean + half)
            bound = interval[0] if sign > 0 else interval[1]
            level, risk = 1.0 - alpha, posterior.risk[1]
        else:
            # P(the effect is on the harmful side of the margin) and its mirror.
            p_value = float(norm_cdf((-test_margin - sign * mean) / sd))
            worse = float(norm_cdf((sign * mean + test_margin) / sd))
            chance = 1.0 - p_value
            passed, ruled_out = p_value < alpha, worse < alpha
            interval = (mean - z * sd, mean + z * sd)
            bound = interval[0] if sign > 0 else interval[1]
            level, risk = 1.0 - alpha, None
        tests.append(DecisionTest(
            kind=kind, arm=arm, metric=metric, relative=scale_relative, higher_is_better=higher, estimate=mean,
            margin=test_margin, bound=bound, interval=interval, level=level, p_value=p_value, p_value_adjusted=None,
            passed=bool(passed), ruled_out=bool(ruled_out), ruled_out_p_value=worse, method=method, family=family,
            chance_to_win=chance, risk=risk,
        ))
    return tests


def _bayesian_rule_text(rule: str, *, alpha: float, prior, risk_threshold: float, rule_text: str) -> str:
    prior_text = "a flat prior" if prior is None else (
        f"a Gaussian prior on the relative effect (mean {prior.mean:+.3g}, variance {prior.variance:.3g})"
    )
    if rule == Rule.SUPERIORITY:
        reading = (f"an arm improves when its chance to beat the control is at least {1 - alpha / 2:.1%} and its "
                   f"risk (expected relative loss of choosing it) at most {risk_threshold:.2%}")
    else:
        reading = (f"an arm stays within a margin when its one-sided {1 - alpha:.0%} credible bound does; "
                   "guardrails likewise")
    core = rule_text.split(" (one-sided")[0].split(" (two-sided")[0]
    return (f"{core} — read by the Bayesian engine ({prior_text}): {reading}. Each arm's posterior is read on its "
            "own, with no multiplicity adjustment. Fixed horizon: read once every arm has its planned subjects and "
            "the minimum runtime has passed. Never with a sample-ratio mismatch.")


# --- progress ------------------------------------------------------------------------


def _progress(
    subjects: Mapping[str, int],
    weights: Mapping[str, float],
    *,
    planned: int | None,
    runtime_days: float | None,
    minimum_runtime_days: float,
) -> Progress:
    targets = None
    share = None
    remaining: list[float] = []
    if planned is not None:
        mean_weight = math.fsum(weights.values()) / len(weights)
        targets = {arm: max(1, math.ceil(planned * weight / mean_weight - 1e-9)) for arm, weight in weights.items()}
        share = min(subjects.get(arm, 0) / target for arm, target in targets.items())
        if runtime_days:
            for arm, target in targets.items():
                rate = subjects.get(arm, 0) / runtime_days
                missing = target - subjects.get(arm, 0)
                if missing > 0:
                    remaining.append(missing / rate if rate > 0 else math.inf)
    runtime_ok = runtime_days is None or runtime_days >= minimum_runtime_days
    if runtime_days is not None and not runtime_ok:
        remaining.append(minimum_runtime_days - runtime_days)
    sample_ok = targets is not None and share is not None and share >= 1.0
    days_remaining = max(remaining) if remaining else (0.0 if runtime_days is not None else None)
    if days_remaining is not None and math.isinf(days_remaining):
        days_remaining = None
    return Progress(
        subjects=dict(subjects), targets=targets, share=share, runtime_days=runtime_days,
        minimum_runtime_days=minimum_runtime_days, days_remaining=days_remaining, ready=sample_ok and runtime_ok,
    )


# --- the rule ------------------------------------------------------------------------


def _rule_text(rule: str, *, primary: str, higher: bool, margin: float | None, wording: Wording,
               sequential: bool, alpha: float, treatments: int) -> str:
    label = wording.label(primary)
    family = (
        f"Holm-adjusted across the {treatments} treatment arms" if treatments > 1 else "one treatment arm"
    )
    when = (
        "Always-valid (sequential) tests: a verdict may be final at any look after the minimum runtime."
        if sequential
        else "Fixed horizon: the tests are read once, when every arm has its planned subjects and the minimum "
        "runtime has passed."
    )
    guardrails = "every guardrail passes its one-sided non-inferiority test at alpha"
    if rule == Rule.SUPERIORITY:
        core = (
            f"Ship the treatment arm with the largest significant {'increase' if higher else 'decrease'} in "
            f"{label} (two-sided, alpha {alpha:g}, {family}) whose {guardrails}; keep the control otherwise."
        )
    else:
        bound = wording.margin(primary, higher_is_better=higher, relative=True, margin=margin)
        qualifies = (
            f"{label} is non-inferior to the control within {bound} (one-sided, alpha {alpha:g}, {family}) "
            f"and whose {guardrails}"
        )
        if rule == Rule.NONINFERIORITY:
            core = f"Do no harm: ship the treatment arm whose {qualifies} (the best such arm on {label})."
        else:
            core = (
                f"Privacy first: ship the most privacy-preserving design whose {qualifies}; when none qualifies, "
                "or the control is more private than every qualifying arm, keep the control."
            )
    return f"{core} {when} Never with a sample-ratio mismatch."


def _test_phrase(test: DecisionTest, wording: Wording, *, named: bool = True) -> str:
    label = wording.label(test.metric) + " " if named else ""
    if test.p_value is None:
        return f"{label.strip() or 'not testable'}: {test.reason}" if named else test.reason
    bound = wording.difference(test.metric, test.bound, relative=test.relative)
    if test.kind == Question.SUPERIORITY:
        return (
            f"{label}{wording.difference(test.metric, test.estimate, relative=test.relative)} "
            f"({_evidence(test, bound)})"
        )
    limit = wording.margin(test.metric, higher_is_better=test.higher_is_better, relative=test.relative,
                           margin=test.margin)
    side = "lower" if test.higher_is_better else "upper"
    relation = (">" if test.higher_is_better else "<") if test.passed else ("≤" if test.higher_is_better else "≥")
    return f"{label}{side} bound {bound} {relation} {limit}"


def _evidence(test: DecisionTest, bound: str) -> str:
    """"bound +2.0%, adjusted p = 0.003", or the Bayesian engine's "chance to win 99.1%, risk 0.01%"."""
    if test.chance_to_win is not None:
        risk = "" if test.risk is None else f", risk {test.risk:.2%}"
        return f"chance to win {test.chance_to_win:.1%}{risk}"
    return f"bound {bound}, adjusted {_p(test.p_value_adjusted)}"


def _arm_story(arm: str, tests: Sequence[DecisionTest], wording: Wording) -> str:
    primary = [t for t in tests if t.arm == arm and t.kind != Question.GUARDRAIL]
    guardrails = [t for t in tests if t.arm == arm and t.kind == Question.GUARDRAIL]
    parts = [_test_phrase(t, wording) for t in primary]
    for test in guardrails:
        status = "passes" if test.passed else "not shown" if not test.ruled_out else "fails"
        parts.append(f"{wording.label(test.metric)} guardrail {status} ({_test_phrase(test, wording, named=False)})")
    return "; ".join(parts)


def _qualifies(arm: str, tests: Sequence[DecisionTest]) -> bool:
    mine = [t for t in tests if t.arm == arm]
    return bool(mine) and all(t.passed for t in mine)


def _ruled_out(arm: str, tests: Sequence[DecisionTest]) -> bool:
    return any(t.ruled_out for t in tests if t.arm == arm)


def _primary_test(arm: str, tests: Sequence[DecisionTest]) -> DecisionTest | None:
    return next((t for t in tests if t.arm == arm and t.kind != Question.GUARDRAIL), None)


def _verdict(
    *,
    rule: str,
    tests: Sequence[DecisionTest],
    control: str,
    treatments: Sequence[str],
    order: Sequence[str],
    primary: str,
    higher: bool,
    margin: float | None,
    wording: Wording,
    sequential: bool,
    at_planned_size: bool,
) -> tuple[str, str | None, bool, str, list[str]]:
    """(outcome, arm, final, summary, reasons) from the tests, for a look where reading is allowed."""
    label = wording.label(primary)
    qualified = [arm for arm in treatments if _qualifies(arm, tests)]
    # An arm still "pending" could qualify at a later look; at the planned size nothing is pending any more.
    pending = [
        arm for arm in treatments
        if arm not in qualified and not _ruled_out(arm, tests) and sequential and not at_planned_size
    ]
    stories = {arm: _arm_story(arm, tests, wording) for arm in treatments}
    reasons = [f"Arm {arm}: {stories[arm]}." for arm in treatments]
    sign = 1.0 if higher else -1.0

    def best(arms: Sequence[str]) -> str:
        return max(arms, key=lambda arm: sign * (_primary_test(arm, tests).estimate or 0.0))

    if rule in (Rule.SUPERIORITY, Rule.NONINFERIORITY):
        if qualified:
            chosen = best(qualified)
            test = _primary_test(chosen, tests)
            estimate = wording.difference(primary, test.estimate, relative=test.relative)
            bound = wording.difference(primary, test.bound, relative=test.relative)
            if rule == Rule.SUPERIORITY:
                head = (f"Ship {chosen}: it {'raises' if sign * test.estimate > 0 else 'lowers'} {label} by "
                        f"{estimate} ({_evidence(test, bound)})")
            else:
                limit = wording.margin(primary, higher_is_better=higher, relative=True, margin=margin)
                head = (f"Ship {chosen}: its {label} stays within {limit} of the control (estimate {estimate}, "
                        f"{'lower' if higher else 'upper'} bound {bound})")
            return SHIP, chosen, True, head + _guardrail_clause(chosen, tests, wording) + ".", reasons
        if pending:
            return CONTINUE, None, False, (
                f"Keep running: no arm has qualified yet; {', '.join(pending)} may still "
                f"{'show an improvement' if rule == 'superiority' else 'show non-inferiority'} in {label}."
            ), reasons
        if rule == Rule.SUPERIORITY:
            worse = [arm for arm in treatments if (t := _primary_test(arm, tests)) and t.ruled_out]
            why = (f"every treatment arm is significantly worse on {label}" if len(worse) == len(treatments)
                   else f"no treatment arm improves {label} significantly with its guardrails passing")
        else:
            limit = wording.margin(primary, higher_is_better=higher, relative=True, margin=margin)
            why = f"no treatment arm keeps {label} within {limit} of the control with its guardrails passing"
        return KEEP_CONTROL, None, True, f"Keep the control: {why}.", reasons

    # privacy_first: walk from the most private design; the control always qualifies (it is the reference).
    limit = wording.margin(primary, higher_is_better=higher, relative=True, margin=margin)
    waiting: list[str] = []
    for arm in order:
        if arm == control:
            if waiting:
                return CONTINUE, None, False, (
                    f"Keep running: more private designs ({', '.join(waiting)}) may still show that {label} stays "
                    f"within {limit} of the control."
                ), reasons
            more_private = [a for a in order[: order.index(control)]]
            if more_private:
                why = (f"no design more private than the control ({', '.join(more_private)}) keeps {label} within "
                       f"{limit} of the control with its guardrails passing")
            else:
                why = "the control is the most private design"
            return KEEP_CONTROL, None, True, f"Keep the control: {why}.", reasons
        if arm in qualified:
            if waiting:
                return CONTINUE, None, False, (
                    f"Keep running: {arm} qualifies, but the more private {', '.join(waiting)} may still qualify."
                ), reasons
            test = _primary_test(arm, tests)
            bound = wording.difference(primary, test.bound, relative=True)
            head = (f"Ship {arm}: the most private design whose {label} stays within {limit} of the control "
                    f"({'lower' if higher else 'upper'} bound {bound})")
            return SHIP, arm, True, head + _guardrail_clause(arm, tests, wording) + ".", reasons
        if arm in pending:
            waiting.append(arm)
    raise AssertionError("the control is in the privacy order")


def _guardrail_clause(arm: str, tests: Sequence[DecisionTest], wording: Wording) -> str:
    guardrails = [t for t in tests if t.arm == arm and t.kind == Question.GUARDRAIL]
    if not guardrails:
        return ""
    parts = [
        f"its {wording.label(t.metric).lower()} guardrail passes "
        f"({'lower' if t.higher_is_better else 'upper'} bound "
        f"{wording.difference(t.metric, t.bound, relative=t.relative)} "
        f"{'>' if t.higher_is_better else '<'} "
        f"{wording.margin(t.metric, higher_is_better=t.higher_is_better, relative=t.relative, margin=t.margin)})"
        for t in guardrails
    ]
    return ", and " + " and ".join(parts)


def decide_statistics(
    statistics: ArmStatistics,
    *,
    control: str,
    weights: Mapping[str, float],
    primary: str,
    primary_higher_is_better: bool = True,
    guardrails: Mapping | None = None,
    rule: str = Rule.SUPERIORITY,
    margin: float | None = None,
    privacy_order: Sequence[str] | None = None,
    planned_subjects_per_arm: int | None = None,
    sequential: bool = False,
    alpha: float = 0.05,
    runtime_days: float | None = None,
    minimum_runtime_days: float = 0.0,
    previous: Mapping[str, Mapping] | None = None,
    tuning_sample_size: int | None = None,
    labels: Mapping[str, str] | None = None,
    kinds: Mapping[str, str] | None = None,
    units: Mapping[str, str] | None = None,
    srm: SrmResult | None = None,
    srm_threshold: float = SRM_THRESHOLD,
    engine: str = "frequentist",
    prior: Mapping | None = None,
    risk_threshold: float = DEFAULT_RISK_THRESHOLD,
) -> Decision:
    """The verdict of ``rule`` on ``{arm: {metric: statistic}}`` at this look.

    ``previous`` is the last look's ``Decision.running_minima()`` (sequential
    mode); ``runtime_days`` the time since the start (the minimum runtime is
    not checked without it); ``labels``, ``kinds`` and ``units`` word the
    verdict. ``engine="bayesian"`` reads the tests from the posteriors
    (``prior`` on the relative effect, flat by default; docs/statistics.md
    §15): fixed horizon only. Bad input raises ``ValueError`` naming the argument.
    """
    alpha = _check_alpha(alpha)
    engine = check_engine(engine)
    checked_prior = gaussian_prior(prior)
    if engine == "frequentist" and checked_prior is not None:
        raise ValueError("prior: only the Bayesian engine takes a prior (engine='bayesian')")
    if engine == "bayesian" and sequential:
        raise ValueError(
            "sequential: the Bayesian engine has no always-valid mode (a posterior read at every look ships "
            "by chance more often than its threshold says); use fixed-horizon testing, or the frequentist engine"
        )
    risk_threshold = _finite(risk_threshold, "risk_threshold")
    if not risk_threshold > 0:
        raise ValueError(f"risk_threshold must be positive (a relative expected loss, e.g. 0.0025), got "
                         f"{risk_threshold:g}")
    if not isinstance(sequential, bool):
        raise ValueError("sequential must be true or false")
    if not isinstance(primary_higher_is_better, bool):
        raise ValueError("primary_higher_is_better must be true or false")
    checked_weights = validate_weights(weights)
    if control not in checked_weights:
        raise ValueError(f"control: {control!r} is not among the weighted arms {list(checked_weights)}")
    arms = list(checked_weights)
    treatments = [arm for arm in arms if arm != control]
    if not treatments:
        raise ValueError("weights: a decision needs a control and at least one treatment arm")
    margin = _check_rule(rule, margin)
    order = _check_privacy_order(rule, privacy_order, arms)
    # Without a plan a fixed-horizon verdict is never readable: the outcome stays "continue".
    planned = _check_planned(planned_subjects_per_arm, sequential, required=False)
    minimum_runtime_days = _finite(minimum_runtime_days, "minimum_runtime_days")
    if minimum_runtime_days < 0:
        raise ValueError(f"minimum_runtime_days must not be negative, got {minimum_runtime_days:g}")
    if runtime_days is not None:
        runtime_days = _finite(runtime_days, "runtime_days")
        if runtime_days < 0:
            raise ValueError(f"runtime_days must not be negative, got {runtime_days:g}")
    control_metrics = statistics.get(control)
    if not control_metrics:
        raise ValueError(f"control: the arm {control!r} has no statistics")
    metrics = list(control_metrics)
    if primary not in metrics:
        raise ValueError(f"primary: {primary!r} is not one of the metrics {metrics}")
    guardrail_rules = _guardrail_rules(guardrails, metrics, primary)
    wording = Wording(
        labels=dict(labels or {}),
        kinds={**{m: _kind(s) for m, s in control_metrics.items()}, **dict(kinds or {})},
        units=dict(units or {}),
    )
    subjects = {arm: next(iter(statistics[arm].values())).n if statistics.get(arm) else 0 for arm in arms}
    if srm is None and sum(subjects.values()) > 0:
        srm = srm_test(subjects, checked_weights, threshold=srm_threshold)
    if tuning_sample_size is None:
        tuning_sample_size = 2 * planned if planned else DEFAULT_TUNING_SAMPLE_SIZE
    rho_squared = mixing_scale_squared(tuning_sample_size=tuning_sample_size, alpha=alpha)
    progress = _progress(subjects, checked_weights, planned=planned, runtime_days=runtime_days,
                         minimum_runtime_days=minimum_runtime_days)
    rule_text = _rule_text(rule, primary=primary, higher=primary_higher_is_better, margin=margin, wording=wording,
                           sequential=sequential, alpha=alpha, treatments=len(treatments))
    if engine == "bayesian":
        rule_text = _bayesian_rule_text(rule, alpha=alpha, prior=checked_prior, risk_threshold=risk_threshold,
                                        rule_text=rule_text)
    if rule == "privacy_first":
        order_text = "Privacy order, most private first: " + " > ".join(order) + "."
        rule_text = f"{rule_text} {order_text}"
    common = dict(
        engine=engine,
        rule=rule, mode=SEQUENTIAL if sequential else FIXED, alpha=alpha, primary_metric=primary,
        primary_higher_is_better=primary_higher_is_better, margin=margin, privacy_order=order,
        rule_text=rule_text, progress=progress, guardrails=tuple(guardrail_rules),
    )
    if srm is not None and srm.flag:
        return Decision(
            outcome=INVALID, arm=None, final=False, tests=(), reasons=(),
            summary=(f"Sample-ratio mismatch ({_p(srm.p_value)}): the arms did not get the traffic their weights "
                     "promise, so no effect can be trusted; fix the assignment or exposure logging before deciding."),
            **common,
        )
    empty = [arm for arm in arms if subjects.get(arm, 0) == 0]
    if empty:
        return Decision(outcome=CONTINUE, arm=None, final=False, tests=(), reasons=(),
                        summary=f"Keep running: arm(s) {', '.join(empty)} have no subjects yet.", **common)
    if engine == "bayesian":
        tests = _bayesian_tests(
            statistics, control=control, treatments=treatments, primary=primary,
            primary_higher_is_better=primary_higher_is_better, rule=rule, margin=margin,
            guardrails=guardrail_rules, alpha=alpha, prior=checked_prior, risk_threshold=risk_threshold,
        )
    else:
        tests = _tests(
            statistics, control=control, treatments=treatments, primary=primary,
            primary_higher_is_better=primary_higher_is_better, rule=rule, margin=margin,
            guardrails=guardrail_rules, alpha=alpha, sequential=sequential, rho_squared=rho_squared,
            previous=previous,
        )
    runtime_ok = runtime_days is None or runtime_days >= minimum_runtime_days
    at_planned = progress.share is not None and progress.share >= 1.0
    if not sequential and not progress.ready or sequential and not runtime_ok:
        waiting = _waiting_text(progress, sequential=sequential)
        return Decision(outcome=CONTINUE, arm=None, final=False, tests=tuple(tests),
                        summary=f"Keep running: {waiting}",
                        reasons=tuple(f"Arm {arm} so far: {_arm_story(arm, tests, wording)}." for arm in treatments),
                        **common)
    outcome, arm, final, summary, reasons = _verdict(
        rule=rule, tests=tests, control=control, treatments=treatments, order=order or tuple(arms), primary=primary,
        higher=primary_higher_is_better, margin=margin, wording=wording, sequential=sequential,
        at_planned_size=at_planned,
    )
    return Decision(outcome=outcome, arm=arm, final=final, tests=tuple(tests), summary=summary,
                    reasons=tuple(reasons), **common)


def _kind(statistic: Statistic) -> str:
    if isinstance(statistic, ProportionStatistic):
        return "proportion"
    return "ratio" if isinstance(statistic, RatioStatistic) else "mean"


def _waiting_text(progress: Progress, *, sequential: bool) -> str:
    parts = []
    if progress.targets is None and not sequential:
        parts.append("there is no planned sample size, and a fixed-horizon verdict is read only at the planned "
                     "size (fill in the plan, or switch to sequential testing)")
    if progress.targets is not None and progress.share is not None and progress.share < 1:
        target = min(progress.targets.values())
        parts.append(f"{progress.share:.0%} of the planned subjects so far (smallest arm target {target:,})")
    if progress.runtime_days is not None and progress.runtime_days < progress.minimum_runtime_days:
        parts.append(
            f"{progress.runtime_days:.1f} of the minimum {progress.minimum_runtime_days:g} days have passed"
        )
    text = " and ".join(parts) or "the verdict is not readable yet"
    if progress.days_remaining:
        text += f"; about {math.ceil(progress.days_remaining)} more day(s) at the traffic so far"
    reading = ("the always-valid tests may decide at any look after the minimum runtime" if sequential
               else "the tests are read once, at the planned size (fixed horizon)")
    return f"{text}; {reading}."


# --- per-subject rows ----------------------------------------------------------------


def decide(
    df,
    *,
    control: str,
    weights: Mapping[str, float],
    metrics: Mapping[str, str],
    primary: str,
    covariates: Mapping[str, str] | None = None,
    guardrails: Mapping | None = None,
    rule: str = Rule.SUPERIORITY,
    margin: float | None = None,
    privacy_order: Sequence[str] | None = None,
    planned_subjects_per_arm: int | None = None,
    sequential: bool = False,
    alpha: float = 0.05,
    primary_higher_is_better: bool = True,
    caps: Mapping[str, float] | None = None,
    runtime_days: float | None = None,
    minimum_runtime_days: float = 0.0,
    engine: str = "frequentist",
    prior: Mapping | None = None,
    risk_threshold: float = DEFAULT_RISK_THRESHOLD,
) -> dict:
    """The verdict on per-subject rows, as a JSON-serialisable dict (contract in DESIGN.md).

    ``df`` is as for ``analyze``. Returns ``{"outcome", "arm", "final", "rule",
    "reasons", "summary", "tests", "progress", ..., "report": analyze's report
    with the primary metric as its confirmatory family}``.
    """
    from experiments.stats.frame import statistics_from_frame

    if primary not in (metrics or {}):
        raise ValueError(f"primary: {primary!r} is not one of the metrics {list(metrics or {})}")
    _check_planned(planned_subjects_per_arm, sequential, required=True)
    statistics, _ = statistics_from_frame(df, metrics=metrics, covariates=covariates, caps=caps)
    if check_engine(engine) == "bayesian":
        report = bayesian_report(
            statistics, control=control, weights=weights, prior=prior, alpha=alpha,
            lower_is_better=[] if primary_higher_is_better else [primary],
        )
    else:
        report: Report = analyze_statistics(
            statistics, control=control, weights=weights, alpha=alpha, primary=primary
        )
    decision = decide_statistics(
        statistics, control=control, weights=weights, primary=primary,
        primary_higher_is_better=primary_higher_is_better, guardrails=guardrails, rule=rule, margin=margin,
        privacy_order=privacy_order, planned_subjects_per_arm=planned_subjects_per_arm, sequential=sequential,
        alpha=alpha, runtime_days=runtime_days, minimum_runtime_days=minimum_runtime_days, srm=report.srm,
        engine=engine, prior=prior, risk_threshold=risk_threshold,
    )
    return {**decision.to_dict(), "report": report.to_dict()}
