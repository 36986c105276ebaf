"""The privacy ladder: which of an experiment's privacy treatments is the most privacy-preserving.

The ``privacy_first`` decision rule ships the most private design that keeps
the primary metric within its margin, so it needs the arms in order, most
private first. The order compares treatments on these rungs, each only
breaking the ties of the one before (docs/statistics.md §9):

1. how personal the recommendations are: popularity and session-only (no
   personal history) above differentially private popularity (smaller ε more
   private), then k-anonymous cohorts (larger k more private), then
   differentially private item-item (smaller ε more private: each subject's
   list is scored from their own item-level history, as under full history,
   but what it learns from everyone else is ε-DP), then full history;
2. sensitive categories: excluded above explicit consent above included;
3. retention: shorter above longer;
4. personalization consent: not granted by default above pre-selected.

Arms whose treatments tie keep the experiment's arm order. A product manager
can override the whole order per experiment (``Experiment.privacy_order``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

# Rung 1: lower is more private. Levels absent here (added later) sort after full history.
PERSONALIZATION_RUNG = {
    "popularity": 0,
    "session": 0,
    "dp_popularity": 1,
    "cohort": 2,
    "dp_item_item": 3,
    "full": 4,
}
SENSITIVE_RUNG = {"exclude": 0, "explicit_consent": 1, "include": 2}


def treatment_privacy_key(treatment) -> tuple:
    """A sort key: a smaller key is a more privacy-preserving treatment."""
    level = treatment.personalization_level
    rung = PERSONALIZATION_RUNG.get(level, len(PERSONALIZATION_RUNG))
    if level in ("dp_popularity", "dp_item_item"):
        within = treatment.dp_epsilon if treatment.dp_epsilon is not None else math.inf
    elif level == "cohort":
        within = -(treatment.cohort_k or 0)
    else:
        within = 0
    return (
        rung,
        within,
        SENSITIVE_RUNG.get(treatment.sensitive_category_policy, len(SENSITIVE_RUNG)),
        treatment.retention_days,
        bool(treatment.default_personalization_consent),
    )


def arms_privacy_order(arms: Iterable) -> list[str]:
    """Arm keys, most private first, by their treatments (ties keep the given order)."""
    arms = list(arms)
    return [arm.key for arm in sorted(arms, key=lambda arm: treatment_privacy_key(arm.treatment))]


def experiment_privacy_order(*, experiment, arms: Iterable | None = None) -> list[str]:
    """The experiment's own order when it states one, else the ladder's."""
    if experiment.privacy_order:
        return list(experiment.privacy_order)
    arms = experiment.arms.select_related("treatment").order_by("id") if arms is None else arms
    return arms_privacy_order(arms)
