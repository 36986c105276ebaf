"""Reads behind the dashboard pages: which experiments a user sees, and each page's data.

Everything the pages show about results comes from stored ``ResultSnapshot``
documents (``presenters`` turns them into rows and sentences), with three
exceptions read live: the arms' treatments and their compliance findings, the
monitor's alerts, and the share of GMV from recommendations, which the
snapshot does not carry yet (``recommendation_gmv_shares`` computes it over
the snapshot's own window, so it matches the snapshot's numbers).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
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
from django.utils import timezone

from config.schedule import RESULTS_EVERY_MINUTES
from consent.compliance import Finding, treatment_compliance_review
from consent.selectors import purpose_retention_limits
from experiments.dashboard import charts, formatting, presenters
from experiments.dashboard.formatting import MetricFormat, number
from experiments.dashboard.recompute import RecomputeStatus, recompute_status
from experiments.disclosure import segments_suppress
from experiments.models import (
    Arm,
    Experiment,
    ExperimentAlert,
    OrderLine,
    OutcomeEvent,
    PrivacyTreatment,
    ResultSnapshot,
)
from experiments.rules import experiments_visible_q

logger = logging.getLogger(__name__)

SCHEMA_VERSION = ResultSnapshot.SCHEMA_VERSION
READABLE = ResultSnapshot.READABLE_SCHEMA_VERSIONS
# Results older than two scheduled runs mean the periodic job is not running.
STALE_AFTER = timedelta(minutes=2 * RESULTS_EVERY_MINUTES)
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


@dataclass(frozen=True)
class ExperimentListRow:
    experiment: Experiment
    arms: tuple[str, ...]
    days_running: int | None
    subjects: int | None
    planned_subjects: int | None
    progress_percent: int | None
    srm: str  # ok | mismatch | untested
    verdict: str
    verdict_tone: str
    snapshot_at: datetime | None

    @property
    def subjects_text(self) -> str:
        return "" if self.subjects is None else number(self.subjects)

    @property
    def planned_text(self) -> str:
        return "" if self.planned_subjects is None else number(self.planned_subjects)


def _latest_snapshots(experiment_ids: Sequence[int]) -> dict[int, dict]:
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


def short_verdict(snapshot: dict | None) -> tuple[str, str]:
    """The list page's one-line verdict and its tone."""
    if snapshot is None:
        return "No results yet", presenters.NEUTRAL
    if snapshot["schema_version"] not in READABLE:
        return "Results in an old format: recompute", presenters.NEUTRAL
    if snapshot["status"] == ResultSnapshot.Status.NO_EXPOSURES:
        return "No exposures yet", presenters.NEUTRAL
    if snapshot["status"] == ResultSnapshot.Status.ARM_WITHOUT_EXPOSURES:
        return "An arm has no subjects yet", presenters.BAD
    decision = snapshot.get("data__decision") or {}
    outcome = decision.get("outcome")
    final = " (final)" if decision.get("final") else ""
    if outcome == "ship":
        return f"Ship {decision.get('arm')}{final}", presenters.GOOD
    if outcome == "keep_control":
        return f"Keep the control{final}", presenters.NEUTRAL
    if outcome == "invalid":
        return "Invalid: sample-ratio mismatch", presenters.BAD
    return "Keep running", presenters.NEUTRAL


def experiment_list_rows(*, experiments: Sequence[Experiment], now: datetime | None = None) -> list[ExperimentListRow]:
    now = now or timezone.now()
    snapshots = _latest_snapshots([experiment.pk for experiment in experiments])
    rows = []
    for experiment in experiments:
        arms = tuple(arm.key for arm in experiment.arms.all())
        snapshot = snapshots.get(experiment.pk)
        days = None
        if experiment.started_at:
            days = max(0, ((experiment.ended_at or now) - experiment.started_at).days)
        planned = experiment.planned_subjects_per_arm * len(arms) if experiment.planned_subjects_per_arm else None
        subjects = snapshot["subjects"] if snapshot else None
        progress = None
        if planned and subjects is not None:
            progress = min(100, round(100 * subjects / planned))
        if snapshot is None or snapshot["srm_flag"] is None:
            srm = "untested"
        else:
            srm = "mismatch" if snapshot["srm_flag"] else "ok"
        verdict, tone = short_verdict(snapshot)
        rows.append(
            ExperimentListRow(
                experiment=experiment, arms=arms, days_running=days, subjects=subjects, planned_subjects=planned,
                progress_percent=progress, srm=srm, verdict=verdict, verdict_tone=tone,
                snapshot_at=snapshot["computed_at"] if snapshot else None,
            )
        )
    return rows


