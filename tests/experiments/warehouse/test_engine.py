"""The same data in the built-in database and in each engine gives the same sufficient statistics."""

from dataclasses import asdict
from datetime import timedelta
from math import isclose

import pytest
from django.utils import timezone

from experiments.metrics.pipeline import metric_statistics_compute
from experiments.metrics.sql import SUMS
from experiments.warehouse.engine import warehouse_statistics_compute
from experiments.warehouse.export import builtin_frames
from tests.experiments.factories import started_experiment
from tests.experiments.pipeline_kit import seed_experiment

pytestmark = pytest.mark.django_db

INTEGERS = {"n", "converted", "opted_out", "consented", "granted", "orders_sum", "orders_ss",
            "impressions_sum", "impressions_ss", "clicks_sum", "clicks_ss", "clicks_impressions"}


def duckdb_backend(frames):
    import ibis

    backend = ibis.duckdb.connect()
    for name, frame in frames.items():
        backend.create_table(name, frame)
    return backend


def assert_same_statistics(builtin, warehouse):
    assert warehouse.sums.keys() == builtin.sums.keys()
    for arm, sums in builtin.sums.items():
        for name in SUMS:
            if name in INTEGERS:
                assert warehouse.sums[arm][name] == sums[name], (arm, name)
            else:
                assert isclose(warehouse.sums[arm][name], sums[name], rel_tol=1e-9, abs_tol=1e-9), (arm, name)
    assert warehouse.segments.keys() == builtin.segments.keys()
    for label in builtin.segments:
        assert warehouse.segments[label].keys() == builtin.segments[label].keys(), label
    for name in ("gmv_cap", "order_cap"):
        mine, theirs = getattr(warehouse, name), getattr(builtin, name)
        assert (mine is None) == (theirs is None)
        if mine is not None:
            assert isclose(mine, theirs, rel_tol=1e-9)
    assert warehouse.arms.keys() == builtin.arms.keys()
    for arm, statistics in builtin.arms.items():
        for metric, statistic in statistics.items():
            other = warehouse.arms[arm][metric]
            for field, value in asdict(statistic).items():
                assert_close(getattr(other, field), value, (arm, metric, field))


def assert_close(mine, theirs, where):
    """Integers and labels equal; floats (alone or in tuples) to 1e-9 relative."""
    if isinstance(theirs, float):
        assert isclose(mine, theirs, rel_tol=1e-9, abs_tol=1e-9), where
    elif isinstance(theirs, tuple):
        assert len(mine) == len(theirs), where
        for a, b in zip(mine, theirs, strict=True):
            assert_close(a, b, where)
    else:
        assert mine == theirs, where


@pytest.mark.parametrize("cap_percentile", [0.9, None])
def test_duckdb_gives_the_built_in_statistics(cap_percentile):
    experiment = started_experiment(arms=3)
    experiment.gmv_cap_percentile = cap_percentile
    experiment.save(update_fields=["gmv_cap_percentile"])
    as_of = timezone.now() - timedelta(days=1)
    seed_experiment(experiment, subjects=400, as_of=as_of, seed=7)

    builtin = metric_statistics_compute(experiment=experiment, as_of=as_of)
    warehouse = warehouse_statistics_compute(
        experiment=experiment, backend=duckdb_backend(builtin_frames()), as_of=as_of
    )
    assert sum(builtin.subjects.values()) > 100
    assert_same_statistics(builtin, warehouse)
