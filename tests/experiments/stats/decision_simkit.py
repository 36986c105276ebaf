"""Seeded simulations of the decision engine from sufficient statistics, look by look.

Each replicate is one experiment watched ``looks`` times up to its planned size: the
per-arm sums of every look are drawn in bulk with numpy (binomial counts for
proportions; for normal means the sum and the sum of squares of each look's new
subjects, exact in distribution), the frozen statistics are built from them and
``decide_statistics`` is called look by look with the previous look's running
minima, as the results job does. The first final verdict is the experiment's verdict
(the job freezes it). Used by tests/experiments/stats/test_decide_simulation.py
(fast) and benchmarks/bench_decide.py (long).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from experiments.stats import ProportionStatistic, SampleMeanStatistic, decide_statistics

from .stats_testkit import normal_sample_statistics

# The probability, for each assertion on a simulated rate, that a correct engine fails it.
FALSE_FAILURE = 1e-4


@dataclass(frozen=True)
class Truth:
    """A metric's true value in each arm: a rate (proportion) or a mean with a per-subject sd."""

    kind: str  # "proportion" | "mean"
    values: Mapping[str, float]
    sd: float = 0.0


@dataclass(frozen=True)
class Runs:
    """Each replicate's verdict: its first final verdict, or ``continue`` if none was final."""

    outcomes: tuple[str, ...]
    arms: tuple[str | None, ...]
    final_looks: np.ndarray  # 0-based look of the first final verdict, −1 if none
    looks: int

    @property
    def replicates(self) -> int:
        return len(self.outcomes)

    def count(self, outcome: str, arm: str | None = None) -> int:
        return sum(o == outcome and (arm is None or a == arm) for o, a in zip(self.outcomes, self.arms, strict=True))

    def rate(self, outcome: str, arm: str | None = None) -> float:
        return self.count(outcome, arm) / self.replicates

    def final_before_the_last_look(self) -> int:
        return int(np.sum((self.final_looks >= 0) & (self.final_looks < self.looks - 1)))


def look_sizes(subjects_per_arm: int, looks: int) -> list[int]:
    """Subjects per arm at each look, evenly spaced, the last exactly the planned size."""
    return [math.ceil(subjects_per_arm * (k + 1) / looks) for k in range(looks)]


def _cumulative(rng: np.random.Generator, truth: Truth, value: float, increments: list[int], replicates: int):
    """Per replicate and look, the cumulative sufficient sums of one arm's metric, as Python lists."""
    if truth.kind == "proportion":
        draws = np.column_stack([rng.binomial(size, value, replicates) for size in increments])
        return (np.cumsum(draws, axis=1).tolist(),)
    if truth.kind == "mean":
        sums, squares = zip(*(
            normal_sample_statistics(rng, size=replicates, n=size, mean=value, sd=truth.sd) for size in increments
        ), strict=True)
        return (np.cumsum(np.column_stack(sums), axis=1).tolist(),
                np.cumsum(np.column_stack(squares), axis=1).tolist())
    raise ValueError(f"unknown metric kind {truth.kind!r}")


def simulate_decisions(
    *,
    truths: Mapping[str, Truth],
    arms: tuple[str, ...],
    subjects_per_arm: int,
    looks: int,
    replicates: int,
    seed: int,
    settings: Mapping,
    progress: Callable | None = None,
    fixed_at_every_look: bool = False,
    ships: str | None = None,
) -> Runs:
    """Run ``replicates`` experiments of ``arms`` (the control first) through ``decide_statistics``.

    ``settings`` are the rest of ``decide_statistics``'s arguments (``primary``, ``rule``,
    ``margin``, ``guardrails``, ``privacy_order``, ``sequential``, ...); the planned size is
    ``subjects_per_arm``, reached at the last look. ``progress`` wraps the replicate loop
    (e.g. ``tqdm``).

    ``fixed_at_every_look`` is the peer the engine replaced: each look read as a
    fixed-horizon test at its own size, with no stopping gate; a replicate's verdict is
    the first look that ships ``ships`` (any arm when None), else the last look's.
    """
    rng = np.random.default_rng(seed)
    sizes = look_sizes(subjects_per_arm, looks)
    increments = [sizes[0]] + [b - a for a, b in zip(sizes, sizes[1:], strict=False)]
    sums = {
        (arm, metric): _cumulative(rng, truth, truth.values[arm], increments, replicates)
        for metric, truth in truths.items()
        for arm in arms
    }
    weights = dict.fromkeys(arms, 1)
    outcomes, chosen, final_looks = [], [], np.full(replicates, -1)
    loop = range(replicates) if progress is None else progress(range(replicates))
    for replicate in loop:
        previous = None
        outcome, arm = "continue", None
        for look, n in enumerate(sizes):
            statistics = {}
            for arm_key in arms:
                metrics = {}
                for metric, truth in truths.items():
                    columns = sums[(arm_key, metric)]
                    if truth.kind == "proportion":
                        metrics[metric] = ProportionStatistic(n=n, successes=columns[0][replicate][look])
                    else:
                        metrics[metric] = SampleMeanStatistic(
                            n=n, sum=columns[0][replicate][look], sum_squares=columns[1][replicate][look]
                        )
                statistics[arm_key] = metrics
            if fixed_at_every_look:
                decision = decide_statistics(
                    statistics, control=arms[0], weights=weights, **{**settings, "sequential": False},
                    planned_subjects_per_arm=n,
                )
                if decision.outcome == "ship" and ships in (None, decision.arm) or look == looks - 1:
                    outcome, arm = decision.outcome, decision.arm
                    final_looks[replicate] = look
                    break
                continue
            decision = decide_statistics(
                statistics, control=arms[0], weights=weights, planned_subjects_per_arm=subjects_per_arm,
                previous=previous, **settings,
            )
            previous = decision.running_minima()
            if decision.final:
                outcome, arm = decision.outcome, decision.arm
                final_looks[replicate] = look
                break
        outcomes.append(outcome)
        chosen.append(arm)
    return Runs(outcomes=tuple(outcomes), arms=tuple(chosen), final_looks=final_looks, looks=looks)