# --- the detail page -------------------------------------------------------------


def experiment_for_dashboard(*, key: str) -> Experiment | None:
    return Experiment.objects.select_related("owner").filter(key=key).first()


def snapshot_latest(*, experiment: Experiment) -> ResultSnapshot | None:
    """The latest run, its segment cells of fewer than k subjects suppressed (every page and export reads it here)."""
    snapshot = ResultSnapshot.objects.filter(experiment=experiment).order_by("-window_end", "-pk").first()
    if snapshot is not None and isinstance(snapshot.data, dict):
        snapshot.data = segments_suppress(snapshot.data)
    return snapshot


@dataclass(frozen=True)
class ArmHeader:
    key: str
    is_control: bool
    weight: float
    treatment: PrivacyTreatment
    findings: tuple[Finding, ...]

    @property
    def worst_severity(self) -> str:
        return self.findings[0].severity if self.findings else ""


def arm_headers(*, experiment: Experiment) -> list[ArmHeader]:
    """Each arm's treatment with its UU PDP / GDPR compliance findings (most severe first)."""
    limits = purpose_retention_limits()
    return [
        ArmHeader(
            key=arm.key,
            is_control=arm.is_control,
            weight=arm.weight,
            treatment=arm.treatment,
            findings=treatment_compliance_review(arm.treatment, purpose_retention_days=limits),
        )
        for arm in experiment.arms.select_related("treatment").order_by("id")
    ]


