"""Reads behind the dashboard pages: which experiments a user sees, and the rows each page is built from.

Queries only: ``pages`` assembles them into the pages' view-models,
``presenters`` turns snapshot documents into rows and sentences. Everything
the pages show about results comes from stored ``ResultSnapshot`` documents,
with three exceptions read live: the arms' treatments (their compliance
findings are computed from them), the monitor's alerts, and the share of GMV
from recommendations, which the snapshot does not carry yet
(``recommendation_gmv_shares`` computes it over the snapshot's own window, so
it matches the snapshot's numbers).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.db.models import (
    Case,
    DateTimeField,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Prefetch,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
)

from experiments.dashboard import presenters
from experiments.disclosure import segments_suppress
from experiments.models import (
    Arm,
    Experiment,
    ExperimentAlert,
    OrderLine,
    OutcomeEvent,
    ResultSnapshot,
)
from experiments.rules import experiments_visible_q

# Enough points to see a trend, few enough to draw and send quickly.
HISTORY_POINTS = 120
# An order line counts as bought from a recommendation when the subject clicked
# a recommendation of that product in this many days before the order.
RECOMMENDATION_ATTRIBUTION_WINDOW = timedelta(days=7)


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

    Over the snapshot's window and subjects (its phase, exposed in the window,
    orders after exposure), uncapped. One aggregate query, cached per run.
    """
    cache_key = f"dashboard:rec-gmv:{snapshot.pk}:{snapshot.computed_at.timestamp()}"
    cached = cache.get(cache_key)
    if isinstance(cached, dict):
        return {arm: presenters.RecommendationGmvShare(**values) for arm, values in cached.items()}
    money = DecimalField(max_digits=20, decimal_places=2)
    lines = (
        OrderLine.objects.filter(
            # One filter() call: every condition applies to the same exposure row.
            subject__exposures__experiment_id=snapshot.experiment_id,
            subject__exposures__phase=snapshot.phase,
            subject__exposures__first_exposed_at__gte=snapshot.window_start,
            subject__exposures__first_exposed_at__lt=snapshot.window_end,
            subject__exposures__first_exposed_at__lte=F("occurred_at"),
            occurred_at__lt=snapshot.window_end,
        )
        .annotate(
            arm_key=F("subject__exposures__arm__key"),
            exposed_at=F("subject__exposures__first_exposed_at"),
            attribution_start=ExpressionWrapper(
                F("occurred_at") - Value(RECOMMENDATION_ATTRIBUTION_WINDOW), output_field=DateTimeField()
            ),
            line_value=ExpressionWrapper(F("quantity") * F("price"), output_field=money),
        )
        .annotate(
            from_recommendation=Exists(
                OutcomeEvent.objects.filter(
                    subject_id=OuterRef("subject_id"),
                    type=OutcomeEvent.Type.REC_CLICK,
                    product_id=OuterRef("product_id"),
                    occurred_at__gte=OuterRef("exposed_at"),
                    occurred_at__lte=OuterRef("occurred_at"),
                ).filter(occurred_at__gte=OuterRef("attribution_start"))
            )
        )
        .order_by()
        .values("arm_key")
        .annotate(
            total=Sum("line_value"),
            attributed=Sum(Case(When(from_recommendation=True, then=F("line_value")), default=Value(0),
                                output_field=money)),
        )
    )
    shares = {
        row["arm_key"]: {"attributed": float(row["attributed"] or 0), "total": float(row["total"] or 0)}
        for row in lines
    }
    cache.set(cache_key, shares, timeout=3600)
    return {arm: presenters.RecommendationGmvShare(**values) for arm, values in shares.items()}
