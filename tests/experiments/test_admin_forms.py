"""Every database constraint of the experiments app is checked by the form first, with its message
in words on the field to change; the admin saves nothing and never answers 500."""

import re
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import CheckConstraint, UniqueConstraint
from django.utils import timezone

from experiments.models import (
    Arm,
    Experiment,
    ExperimentAlert,
    Exposure,
    Guardrail,
    Holdout,
    MetricFacts,
    OrderLine,
    OutcomeEvent,
    PrivacyTreatment,
    ResultSnapshot,
)
from tests.experiments.factories import ExperimentFactory, TreatmentFactory

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/experiments/experiment/"
TREATMENTS = "/admin/experiments/privacytreatment/"
DJANGO_DEFAULT = str(CheckConstraint.default_violation_error_message)


def _message(model, name: str) -> str:
    return str(next(c for c in model._meta.constraints if c.name == name).violation_error_message)


@pytest.mark.parametrize(
    "model",
    [PrivacyTreatment, Holdout, Experiment, Arm, Guardrail, Exposure, OutcomeEvent, OrderLine, MetricFacts,
     ResultSnapshot, ExperimentAlert],
)
def test_every_constraint_has_a_message_in_words(model):
    for constraint in model._meta.constraints:
        assert isinstance(constraint, CheckConstraint | UniqueConstraint)
        message = str(constraint.violation_error_message)
        assert message != str(DJANGO_DEFAULT) and constraint.name not in message, constraint.name
        assert message.endswith(".") and " " in message, constraint.name


def _field_errors(instance, field: str) -> list[str]:
    with pytest.raises(ValidationError) as caught:
        instance.full_clean()
    return caught.value.message_dict.get(field, [])


@pytest.mark.parametrize(
    ("changes", "field", "constraint"),
    [
        ({"cohort_k": 1}, "cohort_k", "treatment_cohort_k_gte_2"),
        ({"dp_epsilon": -1.0}, "dp_epsilon", "treatment_dp_epsilon_positive"),
        ({"personalization_level": "dp_popularity", "dp_epsilon": None}, "dp_epsilon", "treatment_dp_needs_epsilon"),
        ({"personalization_level": "dp_item_item", "dp_epsilon": None}, "dp_epsilon",
         "treatment_dp_item_item_needs_epsilon"),
        ({"retention_days": 0}, "retention_days", "treatment_retention_positive"),
    ],
)
def test_treatment_constraints_show_on_their_field(changes, field, constraint):
    treatment = TreatmentFactory.build(**changes)
    assert _message(PrivacyTreatment, constraint) in _field_errors(treatment, field)


@pytest.mark.parametrize(
    ("changes", "field", "constraint"),
    [
        ({"layer_start": 0.6, "layer_end": 0.4}, "layer_end", "experiment_layer_range_valid"),
        ({"alpha": 0.7}, "alpha", "experiment_alpha_range"),
        ({"scheduled_start": timezone.now() + timedelta(days=2), "scheduled_end": timezone.now()},
         "scheduled_end", "experiment_schedule_ordered"),
        ({"gmv_cap_percentile": 0.2}, "gmv_cap_percentile", "experiment_gmv_cap_percentile_range"),
        ({"pre_exposure_days": 400}, "pre_exposure_days", "experiment_pre_exposure_days_range"),
        ({"minimum_runtime_days": 371}, "minimum_runtime_days", "experiment_minimum_runtime_range"),
        ({"plan_power": 0.3}, "plan_power", "experiment_plan_power_range"),
        ({"planned_subjects_per_arm": 0}, "planned_subjects_per_arm", "experiment_planned_subjects_positive"),
        ({"suspicious_uplift": 0.0}, "suspicious_uplift", "experiment_suspicious_uplift_positive"),
    ],
)
def test_experiment_constraints_show_on_their_field(changes, field, constraint):
    experiment = ExperimentFactory()
    for name, value in changes.items():
        setattr(experiment, name, value)
    assert _message(Experiment, constraint) in _field_errors(experiment, field)


@pytest.mark.parametrize(
    ("changes", "field", "words"),
    [
        # Checked in words by the decision's validation first (experiments.validation), on the same field.
        ({"decision_rule": "noninferiority", "decision_margin": None}, "decision_margin", "needs a margin"),
        ({"decision_rule": "noninferiority", "decision_margin": 1.5}, "decision_margin", "between 0 and 1"),
        ({"minimum_runtime_days": 10}, "minimum_runtime_days", "whole weeks"),
    ],
)
def test_decision_settings_show_on_their_field(changes, field, words):
    experiment = ExperimentFactory()
    for name, value in changes.items():
        setattr(experiment, name, value)
    assert any(words in message for message in _field_errors(experiment, field))


