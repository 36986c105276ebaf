"""The admin's dangerous operations: only drafts are deleted, the analysis freezes once started,
Start asks first (and leaves a scheduled experiment to the scheduler), lifecycle buttons, a new phase."""

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from experiments import services
from experiments.models import Arm, Experiment, Guardrail
from tests.experiments.factories import ExperimentFactory, running_experiment
from tests.experiments.test_admin_permissions import staff

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/experiments/experiment/"


def _page(client, url) -> str:
    response = client.get(url, follow=True)
    assert response.status_code == 200
    return response.content.decode()


def _history(experiment) -> list[str]:
    return list(LogEntry.objects.filter(object_id=str(experiment.pk)).values_list("change_message", flat=True))


# --- deleting -----------------------------------------------------------------------------------------


def test_a_started_experiment_cannot_be_deleted_and_says_why(staff_client):
    experiment = running_experiment()
    page = _page(staff_client, f"{CHANGELIST}{experiment.pk}/change/")
    assert f"{CHANGELIST}{experiment.pk}/delete/" not in page
    assert "Only draft experiments can be deleted" in page and "stop it instead" in page
    response = staff_client.post(f"{CHANGELIST}{experiment.pk}/delete/", {"post": "yes"}, follow=True)
    assert "Only draft experiments can be deleted" in response.content.decode()
    assert Experiment.objects.filter(pk=experiment.pk).exists()


def test_bulk_delete_refuses_started_experiments_and_deletes_drafts(staff_client):
    draft, running = ExperimentFactory(), running_experiment(layer_start=0.0, layer_end=0.5)
    response = staff_client.post(CHANGELIST, {"action": "delete_selected", "_selected_action": [draft.pk, running.pk],
                                              "post": "yes"}, follow=True)
    assert f"not {running.key} (running)" in response.content.decode()
    assert Experiment.objects.count() == 2
    response = staff_client.post(CHANGELIST, {"action": "delete_selected", "_selected_action": [draft.pk],
                                              "post": "yes"}, follow=True)
    assert response.status_code == 200
    assert list(Experiment.objects.values_list("pk", flat=True)) == [running.pk]


# --- the analysis freezes ----------------------------------------------------------------------------------


def test_the_analysis_is_read_only_once_started(staff_client):
    experiment = running_experiment()
    Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=0.005)
    page = _page(staff_client, f"{CHANGELIST}{experiment.pk}/change/")
    for field in ("primary_metric", "alpha", "decision_rule", "decision_margin", "testing_mode", "privacy_order",
                  "planned_subjects_per_arm"):
        assert f'name="{field}"' not in page, field
    assert 'name="guardrails-0-margin"' not in page and 'name="guardrails-0-metric"' not in page
    assert "pause it and start a new phase" in page
    assert 'name="coverage"' in page  # coverage may still grow


def test_the_service_refuses_an_analysis_change_once_started():
    experiment = running_experiment()
    experiment.alpha = 0.01
    experiment.primary_metric = "conversion"
    with pytest.raises(ValidationError) as caught:
        services.experiment_save(experiment=experiment, changed=["alpha", "primary_metric"])
    assert set(caught.value.message_dict) == {"alpha", "primary_metric"}
    assert "new phase" in caught.value.message_dict["alpha"][0]
    assert Experiment.objects.get(pk=experiment.pk).alpha == 0.05
    experiment.refresh_from_db()
    experiment.plan_daily_subjects, experiment.plan_baseline = 1000, 0.1
    with pytest.raises(ValidationError, match="new phase"):
        services.experiment_plan_apply(experiment=experiment)


# --- starting -------------------------------------------------------------------------------------------


def test_start_asks_first_with_the_compliance_review_and_the_plan(staff_client):
    experiment = ExperimentFactory(plan_daily_subjects=2000, plan_baseline=50000, plan_standard_deviation=80000,
                                   plan_minimum_effect=0.05)
    treatment = experiment.arms.get(key="arm-1").treatment
    treatment.default_personalization_consent = True  # pre-ticked consent: a compliance error
    treatment.save()
    change = _page(staff_client, f"{CHANGELIST}{experiment.pk}/change/")
    start_url = reverse("admin:experiments_experiment_start", args=[experiment.pk])
    assert start_url in change
    page = _page(staff_client, start_url)
    assert "Compliance review" in page and "ERROR" in page and "Art. 22" in page
    assert "subjects per arm" in page  # the plan
    assert "It cannot start yet" in page and "override" in page
    assert 'value="start"' not in page  # nothing to confirm
    treatment.default_personalization_consent = False
    treatment.save()
    page = _page(staff_client, start_url)
    assert 'name="confirm" value="start"' in page and "It cannot start yet" not in page
    assert Experiment.objects.get(pk=experiment.pk).status == "draft"  # asking started nothing
    staff_client.post(start_url, {"confirm": "start"})
    assert Experiment.objects.get(pk=experiment.pk).status == "running"
    assert "Lifecycle: start" in _history(experiment)


