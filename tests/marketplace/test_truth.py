"""The platform recovers the simulator's known true effects.

Two complementary checks:

- **Calibration** (no database): over 40 seeds, the stats engine's 95% intervals
  on the simulator's draws cover the true effects about 95% of the time. This
  is what makes a single seeded run meaningful: the intervals are neither
  biased nor too narrow. (That the database computes the same sufficient
  statistics as pandas is tested in tests/experiments/metrics/test_pipeline.py.)
- **Recovery** (end to end): one large seeded simulation through the real
  services and the database, analysed by ``compute_results``; every true
  effect (3 arms × 7 metrics) lies within 4 standard errors of its estimate.
  The seed, the salt and the clock are fixed, so the run is reproducible, but
  no seed is picked: a correct pipeline passes on any seed but about one in
  750 (21 effects, each outside 4 standard errors with probability 6e-5),
  where a 95% interval on each would fail about every other seed. A biased
  pipeline misses by many standard errors, on every seed; the calibration test
  above is what checks the intervals' 95%.
"""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from experiments.results import compute_results
from experiments.stats import analyze
from marketplace.driver import simulate
from marketplace.experiment import DEMO_ARMS, experiment_setup
from marketplace.model import (
    ITEMS_PER_SESSION,
    arm_behaviour,
    decisions_draw,
    expected_values,
    session_outcomes_draw,
)
from marketplace.population import population_build
from marketplace.truth import TRUTH_METRICS, true_metrics
from tests.experiments.factories import UserFactory
from tests.marketplace.factories import small_catalog, stand_in_sessions

END = datetime(2025, 9, 1, tzinfo=UTC)  # fixed: the draws depend on the clock through the horizons
ARMS = [key for key, _, _, _ in DEMO_ARMS]
MAX_STANDARD_ERRORS = 4  # the recovery's tolerance: any seed passes but about one in 750


def _interval_covers(comparison: dict, true_effect: float) -> bool:
    low, high = comparison["absolute"]["ci"]
    return low <= true_effect <= high


@pytest.mark.slow  # Monte Carlo: 40 simulated experiments of 6,000 shoppers
def test_the_intervals_cover_the_true_effects_95_percent_of_the_time():
    names = {"converted": "conversion", "opt_out": "opt_out", "consent_rate": "consent_rate", "gmv": "gmv",
             "orders": "orders", "gmv/orders": "aov", "clicks/impressions": "ctr"}
    covered = []
    for seed in range(40):
        population = population_build(size=6000, seed=seed, start=END - timedelta(days=14), end=END,
                                      catalog=small_catalog(), namespace="c")
        rng = np.random.default_rng(seed + 1000)
        arm_of = rng.integers(0, len(ARMS), population.size)
        behaviours = [arm_behaviour(fields, population) for _, _, _, fields in DEMO_ARMS]
        draws = decisions_draw(population=population, arm_of=arm_of, behaviours=behaviours, rng=rng)
        catalog = small_catalog()
        shopper, shown = stand_in_sessions(population, catalog, draws.sessions, draws.grant & ~draws.withdraw, rng)
        outcomes = session_outcomes_draw(population=population, catalog=catalog, shopper=shopper, shown=shown, rng=rng)
        index = np.arange(population.size)
        gmv, pre = np.zeros(population.size), np.zeros(population.size)
        np.add.at(gmv, np.repeat(index, draws.order_counts), draws.order_values)
        np.add.at(gmv, shopper, (outcomes.purchases * catalog.price[shown]).sum(axis=1))
        np.add.at(pre, np.repeat(index, draws.history_counts), draws.history_values)
        orders = draws.order_counts + np.bincount(shopper, weights=outcomes.purchases.sum(axis=1), minlength=population.size)
        frame = pd.DataFrame({
            "arm": np.array(ARMS)[arm_of],
            "converted": (orders > 0).astype(int),
            "opt_out": (draws.grant & draws.withdraw).astype(int),  # an opt-out ends a grant
            "consent_rate": (draws.grant & ~draws.withdraw).astype(int),
            "gmv": gmv, "pre_gmv": pre, "orders": orders,
            "impressions": np.bincount(shopper, minlength=population.size) * ITEMS_PER_SESSION,
            "clicks": np.bincount(shopper, weights=outcomes.clicks.sum(axis=1), minlength=population.size),
        })
        report = analyze(
            frame, control="control", weights=dict.fromkeys(ARMS, 1),
            metrics={"converted": "proportion", "opt_out": "proportion", "consent_rate": "proportion", "gmv": "mean",
                     "orders": "mean", "gmv/orders": "ratio", "clicks/impressions": "ratio"},
            covariates={"gmv": "pre_gmv"},
        )
        truth = {}
        for k, (key, behaviour) in enumerate(zip(ARMS, behaviours, strict=True)):
            mine = arm_of[shopper] == k
            expected = expected_values(behaviour=behaviour, population=population, catalog=catalog,
                                       shopper=shopper[mine], shown=shown[mine])
            truth[key] = true_metrics(expected, arm_of == k, arm_of >= 0)
        for comparison in report["comparisons"]:
            metric = names[comparison["metric"]]
            covered.append(_interval_covers(comparison, truth[comparison["arm"]][metric] - truth["control"][metric]))
    assert len(covered) == 40 * 3 * 7
    # Binomial(840, 0.95): standard deviation 0.75 points; the band is ±3.5 of them.
    assert 0.924 <= np.mean(covered) <= 0.976, np.mean(covered)


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.timeout(1200)  # 8,000 shoppers through the real services and 14 daily build rounds
def test_a_large_seeded_simulation_recovers_every_true_effect():
    seed = 1
    experiment = experiment_setup(
        key="recovery", owner=UserFactory(), start=END - timedelta(days=14),
        gmv_cap_percentile=None,  # the true GMV effects are of uncapped GMV
        salt=f"recovery-{seed}",
    )
    result = simulate(
        experiment=experiment, subjects=8000, days=14, seed=seed, end=END, namespace="recovery",
        progress=False,  # the closed loop: daily builds, every session served through the real serving path
    )
    # The counterfactual's offline lists are the serving path's: for every arm's own shoppers, the very lists served.
    assert result.agreement == {arm: 1.0 for arm in ARMS}, result.agreement
    snapshot = compute_results(experiment=experiment, as_of=END + timedelta(hours=1), monitor=False)
    comparisons = {(c["arm"], c["metric"]): c for c in snapshot.data["report"]["comparisons"]}
    misses = []
    for arm, effects in result.truth["effects"].items():
        for metric in TRUTH_METRICS:
            comparison = comparisons[(arm, metric)]
            true_effect = effects[metric]["absolute"]
            z = (comparison["absolute"]["estimate"] - true_effect) / comparison["absolute"]["standard_error"]
            if not abs(z) <= MAX_STANDARD_ERRORS:
                misses.append(f"{arm}/{metric}: true {true_effect:+.4g}, estimate "
                              f"{comparison['absolute']['estimate']:+.4g}, z={z:+.2f}")
    assert len(comparisons) == 21
    assert not misses, misses
    # The truth is about the same shoppers the platform counted.
    assert snapshot.subjects == result.exposed == 8000
    assert {arm["key"]: arm["subjects"] for arm in snapshot.data["arms"]} == result.by_arm