def test_arm_and_guardrail_constraints_show_on_their_field():
    experiment = ExperimentFactory()
    treatment = experiment.arms.first().treatment
    assert _message(Arm, "arm_weight_positive") in _field_errors(
        Arm(experiment=experiment, key="x", treatment=treatment, weight=0), "weight")
    assert _message(Arm, "arm_key_unique_per_experiment") in _field_errors(
        Arm(experiment=experiment, key="control", treatment=treatment), "key")
    assert _message(Arm, "arm_one_control_per_experiment") in _field_errors(
        Arm(experiment=experiment, key="second", treatment=treatment, is_control=True), "is_control")
    assert _message(Guardrail, "guardrail_margin_positive") in _field_errors(
        Guardrail(experiment=experiment, metric="opt_out", margin=0), "margin")
    Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=0.01)
    assert _message(Guardrail, "guardrail_unique_metric") in _field_errors(
        Guardrail(experiment=experiment, metric="opt_out", margin=0.02), "metric")


# --- through the admin ---------------------------------------------------------------------------------


def experiment_form_data(treatments, **overrides) -> dict:
    """What the admin's add form posts for a two-arm experiment (override any field or arm value)."""
    data = {
        "key": "admin-made", "name": "Admin made", "owner": get_user_model().objects.get(username="pm").pk,
        "layer": Experiment._meta.get_field("layer").default(),
        "layer_start": 0, "layer_end": 1, "coverage": 1,
        "targeting": "{}", "primary_metric": "gmv", "alpha": 0.05,
        "gmv_cap_percentile": 0.99, "pre_exposure_days": 28,
        "decision_rule": "superiority", "testing_mode": "fixed", "minimum_runtime_days": 7,
        "analysis_engine": "frequentist", "suspicious_uplift": 0.5,
        "plan_power": 0.8, "privacy_order": "[]",
        "arms-TOTAL_FORMS": len(treatments), "arms-INITIAL_FORMS": 0, "arms-MIN_NUM_FORMS": 2,
        "arms-MAX_NUM_FORMS": 1000,
        "guardrails-TOTAL_FORMS": 0, "guardrails-INITIAL_FORMS": 0,
        "guardrails-MIN_NUM_FORMS": 0, "guardrails-MAX_NUM_FORMS": 1000,
    }
    for i, treatment in enumerate(treatments):
        data.update({f"arms-{i}-key": "control" if i == 0 else f"arm-{i}", f"arms-{i}-treatment": treatment.pk,
                     f"arms-{i}-weight": 1})
    data["arms-0-is_control"] = "on"
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def _inline_errors(response, prefix: str, index: int) -> dict:
    formset = next(f for f in response.context["inline_admin_formsets"] if f.formset.prefix == prefix).formset
    return formset.forms[index].errors


def test_two_control_arms_on_add_give_a_message_not_a_500(staff_client):
    data = experiment_form_data([TreatmentFactory(), TreatmentFactory()], **{"arms-1-is_control": "on"})
    response = staff_client.post(f"{CHANGELIST}add/", data)
    assert response.status_code == 200
    assert _inline_errors(response, "arms", 1)["is_control"] == [_message(Arm, "arm_one_control_per_experiment")]
    assert not Experiment.objects.exists() and not Arm.objects.exists()


def _change_data(client, experiment, **overrides) -> dict:
    page = client.get(f"{CHANGELIST}{experiment.pk}/change/")
    data = {}
    for form in [page.context["adminform"].form] + [
        form for inline in page.context["inline_admin_formsets"] for form in inline.formset.forms
    ] + [inline.formset.management_form for inline in page.context["inline_admin_formsets"]]:
        for name in form.fields:
            value = form[name].value()
            if value is None or value is False:
                continue
            key = form.add_prefix(name)
            if isinstance(value, list | tuple):
                data[key] = [v.isoformat() if hasattr(v, "isoformat") else v for v in value]
            elif value is True:
                data[key] = "on"
            else:
                data[key] = value
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def test_two_control_arms_on_a_draft_give_a_message_not_a_500(staff_client):
    experiment = ExperimentFactory()
    response = staff_client.post(f"{CHANGELIST}{experiment.pk}/change/",
                                 _change_data(staff_client, experiment, **{"arms-1-is_control": "on"}))
    assert response.status_code == 200
    assert _inline_errors(response, "arms", 1)["is_control"] == [_message(Arm, "arm_one_control_per_experiment")]
    assert experiment.arms.filter(is_control=True).count() == 1