def test_the_start_action_asks_first_too(staff_client):
    experiment = ExperimentFactory()
    response = staff_client.post(CHANGELIST, {"action": "action_start", "_selected_action": [experiment.pk]})
    assert response.status_code == 200 and b"Compliance review" in response.content
    assert Experiment.objects.get(pk=experiment.pk).status == "draft"


def test_start_on_a_scheduled_experiment_keeps_the_schedule_unless_told(staff_client):
    later = timezone.now() + timedelta(days=2)
    experiment = ExperimentFactory(scheduled_start=later)
    start_url = reverse("admin:experiments_experiment_start", args=[experiment.pk])
    page = _page(staff_client, start_url)
    assert "Scheduled to start at" in page and "Keep the schedule" in page and 'value="start_now"' in page
    response = staff_client.post(start_url, {"confirm": "schedule"}, follow=True)
    assert "the scheduler starts it at" in response.content.decode()
    stored = Experiment.objects.get(pk=experiment.pk)
    assert stored.status == "draft" and stored.scheduled_start == later
    staff_client.post(start_url, {"confirm": "start_now"})
    stored = Experiment.objects.get(pk=experiment.pk)
    assert stored.status == "running" and stored.scheduled_start is None


def test_the_service_does_not_start_a_scheduled_experiment_early():
    experiment = ExperimentFactory(scheduled_start=timezone.now() + timedelta(hours=1))
    with pytest.raises(ValidationError) as caught:
        services.experiment_start(experiment=experiment)
    assert "scheduled to start at" in caught.value.message_dict["scheduled_start"][0]
    assert Experiment.objects.get(pk=experiment.pk).status == "draft"
    # The scheduler starts it at its time.
    assert services.experiments_apply_schedule(now=timezone.now() + timedelta(hours=2))["started"] == [experiment.key]


# --- buttons on the experiment's page --------------------------------------------------------------------


def test_lifecycle_buttons_on_the_change_page(staff_client):
    experiment = running_experiment()
    url = f"{CHANGELIST}{experiment.pk}/change/"
    page = _page(staff_client, url)
    pause = reverse("admin:experiments_experiment_lifecycle", args=[experiment.pk, "pause"])
    stop = reverse("admin:experiments_experiment_lifecycle", args=[experiment.pk, "stop"])
    assert f'action="{pause}"' in page and f'action="{stop}"' in page
    assert reverse("dashboard:experiment-detail", args=[experiment.key]) in page
    staff_client.post(pause)
    assert Experiment.objects.get(pk=experiment.pk).status == "paused"
    page = _page(staff_client, url)
    assert reverse("admin:experiments_experiment_new_phase", args=[experiment.pk]) in page
    assert "Resume" in page
    staff_client.get(stop)  # a GET changes nothing
    assert Experiment.objects.get(pk=experiment.pk).status == "paused"
    staff_client.post(stop)
    assert Experiment.objects.get(pk=experiment.pk).status == "stopped"
    assert {"Lifecycle: pause", "Lifecycle: stop"} <= set(_history(experiment))


def test_lifecycle_buttons_need_the_run_permission(client):
    experiment = running_experiment()
    client.force_login(staff())
    page = _page(client, f"{CHANGELIST}{experiment.pk}/change/")
    pause = reverse("admin:experiments_experiment_lifecycle", args=[experiment.pk, "pause"])
    assert pause not in page
    assert client.post(pause).status_code == 403
    assert client.get(reverse("admin:experiments_experiment_start", args=[experiment.pk])).status_code == 403
    assert Experiment.objects.get(pk=experiment.pk).status == "running"


# --- a new phase ------------------------------------------------------------------------------------------


def _new_phase_data(client, experiment, **overrides) -> dict:
    form = client.get(reverse("admin:experiments_experiment_new_phase", args=[experiment.pk])).context["form"]
    data = {}
    for name in form.fields:
        value = form[name].value()
        if value is not None:
            data[name] = value
    data.update(overrides)
    return data


