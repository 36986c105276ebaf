"""Tests of the design services: creating treatments, arms and guardrails."""

import pytest
from django.core.exceptions import ValidationError

from experiments.models import Metric, PrivacyTreatment
from experiments.services.design import arm_create, guardrail_create, treatment_create
from tests.experiments.factories import ExperimentFactory, running_experiment

pytestmark = pytest.mark.django_db


def test_treatment_create_validates_and_stores():
    treatment = treatment_create(
        name="Opt-in, cohorts", consent_prompt="modal", personalization_level="cohort", cohort_k=50
    )
    assert PrivacyTreatment.objects.get(pk=treatment.pk).cohort_k == 50
    with pytest.raises(ValidationError) as caught:
        treatment_create(name="Bad", consent_prompt="modal", personalization_level="cohort", cohort_k=1)
    assert "cohort_k" in caught.value.message_dict


def test_arm_and_guardrail_create_on_a_draft():
    experiment = ExperimentFactory(arms=0)
    treatment = treatment_create(name="Banner", consent_prompt="banner", personalization_level="full")
    arm = arm_create(experiment=experiment, key="control", treatment=treatment, is_control=True)
    guardrail = guardrail_create(experiment=experiment, metric=Metric.OPT_OUT, margin=0.02)
    assert list(experiment.arms.all()) == [arm]
    assert list(experiment.guardrails.all()) == [guardrail]
    with pytest.raises(ValidationError):
        arm_create(experiment=experiment, key="control", treatment=treatment)
    with pytest.raises(ValidationError):
        guardrail_create(experiment=experiment, metric=Metric.OPT_OUT, margin=0.01)
    with pytest.raises(ValidationError):
        guardrail_create(experiment=experiment, metric=Metric.CONVERSION, margin=0)


def test_arm_and_guardrail_create_refused_once_started():
    experiment = running_experiment()
    treatment = experiment.arms.first().treatment
    with pytest.raises(ValidationError, match="draft"):
        arm_create(experiment=experiment, key="late", treatment=treatment)
    with pytest.raises(ValidationError, match="draft"):
        guardrail_create(experiment=experiment, metric=Metric.OPT_OUT, margin=0.02)