def test_the_control_can_move_to_another_arm_of_a_draft(staff_client):
    experiment = ExperimentFactory()
    data = _change_data(staff_client, experiment, **{"arms-1-is_control": "on"})
    del data["arms-0-is_control"]
    response = staff_client.post(f"{CHANGELIST}{experiment.pk}/change/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert list(experiment.arms.filter(is_control=True).values_list("key", flat=True)) == ["arm-1"]


def test_bad_arm_weight_and_guardrail_margin_show_on_their_row(staff_client):
    data = experiment_form_data(
        [TreatmentFactory(), TreatmentFactory()],
        **{"arms-1-weight": 0, "guardrails-TOTAL_FORMS": 1, "guardrails-0-metric": "opt_out",
           "guardrails-0-margin": 0},
    )
    response = staff_client.post(f"{CHANGELIST}add/", data)
    assert response.status_code == 200
    assert _inline_errors(response, "arms", 1)["weight"] == [_message(Arm, "arm_weight_positive")]
    assert _inline_errors(response, "guardrails", 0)["margin"] == [_message(Guardrail, "guardrail_margin_positive")]
    assert b"is violated" not in response.content
    assert not Experiment.objects.exists()


def test_schedule_out_of_order_shows_on_the_end(staff_client):
    data = experiment_form_data(
        [TreatmentFactory(), TreatmentFactory()],
        scheduled_start_0="2030-01-02", scheduled_start_1="10:00:00",
        scheduled_end_0="2030-01-01", scheduled_end_1="10:00:00",
    )
    response = staff_client.post(f"{CHANGELIST}add/", data)
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors["scheduled_end"] == [_message(Experiment, "experiment_schedule_ordered")]
    assert not Experiment.objects.exists()


def _treatment_data(**overrides) -> dict:
    data = {"name": "DP popularity", "consent_prompt": "banner", "personalization_level": "full",
            "sensitive_category_policy": "exclude", "cohort_k": 50, "retention_days": 365,
            "show_explanations": "on"}
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def test_dp_without_epsilon_shows_on_the_epsilon_field(staff_client):
    response = staff_client.post(f"{TREATMENTS}add/", _treatment_data(personalization_level="dp_popularity"))
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors["dp_epsilon"] == [_message(PrivacyTreatment, "treatment_dp_needs_epsilon")]
    assert b"is violated" not in response.content
    assert not PrivacyTreatment.objects.exists()


def test_fields_a_level_requires_are_marked_on_the_treatment_form(staff_client):
    page = staff_client.get(f"{TREATMENTS}add/").content.decode()
    assert "required_by_choice.js" in page
    assert 'data-requires="{&quot;dp_epsilon&quot;: [&quot;dp_popularity&quot;, &quot;dp_item_item&quot;]' in page
    assert "Required by the differentially private levels" in page
    assert "Required by the k-anonymous cohort level" in page


def test_metric_facts_are_named_in_words():
    assert MetricFacts._meta.verbose_name_plural == "metric facts"


def _messages(response) -> list[tuple[str, str]]:
    return [(message.level_tag, str(message)) for message in response.context["messages"]]


def test_saving_a_treatment_with_a_compliance_error_warns_instead_of_a_plain_success(staff_client):
    response = staff_client.post(f"{TREATMENTS}add/", _treatment_data(default_personalization_consent="on"),
                                 follow=True)
    shown = _messages(response)
    assert len(shown) == 1
    level, text = shown[0]
    assert level == "warning" and "was added successfully" in text and "compliance review has an error" in text
    assert "Art. 22" in text and "cannot start" in text
    treatment = PrivacyTreatment.objects.get()
    response = staff_client.post(f"{TREATMENTS}{treatment.pk}/change/",
                                 _treatment_data(default_personalization_consent="on"), follow=True)
    assert [level for level, _ in _messages(response)] == ["warning"]
    response = staff_client.post(f"{TREATMENTS}{treatment.pk}/change/", _treatment_data(), follow=True)
    assert [level for level, _ in _messages(response)] == ["success"]  # fixed: a plain success


def test_inputs_without_a_label_of_their_own_are_named(staff_client):
    experiment = ExperimentFactory()
    Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=0.01)
    page = staff_client.get(f"{CHANGELIST}{experiment.pk}/change/").content.decode()
    assert 'aria-label="Scheduled start: date"' in page and 'aria-label="Scheduled start: time"' in page
    assert re.search(r'<select name="guardrails-0-metric"[^>]* aria-label="Guardrail metric"', page)
    assert re.search(r'<select name="arms-0-treatment"[^>]* aria-label="Arm treatment"', page)
    assert 'aria-label="Arm weight"' in page and "admin-autocomplete" not in page


def test_the_engine_and_a_prior_are_chosen_in_the_admin(staff_client):
    data = experiment_form_data([TreatmentFactory(), TreatmentFactory()], analysis_engine="bayesian",
                                prior_mean=0.0, prior_variance=0.09)
    response = staff_client.post(f"{CHANGELIST}add/", data)
    assert response.status_code == 302, response.content.decode()[:2000]
    experiment = Experiment.objects.get(key="admin-made")
    assert (experiment.analysis_engine, experiment.prior_mean, experiment.prior_variance) == ("bayesian", 0.0, 0.09)


def test_a_bad_prior_shows_its_message_on_the_variance(staff_client):
    data = experiment_form_data([TreatmentFactory(), TreatmentFactory()], analysis_engine="bayesian",
                                prior_mean=0.0, prior_variance=-1)
    response = staff_client.post(f"{CHANGELIST}add/", data)
    assert response.status_code == 200
    form = response.context["adminform"].form
    assert form.errors["prior_variance"] == [_message(Experiment, "experiment_prior_variance_positive")]
    assert not Experiment.objects.exists()
