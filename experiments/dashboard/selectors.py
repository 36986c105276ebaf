"""Reads behind the dashboard pages: which experiments a user sees, and the rows each page is built from.

Queries only: ``pages`` assembles them into the pages' view-models,
``presenters`` turns snapshot documents into rows and sentences. Everything
the pages show about results comes from stored ``ResultSnapshot`` documents,
with two exceptions read live: the arms' treatments (their compliance findings
are computed from them) and the monitor's alerts (and the share of GMV from
recommendations of a run stored before the pipeline computed it:
``recommendation_gmv_shares``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db.models import (
    OuterRef,
    Prefetch,
    QuerySet,
    Subquery,
)

from experiments.dashboard import presenters
from experiments.disclosure import segments_suppress
from experiments.metrics.attribution import recommendation_gmv_attribution
from experiments.models import (
    Arm,
    Experiment,
    ExperimentAlert,
    ResultSnapshot,
)
from experiments.rules import experiments_visible_q

# How long an older run's recommendation attribution (computed live) is kept in the cache.
OLDER_RUN_ATTRIBUTION_SECONDS = 24 * 3600

# Enough points to see a trend, few enough to draw and send quickly.
HISTORY_POINTS = 120


# --- the experiment list ---------------------------------------------------------


def dashboard_experiments(*, user, status: str = "", owner=None) -> QuerySet[Experiment]:
    """The experiments ``user`` may see (``experiments.rules``), newest first, optionally filtered."""
    experiments = Experiment.objects.select_related("owner").prefetch_related(
        Prefetch("arms", queryset=Arm.objects.order_by("id"))
    )
    visible = experiments_visible_q(user)
    if visible is not None:
        experiments = experiments.filter(visible)
    if status:
        experiments = experiments.filter(status=status)
    if owner is not None:
        experiments = experiments.filter(owner=owner)
    return experiments.order_by("-created_at", "-id")


def dashboard_owner_choices(*, user) -> QuerySet:
    """Owners of the experiments ``user`` sees: the choices of the list's owner filter."""
    visible = dashboard_experiments(user=user).order_by().values("owner_id")
    return get_user_model().objects.filter(pk__in=visible).order_by("username")


def snapshot_summaries_latest(*, experiment_ids: Sequence[int]) -> dict[int, dict]:
    """The latest snapshot of each experiment, without the bulky parts of its document."""
    latest = ResultSnapshot.objects.filter(experiment_id=OuterRef("pk")).order_by("-window_end", "-pk").values("pk")[:1]
    ids = (
        Experiment.objects.filter(pk__in=experiment_ids)
        .annotate(latest=Subquery(latest))
        .exclude(latest=None)
        .values_list("latest", flat=True)
    )
    rows = ResultSnapshot.objects.filter(pk__in=list(ids)).values(
        "experiment_id", "schema_version", "status", "subjects", "srm_flag", "computed_at", "data__decision"
    )
    return {row["experiment_id"]: row for row in rows}


# --- the detail page -------------------------------------------------------------


def experiment_for_dashboard(*, key: str) -> Experiment | None:
    return Experiment.objects.select_related("owner").filter(key=key).first()


def snapshot_latest(*, experiment: Experiment) -> ResultSnapshot | None:
    """The latest run, its segment cells of fewer than k subjects suppressed (every page and export reads it here)."""
    snapshot = ResultSnapshot.objects.filter(experiment=experiment).order_by("-window_end", "-pk").first()
    if snapshot is not None and isinstance(snapshot.data, dict):
        snapshot.data = segments_suppress(snapshot.data)
    return snapshot


def experiment_arms(*, experiment: Experiment) -> list[Arm]:
    """The experiment's arms with their treatments, in id order (the order of the algorithm and the pages)."""
    return list(experiment.arms.select_related("treatment").order_by("id"))


def effect_history(
    *, experiment: Experiment, phase: int, schema_versions: Sequence[int], max_points: int = HISTORY_POINTS
) -> list[tuple[datetime, list]]:
    """``(window_end, overall comparisons)`` of the phase's runs in ``schema_versions``, oldest first, thinned evenly."""
    runs = list(
        ResultSnapshot.objects.filter(
            experiment=experiment, phase=phase, schema_version__in=schema_versions, status=ResultSnapshot.Status.OK
        )
        .order_by("window_end")
        .values_list("pk", flat=True)
    )
    if len(runs) > max_points:
        step = (len(runs) - 1) / (max_points - 1)
        runs = sorted({runs[round(i * step)] for i in range(max_points)})
    rows = (
        ResultSnapshot.objects.filter(pk__in=runs)
        .order_by("window_end")
        .values_list("window_end", "data__report__comparisons")
    )
    return [(window_end, comparisons or []) for window_end, comparisons in rows]


@dataclass(frozen=True)
class MonitorRun:
    window_end: datetime
    computed_at: datetime
    subjects: int
    status: str
    srm_flag: bool | None
    srm_p_value: float | None
    guardrail_breached: bool


def monitor_history(*, experiment: Experiment, limit: int = 20) -> list[MonitorRun]:
    """The latest runs' sample-ratio test and guardrail state, newest first."""
    rows = (
        ResultSnapshot.objects.filter(experiment=experiment)
        .order_by("-window_end")
        .values_list("window_end", "computed_at", "subjects", "status", "srm_flag", "data__srm__p_value",
                     "guardrail_breached")[:limit]
    )
    return [MonitorRun(*row) for row in rows]


def experiment_alerts(*, experiment: Experiment, limit: int = 50) -> list[ExperimentAlert]:
    return list(ExperimentAlert.objects.filter(experiment=experiment).order_by("-created_at", "-pk")[:limit])


def recommendation_gmv_shares(*, snapshot: ResultSnapshot) -> dict[str, presenters.RecommendationGmvShare]:
    """Per arm, the order value bought after a recommendation click on the same product, and all of it.

    As the run stored it (``recommendation_gmv``); a run stored before the
    pipeline computed it gets it computed over the run's own window.
    """
    shares = snapshot.data.get("recommendation_gmv")
    if not isinstance(shares, dict):
        # A stored run's window is fixed, so is its answer: computed once per run, not on every page view.
        shares = cache.get_or_set(
            f"dashboard:recommendation-gmv:{snapshot.pk}:{snapshot.computed_at.isoformat()}",
            lambda: recommendation_gmv_attribution(
                experiment_id=snapshot.experiment_id, phase=snapshot.phase,
                window_start=snapshot.window_start, window_end=snapshot.window_end,
            ),
            timeout=OLDER_RUN_ATTRIBUTION_SECONDS,
        )
    return {arm: presenters.RecommendationGmvShare(**values) for arm, values in shares.items()}
