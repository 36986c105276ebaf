"""The decision engine: its speed, its share of a results run, and the long validation runs.

Speed:

1. ``decide_statistics`` on a 4-arm × 8-metric report (the statistics of
   bench_stats' report benchmark: CUPED GMV as the primary metric, three
   guardrails) for each rule in both modes: median and 95th percentile over many
   runs (target: median < 5 ms). Beside it, in the same run, ``analyze_statistics``
   on the same statistics: the report the decision is stored with.
2. The decision's share of a results run at the 1M-subject benchmark's shape
   (3 arms × 7 metrics × 17 segments, two guardrails): the in-process analysis of
   ``results_document`` as it was before the engine (one Holm family, the guardrail
   monitor's tests) against the same with the engine (the report's confirmatory and
   exploratory families, ``decide_statistics``, its document). The metric SQL is not
   repeated here: the added time is compared with the scheduled run's 1.38 s stored
   in docs/benchmarks.md (target: ≤ 10 %).

Validation (the long versions of tests/experiments/stats/test_decide_simulation.py,
the same scenarios with more replicates): false ships in A/A experiments, at a
guardrail's margin and for a privacy-first design losing the whole margin, and the
planner's power, in both modes. Beside each sequential run, the same replicates
read the way the results job read them before the engine: fixed-horizon tests at
every look, no stopping gate.
"""

from __future__ import annotations

import gc
import json
import math
import statistics

import numpy as np

from benchmarks.bench_stats import _sql_aggregate, _statistic
from benchmarks.table import Row, timing_samples
from experiments.stats import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    analyze_statistics,
    decide_statistics,
    noninferiority_test,
    sequential_test,
)
from tests.experiments.stats.decision_simkit import (
    ALPHA,
    aa_scenario,
    guardrail_at_margin_scenario,
    most_successes_at,
    planner_scenario,
    privacy_first_scenario,
)

SCHEDULED_RUN_SECONDS = 1.38  # docs/benchmarks.md: the 1M-subject scheduled run (metric SQL + analysis)

# --------------------------------------------------------------------------- speed

REPORT_ARMS = ("control", "b", "c", "d")
REPORT_GUARDRAILS = {
    "opted_out": {"margin": 0.005, "higher_is_better": False},
    "consented": {"margin": 0.01, "higher_is_better": True},
    "converted": {"margin": 0.02, "higher_is_better": True, "relative": True},
}
RULE_SETTINGS = {
    "superiority": {},
    "noninferiority": {"margin": 0.05},
    "privacy_first": {"margin": 0.05, "privacy_order": ["d", "c", "b", "control"]},
}


