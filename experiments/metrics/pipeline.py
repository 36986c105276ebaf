"""The metric pipeline's entry point: the facts refreshed to the window, then aggregated, in one transaction."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from django.conf import settings
from django.db import connections, transaction

from experiments.metrics.aggregate import MetricStatistics, metric_statistics_aggregate
from experiments.metrics.attribution import recommendation_gmv_attribution
from experiments.metrics.definitions import window_for
from experiments.metrics.refresh import metric_facts_refresh
from experiments.models import Experiment

# PostgreSQL work_mem for the metric statements (SET LOCAL: this transaction only).
METRICS_WORK_MEM = settings.PRIVACYLAB_METRICS_WORK_MEM


def metric_statistics_compute(
    *,
    experiment: Experiment,
    as_of: datetime | None = None,
    gmv_cap_percentile: float | None | type[...] = ...,
    pre_exposure_days: int | None = None,
    now: datetime | None = None,
    using: str = "default",
) -> MetricStatistics:
    """Refresh the experiment's facts to the window ending at ``as_of``, then aggregate them.

    The recommendation attribution (``recommendation_gmv``) is computed over
    the same window in the same transaction.

    ``gmv_cap_percentile`` and ``pre_exposure_days`` default to the
    experiment's settings; ``now`` is when the refresh began (replayed runs).
    """
    window_start, window_end = window_for(experiment, as_of)
    days = experiment.pre_exposure_days if pre_exposure_days is None else int(pre_exposure_days)
    percentile = experiment.gmv_cap_percentile if gmv_cap_percentile is ... else gmv_cap_percentile
    connection = connections[using]
    with transaction.atomic(using=using):
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # Room for the per-exposure hash tables and sorts, for this transaction only
                # (the default 4 MB makes them spill to disk at a million subjects).
                cursor.execute("SELECT set_config('work_mem', %s, true)", [METRICS_WORK_MEM])
                # JIT compilation costs 1–2 s here and gains nothing on these statements.
                cursor.execute("SELECT set_config('jit', 'off', true)")
        refresh = metric_facts_refresh(
            experiment=experiment,
            window_start=window_start,
            window_end=window_end,
            pre_exposure_days=days,
            now=now,
            using=using,
        )
        statistics = metric_statistics_aggregate(
            experiment=experiment,
            window_start=window_start,
            window_end=window_end,
            pre_exposure_days=days,
            gmv_cap_percentile=percentile,
            refresh=refresh,
            using=using,
        )
        attribution = recommendation_gmv_attribution(
            experiment_id=experiment.pk,
            phase=experiment.phase,
            window_start=window_start,
            window_end=window_end,
            using=using,
        )
    return replace(statistics, recommendation_gmv=attribution)
