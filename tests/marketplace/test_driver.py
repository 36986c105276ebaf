"""The simulator: its truth is the expectation of its draws; it drives the real services; the platform recovers it."""

import json
from datetime import timedelta

import numpy as np
import pytest
from django.core.management import call_command
from django.utils import timezone

from consent.models import ConsentEvent, Subject
from experiments.models import Exposure, OrderLine, OutcomeEvent, PrivacyTreatment
from marketplace.driver import (
    CATEGORIES,
    DEMO_ARMS,
    ITEMS_PER_SESSION,
    Catalog,
    arm_behaviour,
    expected_values,
    population_build,
    sample_outcomes,
    simulate,
    true_metrics,
)

END = timezone.now().replace(microsecond=0)


def _catalog() -> Catalog:
    return Catalog(
        skus=tuple(f"SIM-{i:05d}" for i in range(44)),
        item_category=np.arange(44) % len(CATEGORIES),
        category_keys=tuple(key for key, _, _ in CATEGORIES),
        category_sensitive=np.array([flag for _, _, flag in CATEGORIES]),
        popularity=np.ones(44),
    )


@pytest.mark.parametrize("arm", [arm[0] for arm in DEMO_ARMS])
def test_expected_values_are_the_expectation_of_the_draws(arm):
    """Monte Carlo over 200,000 shoppers: every per-subject mean within 4.5 standard errors."""
    population = population_build(size=200_000, seed=5, start=END - timedelta(days=14), end=END, catalog=_catalog(), namespace="mc")
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
    population = population_build(size=50_000, seed=2, start=END - timedelta(days=14), end=END, catalog=_catalog(), namespace="d")
    truth = {key: true_metrics(arm_behaviour(fields, population), population) for key, _, _, fields in DEMO_ARMS}
    # Personalization earns GMV; privacy-first designs cost some and cut opt-outs.
    assert truth["control"]["gmv"] > truth["optin-cohort"]["gmv"] > truth["dp-popularity"]["gmv"]
    assert truth["control"]["opt_out"] > truth["no-sensitive"]["opt_out"] > truth["dp-popularity"]["opt_out"]
    assert truth["optin-cohort"]["consent_rate"] < truth["control"]["consent_rate"]
    assert truth["dp-popularity"]["consent_rate"] < 0.05
    assert truth["control"]["ctr"] > truth["dp-popularity"]["ctr"]


@pytest.mark.django_db
def test_the_simulator_drives_the_real_services(tmp_path):
    truth_path = tmp_path / "truth.json"
    call_command(
        "simulate", "--experiment", "sim-small", "--subjects", "300", "--seed", "4", "--days", "7",
        "--truth", str(truth_path), "--no-progress", "--no-recommendations",
    )
    exposures = Exposure.objects.filter(experiment__key="sim-small")
    assert exposures.count() == 300 == Subject.objects.count()
    # Arrivals are spread over the week, each exposure at its arrival time.
    first, last = exposures.order_by("first_exposed_at").values_list("first_exposed_at", flat=True)[:: 299]
    assert last - first > timedelta(days=5)
    ledger = ConsentEvent.objects.filter(source_experiment="sim-small")
    assert ledger.filter(action="grant").exists() and ledger.exclude(source_arm="").count() == ledger.count()
    for event in ledger.select_related("subject")[:50]:
        assert event.recorded_at >= event.subject.exposures.get().first_exposed_at
    orders = OutcomeEvent.objects.filter(type="order")
    assert orders.exists() and OutcomeEvent.objects.filter(type="rec_impression").exists()
    assert OrderLine.objects.filter(category__in=["health", "financial-products"]).exists()
    assert OrderLine.objects.values("event_id").distinct().count() == orders.count()
    truth = json.loads(truth_path.read_text())
    assert truth["subjects_exposed"] == 300 and truth["control"] == "control"
    assert set(truth["effects"]) == {"optin-cohort", "dp-popularity", "no-sensitive"}
    assert set(truth["effects"]["dp-popularity"]) == {"conversion", "opt_out", "consent_rate", "gmv", "orders", "aov", "ctr"}
    assert PrivacyTreatment.objects.filter(personalization_level="dp_popularity").exists()


@pytest.mark.django_db
def test_the_simulator_serves_recommendations_when_the_recommender_is_installed():
    from marketplace.driver import experiment_setup
    from tests.experiments.factories import UserFactory

    experiment = experiment_setup(key="sim-reco", owner=UserFactory(), start=END - timedelta(days=7))
    result = simulate(experiment=experiment, subjects=200, days=7, seed=8, end=END, progress=False, serve_limit=50)
    assert result.recommendations.startswith("served")
    assert result.exposed == 200 and sum(result.by_arm.values()) == 200
    from recommender.models import ModelBuild

    assert ModelBuild.objects.filter(arm__experiment=experiment).exists()
