"""The decision settings in the admin: rule, margin, privacy order, runtime and the planner; bad input saves nothing."""

import pytest
from django.contrib.auth import get_user_model

from experiments.models import Experiment
from experiments.selectors import experiment_decision_plan
from tests.experiments.factories import TreatmentFactory

pytestmark = pytest.mark.django_db
ADD = "/admin/experiments/experiment/add/"


def _post(client, **overrides):
    treatments = [TreatmentFactory(), TreatmentFactory(), TreatmentFactory()]
    data = {
        "key": "privacy-first", "name": "Privacy first", "owner": get_user_model().objects.get(username="pm").pk,
        "layer": Experiment._meta.get_field("layer").default(), "layer_start": 0, "layer_end": 1, "coverage": 1,
        "targeting": "{}", "primary_metric": "gmv", "alpha": 0.05, "gmv_cap_percentile": 0.99,
        "pre_exposure_days": 28, "decision_rule": "privacy_first", "decision_margin": 0.05,
        "testing_mode": "fixed", "minimum_runtime_days": 14, "plan_power": 0.8, "analysis_engine": "frequentist", "suspicious_uplift": 0.5,
        "privacy_order": '["dp", "cohort", "control"]',
        "arms-TOTAL_FORMS": 3, "arms-INITIAL_FORMS": 0, "arms-MIN_NUM_FORMS": 2, "arms-MAX_NUM_FORMS": 1000,
        "arms-0-key": "control", "arms-0-treatment": treatments[0].pk, "arms-0-weight": 1, "arms-0-is_control": "on",
        "arms-1-key": "cohort", "arms-1-treatment": treatments[1].pk, "arms-1-weight": 1,
        "arms-2-key": "dp", "arms-2-treatment": treatments[2].pk, "arms-2-weight": 1,
        "guardrails-TOTAL_FORMS": 1, "guardrails-INITIAL_FORMS": 0,
        "guardrails-MIN_NUM_FORMS": 0, "guardrails-MAX_NUM_FORMS": 1000,
        "guardrails-0-metric": "opt_out", "guardrails-0-margin": 0.005,
    }
    data.update({key: value for key, value in overrides.items() if value is not None})
    for key in [key for key, value in overrides.items() if value is None]:
        data.pop(key)
    return client.post(ADD, data)


def _field_errors(response) -> dict:
    form = response.context["adminform"].form
    return {name: list(errors) for name, errors in form.errors.items()}


def test_a_privacy_first_experiment_with_its_plan_is_saved_and_planned(staff_client):
    response = _post(
        staff_client, plan_daily_subjects=2000, plan_baseline=60_000, plan_standard_deviation=120_000,
        **{"guardrails-0-plan_baseline": 0.04},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    experiment = Experiment.objects.get(key="privacy-first")
    assert experiment.decision_rule == "privacy_first" and experiment.privacy_order == ["dp", "cohort", "control"]
    plan = experiment_decision_plan(experiment=experiment)
    assert experiment.planned_subjects_per_arm == plan.planned_subjects_per_arm > 0
    assert experiment.planned_days == plan.days and plan.days % 7 == 0 and plan.days >= 14
    assert plan.power >= 0.8
    page = staff_client.get(f"/admin/experiments/experiment/{experiment.pk}/change/").content.decode()
    assert f"{plan.planned_subjects_per_arm:,} subjects per arm" in page
    assert "dp" in page and "(most private first; overridden by the privacy order above)" in page


def test_a_plan_missing_a_guardrail_baseline_warns_and_keeps_the_planned_size(staff_client):
    response = _post(staff_client, plan_daily_subjects=2000, plan_baseline=60_000, plan_standard_deviation=120_000,
                     planned_subjects_per_arm=5000)
    assert response.status_code == 302
    experiment = Experiment.objects.get(key="privacy-first")
    assert experiment.planned_subjects_per_arm == 5000
    messages = [str(m) for m in response.wsgi_request._messages]
    assert any("Opt-out rate guardrail its baseline" in m for m in messages), messages


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        ({"decision_margin": None}, "decision_margin", "This rule needs a margin"),
        ({"decision_margin": -0.05}, "decision_margin", "between 0 and 1"),
        ({"decision_margin": 1.5}, "decision_margin", "between 0 and 1"),
        ({"decision_rule": "superiority", "decision_margin": 0.05}, "decision_margin", "uses no margin"),
        ({"decision_rule": "most_private"}, "decision_rule", "Select a valid choice"),
        ({"minimum_runtime_days": 10}, "minimum_runtime_days", "whole weeks"),
        ({"planned_subjects_per_arm": 0}, None, "at least 1"),
        ({"plan_power": 1.2}, None, "probability above 0.5 and below 1"),
        ({"privacy_order": '"dp"'}, "privacy_order", "List arm keys as text"),
        ({"privacy_order": '["dp", "dp", "control", "cohort"]'}, "privacy_order", "appear(s) more than once"),
    ],
)
def test_bad_decision_settings_get_a_message_in_words_and_save_nothing(staff_client, overrides, field, words):
    response = _post(staff_client, **overrides)
    assert response.status_code == 200
    assert not Experiment.objects.exists()
    errors = _field_errors(response)
    text = " ".join(message for messages in errors.values() for message in messages)
    assert words in text, errors
    if field is not None:
        assert any(words in message for message in errors.get(field, [])), errors


@pytest.mark.parametrize(
    ("order", "words"),
    [
        ('["dp", "cohort", "control", "full"]', "Unknown arm(s) full"),
        ('["dp", "control"]', "List every arm; missing cohort"),
    ],
)
def test_a_privacy_order_that_does_not_match_the_arms_is_refused_beside_the_arms(staff_client, order, words):
    response = _post(staff_client, privacy_order=order)
    assert response.status_code == 200
    assert not Experiment.objects.exists()
    arm_errors = " ".join(response.context["inline_admin_formsets"][0].formset.non_form_errors())
    assert "Privacy order: " in arm_errors and words in arm_errors
