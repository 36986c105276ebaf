"""A rollout step's metrics: the experiment's metrics, per side of the ramp, from the step's exposures."""

from __future__ import annotations

from datetime import datetime

from django.db import connections

from consent.models import Purpose
from experiments.metrics.aggregate import MetricStatistics, metric_statistics_from_rows
from experiments.metrics.refresh import personalization_counting_notices
from experiments.metrics.sql import rollout_statistics_sql
from experiments.models import Rollout

# The aggregate's arm ids for the two sides of the ramp (``_ROLLOUT_SOURCES``).
_SIDES = {0: "default", 1: "rollout"}


def rollout_metric_statistics(*, rollout: Rollout, until: datetime, using: str = "default") -> MetricStatistics:
    """Every metric of the pipeline (``METRICS``) for the subjects of the rollout's current step, per side.

    ``arms`` is keyed ``"rollout"`` (the shipped treatment) and ``"default"`` (the
    previous default); a side with no subject yet is absent. Each subject counts from
    their first exposure in this step until ``until``, with the experiment's GMV cap
    and pre-exposure window (CUPED), as a results run counts an experiment's subjects.
    Nothing is stored: one read-only statement.
    """
    experiment = rollout.experiment
    sql, params = rollout_statistics_sql(
        rollout_id=rollout.pk, step_index=rollout.step_index, experiment_id=experiment.pk, window_end=until,
        pre_exposure_days=experiment.pre_exposure_days, gmv_cap_percentile=experiment.gmv_cap_percentile,
        counting_notices=personalization_counting_notices(at=until, using=using), purpose=Purpose.PERSONALIZATION,
        using=using,
    )
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return metric_statistics_from_rows(
        experiment=experiment,
        rows=[(dimension, value, _SIDES.get(side), *sums) for dimension, value, side, *sums in rows],
        window_start=rollout.step_started_at, window_end=until, pre_exposure_days=experiment.pre_exposure_days,
        gmv_cap_percentile=experiment.gmv_cap_percentile,
    )