def most_successes_at(rate: float, trials: int, false_failure: float = FALSE_FAILURE) -> int:
    """The largest count a true ``rate`` exceeds only with probability ``false_failure``."""
    return int(scipy_stats.binom.isf(false_failure, trials, rate))


def fewest_successes_at(rate: float, trials: int, false_failure: float = FALSE_FAILURE) -> int:
    """The smallest count a true ``rate`` falls below only with probability ``false_failure``."""
    return int(scipy_stats.binom.ppf(false_failure, trials, rate))


# --- the scenarios of issue 11's validation (the tests run few replicates, the benchmark many) -------

ALPHA = 0.05
LOOKS = 20
GMV_SD = 250.0  # GMV per subject: mean 100 (thousand IDR), sd 250: the spread of a capped GMV
OPT_OUT = 0.05
OPT_OUT_GUARDRAIL = {"opt_out": {"margin": 0.01, "higher_is_better": False}}  # at most +1 pp of opt-outs
OPT_OUT_PLAN = {"metric": "opt_out", "metric_type": "proportion", "baseline_mean": OPT_OUT, "margin": 0.01}
DAILY_SUBJECTS = 10_000


@dataclass(frozen=True)
class Scenario:
    """One simulated experiment design; ``shipped`` names the arm whose shipping rate is the question."""

    name: str
    arms: tuple[str, ...]
    truths: Mapping[str, Truth]
    subjects_per_arm: int
    settings: Mapping
    looks: int = LOOKS
    shipped: str | None = None  # None: any arm
    planned_power: float | None = None

    @property
    def sequential(self) -> bool:
        return bool(self.settings.get("sequential"))

    def run(self, *, replicates: int, seed: int, looks: int | None = None, **options) -> Runs:
        return simulate_decisions(
            truths=self.truths, arms=self.arms, subjects_per_arm=self.subjects_per_arm,
            looks=self.looks if looks is None else looks, replicates=replicates, seed=seed, settings=self.settings,
            **options,
        )


def aa_scenario(*, sequential: bool, treatments: int = 2, subjects_per_arm: int = 2000) -> Scenario:
    """No arm differs from the control; the rule is superiority on GMV: every ship is false."""
    arms = ("control", *(f"arm-{i}" for i in range(1, treatments + 1)))
    return Scenario(
        name=f"A/A, {len(arms)} arms, superiority on GMV",
        arms=arms,
        truths={"gmv": Truth("mean", dict.fromkeys(arms, 100.0), sd=GMV_SD)},
        subjects_per_arm=subjects_per_arm,
        settings={"primary": "gmv", "rule": "superiority", "sequential": sequential, "alpha": ALPHA},
    )