def _timings(fn, runs: int) -> list[float]:
    return timing_samples(fn, repeats=runs, warmup=max(3, runs // 20))


def _p95(samples: list[float]) -> float:
    return float(np.percentile(samples, 95))


def _decide_speed(quick: bool) -> list[Row]:
    aggregate = _sql_aggregate(seed=1, segments=1)
    report_statistics = {arm: {m: _statistic(t) for m, t in aggregate[(None, arm)].items()} for arm in REPORT_ARMS}
    weights = dict.fromkeys(REPORT_ARMS, 1)
    metrics = len(report_statistics["control"])
    runs = 100 if quick else 1000
    rows = []
    for rule, extra in RULE_SETTINGS.items():
        for sequential in (False, True):
            def decide(rule=rule, extra=extra, sequential=sequential):
                return decide_statistics(
                    report_statistics, control="control", weights=weights, primary="gmv",
                    guardrails=REPORT_GUARDRAILS, rule=rule, planned_subjects_per_arm=100_000,
                    sequential=sequential, alpha=ALPHA, **extra,
                )

            def report():
                return analyze_statistics(report_statistics, control="control", weights=weights, alpha=ALPHA,
                                          primary="gmv")

            gc.collect()
            ours, peer = [], []
            for _ in range(5):  # alternated, so machine noise hits both alike
                ours += _timings(decide, runs // 5)
                peer += _timings(report, runs // 5)
            decision = decide()
            ours_median = statistics.median(ours)
            rows.append(Row(
                benchmark=(f"decide_statistics, {len(REPORT_ARMS)} arms × {metrics} metrics, {len(decision.tests)} "
                           f"tests, {rule}, {'sequential' if sequential else 'fixed'} ({decision.outcome}; "
                           f"{len(ours):,} runs)"),
                ours=f"{ours_median * 1e3:.2f} ms (p95 {_p95(ours) * 1e3:.2f} ms)",
                peer=f"analyze_statistics on the same: {statistics.median(peer) * 1e3:.2f} ms",
                ratio=f"{ours_median / statistics.median(peer):.2f}× the report",
                target="median < 5 ms",
                passed=ours_median < 0.005,
            ))
    return rows


# --- a results run at the 1M-subject benchmark's shape --------------------------------------

RESULTS_ARMS = ("control", "cohort", "dp")
SEGMENT_LEVELS = {"age_band": 5, "province": 7, "platform": 3, "customer": 2}  # 17 segments, as bench_metrics
RESULTS_GUARDRAILS = {"opt_out": (0.005, False), "consent_rate": (0.01, True)}


def _arm_rows(rng: np.random.Generator, n: int, lift: float) -> dict[str, np.ndarray]:
    """Per-subject values of one arm: what the per-exposure facts hold, drawn with numpy."""
    converted = rng.random(n) < 0.08 * lift
    orders = np.where(converted, rng.poisson(0.6, n) + 1, 0).astype(float)
    pre_gmv = np.where(rng.random(n) < 0.3, rng.gamma(1.2, 90_000.0, n), 0.0)
    gmv = np.minimum(np.where(converted, 0.3 * pre_gmv + rng.gamma(1.5, 100_000.0, n) * orders, 0.0), 1_500_000.0)
    impressions = rng.poisson(8.5, n).astype(float)
    return {
        "converted": converted.astype(float), "opt_out": (rng.random(n) < 0.03).astype(float),
        "consent_rate": (rng.random(n) < 0.6).astype(float), "gmv": gmv, "pre_gmv": pre_gmv, "orders": orders,
        "impressions": impressions, "clicks": rng.binomial(impressions.astype(int), 0.08).astype(float),
        **{dimension: rng.integers(0, levels, n) for dimension, levels in SEGMENT_LEVELS.items()},
    }


def _cell(rows: dict[str, np.ndarray], mask: np.ndarray | None) -> dict:
    values = rows if mask is None else {key: column[mask] for key, column in rows.items()}
    n = int(values["gmv"].size)
    gmv, pre, orders = values["gmv"], values["pre_gmv"], values["orders"]
    impressions, clicks = values["impressions"], values["clicks"]
    return {
        "conversion": ProportionStatistic(n=n, successes=int(values["converted"].sum())),
        "opt_out": ProportionStatistic(n=n, successes=int(values["opt_out"].sum())),
        "consent_rate": ProportionStatistic(n=n, successes=int(values["consent_rate"].sum())),
        "gmv": RegressionAdjustedStatistic(
            n=n, sum=float(gmv.sum()), sum_squares=float(gmv @ gmv), covariate_sum=float(pre.sum()),
            covariate_sum_squares=float(pre @ pre), cross_product=float(gmv @ pre), cap=1_500_000.0,
        ),
        "orders": SampleMeanStatistic(n=n, sum=float(orders.sum()), sum_squares=float(orders @ orders)),
        "aov": RatioStatistic(
            n=n, numerator_sum=float(gmv.sum()), numerator_sum_squares=float(gmv @ gmv),
            denominator_sum=float(orders.sum()), denominator_sum_squares=float(orders @ orders),
            cross_product=float(gmv @ orders),
        ),
        "ctr": RatioStatistic(
            n=n, numerator_sum=float(clicks.sum()), numerator_sum_squares=float(clicks @ clicks),
            denominator_sum=float(impressions.sum()), denominator_sum_squares=float(impressions @ impressions),
            cross_product=float(clicks @ impressions),
        ),
    }


def _results_statistics(subjects: int, seed: int) -> tuple[dict, dict]:
    """``(arms, segments)`` as ``metric_statistics`` returns them, for ``subjects`` exposed subjects."""
    rng = np.random.default_rng(seed)
    per_arm = {arm: _arm_rows(rng, subjects // len(RESULTS_ARMS), 1.0 if arm == "control" else 0.99)
               for arm in RESULTS_ARMS}
    arms = {arm: _cell(rows, None) for arm, rows in per_arm.items()}
    segments = {
        f"{dimension}={level}": {arm: _cell(rows, rows[dimension] == level) for arm, rows in per_arm.items()}
        for dimension, levels in SEGMENT_LEVELS.items()
        for level in range(levels)
    }
    return arms, segments


def _monitor_guardrails(arms: dict, tuning: int) -> list[dict]:
    """The guardrail monitor's tests, as results_document runs them before and after the engine."""
    entries = []
    for metric, (margin, higher) in RESULTS_GUARDRAILS.items():
        for arm in RESULTS_ARMS[1:]:
            control, treatment = arms["control"][metric], arms[arm][metric]
            entries.append({
                "noninferiority": noninferiority_test(control, treatment, margin=margin, higher_is_better=higher,
                                                      alpha=ALPHA).to_dict(),
                "sequential": sequential_test(control, treatment, tuning_sample_size=tuning, alpha=ALPHA,
                                              null_difference=-margin if higher else margin).to_dict(),
            })
    return entries


def _results_share(quick: bool) -> list[Row]:
    subjects = 100_000 if quick else 1_000_000
    arms, segments = _results_statistics(subjects, seed=3)
    weights = dict.fromkeys(RESULTS_ARMS, 1)
    planned = subjects // len(RESULTS_ARMS) + 1  # the verdict is not final yet: every test is computed and read
    guardrails = {metric: {"margin": margin, "higher_is_better": higher}
                  for metric, (margin, higher) in RESULTS_GUARDRAILS.items()}
    previous = decide_statistics(
        arms, control="control", weights=weights, primary="gmv", guardrails=guardrails, rule="privacy_first",
        margin=0.05, privacy_order=["dp", "cohort", "control"], planned_subjects_per_arm=planned, sequential=True,
    ).running_minima()

    def before() -> int:
        report = analyze_statistics(arms, control="control", weights=weights, alpha=ALPHA, segments=segments)
        document = {"report": report.to_dict(), "guardrails": _monitor_guardrails(arms, 2 * planned)}
        return len(json.dumps(document))

    def after() -> int:
        report = analyze_statistics(arms, control="control", weights=weights, alpha=ALPHA, segments=segments,
                                    primary="gmv")
        decision = decide_statistics(
            arms, control="control", weights=weights, primary="gmv", guardrails=guardrails, rule="privacy_first",
            margin=0.05, privacy_order=["dp", "cohort", "control"], planned_subjects_per_arm=planned,
            sequential=True, previous=previous, srm=report.srm,
        )
        document = {"report": report.to_dict(), "guardrails": _monitor_guardrails(arms, 2 * planned),
                    "decision": decision.to_dict()}
        return len(json.dumps(document))

    gc.collect()
    ours, peer = [], []
    for _ in range(5 if quick else 15):
        ours += _timings(after, 3)
        peer += _timings(before, 3)
    added = statistics.median(ours) - statistics.median(peer)
    share = added / SCHEDULED_RUN_SECONDS
    return [Row(
        benchmark=(f"results analysis in process, {subjects:,} subjects: 3 arms × 7 metrics × 17 segments, 2 "
                   f"guardrails, JSON document ({after() / 1e3:,.0f} kB); with the engine (privacy first, "
                   "sequential) vs before it"),
        ours=f"{statistics.median(ours) * 1e3:.1f} ms",
        peer=f"before the engine: {statistics.median(peer) * 1e3:.1f} ms",
        ratio=f"+{added * 1e3:.1f} ms = {share:.1%} of the {SCHEDULED_RUN_SECONDS} s scheduled run",
        target="≤ 10% of compute_results",
        passed=share <= 0.10,
    )]


# ---------------------------------------------------------------------- validation


def _count_text(count: int, replicates: int) -> str:
    return f"{count / replicates:.2%} ({count:,}/{replicates:,})"


def _progress(label: str):
    from tqdm import tqdm

    return lambda iterable: tqdm(iterable, desc=label, unit="exp", leave=False, mininterval=2)


def _false_ship_row(scenario, *, replicates: int, seed: int, arm: str | None, what: str) -> Row:
    looks = None if scenario.sequential else 1
    runs = scenario.run(replicates=replicates, seed=seed, looks=looks, progress=_progress(scenario.name))
    count = runs.count("ship", arm)
    peer = "—"
    if scenario.sequential:
        old = scenario.run(replicates=replicates, seed=seed, fixed_at_every_look=True, ships=arm,
                           progress=_progress(scenario.name + " (fixed at every look)"))
        peer = f"fixed-horizon at every look, no gate: {_count_text(old.count('ship', arm), replicates)}"
    bound = most_successes_at(ALPHA, replicates)
    mode = "sequential, 20 looks" if scenario.sequential else "fixed, at the planned size"
    return Row(
        benchmark=f"simulation: {scenario.name} ({mode}, {scenario.subjects_per_arm:,}/arm): {what}",
        ours=_count_text(count, replicates),
        peer=peer,
        target=f"≤ 5% (binomial bound {bound / replicates:.2%})",
        passed=count <= bound,
    )


def _validation_rows(quick: bool) -> list[Row]:
    fixed_replicates, sequential_replicates = (2_000, 400) if quick else (20_000, 4_000)
    rows = []
    for sequential in (True, False):
        treatments = 2 if sequential else 6
        rows.append(_false_ship_row(aa_scenario(sequential=sequential, treatments=treatments),
                                    replicates=sequential_replicates if sequential else fixed_replicates,
                                    seed=21, arm=None, what="false ships"))
    # Fixed mode over 20 looks: nothing final before the planned size; what the old job said before it.
    scenario = aa_scenario(sequential=False)
    replicates = sequential_replicates // 4
    runs = scenario.run(replicates=replicates, seed=22, progress=_progress("A/A, fixed, 20 looks"))
    old = scenario.run(replicates=replicates, seed=22, fixed_at_every_look=True,
                       progress=_progress("A/A, fixed at every look"))
    early = runs.final_before_the_last_look()
    rows.append(Row(
        benchmark=f"simulation: {scenario.name} (fixed, 20 looks): final verdicts before the planned size",
        ours=f"{early} of {replicates:,}",
        peer=f"fixed-horizon at every look, no gate: ships at some look {_count_text(old.count('ship'), replicates)}",
        target="0",
        passed=early == 0 and bool((runs.final_looks == scenario.looks - 1).all()),
    ))
    for sequential in (False, True):
        replicates = sequential_replicates if sequential else fixed_replicates
        rows.append(_false_ship_row(guardrail_at_margin_scenario(sequential=sequential), replicates=replicates,
                                    seed=23, arm="arm-1", what="its arm ships"))
        rows.append(_false_ship_row(privacy_first_scenario(sequential=sequential, lossy_most_private=True),
                                    replicates=replicates, seed=24, arm="dp", what="dp ships"))
    for sequential in (False, True):
        for rule in ("superiority", "noninferiority", "privacy_first"):
            rows.append(_power_row(planner_scenario(rule, sequential=sequential),
                                   replicates=sequential_replicates if sequential else fixed_replicates, seed=25))
    return rows


def _power_row(scenario, *, replicates: int, seed: int) -> Row:
    runs = scenario.run(replicates=replicates, seed=seed, looks=None if scenario.sequential else 1,
                        progress=_progress(scenario.name))
    simulated = runs.rate("ship", scenario.shipped)
    planned = scenario.planned_power
    gap = simulated - planned
    error = math.sqrt(simulated * (1 - simulated) / replicates)
    mode = "sequential, 20 looks" if scenario.sequential else "fixed"
    mean_look = float(np.mean(runs.final_looks[runs.final_looks >= 0] + 1))
    return Row(
        benchmark=(f"simulation: planner's power, {scenario.name} ({mode}, {scenario.subjects_per_arm:,}/arm"
                   + (f"; final at look {mean_look:.1f} of 20 on average" if scenario.sequential else "") + ")"),
        ours=f"{simulated:.2%} ± {error:.2%} shipped {scenario.shipped}",
        peer=f"planned {planned:.2%}",
        ratio=f"{gap * 100:+.1f} points",
        target="≥ planned − 3 points (conservative)" if scenario.sequential else "planned ± 3 points",
        passed=gap >= -0.03 if scenario.sequential else abs(gap) <= 0.03,
    )


def run(quick: bool) -> list[Row]:
    return [*_decide_speed(quick), *_results_share(quick), *_validation_rows(quick)]
