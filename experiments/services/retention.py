"""Retention of measurement data: the purges of exposures and metric facts of ended experiments."""

from datetime import datetime, timedelta

from django.conf import settings

from experiments.models import (
    Experiment,
    Exposure,
    MetricFacts,
    MetricFactsState,
    MetricOrderFacts,
)

Status = Experiment.Status


def _ended_before(days: int, now: datetime):
    """Experiments that ended (stopped or concluded) more than ``days`` days before ``now``."""
    return Experiment.objects.filter(
        status__in=[Status.STOPPED, Status.CONCLUDED], ended_at__lt=now - timedelta(days=days)
    ).values("pk")


def exposures_retention_purge(*, now: datetime, batch_size: int) -> int:
    """Delete one batch of exposures of experiments ended ``EXPOSURE_RETENTION_DAYS`` ago (their
    metric facts go with them); the results, which are aggregates, stay. Returns rows deleted."""
    days = settings.EXPOSURE_RETENTION_DAYS
    pks = list(
        Exposure.objects.filter(experiment__in=_ended_before(days, now)).order_by("pk").values_list("pk", flat=True)[
            :batch_size
        ]
    )
    if not pks:
        return 0
    deleted, _ = Exposure.objects.filter(pk__in=pks).delete()
    return deleted


def metric_facts_retention_purge(*, now: datetime, batch_size: int) -> int:
    """Delete one batch of per-exposure metric facts of experiments ended ``METRIC_FACTS_RETENTION_DAYS``
    ago. The facts only serve the results runs of a live experiment; a later run rebuilds them
    from the raw data while that is kept (the facts' state is reset)."""
    days = settings.METRIC_FACTS_RETENTION_DAYS
    ended = _ended_before(days, now)
    pks = list(
        MetricFacts.objects.filter(experiment__in=ended).order_by("pk").values_list("pk", flat=True)[:batch_size]
    )
    if not pks:
        MetricFactsState.objects.filter(experiment__in=ended, cutoff__isnull=False).update(
            phase=None, window_start=None, cutoff=None, pre_exposure_days=None, refreshed_at=None
        )
        return 0
    deleted, _ = MetricFacts.objects.filter(pk__in=pks).delete()
    return deleted


def metric_order_facts_retention_purge(*, now: datetime, batch_size: int) -> int:
    """Delete one batch of the per-order metric facts of the same experiments as
    ``metric_facts_retention_purge`` (their state is reset there: the next run rebuilds both)."""
    days = settings.METRIC_FACTS_RETENTION_DAYS
    pks = list(
        MetricOrderFacts.objects.filter(experiment__in=_ended_before(days, now))
        .order_by("pk")
        .values_list("pk", flat=True)[:batch_size]
    )
    if not pks:
        return 0
    deleted, _ = MetricOrderFacts.objects.filter(pk__in=pks).delete()
    return deleted
