"""Tests of the recommendation attribution: computed by the pipeline, stored in the snapshot, read by the dashboard."""

import pytest

from experiments.dashboard.selectors import recommendation_gmv_shares
from experiments.metrics.attribution import recommendation_gmv_attribution
from experiments.models import ResultSnapshot
from experiments.results.snapshots import compute_results
from tests.experiments.factories import UserFactory
from tests.experiments.pipeline_kit import populate
from tests.experiments.results_kit import ARMS, make_experiment, record_recommendation_purchases

pytestmark = pytest.mark.django_db


def test_the_snapshot_carries_the_attribution_and_an_older_snapshot_gets_it_live(django_assert_num_queries):
    experiment = make_experiment(UserFactory(), planned_subjects_per_arm=400)
    populate(experiment, ARMS)
    record_recommendation_purchases()
    snapshot = compute_results(experiment=experiment, monitor=False)
    stored = snapshot.data["recommendation_gmv"]
    # arm-1: 200,000 of 350,000 bought after a click on the same product; the control has no order lines.
    assert stored == {"arm-1": {"attributed": 200_000.0, "total": 350_000.0}}
    assert stored == recommendation_gmv_attribution(
        experiment_id=experiment.pk, phase=snapshot.phase,
        window_start=snapshot.window_start, window_end=snapshot.window_end,
    )
    shares = recommendation_gmv_shares(snapshot=snapshot)
    assert shares["arm-1"].attributed == 200_000 and shares["arm-1"].share == pytest.approx(200_000 / 350_000)
    # A run stored before the pipeline computed it: the dashboard computes it over that run's window.
    older = snapshot.data.copy()
    older.pop("recommendation_gmv")
    ResultSnapshot.objects.filter(pk=snapshot.pk).update(data=older)
    snapshot.refresh_from_db()
    assert recommendation_gmv_shares(snapshot=snapshot) == shares
    # Computed once per stored run: the next page view reads it from the cache.
    with django_assert_num_queries(0):
        assert recommendation_gmv_shares(snapshot=snapshot) == shares


def test_a_subject_who_restricted_processing_is_left_out_of_the_attribution():
    from consent import services as consent_services

    experiment = make_experiment(UserFactory(), planned_subjects_per_arm=400)
    populate(experiment, ARMS)
    record_recommendation_purchases()
    # Subject 0 bought the recommended product (200,000 attributed of its 300,000); it restricts processing.
    consent_services.dsr_file(type="restriction", subject_id="p-arm-1-0")
    snapshot = compute_results(experiment=experiment, monitor=False)
    assert snapshot.data["recommendation_gmv"] == {"arm-1": {"attributed": 0.0, "total": 50_000.0}}
