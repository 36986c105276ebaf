"""Admin actions need their own permissions; a DPO approves overrides; treatments in use are frozen."""

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.exceptions import PermissionDenied, ValidationError

from experiments import services
from experiments.models import Experiment, ExperimentAlert, PrivacyTreatment
from tests.experiments.factories import (
    ExperimentFactory,
    TreatmentFactory,
    UserFactory,
    data_protection_officer,
    running_experiment,
)

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/experiments/experiment/"


def staff(*codenames: str, username: str = "pm"):
    """A staff user (not a superuser) with the experiments' view/change permissions and ``codenames``."""
    user = UserFactory(username=username, is_staff=True)
    base = ["view_experiment", "change_experiment", "view_experimentalert", "view_privacytreatment",
            "change_privacytreatment", "add_privacytreatment", "view_armrecommendations"]
    user.user_permissions.add(*Permission.objects.filter(codename__in=[*base, *codenames]))
    return get_user_model().objects.get(pk=user.pk)


def _actions(client, url=CHANGELIST) -> set[str]:
    response = client.get(url)
    assert response.status_code == 200
    form = response.context["action_form"]  # None when no action is offered
    return {value for value, _ in form.fields["action"].choices if value} if form else set()


def test_lifecycle_and_compute_actions_need_their_permissions(client):
    client.force_login(staff())
    assert not {"action_start", "action_pause", "action_stop", "action_conclude", "compute_results_now"} & _actions(client)
    experiment = ExperimentFactory()
    client.post(CHANGELIST, {"action": "action_start", "_selected_action": [experiment.pk]}, follow=True)
    assert Experiment.objects.get(pk=experiment.pk).status == "draft"  # refused: not an offered action

    client.force_login(staff("run_experiment", "compute_results", username="lead-pm"))
    offered = _actions(client)
    assert {"action_start", "action_pause", "action_resume", "action_stop", "action_conclude"} <= offered
    assert "compute_results_now" in offered
    assert "approve_compliance_override" not in offered  # a PM's role does not include it
    client.post(CHANGELIST, {"action": "action_start", "_selected_action": [experiment.pk], "confirm": "start"},
                follow=True)
    assert Experiment.objects.get(pk=experiment.pk).status == "running"


def test_build_now_needs_its_permission(client):
    url = "/admin/recommender/armrecommendations/"
    client.force_login(staff())
    assert "build_now" not in _actions(client, url)
    client.force_login(staff("build_recommendations", username="builder"))
    assert "build_now" in _actions(client, url)


def test_acknowledging_alerts_needs_a_permission_not_just_staff(client):
    experiment = running_experiment()
    alert = ExperimentAlert.objects.create(
        experiment=experiment, kind="srm", message="Sample-ratio mismatch", created_at=experiment.started_at
    )
    url = "/admin/experiments/experimentalert/"
    client.force_login(staff())
    assert "acknowledge" not in _actions(client, url)
    client.post(url, {"action": "acknowledge", "_selected_action": [alert.pk]}, follow=True)
    assert ExperimentAlert.objects.get(pk=alert.pk).acknowledged_at is None
    client.force_login(staff("acknowledge_experimentalert", username="on-call"))
    client.post(url, {"action": "acknowledge", "_selected_action": [alert.pk]}, follow=True)
    assert ExperimentAlert.objects.get(pk=alert.pk).acknowledged_at is not None


def _with_compliance_error() -> Experiment:
    experiment = ExperimentFactory(compliance_override_reason="A time-boxed legal test; DPO ticket 42.")
    treatment = experiment.arms.exclude(is_control=True).get().treatment
    treatment.default_personalization_consent = True  # pre-ticked: an error
    treatment.save()
    return experiment


def test_a_compliance_override_is_approved_by_a_data_protection_officer_not_the_pm(client):
    experiment = _with_compliance_error()
    pm = staff("run_experiment")
    with pytest.raises(PermissionDenied):
        services.experiment_override_approve(experiment=experiment, approver=pm)
    with pytest.raises(ValidationError, match="awaits a data protection officer"):
        services.experiment_start(experiment=experiment)
    # The DPO approves from the admin; the approval is recorded, and then the PM can start.
    client.force_login(data_protection_officer())
    client.post(CHANGELIST, {"action": "approve_compliance_override", "_selected_action": [experiment.pk]}, follow=True)
    experiment.refresh_from_db()
    assert experiment.compliance_override_approved_by.username == "dpo-on-duty"
    assert experiment.compliance_override_approved_findings == {"arm-1": ["pre_ticked_consent"]}
    assert services.experiment_start(experiment=experiment).status == "running"


