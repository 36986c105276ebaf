"""The monitor: acting once on a stored run (a sample-ratio alert; a pause on a breached guardrail), and alerts."""

import logging
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from experiments.models import (
    Experiment,
    ExperimentAlert,
    ResultSnapshot,
)
from experiments.results.document import SnapshotDocument

logger = logging.getLogger(__name__)

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
        document = SnapshotDocument.from_dict(snapshot.data)
        if snapshot.srm_flag:
            srm = document.srm
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
        breaches = document.breached_guardrails
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
            from experiments.services.lifecycle import experiment_pause

            experiment_pause(experiment=experiment)
            outcome["paused"] = True
            logger.warning("experiment %s paused: %d guardrail breach(es)", experiment.key, len(breaches))
    return outcome


def data_source_alert_open(*, experiment: Experiment, source: str, error: str, now: datetime | None = None):
    """An alert that the experiment's data source could not answer (one open per experiment)."""
    previous = ResultSnapshot.objects.filter(experiment=experiment).order_by("-window_end").first()
    alert = _alert_open(
        experiment=experiment, kind=ExperimentAlert.Kind.DATA_SOURCE, arm="", metric="", snapshot=previous,
        message=f"Data source {source} did not answer; the last snapshot is kept. {error}",
        details={"source": source, "error": error}, action=ExperimentAlert.Action.NONE, now=now or timezone.now(),
    )
    logger.warning("experiment %s: data source %s failed: %s", experiment.key, source, error)
    return alert


def experiments_monitor_pending(*, now: datetime | None = None) -> list[dict]:
    """Monitor every running experiment's latest run not yet acted on (catches a lost chain)."""
    outcomes = []
    for experiment in Experiment.objects.filter(status=Experiment.Status.RUNNING):
        snapshot = ResultSnapshot.objects.filter(experiment=experiment).order_by("-window_end").first()
        if snapshot is not None and snapshot.monitored_at is None:
            outcomes.append(experiment_monitor(snapshot=snapshot, now=now))
    return outcomes


def alerts_acknowledge(*, alert_ids: list[int], now: datetime | None = None) -> int:
    """Close open alerts: the monitor raises a new one if the problem shows up again."""
    return ExperimentAlert.objects.filter(pk__in=alert_ids, acknowledged_at__isnull=True).update(
        acknowledged_at=now or timezone.now()
    )
