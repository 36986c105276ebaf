"""The PMs' admin: lifecycle actions through the services, frozen arms, validation, history."""

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model

from experiments.models import Experiment, Holdout
from tests.experiments.factories import ExperimentFactory, TreatmentFactory, running_experiment
from tests.experiments.test_admin_forms import experiment_form_data

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/experiments/experiment/"


def _action(client, action, *experiments):
    # Start asks first (a confirmation page): confirm it as the page's button does.
    confirm = {"confirm": "start"} if action == "start" else {}
    return client.post(
        CHANGELIST,
        {"action": f"action_{action}", "_selected_action": [e.pk for e in experiments], **confirm},
        follow=True,
    )


def test_changelist_search_and_filters(staff_client):
    ExperimentFactory(key="consent-banner", name="Consent banner")
    response = staff_client.get(CHANGELIST, {"q": "banner", "status__exact": "draft"})
    assert response.status_code == 200
    assert b"consent-banner" in response.content


def test_start_action_runs_through_the_service_and_logs_history(staff_client):
    experiment = ExperimentFactory()
    response = _action(staff_client, "start", experiment)
    assert response.status_code == 200
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.RUNNING
    assert LogEntry.objects.filter(object_id=str(experiment.pk), change_message="Lifecycle: start").exists()
    history = staff_client.get(f"{CHANGELIST}{experiment.pk}/history/")
    assert b"Lifecycle: start" in history.content


def test_refused_action_shows_the_reason(staff_client):
    experiment = ExperimentFactory(arms=0)
    response = _action(staff_client, "start", experiment)
    assert b"at least two arms" in response.content
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.DRAFT


def test_every_lifecycle_action(staff_client):
    experiment = ExperimentFactory()
    for action, status in [("start", "running"), ("pause", "paused"), ("resume", "running"),
                           ("stop", "stopped"), ("conclude", "concluded")]:
        _action(staff_client, action, experiment)
        assert Experiment.objects.get(pk=experiment.pk).status == status


def test_arms_and_frozen_fields_are_read_only_once_running(staff_client):
    experiment = running_experiment()
    page = staff_client.get(f"{CHANGELIST}{experiment.pk}/change/")
    assert page.status_code == 200
    content = page.content.decode()
    assert 'name="salt"' not in content and 'name="layer_start"' not in content
    assert 'name="arms-0-weight"' not in content  # the arm inline is read-only


def test_create_an_experiment_with_arms_in_the_admin(staff_client):
    data = experiment_form_data(
        [TreatmentFactory(), TreatmentFactory()],
        **{"guardrails-TOTAL_FORMS": 1, "guardrails-0-metric": "opt_out", "guardrails-0-margin": 0.005},
    )
    response = staff_client.post(f"{CHANGELIST}add/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    experiment = Experiment.objects.get(key="admin-made")
    assert experiment.arms.count() == 2 and experiment.guardrails.count() == 1


def test_invalid_form_shows_field_errors(staff_client):
    response = staff_client.post(f"{CHANGELIST}add/", {"key": "bad key!", "layer_start": 2})
    assert response.status_code == 200
    assert b"errornote" in response.content
    assert not Experiment.objects.exists()


def test_coverage_cannot_shrink_in_the_admin(staff_client):
    experiment = running_experiment(coverage=0.5)
    page = staff_client.get(f"{CHANGELIST}{experiment.pk}/change/")
    form = page.context["adminform"].form
    data = {name: form[name].value() for name in form.fields if form[name].value() is not None}
    data.update({"coverage": 0.2, "targeting": "{}", "viewers": []})
    data.update({"guardrails-TOTAL_FORMS": 0, "guardrails-INITIAL_FORMS": 0,
                 "guardrails-MIN_NUM_FORMS": 0, "guardrails-MAX_NUM_FORMS": 1000,
                 "arms-TOTAL_FORMS": 2, "arms-INITIAL_FORMS": 2, "arms-MIN_NUM_FORMS": 2, "arms-MAX_NUM_FORMS": 1000})
    for i, arm in enumerate(experiment.arms.order_by("id")):
        data[f"arms-{i}-id"] = arm.pk
        data[f"arms-{i}-experiment"] = experiment.pk
    response = staff_client.post(f"{CHANGELIST}{experiment.pk}/change/", data)
    assert b"only grow" in response.content
    assert Experiment.objects.get(pk=experiment.pk).coverage == 0.5


def test_holdout_cannot_change_while_running(staff_client):
    Holdout.objects.get_or_create(id=1)
    running_experiment()
    response = staff_client.post("/admin/experiments/holdout/1/change/", {"share": 0.2})
    assert response.status_code == 200
    assert b"no experiment is running" in response.content
    assert Holdout.objects.get().share == 0.0


def test_admin_is_for_staff_only(client):
    user = get_user_model().objects.create_user("shopper", password="x-password-123")
    client.force_login(user)
    assert client.get(CHANGELIST).status_code == 302


def test_compliance_findings_show_on_the_treatment_and_experiment_pages(staff_client):
    experiment = ExperimentFactory()
    treatment = experiment.arms.get(is_control=True).treatment
    treatment.default_personalization_consent = True
    treatment.save()
    treatment_page = staff_client.get(f"/admin/experiments/privacytreatment/{treatment.pk}/change/").content.decode()
    experiment_page = staff_client.get(f"{CHANGELIST}{experiment.pk}/change/").content.decode()
    for page in (treatment_page, experiment_page):
        assert "ERROR" in page and "Art. 22" in page
