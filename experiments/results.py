"""Results: the metric pipeline fed to the stats engine, stored as a ``ResultSnapshot`` per run.

``compute_results(experiment=…, as_of=…)`` is the one entry point (the Celery
task ``experiments.tasks.results_compute`` calls it). It

1. computes every metric's sufficient statistics per arm and segment in one
   SQL statement (``experiments.metrics``);
2. runs the stats engine: Welch / CUPED / delta-method comparisons of each
   treatment arm with the control, Holm-adjusted overall and
   Benjamini–Hochberg across segments, and the sample-ratio test;
3. evaluates every guardrail twice: a fixed-horizon non-inferiority test at
   the guardrail's margin (the decision rule uses it) and the always-valid
   mSPRT against the same margin (the monitor uses it: safe to look at every
   15 minutes);
4. applies the decision rule (ship the arm with the best significant
   improvement in the primary metric whose guardrails are all non-inferior);
5. stores the JSON document (schema in docs/metrics.md) as the snapshot of the
   window ``[experiment start, as_of)``.

Idempotent: a run is identified by its window, so running it again over the
same data (a redelivered task) rewrites the same row with the same numbers.

``experiment_monitor(snapshot=…)`` acts on a stored run once: an alert for a
sample-ratio mismatch, and for a breached guardrail an alert and a pause.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from datetime import datetime

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from experiments.metrics import METRICS, SEGMENT_DIMENSIONS, MetricStatistics, metric_statistics
from experiments.models import Experiment, ExperimentAlert, Guardrail, Metric, ResultSnapshot
from experiments.stats import (
    InsufficientDataError,
    Statistic,
    analyze_statistics,
    difference_moments,
    noninferiority_test,
    sequential_test,
    srm_test,
)

logger = logging.getLogger(__name__)

SCHEMA_VERSION = ResultSnapshot.SCHEMA_VERSION
# The always-valid test is tuned (before any data) for this many subjects in two
# arms when the experiment does not say how many it plans per arm.
DEFAULT_TUNING_SAMPLE_SIZE = 10_000

Status = ResultSnapshot.Status


def _clean(value):
    """JSON-safe: NaN and infinities become null (PostgreSQL's jsonb refuses them)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def _statistic_dict(statistic: Statistic) -> dict:
    fields = {name: getattr(statistic, name) for name in statistic.__dataclass_fields__}
    return {"type": type(statistic).__name__, **fields}


def _metric_catalog() -> dict:
    return {
        metric: {"label": Metric(metric).label, "kind": kind, "higher_is_better": higher}
        for metric, (kind, higher) in METRICS.items()
    }


def _feasible_metrics(
    arms: Mapping[str, Mapping[str, Statistic]], control: str
) -> tuple[list[str], list[dict]]:
    """Metrics every treatment arm can be compared on; the others with the reason."""
    included, skipped = [], []
    for metric in METRICS:
        reason = None
        for arm, metrics in arms.items():
            if arm == control:
                continue
            try:
                difference_moments(arms[control][metric], metrics[metric])
            except InsufficientDataError as error:
                reason = f"arm {arm!r}: {error}"
                break
        if reason is None:
            included.append(metric)
        else:
            skipped.append({"metric": metric, "reason": reason})
    return included, skipped


def _previous_sequential(experiment: Experiment, phase: int, window_end: datetime) -> dict:
    """The running minimum of each guardrail's always-valid p-value, from the last earlier run."""
    previous = (
        ResultSnapshot.objects.filter(experiment=experiment, phase=phase, window_end__lt=window_end)
        .order_by("-window_end")
        .values_list("data", flat=True)
        .first()
    )
    if not previous or previous.get("schema_version") != SCHEMA_VERSION:
        return {}
    return {
        (entry["metric"], entry["arm"]): entry["sequential"]["p_value"]
        for entry in previous.get("guardrails", [])
        if entry.get("sequential")
    }


def _guardrails(
    experiment: Experiment,
    statistics: MetricStatistics,
    control: str,
    treatments: list[str],
    previous: dict,
) -> list[dict]:
    tuning = 2 * experiment.planned_subjects_per_arm if experiment.planned_subjects_per_arm else DEFAULT_TUNING_SAMPLE_SIZE
    entries = []
    for guardrail in Guardrail.objects.filter(experiment=experiment).order_by("metric"):
        higher_is_better = METRICS[guardrail.metric][1]
        harm = -guardrail.margin if higher_is_better else guardrail.margin
        for arm in treatments:
            entry = {
                "metric": guardrail.metric,
                "arm": arm,
                "margin": guardrail.margin,
                "higher_is_better": higher_is_better,
                "noninferiority": None,
                "sequential": None,
                "breached": False,
                "reason": "",
            }
            control_statistic = statistics.arms[control][guardrail.metric]
            treatment_statistic = statistics.arms[arm][guardrail.metric]
            try:
                ni = noninferiority_test(
                    control_statistic,
                    treatment_statistic,
                    margin=guardrail.margin,
                    higher_is_better=higher_is_better,
                    alpha=experiment.alpha,
                )
                seq = sequential_test(
                    control_statistic,
                    treatment_statistic,
                    tuning_sample_size=tuning,
                    alpha=experiment.alpha,
                    null_difference=harm,
                    previous_p_value=previous.get((guardrail.metric, arm), 1.0),
                )
            except InsufficientDataError as error:
                entry["reason"] = f"not testable yet: {error}"
                entries.append(entry)
                continue
            entry["noninferiority"] = ni.to_dict()
            entry["sequential"] = seq.to_dict()
            low, high = seq.confidence_sequence
            # Breached: the always-valid interval lies wholly on the harmful side of the margin.
            entry["breached"] = bool(seq.reject and (low > harm if not higher_is_better else high < harm))
            label = Metric(guardrail.metric).label
            if entry["breached"]:
                entry["reason"] = (
                    f"{label} in arm {arm!r}: the always-valid {1 - experiment.alpha:.0%} interval "
                    f"[{low:+.4g}, {high:+.4g}] lies beyond the tolerated harm {harm:+.4g} "
                    f"(estimate {seq.estimate:+.4g}, p={seq.p_value:.3g})."
                )
            elif ni.noninferior:
                entry["reason"] = f"{label} in arm {arm!r} is non-inferior at margin {guardrail.margin:g}."
            else:
                entry["reason"] = (
                    f"{label} in arm {arm!r}: non-inferiority at margin {guardrail.margin:g} "
                    f"is not yet shown (p={ni.p_value:.3g})."
                )
            entries.append(entry)
    return entries


def _decision(
    experiment: Experiment,
    report: dict | None,
    srm: dict | None,
    guardrails: list[dict],
    treatments: list[str],
) -> dict:
    primary = experiment.primary_metric
    higher_is_better = METRICS[primary][1]
    rule = (
        f"Ship the treatment arm with the largest significant "
        f"{'increase' if higher_is_better else 'decrease'} in {Metric(primary).label} "
        f"(Holm-adjusted, alpha {experiment.alpha:g}) whose guardrails are all non-inferior; "
        "never with a sample-ratio mismatch."
    )
    decision = {"rule": rule, "primary_metric": primary, "outcome": "inconclusive", "arm": None, "reasons": []}
    if srm is not None and srm.get("flag"):
        decision.update(outcome="invalid")
        decision["reasons"].append("Sample-ratio mismatch: the assignment or logging is broken; do not read effects.")
        return decision
    comparisons = {c["arm"]: c for c in (report or {}).get("comparisons", []) if c["metric"] == primary}
    if not comparisons:
        decision["reasons"].append(f"{Metric(primary).label} cannot be compared yet.")
        return decision
    better, worse = [], []
    for arm in treatments:
        comparison = comparisons.get(arm)
        if comparison is None or not comparison["significant"]:
            continue
        improves = (comparison["absolute"]["estimate"] > 0) == higher_is_better
        (better if improves else worse).append(arm)
    blocked = {}
    for entry in guardrails:
        ni = entry["noninferiority"]
        if entry["breached"] or ni is None or not ni["noninferior"]:
            blocked.setdefault(entry["arm"], []).append(entry["reason"])
    eligible = [arm for arm in better if arm not in blocked]
    if eligible:
        sign = 1 if higher_is_better else -1
        best = max(eligible, key=lambda arm: sign * comparisons[arm]["absolute"]["estimate"])
        decision.update(outcome="ship", arm=best)
        decision["reasons"].append(
            f"Arm {best!r} improves {Metric(primary).label} significantly and passes every guardrail."
        )
    elif better:
        decision["reasons"].extend(reason for arm in better for reason in blocked[arm])
        decision["reasons"].insert(0, "Arms that improve the primary metric fail a guardrail.")
    elif worse and len(worse) == len(treatments):
        decision.update(outcome="keep_control")
        decision["reasons"].append(f"Every treatment arm is significantly worse on {Metric(primary).label}.")
    else:
        decision["reasons"].append(f"No arm differs significantly from the control on {Metric(primary).label} yet.")
    return decision


def results_document(*, experiment: Experiment, as_of: datetime | None = None) -> tuple[str, dict, MetricStatistics]:
    """The snapshot's status and JSON document for the window ending at ``as_of`` (nothing stored)."""
    statistics = metric_statistics(experiment=experiment, as_of=as_of)
    arms = list(experiment.arms.select_related("treatment").order_by("id"))
    control_arm = next((arm for arm in arms if arm.is_control), None)
    if control_arm is None:
        raise ValidationError(f"Experiment {experiment.key!r} has no control arm.")
    control = control_arm.key
    treatments = [arm.key for arm in arms if not arm.is_control]
    weights = {arm.key: arm.weight for arm in arms}
    subjects = {arm.key: statistics.subjects.get(arm.key, 0) for arm in arms}
    document: dict = {
        "schema_version": SCHEMA_VERSION,
        "experiment": {
            "key": experiment.key,
            "name": experiment.name,
            "phase": experiment.phase,
            "primary_metric": experiment.primary_metric,
            "alpha": experiment.alpha,
        },
        "window": {"start": statistics.window_start.isoformat(), "end": statistics.window_end.isoformat()},
        "settings": {
            "gmv_cap_percentile": statistics.gmv_cap_percentile,
            "gmv_cap": statistics.gmv_cap,
            "pre_exposure_days": statistics.pre_exposure_days,
            "cuped": statistics.pre_exposure_days > 0,
            "segment_dimensions": list(SEGMENT_DIMENSIONS),
        },
        "arms": [
            {
                "key": arm.key,
                "treatment": arm.treatment.name,
                "personalization_level": arm.treatment.personalization_level,
                "consent_prompt": arm.treatment.consent_prompt,
                "is_control": arm.is_control,
                "weight": arm.weight,
                "subjects": subjects[arm.key],
            }
            for arm in arms
        ],
        "metrics": _metric_catalog(),
        "statistics": {
            arm: {metric: _statistic_dict(statistic) for metric, statistic in metrics.items()}
            for arm, metrics in statistics.arms.items()
        },
        "srm": None,
        "report": None,
        "skipped_metrics": [],
        "guardrails": [],
        "decision": None,
        "message": "",
    }
    total = sum(subjects.values())
    if total == 0:
        document["status"] = Status.NO_EXPOSURES
        document["message"] = "No subject has been exposed to this experiment in the window yet."
        return Status.NO_EXPOSURES, _clean(document), statistics
    srm = srm_test(subjects, weights)
    document["srm"] = srm.to_dict()
    empty = [arm for arm, n in subjects.items() if n == 0]
    if empty:
        document["status"] = Status.ARM_WITHOUT_EXPOSURES
        document["message"] = (
            f"Arm(s) {', '.join(empty)} have no exposed subjects yet, so no comparison is possible "
            f"(sample-ratio test p={srm.p_value:.3g})."
        )
        return Status.ARM_WITHOUT_EXPOSURES, _clean(document), statistics
    included, skipped = _feasible_metrics(statistics.arms, control)
    document["skipped_metrics"] = skipped
    if included:
        report = analyze_statistics(
            {arm: {metric: metrics[metric] for metric in included} for arm, metrics in statistics.arms.items()},
            control=control,
            weights=weights,
            alpha=experiment.alpha,
            segments={
                label: {arm: {metric: metrics[metric] for metric in included} for arm, metrics in by_arm.items()}
                for label, by_arm in statistics.segments.items()
            },
        )
        document["report"] = report.to_dict()
    else:
        document["message"] = "No metric can be compared yet: " + "; ".join(s["reason"] for s in skipped)
    previous = _previous_sequential(experiment, statistics.phase, statistics.window_end)
    document["guardrails"] = _guardrails(experiment, statistics, control, treatments, previous)
    document["decision"] = _decision(experiment, document["report"], document["srm"], document["guardrails"], treatments)
    document["status"] = Status.OK
    return Status.OK, _clean(document), statistics


def compute_results(*, experiment: Experiment, as_of: datetime | None = None, monitor: bool = True) -> ResultSnapshot:
    """Analyse the experiment over ``[start, as_of)`` and store the run; idempotent per window.

    ``as_of`` defaults to now (the task passes the time it was scheduled for,
    so a redelivered task analyses the same window). With ``monitor`` the
    monitor task is enqueued once the snapshot is committed.
    """
    started = time.perf_counter()
    as_of = as_of or timezone.now()
    experiment = Experiment.objects.get(pk=experiment.pk)
    status, document, statistics = results_document(experiment=experiment, as_of=as_of)
    fields = {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "window_start": statistics.window_start,
        "computed_at": timezone.now(),
        "compute_seconds": time.perf_counter() - started,
        "subjects": sum(arm["subjects"] for arm in document["arms"]),
        "srm_flag": None if document["srm"] is None else bool(document["srm"]["flag"]),
        "guardrail_breached": any(entry["breached"] for entry in document["guardrails"]),
        "data": document,
    }
    snapshot = _snapshot_upsert(experiment, statistics.phase, statistics.window_end, fields)
    if monitor:
        from experiments.tasks import experiment_monitor

        snapshot_id = snapshot.pk
        transaction.on_commit(lambda: experiment_monitor.delay(snapshot_id))
    logger.info(
        "experiment %s: results over %d subjects in %.2fs (%s)",
        experiment.key, fields["subjects"], fields["compute_seconds"], status,
    )
    return snapshot


def _snapshot_upsert(experiment: Experiment, phase: int, window_end: datetime, fields: dict) -> ResultSnapshot:
    for attempt in range(2):
        try:
            with transaction.atomic():
                snapshot = (
                    ResultSnapshot.objects.select_for_update()
                    .filter(experiment=experiment, phase=phase, window_end=window_end)
                    .first()
                )
                if snapshot is None:
                    return ResultSnapshot.objects.create(
                        experiment=experiment, phase=phase, window_end=window_end, **fields
                    )
                if snapshot.data != fields["data"]:
                    snapshot.monitored_at = None  # new numbers: the monitor looks again
                for name, value in fields.items():
                    setattr(snapshot, name, value)
                snapshot.save()
                return snapshot
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


# --- the monitor -----------------------------------------------------------------


def _alert_open(*, experiment: Experiment, kind: str, arm: str, metric: str, snapshot: ResultSnapshot,
                message: str, details: dict, action: str, now: datetime) -> ExperimentAlert | None:
    """Record an alert unless the same problem already has an open one."""
    if ExperimentAlert.objects.filter(
        experiment=experiment, kind=kind, arm=arm, metric=metric, acknowledged_at__isnull=True
    ).exists():
        return None
    try:
        with transaction.atomic():
            return ExperimentAlert.objects.create(
                experiment=experiment, kind=kind, arm=arm, metric=metric, snapshot=snapshot,
                message=message, details=details, action=action, created_at=now,
            )
    except IntegrityError:  # a concurrent monitor recorded it first
        return None


def experiment_monitor(*, snapshot: ResultSnapshot, now: datetime | None = None) -> dict:
    """Act on one stored run, once: alert on a sample-ratio mismatch, pause on a breached guardrail.

    Only the experiment's latest run of a running experiment is acted on; the
    action and its reason are recorded as an ``ExperimentAlert``.
    """
    now = now or timezone.now()
    outcome = {"snapshot": snapshot.pk, "alerts": [], "paused": False, "skipped": ""}
    with transaction.atomic():
        snapshot = ResultSnapshot.objects.select_for_update().select_related("experiment").get(pk=snapshot.pk)
        experiment = snapshot.experiment
        latest = ResultSnapshot.objects.filter(experiment=experiment).order_by("-window_end").values_list("pk", flat=True).first()
        if snapshot.monitored_at is not None:
            outcome["skipped"] = "already monitored"
            return outcome
        snapshot.monitored_at = now
        snapshot.save(update_fields=["monitored_at"])
        if latest != snapshot.pk or experiment.status != Experiment.Status.RUNNING:
            outcome["skipped"] = "not the latest run of a running experiment"
            return outcome
        if snapshot.srm_flag:
            srm = snapshot.data["srm"]
            alert = _alert_open(
                experiment=experiment, kind=ExperimentAlert.Kind.SRM, arm="", metric="", snapshot=snapshot,
                message=(
                    f"Sample-ratio mismatch in {experiment.key}: subjects per arm {srm['observed']} "
                    f"against the configured weights (chi² = {srm['chi2']:.1f}, p = {srm['p_value']:.2g}). "
                    "Check the assignment and exposure logging before reading any result."
                ),
                details=srm, action=ExperimentAlert.Action.NONE, now=now,
            )
            if alert is not None:
                outcome["alerts"].append(alert.pk)
                logger.warning("experiment %s: sample-ratio mismatch (p=%.2g)", experiment.key, srm["p_value"])
        breaches = [entry for entry in snapshot.data.get("guardrails", []) if entry["breached"]]
        for entry in breaches:
            alert = _alert_open(
                experiment=experiment, kind=ExperimentAlert.Kind.GUARDRAIL, arm=entry["arm"],
                metric=entry["metric"], snapshot=snapshot,
                message=f"Guardrail breached, experiment paused. {entry['reason']}",
                details=entry, action=ExperimentAlert.Action.PAUSED, now=now,
            )
            if alert is not None:
                outcome["alerts"].append(alert.pk)
        if breaches:
            from experiments.services import experiment_pause

            experiment_pause(experiment=experiment)
            outcome["paused"] = True
            logger.warning("experiment %s paused: %d guardrail breach(es)", experiment.key, len(breaches))
    return outcome


def experiments_monitor_pending(*, now: datetime | None = None) -> list[dict]:
    """Monitor every running experiment's latest run not yet acted on (catches a lost chain)."""
    outcomes = []
    for experiment in Experiment.objects.filter(status=Experiment.Status.RUNNING):
        snapshot = ResultSnapshot.objects.filter(experiment=experiment).order_by("-window_end").first()
        if snapshot is not None and snapshot.monitored_at is None:
            outcomes.append(experiment_monitor(snapshot=snapshot, now=now))
    return outcomes


def results_enqueue_running(*, now: datetime | None = None) -> list[int]:
    """Enqueue a results run for every running experiment, as of this minute.

    The analysis time is truncated to the minute, so a fan-out that is itself
    redelivered asks for the same windows and changes nothing.
    """
    from experiments.tasks import results_compute

    as_of = (now or timezone.now()).replace(second=0, microsecond=0)
    ids = list(Experiment.objects.filter(status=Experiment.Status.RUNNING).order_by("id").values_list("id", flat=True))
    for experiment_id in ids:
        transaction.on_commit(
            lambda experiment_id=experiment_id: results_compute.delay(experiment_id, as_of.isoformat())
        )
    return ids


def results_enqueue(*, experiment_ids: list[int], as_of: datetime | None = None) -> int:
    """Queue a results run for each experiment (after commit); the admin's "compute now"."""
    from experiments.tasks import results_compute

    moment = (as_of or timezone.now()).isoformat()
    ids = list(Experiment.objects.filter(pk__in=experiment_ids).values_list("pk", flat=True))
    for experiment_id in ids:
        transaction.on_commit(lambda experiment_id=experiment_id: results_compute.delay(experiment_id, moment))
    return len(ids)


def alerts_acknowledge(*, alert_ids: list[int], now: datetime | None = None) -> int:
    """Close open alerts: the monitor raises a new one if the problem shows up again."""
    return ExperimentAlert.objects.filter(pk__in=alert_ids, acknowledged_at__isnull=True).update(
        acknowledged_at=now or timezone.now()
    )