def guardrail_at_margin_scenario(*, sequential: bool) -> Scenario:
    """Do no harm on GMV, certain to pass (equal means, sd 50: the margin is 14 standard errors away);
    the arm raises opt-outs by exactly the guardrail's margin, so every ship is one the guardrail let through."""
    arms = ("control", "arm-1")
    return Scenario(
        name="guardrail whose true harm equals its margin (+1 pp opt-outs), do no harm",
        arms=arms,
        truths={
            "gmv": Truth("mean", dict.fromkeys(arms, 100.0), sd=50.0),
            "opt_out": Truth("proportion", {"control": OPT_OUT, "arm-1": OPT_OUT + 0.01}),
        },
        subjects_per_arm=20_000,
        settings={"primary": "gmv", "rule": "noninferiority", "margin": 0.05, "guardrails": OPT_OUT_GUARDRAIL,
                  "sequential": sequential, "alpha": ALPHA},
        shipped="arm-1",
    )


def _plan(rule: str, *, sequential: bool, arms: tuple[str, ...], **inputs):
    from experiments.stats import decision_plan

    return decision_plan(rule=rule, weights=dict.fromkeys(arms, 1), control="control", daily_subjects=DAILY_SUBJECTS,
                         guardrails=[OPT_OUT_PLAN], alpha=ALPHA, power=0.8, sequential=sequential, **inputs)


def privacy_first_scenario(*, sequential: bool, lossy_most_private: bool) -> Scenario:
    """Privacy first at the planned size: ``dp`` loses exactly the 5 % margin of GMV, ``cohort`` nothing.

    With ``lossy_most_private`` the order is dp > cohort > control and the question is how
    often dp ships (at most alpha); otherwise cohort > dp > control and the question is how
    often cohort ships (the planned power: dp, at the margin, rarely passes, so Holm's
    first step is the planner's Bonferroni).
    """
    arms = ("control", "cohort", "dp")
    plan = _plan("privacy_first", sequential=sequential, arms=arms, metric_type="mean", baseline_mean=100.0,
                 standard_deviation=GMV_SD, margin=0.05)
    order = ["dp", "cohort", "control"] if lossy_most_private else ["cohort", "dp", "control"]
    return Scenario(
        name=("privacy first, the most private arm loses exactly the margin (−5% GMV)" if lossy_most_private
              else "privacy first, the most private arm loses nothing (the next one loses the margin)"),
        arms=arms,
        truths={
            "gmv": Truth("mean", {"control": 100.0, "cohort": 100.0, "dp": 95.0}, sd=GMV_SD),
            "opt_out": Truth("proportion", dict.fromkeys(arms, OPT_OUT)),
        },
        subjects_per_arm=plan.planned_subjects_per_arm,
        settings={"primary": "gmv", "rule": "privacy_first", "margin": 0.05, "privacy_order": order,
                  "guardrails": OPT_OUT_GUARDRAIL, "sequential": sequential, "alpha": ALPHA},
        shipped="dp" if lossy_most_private else "cohort",
        planned_power=None if lossy_most_private else plan.power,
    )


def planner_scenario(rule: str, *, sequential: bool) -> Scenario:
    """The planner's design for ``rule`` at its planned size; ``arm-1`` is as good as planned, ``arm-2`` is not."""
    if rule == "privacy_first":
        return privacy_first_scenario(sequential=sequential, lossy_most_private=False)
    arms = ("control", "arm-1", "arm-2")
    guardrail = {"opt_out": Truth("proportion", dict.fromkeys(arms, OPT_OUT))}
    if rule == "superiority":
        # Conversion 10 % → 11 % (the +10 % minimum detectable effect) in arm-1; arm-2 unchanged.
        plan = _plan(rule, sequential=sequential, arms=arms, metric_type="proportion", baseline_mean=0.10,
                     minimum_detectable_effect=0.10)
        truths = {"conversion": Truth("proportion", {"control": 0.10, "arm-1": 0.11, "arm-2": 0.10}), **guardrail}
        settings = {"primary": "conversion", "rule": rule}
        name = "superiority on conversion, +10% in arm-1 (the planned effect), arm-2 unchanged"
    else:
        # GMV unchanged in arm-1; arm-2 loses exactly the 5 % margin.
        plan = _plan(rule, sequential=sequential, arms=arms, metric_type="mean", baseline_mean=100.0,
                     standard_deviation=GMV_SD, margin=0.05)
        truths = {"gmv": Truth("mean", {"control": 100.0, "arm-1": 100.0, "arm-2": 95.0}, sd=GMV_SD), **guardrail}
        settings = {"primary": "gmv", "rule": rule, "margin": 0.05}
        name = "do no harm on GMV (−5% margin), arm-1 loses nothing, arm-2 the margin"
    return Scenario(
        name=name, arms=arms, truths=truths, subjects_per_arm=plan.planned_subjects_per_arm,
        settings={**settings, "guardrails": OPT_OUT_GUARDRAIL, "sequential": sequential, "alpha": ALPHA},
        shipped="arm-1", planned_power=plan.power,
    )
