"""Lifecycle, frozen configuration, layers, holdout and the schedule, through the services."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from experiments import services
from experiments.models import Arm, Experiment, Holdout
from tests.experiments.factories import (
    ExperimentFactory,
    TreatmentFactory,
    override_approved,
    running_experiment,
)

pytestmark = pytest.mark.django_db
Status = Experiment.Status


def test_full_lifecycle():
    experiment = ExperimentFactory()
    for action, status in [
        ("start", Status.RUNNING),
        ("pause", Status.PAUSED),
        ("resume", Status.RUNNING),
        ("stop", Status.STOPPED),
        ("conclude", Status.CONCLUDED),
    ]:
        experiment = services.experiment_transition(experiment=experiment, action=action)
        assert experiment.status == status
        assert Experiment.objects.get(pk=experiment.pk).status == status
    assert experiment.started_at is not None and experiment.ended_at is not None


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (Status.DRAFT, "pause"),
        (Status.DRAFT, "conclude"),
        (Status.RUNNING, "start"),
        (Status.RUNNING, "conclude"),
        (Status.PAUSED, "pause"),
        (Status.STOPPED, "resume"),
        (Status.CONCLUDED, "start"),
        (Status.CONCLUDED, "stop"),
    ],
)
def test_illegal_transitions_are_refused(status, action):
    experiment = ExperimentFactory(status=status)
    with pytest.raises(ValidationError, match=f"Cannot {action}"):
        services.experiment_transition(experiment=experiment, action=action)
    assert Experiment.objects.get(pk=experiment.pk).status == status


def test_start_needs_two_arms():
    experiment = ExperimentFactory(arms=0)
    Arm.objects.create(experiment=experiment, key="control", treatment=TreatmentFactory(), is_control=True)
    with pytest.raises(ValidationError, match="at least two arms"):
        services.experiment_start(experiment=experiment)


def test_start_needs_exactly_one_control():
    experiment = ExperimentFactory(arms=0)
    for key in ("a", "b"):
        Arm.objects.create(experiment=experiment, key=key, treatment=TreatmentFactory())
    with pytest.raises(ValidationError, match="exactly one control"):
        services.experiment_start(experiment=experiment)


def test_database_refuses_two_controls_and_non_positive_weights():
    experiment = ExperimentFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Arm.objects.create(experiment=experiment, key="second", treatment=TreatmentFactory(), is_control=True)
    with pytest.raises(IntegrityError), transaction.atomic():
        Arm.objects.create(experiment=experiment, key="zero", treatment=TreatmentFactory(), weight=0)


def test_frozen_fields_cannot_change_once_running():
    experiment = running_experiment()
    for field, value in [("salt", "new"), ("layer_start", 0.5), ("targeting", {"platform": ["ios"]})]:
        setattr(experiment, field, value)
        with pytest.raises(ValidationError) as excinfo:
            services.experiment_save(experiment=experiment, changed=[field])
        assert field in excinfo.value.message_dict
        experiment.refresh_from_db()


def test_draft_fields_can_change():
    experiment = ExperimentFactory()
    experiment.salt = "fresh"
    services.experiment_save(experiment=experiment, changed=["salt"])
    assert Experiment.objects.get(pk=experiment.pk).salt == "fresh"


def test_coverage_only_grows_while_running():
    experiment = running_experiment(coverage=0.5)
    services.experiment_set_coverage(experiment=experiment, coverage=0.8)
    assert Experiment.objects.get(pk=experiment.pk).coverage == 0.8
    with pytest.raises(ValidationError, match="only grow"):
        services.experiment_set_coverage(experiment=experiment, coverage=0.3)
    assert Experiment.objects.get(pk=experiment.pk).coverage == 0.8


def test_overlapping_layer_ranges_cannot_run_together():
    running_experiment(layer_start=0.0, layer_end=0.5)
    clash = ExperimentFactory(layer_start=0.4, layer_end=0.9)
    with pytest.raises(ValidationError, match="overlaps"):
        services.experiment_start(experiment=clash)
    beside = ExperimentFactory(layer_start=0.5, layer_end=1.0)
    assert services.experiment_start(experiment=beside).status == Status.RUNNING


def test_new_phase_changes_weights_and_salt_only_while_paused():
    experiment = running_experiment()
    with pytest.raises(ValidationError, match="paused"):
        services.experiment_new_phase(experiment=experiment, weights={"control": 3})
    services.experiment_pause(experiment=experiment)
    old_salt = experiment.salt
    experiment = services.experiment_new_phase(experiment=experiment, weights={"control": 3})
    assert experiment.phase == 2 and experiment.salt != old_salt
    assert Arm.objects.get(experiment=experiment, key="control").weight == 3
    with pytest.raises(ValidationError, match="Unknown arms"):
        services.experiment_new_phase(experiment=experiment, weights={"nope": 1})


def test_holdout_share_is_frozen_while_experiments_run():
    services.holdout_set_share(share=0.1)
    experiment = running_experiment()
    with pytest.raises(ValidationError, match="no experiment is running"):
        services.holdout_set_share(share=0.2)
    assert Holdout.objects.get().share == 0.1
    services.experiment_stop(experiment=experiment)
    assert services.holdout_set_share(share=0.2).share == 0.2


def test_schedule_starts_and_stops_on_time():
    now = timezone.now()
    due = ExperimentFactory(scheduled_start=now - timedelta(minutes=1), scheduled_end=now + timedelta(days=7))
    later = ExperimentFactory(scheduled_start=now + timedelta(hours=1), layer_start=0.5, layer_end=0.6)
    result = services.experiments_apply_schedule(now=now)
    assert result["started"] == [due.key]
    assert Experiment.objects.get(pk=later.pk).status == Status.DRAFT
    # Idempotent: a second tick changes nothing.
    assert services.experiments_apply_schedule(now=now) == {"started": [], "stopped": [], "failed": []}
    result = services.experiments_apply_schedule(now=now + timedelta(days=8))
    assert due.key in result["stopped"]
    assert Experiment.objects.get(pk=due.pk).status == Status.STOPPED


def test_schedule_leaves_an_invalid_experiment_in_draft():
    experiment = ExperimentFactory(arms=0, scheduled_start=timezone.now() - timedelta(minutes=1))
    result = services.experiments_apply_schedule()
    assert result["failed"] == [experiment.key]
    assert Experiment.objects.get(pk=experiment.pk).status == Status.DRAFT


def test_a_treatment_with_a_compliance_error_starts_only_with_an_override_reason():
    experiment = ExperimentFactory()
    arm = experiment.arms.exclude(is_control=True).first()
    # Pre-ticked personalization consent is not valid consent (UU PDP Art. 22, GDPR Recital 32).
    arm.treatment.default_personalization_consent = True
    arm.treatment.save()
    with pytest.raises(ValidationError) as excinfo:
        services.experiment_start(experiment=experiment)
    assert "compliance_override_reason" in excinfo.value.message_dict
    assert arm.key in str(excinfo.value)
    assert Experiment.objects.get(pk=experiment.pk).status == Status.DRAFT
    experiment.compliance_override_reason = "Legal approved a time-boxed test; DPO ticket 42."
    experiment.save()
    # A reason alone is not enough: a data protection officer approves it.
    with pytest.raises(ValidationError, match="awaits a data protection officer"):
        services.experiment_start(experiment=experiment)
    experiment = override_approved(experiment)
    assert services.experiment_start(experiment=experiment).status == Status.RUNNING