def effect_history(
    *, experiment: Experiment, phase: int, max_points: int = HISTORY_POINTS
) -> list[tuple[datetime, list]]:
    """``(window_end, overall comparisons)`` of the phase's readable runs, oldest first, thinned evenly."""
    runs = list(
        ResultSnapshot.objects.filter(
            experiment=experiment, phase=phase, schema_version__in=READABLE, status=ResultSnapshot.Status.OK
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


def timeline_series(history: Sequence[tuple[datetime, list]], *, metric: MetricFormat, arms: Sequence[str]
                    ) -> list[charts.TimeSeries]:
    """Each arm's absolute effect on ``metric`` over time, in display units, at local times."""
    points: dict[str, list[charts.TimePoint]] = {arm: [] for arm in arms}
    for window_end, comparisons in history:
        for comparison in comparisons:
            if comparison.get("metric") != metric.key or comparison.get("arm") not in points:
                continue
            absolute = comparison["absolute"]
            low, high = absolute["ci"] or (None, None)
            points[comparison["arm"]].append(
                charts.TimePoint(
                    at=timezone.localtime(window_end),
                    estimate=absolute["estimate"] * metric.scale,
                    low=None if low is None else low * metric.scale,
                    high=None if high is None else high * metric.scale,
                )
            )
    return [charts.TimeSeries(label=arm, points=tuple(series)) for arm, series in points.items() if series]


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


# --- the detail page, assembled ----------------------------------------------------


@dataclass(frozen=True)
class Freshness:
    computed_at: datetime
    window_start: datetime
    window_end: datetime
    compute_seconds: float
    stale: bool
    age: str  # "just now", "3 minutes ago"


@dataclass
class ResultsPage:
    experiment: Experiment
    arms: list[ArmHeader]
    snapshot: ResultSnapshot | None
    state: presenters.PageState
    freshness: Freshness | None = None
    document: dict = field(default_factory=dict)
    primary_metric_label: str = ""
    metric_choices: list[tuple[str, str]] = field(default_factory=list)
    results: list[presenters.ArmResults] = field(default_factory=list)
    skipped_metrics: list[dict] = field(default_factory=list)
    descriptive: list = field(default_factory=list)  # presenters.DescriptiveRatio, never tested
    cuped: bool = False
    families: bool = False  # the report has a confirmatory family (schema 2) rather than one Holm family
    forest_rows: list[charts.ForestRow] = field(default_factory=list)
    forest_chart: charts.ResponsiveChart | None = None
    timeline_metric: str = ""
    timeline_metric_label: str = ""
    timeline_series: list[charts.TimeSeries] = field(default_factory=list)
    timeline_chart: charts.ResponsiveChart | None = None
    tradeoff: presenters.Tradeoff | None = None
    segment_metric: str = ""
    segment_metric_label: str = ""
    segments: list[presenters.SegmentTable] = field(default_factory=list)
    segment_adjustment: str = ""
    recommendations: list[presenters.RecommendationRow] = field(default_factory=list)
    gmv_shares: dict = field(default_factory=dict)
    guardrails: list[presenters.GuardrailRow] = field(default_factory=list)
    srm: presenters.SrmSummary | None = None
    alerts: list[ExperimentAlert] = field(default_factory=list)
    history: list[MonitorRun] = field(default_factory=list)
    recompute: RecomputeStatus | None = None

    @property
    def targeting(self) -> str:
        """Who the experiment is for, in words (shown before any result exists)."""
        return formatting.targeting_text(self.experiment.targeting)

    @property
    def confidence(self) -> str:
        """The intervals' level in percent ("95"): the alpha the run used, else the experiment's."""
        alpha = (self.document.get("experiment") or {}).get("alpha") or self.experiment.alpha
        return f"{(1 - alpha) * 100:g}"


def snapshot_schema_problem(snapshot: ResultSnapshot) -> str:
    """Why this code cannot read the snapshot's document ("" when it can)."""
    stored = snapshot.data.get("schema_version") if isinstance(snapshot.data, dict) else None
    if snapshot.schema_version in READABLE and stored == snapshot.schema_version:
        return ""
    version = snapshot.schema_version if snapshot.schema_version not in READABLE else stored
    if isinstance(version, int) and version > SCHEMA_VERSION:
        # A newer pipeline wrote it: this web process is the old one (a deploy in progress).
        return (
            f"The latest results were stored in format version {version}, newer than the version "
            f"{SCHEMA_VERSION} this dashboard reads. Reload once the deployment has finished."
        )
    names = [str(v) for v in READABLE]
    readable = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    return (
        f"The latest results were stored in format version {version}, and this dashboard reads "
        f"version{'s' if len(READABLE) > 1 else ''} {readable}. Recompute the results to see them here; the old "
        "run can still be downloaded as JSON."
    )


def _state(snapshot: ResultSnapshot | None) -> presenters.PageState:
    if snapshot is None:
        return presenters.PageState(
            kind="none", message="No results have been computed for this experiment yet."
        )
    problem = snapshot_schema_problem(snapshot)
    if problem:
        return presenters.PageState(kind="old_schema", message=problem)
    if snapshot.status != ResultSnapshot.Status.OK:
        return presenters.PageState(kind=snapshot.status, message=snapshot.data.get("message", ""))
    return presenters.PageState(kind="ok")


def _metric_choice(requested: str, choices: list[tuple[str, str]], default: str) -> str:
    keys = [key for key, _ in choices]
    if requested in keys:
        return requested
    return default if default in keys else (keys[0] if keys else "")


def results_page(
    *,
    experiment: Experiment,
    segment_metric: str = "",
    timeline_metric: str = "",
    now: datetime | None = None,
) -> ResultsPage:
    """Everything the detail page shows, from the latest snapshot and the run history."""
    now = now or timezone.now()
    snapshot = snapshot_latest(experiment=experiment)
    page = ResultsPage(
        experiment=experiment,
        arms=arm_headers(experiment=experiment),
        snapshot=snapshot,
        state=_state(snapshot),
        alerts=experiment_alerts(experiment=experiment),
        history=monitor_history(experiment=experiment),
        recompute=recompute_status(experiment=experiment, now=now),
    )
    if snapshot is None:
        return page
    page.freshness = Freshness(
        computed_at=snapshot.computed_at,
        window_start=snapshot.window_start,
        window_end=snapshot.window_end,
        compute_seconds=snapshot.compute_seconds,
        stale=experiment.status == Experiment.Status.RUNNING and now - snapshot.computed_at > STALE_AFTER,
        age=formatting.age(snapshot.computed_at, now),
    )
    if page.state.kind in ("none", "old_schema"):
        return page
    try:
        _fill_results(page, snapshot, segment_metric=segment_metric, timeline_metric=timeline_metric)
    except (KeyError, TypeError, ValueError, IndexError, StopIteration):
        # A document that does not have its version's shape is a pipeline bug;
        # the page says so (and the log has the trace) instead of failing.
        logger.exception("snapshot %s of experiment %s could not be read", snapshot.pk, experiment.key)
        page.state = presenters.PageState(
            kind="unreadable",
            message="The latest results could not be read (the error is logged). Recompute them, and tell the "
            "platform team if this persists.",
        )
    return page


def _fill_results(page: ResultsPage, snapshot: ResultSnapshot, *, segment_metric: str, timeline_metric: str) -> None:
    document = snapshot.data
    experiment = page.experiment
    page.document = document
    page.srm = presenters.srm_summary(document)
    if page.state.kind != "ok":
        return
    formats = presenters.metric_formats(document)
    primary = document["experiment"]["primary_metric"]
    page.primary_metric_label = formats[primary].label if primary in formats else primary
    compared = {c["metric"] for c in (document.get("report") or {}).get("comparisons", [])}
    page.metric_choices = [(key, fmt.label) for key, fmt in formats.items() if key in compared]
    page.results = presenters.results_table(document, primary_metric=primary)
    page.skipped_metrics = list(document.get("skipped_metrics", []))
    page.descriptive = presenters.descriptive_ratios(document)
    page.cuped = bool(document.get("settings", {}).get("cuped"))
    page.families = "confirmatory" in ((document.get("report") or {}).get("adjustment") or {})
    page.forest_rows = presenters.forest_rows(document)
    page.forest_chart = charts.responsive(
        charts.forest_plot,
        rows=page.forest_rows,
        chart_id="forest-plot",
        title="Forest plot: relative lift of each arm against the control, per metric",
        description=(
            f"Relative lift in percent with its {page.confidence}% interval (Holm-adjusted significance colours "
            "the point). "
            + " ".join(
                f"{row.group}, {row.label}: {presenters.relative_tick(row.estimate)}." for row in page.forest_rows
            )
        ),
        axis_label="Relative lift vs control (%) — the dashed line is no effect",
        axis_label_short="Relative lift vs control (%)",
        tick_format=presenters.relative_tick,
    )
    page.timeline_metric = _metric_choice(timeline_metric, page.metric_choices, primary)
    if page.timeline_metric:
        metric = formats[page.timeline_metric]
        page.timeline_metric_label = metric.label
        history = effect_history(experiment=experiment, phase=snapshot.phase)
        page.timeline_series = timeline_series(history, metric=metric, arms=presenters.treatment_arms(document))
        limit = presenters.guardrail_limit(document, metric.key)
        references = [] if limit is None else [
            charts.ReferenceLine(value=limit * metric.scale, label=f"guardrail {metric.difference(limit)}")
        ]
        page.timeline_chart = charts.responsive(
            charts.timeline_chart,
            series=page.timeline_series,
            chart_id="timeline-chart",
            title=f"Cumulative effect on {metric.label} over time",
            description=(
                f"Each line is a treatment arm's cumulative difference from the control in {metric.label} "
                f"({metric.difference_unit or 'units'}) at each analysis run, with its {page.confidence}% "
                "interval as a band; "
                f"{sum(len(s.points) for s in page.timeline_series)} points from {len(history)} runs."
            ),
            y_label=f"Δ {metric.label} ({metric.difference_unit})" if metric.difference_unit else f"Δ {metric.label}",
            tick_format=metric.axis,
            references=references,
        )
    page.tradeoff = presenters.tradeoff(document, planned_subjects_per_arm=experiment.planned_subjects_per_arm)
    page.segment_metric = _metric_choice(segment_metric, page.metric_choices, primary)
    page.segment_metric_label = formats[page.segment_metric].label if page.segment_metric else ""
    page.segments = presenters.segment_tables(document, metric=page.segment_metric)
    page.segment_adjustment = (document.get("report") or {}).get("adjustment", {}).get("segments", "")
    page.gmv_shares = recommendation_gmv_shares(snapshot=snapshot)
    page.recommendations = presenters.recommendation_rows(document, gmv_shares=page.gmv_shares)
    page.guardrails = presenters.guardrail_rows(document)


# --- the JSON endpoint -------------------------------------------------------------


def results_payload(page: ResultsPage) -> dict:
    """The detail page's data for scripts: raw numbers from the snapshot, plus what the page adds."""
    experiment, snapshot, document = page.experiment, page.snapshot, page.document
    payload: dict = {
        "experiment": {
            "key": experiment.key,
            "name": experiment.name,
            "status": experiment.status,
            "owner": experiment.owner.get_username(),
            "primary_metric": experiment.primary_metric,
            "alpha": experiment.alpha,
            "planned_subjects_per_arm": experiment.planned_subjects_per_arm,
            "started_at": experiment.started_at,
            "ended_at": experiment.ended_at,
            "arms": [
                {
                    "key": arm.key,
                    "is_control": arm.is_control,
                    "weight": arm.weight,
                    "treatment": arm.treatment.as_contract(),
                    "compliance_findings": [
                        {"severity": f.severity, "code": f.code, "message": f.message, "reference": f.reference}
                        for f in arm.findings
                    ],
                }
                for arm in page.arms
            ],
        },
        "state": page.state.kind,
        "message": page.state.message,
        "snapshot": None,
        "alerts": [
            {
                "kind": alert.kind, "arm": alert.arm, "metric": alert.metric, "message": alert.message,
                "action": alert.action, "created_at": alert.created_at, "acknowledged_at": alert.acknowledged_at,
            }
            for alert in page.alerts
        ],
        "recompute": page.recompute.as_json() if page.recompute else None,
    }
    if snapshot is not None:
        payload["snapshot"] = {
            "id": snapshot.pk, "schema_version": snapshot.schema_version, "status": snapshot.status,
            "phase": snapshot.phase, "window_start": snapshot.window_start, "window_end": snapshot.window_end,
            "computed_at": snapshot.computed_at, "subjects": snapshot.subjects, "srm_flag": snapshot.srm_flag,
            "guardrail_breached": snapshot.guardrail_breached, "stale": page.freshness.stale,
        }
    if page.state.kind in ("ok", "no_exposures", "arm_without_exposures"):
        report = document.get("report") or {}
        verdict = page.tradeoff.verdict if page.tradeoff else presenters.verdict(document)
        payload.update(
            {
                "arms": document["arms"],
                "metrics": document["metrics"],
                "settings": document.get("settings"),
                "decision": document.get("decision"),
                "verdict": {"text": verdict.text, "outcome": verdict.outcome, "rule": verdict.rule},
                "comparisons": report.get("comparisons", []),
                "skipped_metrics": document.get("skipped_metrics", []),
                "guardrails": document.get("guardrails", []),
                "srm": document.get("srm"),
                "segments": report.get("segments", []),
                "segment_adjustment": report.get("adjustment", {}).get("segments"),
                "recommendation_quality": [
                    {
                        "arm": arm["key"],
                        "impressions": stats["ctr"]["denominator_sum"],
                        "clicks": stats["ctr"]["numerator_sum"],
                        "ctr": (stats["ctr"]["numerator_sum"] / stats["ctr"]["denominator_sum"]
                                if stats["ctr"]["denominator_sum"] else None),
                        "gmv_from_recommendations": page.gmv_shares[arm["key"]].attributed
                        if arm["key"] in page.gmv_shares else None,
                        "gmv_total": page.gmv_shares[arm["key"]].total if arm["key"] in page.gmv_shares else None,
                        "gmv_share_from_recommendations": page.gmv_shares[arm["key"]].share
                        if arm["key"] in page.gmv_shares else None,
                    }
                    for arm in document["arms"]
                    if (stats := (document.get("statistics") or {}).get(arm["key"])) and "ctr" in stats
                ],
            }
        )
    return payload
