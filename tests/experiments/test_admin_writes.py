"""The admin writes arms and guardrails through the design services, and never deletes a record."""

from unittest import mock

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError

from experiments import services
from experiments.models import (
    Arm,
    ExperimentAlert,
    Exposure,
    Guardrail,
    OutcomeEvent,
    ResultSnapshot,
)
from tests.experiments.factories import ExperimentFactory, TreatmentFactory, running_experiment
from tests.experiments.test_admin_forms import _change_data, experiment_form_data

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/experiments/experiment/"


def _spy(name: str):
    """Patch ``experiments.services.<name>`` with a mock that still runs the service."""
    return mock.patch(f"experiments.services.{name}", wraps=getattr(services, name))


# --- arms and guardrails through the services ------------------------------------------------


def test_arms_and_guardrails_added_in_the_admin_are_created_by_the_services(staff_client):
    data = experiment_form_data(
        [TreatmentFactory(), TreatmentFactory()],
        **{"guardrails-TOTAL_FORMS": 1, "guardrails-0-metric": "opt_out", "guardrails-0-margin": 0.005},
    )
    with _spy("arm_create") as arm_create, _spy("guardrail_create") as guardrail_create:
        response = staff_client.post(f"{CHANGELIST}add/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    assert sorted(call.kwargs["key"] for call in arm_create.call_args_list) == ["arm-1", "control"]
    assert guardrail_create.call_count == 1 and guardrail_create.call_args.kwargs["margin"] == 0.005


def test_an_arm_edited_in_the_admin_is_changed_by_arm_update(staff_client):
    experiment = ExperimentFactory()
    data = _change_data(staff_client, experiment, **{"arms-1-weight": 3})
    with _spy("arm_update") as arm_update:
        response = staff_client.post(f"{CHANGELIST}{experiment.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert arm_update.call_count == 1 and arm_update.call_args.kwargs["weight"] == 3
    assert experiment.arms.order_by("id")[1].weight == 3


def test_moving_the_control_in_the_admin_goes_through_arm_update(staff_client):
    experiment = ExperimentFactory()
    data = _change_data(staff_client, experiment, **{"arms-1-is_control": "on"})
    del data["arms-0-is_control"]
    with _spy("arm_update") as arm_update:
        response = staff_client.post(f"{CHANGELIST}{experiment.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert arm_update.call_count == 2
    assert list(experiment.arms.filter(is_control=True).values_list("key", flat=True)) == ["arm-1"]


def test_a_guardrail_edited_and_deleted_in_the_admin_goes_through_the_services(staff_client):
    experiment = ExperimentFactory()
    guardrail = services.guardrail_create(experiment=experiment, metric="opt_out", margin=0.01)
    data = _change_data(staff_client, experiment, **{"guardrails-0-margin": 0.02})
    with _spy("guardrail_update") as guardrail_update:
        response = staff_client.post(f"{CHANGELIST}{experiment.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert guardrail_update.call_count == 1
    guardrail.refresh_from_db()
    assert guardrail.margin == 0.02
    data = _change_data(staff_client, experiment, **{"guardrails-0-DELETE": "on"})
    with _spy("guardrail_delete") as guardrail_delete:
        response = staff_client.post(f"{CHANGELIST}{experiment.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert guardrail_delete.call_count == 1 and not Guardrail.objects.filter(experiment=experiment).exists()


def test_an_arm_deleted_in_the_admin_goes_through_arm_delete(staff_client):
    experiment = ExperimentFactory(arms=3)
    data = _change_data(staff_client, experiment, **{"arms-2-DELETE": "on"})
    with _spy("arm_delete") as arm_delete:
        response = staff_client.post(f"{CHANGELIST}{experiment.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert arm_delete.call_count == 1 and experiment.arms.count() == 2


# --- the update services themselves ----------------------------------------------------------


def test_arm_update_moves_the_control_and_refuses_a_started_experiment():
    experiment = ExperimentFactory()
    control, treatment_arm = experiment.arms.order_by("id")
    services.arm_update(arm=treatment_arm, key=treatment_arm.key, treatment=treatment_arm.treatment,
                        weight=2.0, is_control=True)
    assert list(experiment.arms.filter(is_control=True).values_list("pk", flat=True)) == [treatment_arm.pk]
    started = running_experiment()
    arm = started.arms.first()
    with pytest.raises(ValidationError, match="can be changed only while"):
        services.arm_update(arm=arm, key=arm.key, treatment=arm.treatment, weight=5.0, is_control=arm.is_control)
    with pytest.raises(ValidationError, match="can be removed only while"):
        services.arm_delete(arm=arm)
    assert Arm.objects.get(pk=arm.pk).weight != 5.0


def test_guardrail_update_validates_and_refuses_a_started_experiment():
    experiment = ExperimentFactory()
    guardrail = services.guardrail_create(experiment=experiment, metric="opt_out", margin=0.01)
    with pytest.raises(ValidationError):
        services.guardrail_update(guardrail=guardrail, metric="opt_out", margin=0)
    started = running_experiment()
    stored = Guardrail.objects.create(experiment=started, metric="opt_out", margin=0.01)
    with pytest.raises(ValidationError, match="can be changed only while"):
        services.guardrail_update(guardrail=stored, metric="opt_out", margin=0.02)
    with pytest.raises(ValidationError, match="can be removed only while"):
        services.guardrail_delete(guardrail=stored)
    assert Guardrail.objects.get(pk=stored.pk).margin == 0.01


# --- records are never deleted in the admin --------------------------------------------------


@pytest.mark.parametrize("model", [Exposure, OutcomeEvent, ResultSnapshot, ExperimentAlert])
def test_append_only_records_cannot_be_deleted_in_the_admin(rf, staff_client, model):
    model_admin = admin.site._registry[model]
    request = rf.get("/admin/")
    request.user = get_user_model().objects.get(username="pm")
    assert request.user.is_superuser  # not even a superuser
    assert model_admin.has_delete_permission(request) is False
    assert model_admin.has_delete_permission(request, obj=model()) is False
    assert "delete_selected" not in model_admin.get_actions(request)
