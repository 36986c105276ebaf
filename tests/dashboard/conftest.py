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

from experiments.models import Experiment, Guardrail, Layer, PrivacyTreatment, ResultSnapshot
from experiments.results import compute_results
from experiments.services import events_record
from tests.experiments.factories import UserFactory, running_experiment
from tests.experiments.pipeline_kit import populate

PASSWORD = "correct horse battery staple"  # UserFactory's
# Who may open an experiment's pages (experiments.rules), for the people fixture.
ALLOWED = {"owner": True, "viewer": True, "staff": True, "other": False}

# Arm B cuts opt-outs and sells more, arm C sells about the same and raises opt-outs.
ARMS = {
    "control": {"n": 400, "conversion": 0.20, "opt_out": 0.06, "gmv": 100_000, "impressions": 4, "clicks": 0.30},
    "arm-1": {"n": 400, "conversion": 0.32, "opt_out": 0.02, "gmv": 110_000, "impressions": 4, "clicks": 0.45},
    "arm-2": {"n": 400, "conversion": 0.21, "opt_out": 0.12, "gmv": 100_000, "impressions": 4, "clicks": 0.20},
}


@pytest.fixture
def people(db):
    """The permission cases: owner, named viewer, staff, and someone else."""
    return {
        "owner": UserFactory(username="olivia-owner"),
        "viewer": UserFactory(username="victor-viewer"),
        "staff": UserFactory(username="stella-staff", is_staff=True),
        "other": UserFactory(username="oscar-other"),
    }


def make_experiment(owner, *, viewers=(), key="privacy-reco", arms=3, **fields) -> Experiment:
    """A running experiment started ten days ago, in a layer of its own (running ones may not overlap)."""
    layer = Layer.objects.create(key=f"layer-{key}", name=f"Layer of {key}")
    experiment = running_experiment(
        layer=layer,
        key=key,
        name=fields.pop("name", "Privacy designs for recommendations"),
        hypothesis=fields.pop(
            "hypothesis", "Explicit opt-in with cohort recommendations keeps GMV and cuts opt-outs."
        ),
        owner=owner,
        arms=arms,
        primary_metric=fields.pop("primary_metric", "gmv"),
        planned_subjects_per_arm=fields.pop("planned_subjects_per_arm", 1000),
        **fields,
    )
    experiment.started_at = timezone.now() - timedelta(days=10)
    experiment.save(update_fields=["started_at"])
    experiment.viewers.add(*viewers)
    return experiment


def record_recommendation_purchases(prefix: str = "p") -> None:
    """In arm-1, subject 0 buys a recommended product (click first) and another product; subject 1
    buys only a product never clicked. Uses the pipeline's own event service."""
    now = timezone.now()
    events = [
        {"event_id": f"{prefix}-rc-1", "subject_id": f"{prefix}-arm-1-0", "type": "rec_click",
         "timestamp": now - timedelta(days=2, hours=1), "product_id": "sku-rec", "category": "fashion"},
        {"event_id": f"{prefix}-ro-1", "subject_id": f"{prefix}-arm-1-0", "type": "order",
         "timestamp": now - timedelta(days=2), "amount": "300000.00",
         "lines": [{"product_id": "sku-rec", "category": "fashion", "quantity": 2, "price": "100000.00"},
                   {"product_id": "sku-other", "category": "fashion", "quantity": 1, "price": "100000.00"}]},
        {"event_id": f"{prefix}-ro-2", "subject_id": f"{prefix}-arm-1-1", "type": "order",
         "timestamp": now - timedelta(days=1), "amount": "50000.00",
         "lines": [{"product_id": "sku-plain", "category": "books", "quantity": 1, "price": "50000.00"}]},
    ]
    events_record(events=events)


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
