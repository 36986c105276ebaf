"""The dashboard pages' view-models: the list's rows and the detail page, assembled from selectors and presenters.

``selectors`` reads the rows, ``presenters`` turns a snapshot document into
table rows, chart inputs and sentences, ``recompute`` says where a
"recompute now" stands; this module puts them together into what a template
shows (and what ``exports.results_payload`` sends to scripts).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.utils import timezone

from config.schedule import RESULTS_EVERY_MINUTES
from consent.compliance import Finding, treatment_compliance_review
from consent.selectors import purpose_retention_limits
from experiments.dashboard import charts, formatting, presenters, selectors
from experiments.dashboard.formatting import MetricFormat, number
from experiments.dashboard.recompute import RecomputeStatus, recompute_status
from experiments.models import Experiment, ExperimentAlert, PrivacyTreatment, ResultSnapshot
from experiments.results.document import READABLE_SCHEMA_VERSIONS, SCHEMA_VERSION, SnapshotDocument
from experiments.stats import Outcome

logger = logging.getLogger(__name__)

READABLE = READABLE_SCHEMA_VERSIONS
# Results older than two scheduled runs mean the periodic job is not running.
STALE_AFTER = timedelta(minutes=2 * RESULTS_EVERY_MINUTES)


# --- the experiment list ---------------------------------------------------------


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
    if outcome == Outcome.SHIP:
        return f"Ship {decision.get('arm')}{final}", presenters.GOOD
    if outcome == Outcome.KEEP_CONTROL:
        return f"Keep the control{final}", presenters.NEUTRAL
    if outcome == Outcome.INVALID:
        return "Invalid: sample-ratio mismatch", presenters.BAD
    return "Keep running", presenters.NEUTRAL


def experiment_list_rows(*, experiments: Sequence[Experiment], now: datetime | None = None) -> list[ExperimentListRow]:
    """The list page's rows: each experiment's arms, age, progress to its planned size, SRM state and verdict."""
    now = now or timezone.now()
    snapshots = selectors.snapshot_summaries_latest(experiment_ids=[experiment.pk for experiment in experiments])
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


@dataclass(frozen=True)
class ArmHeader:
    key: str
    is_control: bool
    weight: float
    treatment: PrivacyTreatment
    findings: tuple[Finding, ...]


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
        for arm in selectors.experiment_arms(experiment=experiment)
    ]


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
    engine: str = "frequentist"  # the experiment's engine when the snapshot was made (schema 4)
    bayesian: list = field(default_factory=list)  # presenters.BayesianRow, with the Bayesian engine
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
    adjustments: list = field(default_factory=list)  # presenters.AdjustmentRow (schema 5)
    health: presenters.HealthSummary | None = None  # schema 5
    exposure_days: presenters.ExposureDays | None = None  # schema 5, for the segments' metric
    recommendations: list[presenters.RecommendationRow] = field(default_factory=list)
    gmv_shares: dict = field(default_factory=dict)
    guardrails: list[presenters.GuardrailRow] = field(default_factory=list)
    srm: presenters.SrmSummary | None = None
    alerts: list[ExperimentAlert] = field(default_factory=list)
    history: list[selectors.MonitorRun] = field(default_factory=list)
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
    snapshot = selectors.snapshot_latest(experiment=experiment)
    page = ResultsPage(
        experiment=experiment,
        arms=arm_headers(experiment=experiment),
        snapshot=snapshot,
        state=_state(snapshot),
        alerts=selectors.experiment_alerts(experiment=experiment),
        history=selectors.monitor_history(experiment=experiment),
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
    typed = SnapshotDocument.from_dict(document)
    page.srm = presenters.srm_summary(typed)
    if page.state.kind != "ok":
        return
    formats = presenters.metric_formats(typed)
    primary = typed.primary_metric
    page.primary_metric_label = formats[primary].label if primary in formats else primary
    compared = {c["metric"] for c in typed.comparisons}
    page.metric_choices = [(key, fmt.label) for key, fmt in formats.items() if key in compared]
    page.results = presenters.results_table(typed, primary_metric=primary)
    page.skipped_metrics = list(typed.skipped_metrics)
    page.descriptive = presenters.descriptive_ratios(typed)
    page.engine = typed.engine or "frequentist"
    page.bayesian = presenters.bayesian_rows(typed)
    page.cuped = bool(typed.settings.get("cuped"))
    page.families = "confirmatory" in ((typed.report or {}).get("adjustment") or {})
    page.forest_rows = presenters.forest_rows(typed)
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
        history = selectors.effect_history(experiment=experiment, phase=snapshot.phase, schema_versions=READABLE)
        page.timeline_series = timeline_series(history, metric=metric, arms=presenters.treatment_arms(typed))
        limit = presenters.guardrail_limit(typed, metric.key)
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
    page.tradeoff = presenters.tradeoff(typed, planned_subjects_per_arm=experiment.planned_subjects_per_arm)
    page.segment_metric = _metric_choice(segment_metric, page.metric_choices, primary)
    page.segment_metric_label = formats[page.segment_metric].label if page.segment_metric else ""
    page.segments = presenters.segment_tables(typed, metric=page.segment_metric)
    page.segment_adjustment = (typed.report or {}).get("adjustment", {}).get("segments", "")
    page.adjustments = presenters.adjustment_rows(typed)
    page.health = presenters.health_summary(typed)
    page.exposure_days = presenters.exposure_days(typed, metric=page.segment_metric)
    page.gmv_shares = selectors.recommendation_gmv_shares(snapshot=snapshot)
    page.recommendations = presenters.recommendation_rows(typed, gmv_shares=page.gmv_shares)
    page.guardrails = presenters.guardrail_rows(typed)