def test_a_new_phase_from_the_admin_changes_weights_salt_and_analysis_and_is_recorded(staff_client):
    experiment = running_experiment()
    services.experiment_pause(experiment=experiment)
    url = reverse("admin:experiments_experiment_new_phase", args=[experiment.pk])
    assert "keep their arm" in _page(staff_client, url)
    salt = Experiment.objects.get(pk=experiment.pk).salt
    response = staff_client.post(url, _new_phase_data(staff_client, experiment, **{"weight__arm-1": 3, "alpha": 0.01}))
    assert response.status_code == 302, response.content.decode()[:3000]
    stored = Experiment.objects.get(pk=experiment.pk)
    assert stored.phase == 2 and stored.salt != salt and stored.alpha == 0.01
    assert Arm.objects.get(experiment=experiment, key="arm-1").weight == 3
    message = next(m for m in _history(experiment) if m.startswith("New phase 2"))
    assert "arm-1 3" in message and "0.05" in message and "0.01" in message


def test_a_bad_new_phase_says_why_and_changes_nothing(staff_client):
    experiment = running_experiment()
    services.experiment_pause(experiment=experiment)
    url = reverse("admin:experiments_experiment_new_phase", args=[experiment.pk])
    response = staff_client.post(url, _new_phase_data(staff_client, experiment, **{"weight__arm-1": 0, "alpha": 0.7}))
    assert response.status_code == 200
    form = response.context["form"]
    assert form.errors["weight__arm-1"] and "positive" in form.errors["weight__arm-1"][0]
    assert "Alpha" in form.errors["alpha"][0]
    stored = Experiment.objects.get(pk=experiment.pk)
    assert stored.phase == 1 and stored.alpha == 0.05


def test_a_new_phase_can_change_a_guardrail_margin_and_records_it(staff_client):
    experiment = running_experiment()
    Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=0.02)
    services.experiment_pause(experiment=experiment)
    url = reverse("admin:experiments_experiment_new_phase", args=[experiment.pk])
    assert "Margin of the" in _page(staff_client, url)
    bad = staff_client.post(url, _new_phase_data(staff_client, experiment, guardrail_margin__opt_out=-0.01))
    assert bad.status_code == 200
    assert bad.context["form"].errors["guardrail_margin__opt_out"]
    assert Guardrail.objects.get(experiment=experiment).margin == 0.02
    assert Experiment.objects.get(pk=experiment.pk).phase == 1
    response = staff_client.post(url, _new_phase_data(staff_client, experiment, guardrail_margin__opt_out=0.01))
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Guardrail.objects.get(experiment=experiment).margin == 0.01
    assert Experiment.objects.get(pk=experiment.pk).phase == 2
    message = next(m for m in _history(experiment) if m.startswith("New phase 2"))
    assert "guardrail margin 0.02 → 0.01" in message


def test_the_service_refuses_a_margin_for_a_guardrail_the_experiment_does_not_have():
    experiment = running_experiment()
    services.experiment_pause(experiment=experiment)
    with pytest.raises(ValidationError) as refused:
        services.experiment_new_phase(experiment=experiment, weights={}, guardrail_margins={"aov": 0.1})
    assert "No guardrail on: aov" in str(refused.value)
    assert Experiment.objects.get(pk=experiment.pk).phase == 1


def test_a_new_phase_needs_a_pause(staff_client):
    experiment = running_experiment()
    page = _page(staff_client, reverse("admin:experiments_experiment_new_phase", args=[experiment.pk]))
    assert "starts only while it is paused" in page and "Pause it" in page
    response = staff_client.post(CHANGELIST, {"action": "action_new_phase", "_selected_action": [experiment.pk]})
    assert response.status_code == 302
    assert response.url == reverse("admin:experiments_experiment_new_phase", args=[experiment.pk])


def test_exposed_subjects_keep_their_arm_in_a_new_phase():
    from django.test import TestCase

    experiment = running_experiment()
    with TestCase.captureOnCommitCallbacks(execute=True):
        first = {f"s{i}": services.assignments_for_subject(subject_id=f"s{i}", attributes={}) for i in range(40)}
        services.experiment_pause(experiment=experiment)
        services.experiment_new_phase(experiment=experiment, weights={"control": 1, "arm-1": 9})
        services.experiment_resume(experiment=experiment)
    again = {f"s{i}": services.assignments_for_subject(subject_id=f"s{i}", attributes={}) for i in range(40)}
    assert {k: [a.arm for a in v] for k, v in again.items()} == {k: [a.arm for a in v] for k, v in first.items()}
