"""The behavioural model: its expected values are the expectation of its draws; the arms differ as intended."""

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from django.utils import timezone

from marketplace.experiment import DEMO_ARMS
from marketplace.model import ITEMS_PER_SESSION, arm_behaviour, expected_values, sample_outcomes
from marketplace.population import population_build
from marketplace.truth import true_metrics
from tests.marketplace.factories import small_catalog

END = timezone.now().replace(microsecond=0)


@pytest.mark.slow  # Monte Carlo over 200,000 shoppers per arm
@pytest.mark.parametrize("arm", [arm[0] for arm in DEMO_ARMS])
def test_expected_values_are_the_expectation_of_the_draws(arm):
    """Monte Carlo over 200,000 shoppers: every per-subject mean within 4.5 standard errors."""
    population = population_build(size=200_000, seed=5, start=END - timedelta(days=14), end=END, catalog=small_catalog(), namespace="mc")
    treatment = next(fields for key, _, _, fields in DEMO_ARMS if key == arm)
    behaviour = arm_behaviour(treatment, population)
    draws = sample_outcomes(population=population, arm_of=np.zeros(population.size, dtype=int), behaviours=[behaviour],
                            rng=np.random.default_rng(11))
    expected = expected_values(behaviour, population)
    gmv = np.zeros(population.size)
    np.add.at(gmv, np.repeat(np.arange(population.size), draws.order_counts), draws.order_values)
    clicks = np.zeros(population.size)
    np.add.at(clicks, np.repeat(np.arange(population.size), draws.sessions * ITEMS_PER_SESSION), draws.clicks)
    realised = {
        "converted": (draws.order_counts > 0).astype(float),
        "opted_out": (draws.grant & draws.withdraw).astype(float),  # an opt-out ends a grant
        "consented": (draws.grant & ~draws.withdraw).astype(float),
        "orders": draws.order_counts.astype(float),
        "gmv": gmv,
        "impressions": (draws.sessions * ITEMS_PER_SESSION).astype(float),
        "clicks": clicks,
    }
    for name, values in realised.items():
        standard_error = values.std(ddof=1) / np.sqrt(len(values)) + 1e-12
        assert abs(values.mean() - expected[name].mean()) < 4.5 * standard_error, name


def test_arms_differ_in_the_intended_directions():
    population = population_build(size=50_000, seed=2, start=END - timedelta(days=14), end=END, catalog=small_catalog(), namespace="d")
    truth = {key: true_metrics(arm_behaviour(fields, population), population) for key, _, _, fields in DEMO_ARMS}
    # Personalization earns GMV; privacy-first designs cost some and cut opt-outs.
    assert truth["control"]["gmv"] > truth["optin-cohort"]["gmv"] > truth["dp-popularity"]["gmv"]
    assert truth["control"]["opt_out"] > truth["no-sensitive"]["opt_out"] > truth["dp-popularity"]["opt_out"]
    assert truth["optin-cohort"]["consent_rate"] < truth["control"]["consent_rate"]
    assert truth["dp-popularity"]["consent_rate"] < 0.05
    assert truth["control"]["ctr"] > truth["dp-popularity"]["ctr"]


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
