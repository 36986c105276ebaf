"""Retention of experiment measurement data: exposures and their metric facts, by the daily purge."""

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from consent import tasks
from consent.services import consent_retention_purge
from experiments.metrics.pipeline import metric_statistics_compute
from experiments.models import Exposure, MetricFacts, MetricFactsState, ResultSnapshot
from experiments.results.snapshots import compute_results
from experiments.services.assignment import assignments_for_subject
from experiments.services.lifecycle import experiment_stop
from tests.consent.factories import raw_id
from tests.experiments.factories import running_experiment

pytestmark = pytest.mark.django_db


def _experiment_with_subjects(count=3):
    experiment = running_experiment(arms=2)
    experiment.started_at = timezone.now() - timedelta(days=30)
    experiment.save(update_fields=["started_at"])
    for _ in range(count):
        assignments_for_subject(subject_id=raw_id(), attributes={}, now=timezone.now() - timedelta(days=20))
    return experiment


def _ended(experiment, days_ago):
    if experiment.status != "stopped":
        experiment_stop(experiment=experiment)
        experiment.refresh_from_db()
    experiment.ended_at = timezone.now() - timedelta(days=days_ago)
    experiment.save(update_fields=["ended_at"])
    return experiment


def test_a_running_experiments_data_is_kept():
    experiment = _experiment_with_subjects()
    metric_statistics_compute(experiment=experiment)
    counts = consent_retention_purge(now=timezone.now() + timedelta(days=3650))
    assert counts["experiments.exposure"] == 0 and counts["experiments.metricfacts"] == 0
    assert Exposure.objects.filter(experiment=experiment).count() == 3
    assert MetricFacts.objects.filter(experiment=experiment).count() == 3


@override_settings(METRIC_FACTS_RETENTION_DAYS=30, EXPOSURE_RETENTION_DAYS=365)
def test_facts_go_first_exposures_later_results_stay():
    experiment = _experiment_with_subjects()
    compute_results(experiment=experiment, monitor=False)
    _ended(experiment, days_ago=31)
    counts = tasks.consent_retention_purge.delay().get()
    assert counts["experiments.metricfacts"] == 3 and counts["experiments.exposure"] == 0
    assert not MetricFacts.objects.filter(experiment=experiment).exists()
    # The facts' state is reset, so a later run rebuilds them from the raw data still kept.
    assert MetricFactsState.objects.get(experiment=experiment).cutoff is None
    assert metric_statistics_compute(experiment=experiment).refresh.kind == "rebuilt"
    assert Exposure.objects.filter(experiment=experiment).count() == 3

    MetricFacts.objects.filter(experiment=experiment).delete()
    _ended(experiment, days_ago=366)
    counts = consent_retention_purge()
    assert counts["experiments.exposure"] == 3
    assert not Exposure.objects.filter(experiment=experiment).exists()
    assert ResultSnapshot.objects.filter(experiment=experiment).exists()  # aggregates stay
    assert consent_retention_purge()["experiments.exposure"] == 0  # idempotent


@override_settings(METRIC_FACTS_RETENTION_DAYS=30, EXPOSURE_RETENTION_DAYS=90)
def test_the_periods_are_counted_from_the_end_of_the_experiment():
    recent = _ended(_experiment_with_subjects(), days_ago=10)
    old = _ended(_experiment_with_subjects(), days_ago=91)
    consent_retention_purge(batch_size=2)  # in batches
    assert Exposure.objects.filter(experiment=recent).count() == 3
    assert not Exposure.objects.filter(experiment=old).exists()
