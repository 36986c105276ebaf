"""The monitor: guardrail pauses, sample-ratio alerts, runs whose chain was lost."""

from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.models import Experiment, ExperimentAlert, Guardrail
from experiments.results.monitor import experiment_monitor, experiments_monitor_pending
from experiments.results.snapshots import compute_results
from tests.experiments.factories import started_experiment
from tests.experiments.pipeline_kit import populate

pytestmark = pytest.mark.django_db


def test_a_breached_guardrail_pauses_the_experiment_and_records_why():
    experiment = started_experiment(arms=2)
    Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=0.01)
    populate(experiment, {"control": {"n": 400, "opt_out": 0.02}, "arm-1": {"n": 400, "opt_out": 0.25}})
    snapshot = compute_results(experiment=experiment, monitor=False)
    outcome = experiment_monitor(snapshot=snapshot)
    assert outcome["paused"] is True
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.PAUSED
    alert = ExperimentAlert.objects.get(kind=ExperimentAlert.Kind.GUARDRAIL)
    assert (alert.arm, alert.metric, alert.action) == ("arm-1", "opt_out", "paused")
    assert "Opt-out rate in arm 'arm-1'" in alert.message and "always-valid" in alert.message
    assert alert.details["sequential"]["reject"] is True
    # Acting twice on the same run changes nothing.
    assert experiment_monitor(snapshot=snapshot)["skipped"] == "already monitored"
    assert ExperimentAlert.objects.count() == 1


def test_a_guardrail_within_its_margin_does_not_pause():
    experiment = started_experiment(arms=2)
    Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=0.05)
    populate(experiment, {"control": {"n": 400, "opt_out": 0.05}, "arm-1": {"n": 400, "opt_out": 0.06}})
    snapshot = compute_results(experiment=experiment, monitor=False)
    assert experiment_monitor(snapshot=snapshot)["paused"] is False
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.RUNNING
    assert not ExperimentAlert.objects.exists()


def test_sample_ratio_mismatch_raises_one_alert():
    experiment = started_experiment(arms=2)
    populate(experiment, {"control": {"n": 500, "conversion": 0.1}, "arm-1": {"n": 380, "conversion": 0.1}})
    first = compute_results(experiment=experiment, as_of=timezone.now(), monitor=False)
    assert first.srm_flag is True
    experiment_monitor(snapshot=first)
    second = compute_results(experiment=experiment, as_of=timezone.now() + timedelta(minutes=15), monitor=False)
    experiment_monitor(snapshot=second)
    alert = ExperimentAlert.objects.get()
    assert alert.kind == "srm" and alert.action == "" and "Sample-ratio mismatch" in alert.message
    assert first.data["decision"]["outcome"] == "invalid"
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.RUNNING  # an alert, not a pause


def test_monitor_pending_catches_runs_whose_chain_was_lost():
    experiment = started_experiment(arms=2)
    populate(experiment, {"control": {"n": 500, "conversion": 0.1}, "arm-1": {"n": 380, "conversion": 0.1}})
    compute_results(experiment=experiment, monitor=False)
    assert len(experiments_monitor_pending()) == 1
    assert ExperimentAlert.objects.filter(kind="srm").count() == 1
    assert experiments_monitor_pending() == []
