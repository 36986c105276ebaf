"""Fixtures for the dashboard: the people of the permission model and experiments with real results.

Snapshots come from running the pipeline (``compute_results``) over events
written the way the pipeline's own tests write them (``populate``), plus a
few recommendation clicks and orders through ``events_record``, so the
dashboard is tested against documents the pipeline really produces.
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from experiments.models import Experiment, Guardrail, PrivacyTreatment, ResultSnapshot
from experiments.results import compute_results
from tests.experiments.factories import UserFactory
from tests.experiments.pipeline_kit import populate

# Shared with the metric pipeline's tests; re-exported for the dashboard's.
from tests.experiments.results_kit import ARMS, make_experiment, record_recommendation_purchases

__all__ = ["ARMS", "make_experiment", "record_recommendation_purchases"]

PASSWORD = "correct horse battery staple"  # UserFactory's
# Who may open an experiment's pages (experiments.rules), for the people fixture.
ALLOWED = {"owner": True, "viewer": True, "staff": True, "other": False}


@pytest.fixture
def people(db):
    """The permission cases: owner, named viewer, staff, and someone else."""
    return {
        "owner": UserFactory(username="olivia-owner"),
        "viewer": UserFactory(username="victor-viewer"),
        "staff": UserFactory(username="stella-staff", is_staff=True),
        "other": UserFactory(username="oscar-other"),
    }


def analyse(experiment: Experiment, *, runs: int = 3) -> list[ResultSnapshot]:
    """Runs of the pipeline an hour apart, the last one now: the history the charts draw."""
    now = timezone.now()
    return [
        compute_results(experiment=experiment, as_of=now - timedelta(hours=hours), monitor=False)
        for hours in range(runs - 1, -1, -1)
    ]


@pytest.fixture
def analysed(people):
    """A running experiment with an opt-out guardrail, three runs of results and recommendation sales."""
    # Planned for the 400 subjects per arm it gets, so its fixed-horizon verdict is readable.
    experiment = make_experiment(people["owner"], viewers=[people["viewer"]], planned_subjects_per_arm=400)
    Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=0.01)
    # arm-2 presumes consent: the compliance review must flag it in the page header.
    PrivacyTreatment.objects.filter(arms__experiment=experiment, arms__key="arm-2").update(
        name="Consent presumed", consent_prompt="none", default_personalization_consent=True
    )
    populate(experiment, ARMS)
    record_recommendation_purchases()
    snapshots = analyse(experiment)
    assert snapshots[-1].status == ResultSnapshot.Status.OK
    return experiment


def login(client, user):
    client.force_login(user)
    return client


def page_url(name: str, experiment: Experiment) -> str:
    return reverse(f"dashboard:{name}", args=[experiment.key])


def without_csrf(content: bytes) -> str:
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "", content.decode())