def test_the_owner_cannot_approve_their_own_override():
    dpo = data_protection_officer()
    experiment = _with_compliance_error()
    experiment.owner = dpo
    experiment.save()
    with pytest.raises(ValidationError, match="owner cannot approve"):
        services.experiment_override_approve(experiment=experiment, approver=dpo)


def test_an_approval_covers_only_the_errors_it_was_given_for():
    experiment = _with_compliance_error()
    experiment = services.experiment_override_approve(experiment=experiment, approver=data_protection_officer())
    # A new error appears afterwards (the control now presumes consent without a prompt).
    control = experiment.arms.get(is_control=True).treatment
    control.default_personalization_consent, control.consent_prompt = True, "none"
    services.treatment_save(treatment=control)
    with pytest.raises(ValidationError, match="does not cover control: consent_presumed"):
        services.experiment_start(experiment=experiment)


def test_a_changed_reason_voids_the_approval():
    experiment = services.experiment_override_approve(
        experiment=_with_compliance_error(), approver=data_protection_officer()
    )
    experiment.compliance_override_reason = "Something else entirely."
    services.experiment_save(experiment=experiment, changed=["compliance_override_reason"])
    experiment.refresh_from_db()
    assert experiment.compliance_override_approved_at is None and experiment.compliance_override_approved_by is None


# --- frozen treatments ---------------------------------------------------------------


def test_a_treatment_applied_by_a_running_experiment_cannot_change():
    experiment = running_experiment()
    treatment = experiment.arms.get(is_control=True).treatment
    treatment.default_personalization_consent = True
    with pytest.raises(ValidationError, match="Frozen: applied by running or paused experiment"):
        services.treatment_save(treatment=treatment)
    assert PrivacyTreatment.objects.get(pk=treatment.pk).default_personalization_consent is False
    services.experiment_pause(experiment=experiment)
    with pytest.raises(ValidationError):
        services.treatment_save(treatment=treatment)
    services.experiment_stop(experiment=experiment)
    assert services.treatment_save(treatment=treatment)  # no longer applied: it may change (and is reviewed)


def test_saving_a_frozen_treatment_unchanged_is_harmless():
    experiment = running_experiment()
    treatment = experiment.arms.get(is_control=True).treatment
    services.treatment_save(treatment=PrivacyTreatment.objects.get(pk=treatment.pk))


def test_every_change_is_reviewed():
    treatment = TreatmentFactory()
    treatment.sensitive_category_policy = "include"
    findings = services.treatment_save(treatment=treatment)
    assert "sensitive_without_explicit_consent" in {f.code for f in findings if f.is_error}


def test_the_admin_shows_a_frozen_treatment_read_only_and_duplicates_it(client):
    experiment = running_experiment()
    treatment = experiment.arms.get(is_control=True).treatment
    client.force_login(staff())
    page = client.get(f"/admin/experiments/privacytreatment/{treatment.pk}/change/")
    assert page.status_code == 200
    assert b"cannot change (duplicate it)" in page.content
    assert b'name="default_personalization_consent"' not in page.content  # every field read-only
    client.post(
        f"/admin/experiments/privacytreatment/{treatment.pk}/change/",
        {"name": treatment.name, "consent_prompt": "none", "personalization_level": "full",
         "sensitive_category_policy": "include", "cohort_k": 50, "retention_days": 365,
         "default_personalization_consent": "on"},
    )
    assert PrivacyTreatment.objects.get(pk=treatment.pk).default_personalization_consent is False
    client.post(
        "/admin/experiments/privacytreatment/", {"action": "duplicate", "_selected_action": [treatment.pk]}, follow=True
    )
    copy = PrivacyTreatment.objects.get(name=f"{treatment.name} (copy 1)")
    assert copy.consent_prompt == treatment.consent_prompt and not copy.arms.exists()


def test_the_admin_reports_compliance_errors_when_a_treatment_is_saved(client):
    client.force_login(staff())
    response = client.post(
        "/admin/experiments/privacytreatment/add/",
        {"name": "Presumed", "consent_prompt": "none", "personalization_level": "full",
         "sensitive_category_policy": "exclude", "cohort_k": 50, "retention_days": 365,
         "default_personalization_consent": "on", "show_explanations": "on"},
        follow=True,
    )
    assert b"compliance review has" in response.content and b"approved override" in response.content
