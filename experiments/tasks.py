"""Thin Celery tasks over experiments services: ids in, one service call, idempotent.

Every task is ``acks_late`` (the broker redelivers it if the worker dies) and
safe to run twice. Only transient errors (the database briefly unreachable)
are retried, with exponential backoff; anything else is a bug and fails loudly.
"""

from datetime import datetime

from celery import shared_task

from config.transient import TRANSIENT_ERRORS
from experiments.models import Experiment, ResultSnapshot
from experiments.results import enqueue, monitor, snapshots
from experiments.services import lifecycle, rollouts

RETRY = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 30,
    "retry_backoff_max": 15 * 60,
    "retry_jitter": True,
    "max_retries": 5,
}


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)
def experiments_apply_schedule() -> dict:
    return lifecycle.experiments_apply_schedule()


@shared_task(acks_late=True, time_limit=15 * 60, soft_time_limit=14 * 60, **RETRY)
def results_compute(experiment_id: int, as_of: str | None = None) -> int | None:
    """Compute and store one experiment's results for the window ending at ``as_of`` (ISO 8601).

    A redelivered task carries the same ``as_of`` and so rewrites the same
    snapshot with the same numbers.
    """
    experiment = Experiment.objects.filter(pk=experiment_id).first()
    if experiment is None:  # deleted since it was enqueued: nothing to do
        return None
    moment = datetime.fromisoformat(as_of) if as_of else None
    snapshot = snapshots.compute_results(experiment=experiment, as_of=moment)
    return None if snapshot is None else snapshot.pk  # None: its data source failed (an alert says so)


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100, **RETRY)
def results_refresh_running() -> list[int]:
    """Periodic: enqueue a results run for every running experiment."""
    return enqueue.results_enqueue_running()


@shared_task(acks_late=True, time_limit=300, soft_time_limit=280, **RETRY)
def experiment_monitor(snapshot_id: int) -> dict | None:
    """Act on one results run: sample-ratio alert; pause on a breached guardrail."""
    snapshot = ResultSnapshot.objects.filter(pk=snapshot_id).first()
    if snapshot is None:
        return None
    return monitor.experiment_monitor(snapshot=snapshot)


@shared_task(acks_late=True, time_limit=600, soft_time_limit=580, **RETRY)
def experiments_monitor_pending() -> list[dict]:
    """Periodic: monitor every running experiment's latest run not yet acted on."""
    return monitor.experiments_monitor_pending()


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100, **RETRY)
def rollout_step(rollout_id: int) -> str:
    """Advance one rollout's ramp if its step has been held long enough (idempotent: the service locks the row)."""
    return rollouts.rollout_step(rollout_id=rollout_id)


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100, **RETRY)
def rollouts_step_due() -> list[int]:
    """Periodic: enqueue a step for every ramping rollout whose hold is over."""
    return rollouts.rollouts_enqueue_due()


@shared_task(acks_late=True, time_limit=30 * 60, soft_time_limit=29 * 60, **RETRY)
def warehouse_export_run() -> dict:
    """Append new exposures and consent decisions to ``PRIVACYLAB_WAREHOUSE_EXPORT_URL`` (idempotent)."""
    from django.conf import settings

    from experiments.warehouse.export import warehouse_export

    if not settings.PRIVACYLAB_WAREHOUSE_EXPORT_URL:
        return {}
    return warehouse_export(to=settings.PRIVACYLAB_WAREHOUSE_EXPORT_URL)
