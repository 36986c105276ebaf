"""Factories and helpers that build experiments, arms, treatments and users for the tests."""

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.test import TestCase
from django.utils import timezone

from experiments.models import Arm, Experiment, Layer, PrivacyTreatment, default_layer_id
from experiments.services import experiment_start


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ["username"]

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct horse battery staple")


class TreatmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PrivacyTreatment

    name = factory.Sequence(lambda n: f"treatment {n}")
    consent_prompt = PrivacyTreatment.ConsentPrompt.BANNER
    personalization_level = PrivacyTreatment.PersonalizationLevel.FULL
    sensitive_category_policy = PrivacyTreatment.SensitivePolicy.EXCLUDE


class ExperimentFactory(factory.django.DjangoModelFactory):
    """A draft experiment with a control and ``arms - 1`` treatment arms."""

    class Meta:
        model = Experiment
        skip_postgeneration_save = True

    key = factory.Sequence(lambda n: f"experiment-{n}")
    name = factory.LazyAttribute(lambda o: o.key.replace("-", " ").title())
    owner = factory.SubFactory(UserFactory)
    layer = factory.LazyFunction(lambda: Layer.objects.get(pk=default_layer_id()))

    @factory.post_generation
    def arms(self, create, extracted, **kwargs):
        if not create or extracted == 0:
            return
        count = extracted or 2
        Arm.objects.create(experiment=self, key="control", treatment=TreatmentFactory(), is_control=True)
        for i in range(1, count):
            Arm.objects.create(experiment=self, key=f"arm-{i}", treatment=TreatmentFactory())


def running_experiment(**kwargs) -> Experiment:
    """A started experiment, with the configuration change announced as on a real commit."""
    with TestCase.captureOnCommitCallbacks(execute=True):
        return experiment_start(experiment=ExperimentFactory(**kwargs))


def started_experiment(arms: int = 3, days_ago: float = 10, **kwargs) -> Experiment:
    """A running experiment whose start is moved ``days_ago`` days back, so its window has a history."""
    experiment = running_experiment(arms=arms, **kwargs)
    experiment.started_at = timezone.now() - timedelta(days=days_ago)
    experiment.save(update_fields=["started_at"])
    return experiment


def data_protection_officer():
    """A staff user who reads experiments and holds the one permission that approves compliance overrides."""
    from django.contrib.auth.models import Permission

    user = UserFactory(username="dpo-on-duty", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["approve_compliance_override", "view_experiment"])
    )
    return get_user_model().objects.get(pk=user.pk)  # a fresh object: no stale permission cache


def override_approved(experiment: Experiment) -> Experiment:
    """The experiment's compliance override, approved by a data protection officer (if it has errors)."""
    from experiments.selectors import experiment_compliance_errors
    from experiments.services import experiment_override_approve

    if experiment_compliance_errors(experiment=experiment):
        experiment = experiment_override_approve(experiment=experiment, approver=data_protection_officer())
    return experiment
