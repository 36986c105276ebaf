"""The behavioural model: its expected values are the expectation of its draws; the arms differ as intended."""

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.utils import timezone

from marketplace.experiment import DEMO_ARMS
from marketplace.model import (
    ITEMS_PER_SESSION,
    arm_behaviour,
    click_probabilities,
    consent_expectations,
    decisions_draw,
    expected_values,
    session_outcomes_draw,
)
from marketplace.population import population_build
from tests.marketplace.factories import small_catalog, stand_in_sessions

END = timezone.now().replace(microsecond=0)


@pytest.mark.slow  # Monte Carlo over 200,000 shoppers per arm
@pytest.mark.parametrize("arm", [arm[0] for arm in DEMO_ARMS])
def test_expected_values_are_the_expectation_of_the_draws(arm):
    """Monte Carlo over 200,000 shoppers: every per-subject mean within 4.5 standard errors."""
    catalog = small_catalog()
    population = population_build(size=200_000, seed=5, start=END - timedelta(days=14), end=END, catalog=catalog, namespace="mc")
    treatment = next(fields for key, _, _, fields in DEMO_ARMS if key == arm)
    behaviour = arm_behaviour(treatment, population)
    rng = np.random.default_rng(11)
    draws = decisions_draw(population=population, arm_of=np.zeros(population.size, dtype=int), behaviours=[behaviour], rng=rng)
    shopper, shown = stand_in_sessions(population, catalog, draws.sessions, draws.grant & ~draws.withdraw, rng)
    outcomes = session_outcomes_draw(population=population, catalog=catalog, shopper=shopper, shown=shown, rng=rng)
    expected = expected_values(behaviour=behaviour, population=population, catalog=catalog, shopper=shopper, shown=shown)
    index = np.arange(population.size)
    gmv = np.zeros(population.size)
    np.add.at(gmv, np.repeat(index, draws.order_counts), draws.order_values)
    np.add.at(gmv, shopper, (outcomes.purchases * catalog.price[shown]).sum(axis=1))
    induced = np.bincount(shopper, weights=outcomes.purchases.sum(axis=1), minlength=population.size)
    realised = {
        "converted": ((draws.order_counts + induced) > 0).astype(float),
        "opted_out": (draws.grant & draws.withdraw).astype(float),  # an opt-out ends a grant
        "consented": (draws.grant & ~draws.withdraw).astype(float),
        "orders": draws.order_counts + induced,
        "gmv": gmv,
        "clicks": np.bincount(shopper, weights=outcomes.clicks.sum(axis=1), minlength=population.size),
    }
    for name, values in realised.items():
        standard_error = values.std(ddof=1) / np.sqrt(len(values)) + 1e-12
        assert abs(values.mean() - expected[name].mean()) < 4.5 * standard_error, name
    # Impressions are what was shown, not drawn.
    assert expected["impressions"].sum() == shown.size


def test_clicks_follow_taste_and_position():
    catalog = small_catalog()
    population = population_build(size=2_000, seed=2, start=END - timedelta(days=14), end=END, catalog=catalog, namespace="t")
    shopper = np.arange(population.size)
    favourite = np.array([catalog.items_of(int(c))[0] for c in population.favourites[:, 0]])
    least = np.array([catalog.items_of(int(np.argmin(row)))[0] for row in population.affinity])
    p_favourite = click_probabilities(population=population, catalog=catalog, shopper=shopper, shown=favourite[:, None])
    p_least = click_probabilities(population=population, catalog=catalog, shopper=shopper, shown=least[:, None])
    assert (p_favourite > p_least).all()
    same_item = np.repeat(favourite[:, None], ITEMS_PER_SESSION, axis=1)
    by_position = click_probabilities(population=population, catalog=catalog, shopper=shopper, shown=same_item)
    assert (np.diff(by_position, axis=1) <= 0).all() and (by_position[:, 0] > by_position[:, -1]).all()
    empty = click_probabilities(population=population, catalog=catalog, shopper=shopper[:3], shown=np.full((3, 2), -1))
    assert not empty.any()


def test_consent_responds_to_the_arms_as_intended():
    population = population_build(size=50_000, seed=2, start=END - timedelta(days=14), end=END, catalog=small_catalog(), namespace="d")
    consent = {key: consent_expectations(arm_behaviour(fields, population)) for key, _, _, fields in DEMO_ARMS}
    mean = {key: {name: float(values.mean()) for name, values in e.items()} for key, e in consent.items()}
    # Privacy-first designs cut opt-outs; an opt-in modal is granted less than a banner.
    assert mean["control"]["opted_out"] > mean["no-sensitive"]["opted_out"] > mean["dp-popularity"]["opted_out"]
    assert mean["optin-cohort"]["consented"] < mean["control"]["consented"]
    assert mean["dp-popularity"]["consented"] < 0.05


def test_the_model_and_the_generated_data_sets_are_pure_numpy():
    """The benchmarks and notebooks import them without Django settings."""
    code = (
        "import sys, marketplace.model, marketplace.population, marketplace.catalog, marketplace.datasets; "
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework', 'celery')); "
        "print(loaded); sys.exit(bool(loaded))"
    )
    root = Path(__file__).resolve().parents[2]
    run = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                         env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)})
    assert run.returncode == 0, run.stdout + run.stderr
