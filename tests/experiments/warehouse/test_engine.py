"""The same data in the built-in database and in each engine gives the same sufficient statistics."""

import contextlib
import uuid
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


def assert_same_statistics(builtin, warehouse, *, attribution=False):
    """The same sums, caps and per-metric statistics (``attribution``: the recommendation_gmv too)."""
    if attribution:
        assert warehouse.recommendation_gmv.keys() == builtin.recommendation_gmv.keys()
        for arm, shares in builtin.recommendation_gmv.items():
            for name, value in shares.items():
                assert isclose(warehouse.recommendation_gmv[arm][name], value, rel_tol=1e-9), (arm, name)
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
        experiment=experiment, backend=duckdb_backend(builtin_frames()), as_of=as_of, mapping={"order_lines": {}}
    )
    assert sum(builtin.subjects.values()) > 100
    assert any(shares["attributed"] > 0 for shares in builtin.recommendation_gmv.values())
    assert_same_statistics(builtin, warehouse, attribution=True)


def chdb_backend(frames, directory, *, backend=None, table_engine="Memory"):
    """The frames as tables ``w.<name>`` of a chdb session (``table_engine``: Memory, or MergeTree ORDER BY tuple())."""
    from experiments.warehouse.connect import ChdbBackend

    backend = backend or ChdbBackend("chdb://")
    types = {"int64": "Int64", "Int64": "Nullable(Int64)", "float64": "Nullable(Float64)"}
    backend.query("CREATE DATABASE IF NOT EXISTS w")
    for name, frame in frames.items():
        columns = []
        for column, dtype in frame.dtypes.items():
            if column.endswith("_at"):
                kind = "Nullable(DateTime64(6, 'UTC'))"
            else:
                kind = types.get(str(dtype), "String")
            columns.append(f"{column} {kind}")
        backend.query(f"CREATE TABLE w.{name} ({', '.join(columns)}) ENGINE = {table_engine}")
        # Through Parquet: missing timestamps stay NULL (a DataFrame's NaT would not).
        path = directory / f"{name}.parquet"
        frame.to_parquet(path)
        backend.query(f"INSERT INTO w.{name} SELECT * FROM file('{path}', Parquet)")  # noqa: S608 (the test's own names)
    return backend


@pytest.mark.parametrize("cap_percentile", [0.9, None])
def test_clickhouse_in_process_gives_the_built_in_statistics(cap_percentile, tmp_path):
    pytest.importorskip("chdb")
    experiment = started_experiment(arms=3)
    experiment.gmv_cap_percentile = cap_percentile
    experiment.save(update_fields=["gmv_cap_percentile"])
    as_of = timezone.now() - timedelta(days=1)
    seed_experiment(experiment, subjects=400, as_of=as_of, seed=8)

    builtin = metric_statistics_compute(experiment=experiment, as_of=as_of)
    mapping = {name: {"table": f"w.{name}"} for name in ("exposures", "events", "consents", "subjects", "order_lines")}
    warehouse = warehouse_statistics_compute(
        experiment=experiment, backend=chdb_backend(builtin_frames(), tmp_path), mapping=mapping, as_of=as_of
    )
    assert_same_statistics(builtin, warehouse, attribution=True)


def external_postgres_url() -> str:
    """A second database on the built-in PostgreSQL server (``<database>_src``), created if absent."""
    import os
    from urllib.parse import urlsplit, urlunsplit

    import psycopg

    parts = urlsplit(os.environ["DATABASE_URL"])
    name = parts.path.strip("/") + "_src"
    admin = urlunsplit(parts._replace(scheme="postgresql", path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            connection.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(parts._replace(scheme="postgres", path=f"/{name}"))


@contextlib.contextmanager
def external_copy(*, subject_column: str = "subject_id"):
    """The built-in rows copied into the external PostgreSQL database: yields ``(url, backend, mapping)``.

    Tables of their own per use (parallel workers share that database), found through the
    mapping, every one of them dropped afterwards.
    """
    from experiments.warehouse.connect import backend_connect

    url = external_postgres_url()
    backend = backend_connect(url=url)
    token = uuid.uuid4().hex[:8]
    mapping = {}
    columns = {} if subject_column == "subject_id" else {"columns": {"subject_id": subject_column}}
    try:
        for name, frame in builtin_frames().items():
            table = f"{name}_{token}"
            backend.create_table(table, frame.rename(columns={"subject_id": subject_column}))
            mapping[name] = {"table": table, **columns}
        yield url, backend, mapping
    finally:
        for spec in mapping.values():
            backend.drop_table(spec["table"], force=True)
        backend.disconnect()


@pytest.mark.postgres
def test_an_external_postgresql_source_gives_the_built_in_statistics():
    experiment = started_experiment(arms=3)
    as_of = timezone.now() - timedelta(days=1)
    seed_experiment(experiment, subjects=300, as_of=as_of, seed=9)
    builtin = metric_statistics_compute(experiment=experiment, as_of=as_of)

    # The subject column under another name, as a marketplace's own tables would have it.
    with external_copy(subject_column="user_key") as (_, backend, mapping):
        warehouse = warehouse_statistics_compute(experiment=experiment, backend=backend, mapping=mapping, as_of=as_of)
    assert_same_statistics(builtin, warehouse, attribution=True)
