"""Experiments with real results, shared by the metric pipeline's and the dashboard's tests.

Plain helpers (no fixtures): an experiment in a layer of its own, the arms' rates that
``tests.experiments.pipeline_kit.populate`` writes, and recommendation clicks and orders
recorded through the event service.
"""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from experiments.models import Experiment, Layer
from experiments.services import events_record
from tests.experiments.factories import running_experiment

# Arm B cuts opt-outs and sells more, arm C sells about the same and raises opt-outs.
ARMS = {
    "control": {"n": 400, "conversion": 0.20, "opt_out": 0.06, "gmv": 100_000, "impressions": 4, "clicks": 0.30},
    "arm-1": {"n": 400, "conversion": 0.32, "opt_out": 0.02, "gmv": 110_000, "impressions": 4, "clicks": 0.45},
    "arm-2": {"n": 400, "conversion": 0.21, "opt_out": 0.12, "gmv": 100_000, "impressions": 4, "clicks": 0.20},
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
