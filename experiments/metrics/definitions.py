"""What the pipeline measures: the metrics, the segment dimensions, the descriptive ratios, the window."""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone

from experiments.metric_catalog import METRIC_DEFINITIONS
from experiments.models import Experiment

SEGMENT_DIMENSIONS = ("age_band", "province", "platform", "customer")
UNKNOWN_SEGMENT = "unknown"


# Metric key → (statistic kind, higher is better), in the report's order: a view of the one
# catalog (``experiments.metric_catalog``) for the pipeline and results that read pairs.
METRICS: dict[str, tuple[str, bool]] = {
    definition.key: (definition.kind.value, definition.higher_is_better) for definition in METRIC_DEFINITIONS
}


# Descriptive ratios: shown per arm, outside every test and decision. Withdrawals among the
# subjects who granted conditions on a post-treatment outcome (whether a subject granted
# depends on the arm's prompt), so a difference between arms mixes who grants with how
# often they withdraw: it describes, it does not estimate an effect.
DESCRIPTIVE: dict[str, dict[str, str]] = {
    "withdrawals_among_granted": {
        "label": "Withdrawals among subjects who granted",
        "numerator": "subjects who opted out",
        "denominator": "subjects who held a personalization grant after exposure",
        "caveat": "Conditioned on a post-treatment outcome (granting): descriptive only, not tested, "
        "not an effect of the arm.",
    }
}


def withdrawals_among_granted(*, granted: float, withdrew: float) -> dict:
    granted, withdrew = int(granted), int(withdrew)
    return {"granted": granted, "withdrew": withdrew, "ratio": withdrew / granted if granted else None}


def window_for(experiment: Experiment, as_of: datetime | None = None) -> tuple[datetime, datetime]:
    """The analysis window: from the start to ``as_of`` (default now), never past the stop."""
    as_of = as_of or timezone.now()
    end = min(as_of, experiment.ended_at) if experiment.ended_at else as_of
    start = experiment.started_at or end
    return start, max(start, end)
