"""Who may see and act on an experiment's results (django-rules object permissions).

An experiment's results are visible to its owner, the viewers it names, and
staff. Recomputing them on demand costs a worker minutes, so only the owner
and staff may ask for it; named viewers read.

Views ask Django's permission framework (``user.has_perm(perm, experiment)``);
``rules.permissions.ObjectPermissionBackend`` answers from the predicates
below. The list page cannot ask row by row, so ``experiments_visible_q`` states
the same rule as a queryset filter; a test holds the two to each other.

This module is found by ``rules.apps.AutodiscoverRulesConfig`` (INSTALLED_APPS).
"""

from __future__ import annotations

import rules
from django.db.models import Q

VIEW_RESULTS = "experiments.view_experiment_results"
RECOMPUTE_RESULTS = "experiments.recompute_experiment_results"


@rules.predicate
def is_experiment_owner(user, experiment) -> bool:
    return experiment is not None and experiment.owner_id == user.pk


@rules.predicate
def is_named_viewer(user, experiment) -> bool:
    if experiment is None:
        return False
    # Prefetched viewers (the list page) are read without a query.
    cached = getattr(experiment, "_prefetched_objects_cache", {}).get("viewers")
    if cached is not None:
        return any(viewer.pk == user.pk for viewer in cached)
    return experiment.viewers.filter(pk=user.pk).exists()


# Inactive accounts keep their rows (the audit trail needs them) but lose access.
can_view_results = rules.is_active & (is_experiment_owner | is_named_viewer | rules.is_staff)
can_recompute_results = rules.is_active & (is_experiment_owner | rules.is_staff)

rules.add_perm(VIEW_RESULTS, can_view_results)
rules.add_perm(RECOMPUTE_RESULTS, can_recompute_results)


def experiments_visible_q(user) -> Q | None:
    """``can_view_results`` as a filter on ``Experiment``; None means "every experiment".

    Superusers pass every ``has_perm`` (Django's rule), so they see every experiment too.
    """
    if not user.is_authenticated or not user.is_active:
        return Q(pk__in=[])
    if user.is_staff or user.is_superuser:
        return None
    from experiments.models import Experiment

    # A subquery rather than a join on viewers: no duplicate rows, no DISTINCT.
    named = Experiment.viewers.through.objects.filter(user_id=user.pk).values("experiment_id")
    return Q(owner_id=user.pk) | Q(pk__in=named)
