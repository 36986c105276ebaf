"""Which form of the facts refresh statement suits an experiment: indexed or streamed."""

from __future__ import annotations

from django.conf import settings
from django.db import connections

from consent.models import Subject
from experiments.models import Experiment, Exposure

PLAN_MARKER = "privacylab:metric-shape"  # the two small reads that choose the statement's form
# Above this share of all subjects exposed, the streamed form of the statement wins.
STREAM_SHARE = settings.PRIVACYLAB_METRICS_STREAM_SHARE
# The joins each form must not fall into (the refresh turns them off for its statement).
AVOID_JOINS = {"streamed": ("enable_nestloop",), "indexed": ("enable_hashjoin", "enable_mergejoin")}


def refresh_form_plan(*, experiment: Experiment, using: str = "default") -> str:
    """Which form of the statement suits this experiment: ``indexed`` or ``streamed``.

    *indexed* walks, per exposure, the subject's events and decisions through
    their subject indexes, and stacks the per-exposure facts: cheap when the
    experiment's subjects are a small part of the tables, and what SQLite
    always uses. *streamed* (PostgreSQL) reads events and decisions as one
    stream, joins it once with the exposures by hashing and aggregates per
    exposure, in parallel: cheaper once the experiment covers a large share of
    the subjects (then nearly every row is read anyway). The choice compares
    the experiment's exposures with the planner's estimate of the subjects.
    Both forms return the same numbers (tests/experiments/metrics/test_pipeline.py).
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        return "indexed"
    with connection.cursor() as cursor:
        cursor.execute(
            f"/* {PLAN_MARKER} */ SELECT GREATEST(reltuples, 1) FROM pg_class WHERE oid = %s::regclass",  # noqa: S608
            [Subject._meta.db_table],
        )
        row = cursor.fetchone()
        subjects = float(row[0]) if row else 1.0
        cursor.execute(
            f"/* {PLAN_MARKER} */ SELECT COUNT(*) FROM {connection.ops.quote_name(Exposure._meta.db_table)} "  # noqa: S608
            "WHERE experiment_id = %s AND phase = %s",
            [experiment.pk, experiment.phase],
        )
        exposures = cursor.fetchone()[0]
    return "streamed" if exposures >= STREAM_SHARE * subjects else "indexed"
