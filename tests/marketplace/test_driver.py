"""The simulator's driver: it runs shoppers through the real services (``manage.py simulate``, recommendations)."""

import json
from datetime import timedelta

import numpy as np
import pytest
from django.core.management import call_command
from django.utils import timezone

from consent.models import ConsentEvent, Subject
from experiments.models import Exposure, OrderLine, OutcomeEvent, PrivacyTreatment
from marketplace.driver import simulate
from marketplace.experiment import experiment_setup
from tests.experiments.factories import UserFactory

END = timezone.now().replace(microsecond=0)


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
def test_the_simulator_builds_and_serves_recommendations():
    experiment = experiment_setup(key="sim-reco", owner=UserFactory(), start=END - timedelta(days=7))
    result = simulate(experiment=experiment, subjects=200, days=7, seed=8, end=END, progress=False, )
    assert result.recommendations.startswith("served")
    assert result.exposed == 200 and sum(result.by_arm.values()) == 200
    from recommender.models import ModelBuild

    assert ModelBuild.objects.filter(arm__experiment=experiment).exists()


PLACEBO_ARMS = (
    ("control", 1.0, True, {"name": "Popularity for everyone", "consent_prompt": "banner",
                            "personalization_level": "popularity", "sensitive_category_policy": "exclude",
                            "retention_days": 365}),
    ("full", 1.0, False, {"name": "Full personalization", "consent_prompt": "banner",
                          "personalization_level": "full", "sensitive_category_policy": "exclude",
                          "retention_days": 365}),
)


def _simulated(mode: str, key: str):
    experiment = experiment_setup(key=key, owner=UserFactory(), start=END - timedelta(days=7), arms=PLACEBO_ARMS,
                                  gmv_cap_percentile=None, salt=f"{key}-salt")
    result = simulate(experiment=experiment, subjects=1500, days=7, seed=3, end=END, namespace=key,
                      recommendations=mode, products=110, progress=False)
    return result


def _standard_error(result) -> float:
    """The noise of the true difference in mean recommendation-led GMV: the same shoppers under both arms."""
    exposed = result.arm_of >= 0
    difference = result.expected["full"]["gmv_induced"][exposed] - result.expected["control"]["gmv_induced"][exposed]
    return float(difference.std(ddof=1) / np.sqrt(exposed.sum()))


@pytest.mark.django_db
def test_a_full_arm_earns_more_gmv_than_popularity_through_the_lists_it_serves():
    served = _simulated("served", "placebo-served")
    effect = served.truth["effects"]["full"]["gmv"]["absolute"]
    assert effect > 3 * _standard_error(served) > 0, effect
    assert served.recommendations.startswith("served") and served.builds == 7
    # The truth's lists for the arms a shopper was not in come from offline scoring with each arm's model:
    # for the shoppers of the arm itself it gives the very lists the real serving path returned.
    assert set(served.agreement) == {"control", "full"}
    assert served.agreement == {"control": 1.0, "full": 1.0}, served.agreement


@pytest.mark.django_db
def test_under_the_placebo_the_true_gmv_difference_is_within_noise():
    """``recommendations="random"``: random items in every arm, so personalization earns nothing.

    The lists do not depend on the arm, so each shopper's expected outcomes are the same under
    both: the true difference is zero, not merely within noise.
    """
    placebo = _simulated("random", "placebo-random")
    effect = placebo.truth["effects"]["full"]["gmv"]["absolute"]
    assert abs(effect) <= 3 * _standard_error(placebo) and abs(effect) < 1e-6, effect
    assert placebo.recommendations == "random" and placebo.builds == 0 and placebo.sessions > 1000


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        (["--recommendations", "magic"], "--recommendations"),
        (["--subjects", "0"], "--subjects"),
        (["--days", "0"], "--days"),
        (["--days", "-3"], "--days"),
        (["--seed", "one"], "--seed"),
        (["--build-every", "weekly"], "--build-every"),
    ],
)
def test_bad_input_is_a_command_error_and_nothing_is_written(arguments, words):
    from django.core.management.base import CommandError

    from experiments.models import Experiment

    with pytest.raises(CommandError, match=words):
        call_command("simulate", "--experiment", "sim-bad", "--no-progress", *arguments)
    assert not Experiment.objects.exists() and not Exposure.objects.exists() and not OutcomeEvent.objects.exists()
