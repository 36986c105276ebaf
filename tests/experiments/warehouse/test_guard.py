"""A data source's limits, for real: queries past their timeout, transient failures retried, the cost guard."""

import contextlib
import socket
import threading
import time
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from experiments.metrics.pipeline import metric_statistics_compute
from experiments.models import DataSource, ExperimentAlert, ResultSnapshot
from experiments.results.snapshots import compute_results
from experiments.warehouse.connect import backend_connect
from experiments.warehouse.engine import (
    warehouse_query,
    warehouse_statistics_compute,
    warehouse_tables,
)
from experiments.warehouse.errors import WarehouseCostError, WarehouseError, WarehouseTransientError
from experiments.warehouse.export import builtin_frames
from experiments.warehouse.expression import (
    metric_statistics_expression,
    recommendation_attribution_expression,
)
from experiments.warehouse.guard import scanned_rows_estimate, transient_retry
from experiments.warehouse.sources import ResolvedSource
from tests.experiments.factories import started_experiment
from tests.experiments.pipeline_kit import seed_experiment
from tests.experiments.warehouse.test_engine import (
    assert_same_statistics,
    chdb_backend,
    duckdb_backend,
)

pytestmark = pytest.mark.django_db

TABLES = ("exposures", "events", "consents", "subjects")


@pytest.fixture
def seeded():
    experiment = started_experiment(arms=2)
    as_of = timezone.now() - timedelta(days=1)
    seed_experiment(experiment, subjects=60, as_of=as_of, seed=21)
    return experiment, as_of


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed once the probe is: connections are refused


# -- timeouts ---------------------------------------------------------------------------------


def test_a_slow_duckdb_query_is_interrupted_at_the_timeout_and_the_connection_stays_usable(seeded):
    experiment, as_of = seeded
    frames = builtin_frames()
    backend = duckdb_backend({name: frame for name, frame in frames.items() if name != "events"})
    backend.create_table("events_data", frames["events"])
    # The events behind a view that first counts through a hundred billion hashed numbers: many minutes.
    backend.raw_sql(
        "CREATE VIEW events AS SELECT e.* FROM events_data e "
        "WHERE (SELECT count(*) FROM range(100000000000) r WHERE hash(r.range) = 42) >= 0"
    )
    started = time.monotonic()
    with pytest.raises(WarehouseTransientError, match=r"metrics query timed out after 0.5 s"):
        warehouse_statistics_compute(experiment=experiment, backend=backend, as_of=as_of, timeout_seconds=0.5)
    assert time.monotonic() - started < 30  # interrupted, not run to the end
    # The interrupt ended that statement only: the next one runs.
    backend.raw_sql("DROP VIEW events")
    backend.raw_sql("CREATE VIEW events AS SELECT * FROM events_data")
    statistics = warehouse_statistics_compute(experiment=experiment, backend=backend, as_of=as_of, timeout_seconds=30)
    assert sum(statistics.subjects.values()) > 0


def test_a_slow_clickhouse_query_stops_at_max_execution_time(seeded, tmp_path):
    pytest.importorskip("chdb")
    experiment, as_of = seeded
    backend = chdb_backend(builtin_frames(), tmp_path, backend=backend_connect(url="chdb://", timeout_seconds=1))
    backend.query(
        "CREATE VIEW w.slow_events AS SELECT e.* FROM w.events e "
        "WHERE (SELECT count() FROM numbers(1000000000000) WHERE cityHash64(number) = 42) >= 0"
    )
    mapping = {name: {"table": f"w.{name}"} for name in TABLES} | {"events": {"table": "w.slow_events"}}
    started = time.monotonic()
    with pytest.raises(WarehouseTransientError, match=r"timed out .*TIMEOUT_EXCEEDED"):
        warehouse_statistics_compute(experiment=experiment, backend=backend, mapping=mapping, as_of=as_of,
                                     timeout_seconds=1)
    # A trillion hashes would take a quarter of an hour; ClickHouse checks its limit between blocks
    # (and per scalar subquery), so it stops some seconds late on a busy machine.
    assert time.monotonic() - started < 60


# -- retries ----------------------------------------------------------------------------------


def test_retries_wait_longer_each_time_and_give_up_after_the_bounded_attempts():
    calls, waits = [], []

    def refused():
        calls.append(1)
        raise WarehouseTransientError("cannot connect: refused")

    with pytest.raises(WarehouseTransientError, match=r"refused \(gave up after 4 attempts\)"):
        transient_retry(run=refused, attempts=4, backoff_seconds=1, backoff_max_seconds=3, sleep=waits.append)
    assert len(calls) == 4 and len(waits) == 3
    # 1, 2, then 4 capped at 3 s, each with jitter (half to all of it).
    for wait, delay in zip(waits, (1, 2, 3), strict=True):
        assert delay / 2 <= wait <= delay


def test_a_permanent_error_is_not_retried(seeded):
    experiment, as_of = seeded
    waits = []
    source = ResolvedSource(name="lake", engine="duckdb", url="duckdb://",
                            mapping={"events": {"columns": {"amount": "no_such_column"}}})
    with pytest.raises(WarehouseError) as raised:
        source.statistics(experiment=experiment, as_of=as_of, sleep=waits.append)
    assert not isinstance(raised.value, WarehouseTransientError) and waits == []


def test_a_refused_connection_is_retried_then_alerted_and_the_last_snapshot_kept(seeded):
    experiment, as_of = seeded
    previous = compute_results(experiment=experiment, as_of=as_of - timedelta(hours=1), monitor=False)
    url = f"postgres://nobody@127.0.0.1:{_closed_port()}/none"
    waits = []
    source = ResolvedSource(name="pg", engine="postgres", url=url, timeout_seconds=5)
    with pytest.raises(WarehouseTransientError, match=r"(?s)cannot connect.*gave up after 3 attempts"):
        source.statistics(experiment=experiment, as_of=as_of, sleep=waits.append)
    assert len(waits) == 2

    kept = compute_results(experiment=experiment, as_of=as_of, monitor=False, source=url)
    assert kept.pk == previous.pk and ResultSnapshot.objects.filter(experiment=experiment).count() == 1
    alert = ExperimentAlert.objects.get(experiment=experiment, kind=ExperimentAlert.Kind.DATA_SOURCE)
    assert "gave up after 3 attempts" in alert.details["error"]


def test_a_query_timing_out_every_time_is_retried_then_alerted(seeded, tmp_path):
    experiment, as_of = seeded
    previous = compute_results(experiment=experiment, as_of=as_of - timedelta(hours=1), monitor=False)
    import ibis

    path = tmp_path / "slow.duckdb"
    backend = ibis.duckdb.connect(str(path))
    for name, frame in builtin_frames().items():
        backend.create_table(name if name != "events" else "events_data", frame)
    backend.raw_sql(
        "CREATE VIEW events AS SELECT e.* FROM events_data e "
        "WHERE (SELECT count(*) FROM range(10000000000) r WHERE hash(r.range) = 42) >= 0"
    )
    backend.disconnect()
    source = DataSource.objects.create(name="slow", engine="duckdb", url_setting="SLOW_URL", query_timeout_seconds=1)
    experiment.data_source = source
    experiment.save(update_fields=["data_source"])
    with override_settings(PRIVACYLAB_WAREHOUSE_URLS={"SLOW_URL": f"duckdb:///{path}"},
                           PRIVACYLAB_WAREHOUSE_RETRY={"attempts": 2, "backoff_seconds": 0.01,
                                                       "backoff_max_seconds": 0.01}):
        kept = compute_results(experiment=experiment, as_of=as_of, monitor=False)
    assert kept.pk == previous.pk and ResultSnapshot.objects.filter(experiment=experiment).count() == 1
    error = ExperimentAlert.objects.get(experiment=experiment, kind=ExperimentAlert.Kind.DATA_SOURCE).details["error"]
    assert "timed out after 1 s" in error and "gave up after 2 attempts" in error


class _Forwarder:
    """A TCP port that forwards to another (a source's address coming up after a refused try)."""

    def __init__(self, port: int, target: tuple[str, int]):
        self.server = socket.create_server(("127.0.0.1", port))
        self.target = target
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self):
        self.server.close()


@pytest.fixture
def external_tables():
    """The built-in rows as tables of their own in the external PostgreSQL database: (url, mapping)."""
    from tests.experiments.warehouse.test_engine import external_copy

    with external_copy() as (url, backend, mapping):
        backend.raw_sql(" ".join(f'ANALYZE "{spec["table"]}";' for spec in mapping.values())).close()
        yield url, mapping


@pytest.mark.postgres
def test_a_source_refusing_then_answering_gives_the_statistics_on_a_later_try(seeded, external_tables):
    from urllib.parse import urlsplit

    experiment, as_of = seeded
    url, mapping = external_tables
    parts = urlsplit(url)
    port = _closed_port()
    forwarders = []

    def wait_then_come_up(seconds):
        # The first try was refused for real; the address answers from the second on.
        if not forwarders:
            forwarders.append(_Forwarder(port, (parts.hostname, parts.port or 5432)))

    refused_first = parts._replace(netloc=parts.netloc.replace(f"{parts.hostname}:{parts.port}", f"127.0.0.1:{port}")
                                   if parts.port else f"{parts.netloc}:{port}")
    source = ResolvedSource(name="pg", engine="postgres", url=refused_first.geturl(), mapping=mapping,
                            timeout_seconds=30)
    try:
        statistics = source.statistics(experiment=experiment, as_of=as_of, sleep=wait_then_come_up)
    finally:
        for forwarder in forwarders:
            forwarder.close()
    assert len(forwarders) == 1  # one refused try, then the answer
    assert_same_statistics(metric_statistics_compute(experiment=experiment, as_of=as_of), statistics)


# -- the cost guard ---------------------------------------------------------------------------


def _rows(frames) -> int:
    return sum(len(frames[name]) for name in TABLES)


def test_duckdb_estimates_at_least_every_stored_row_and_the_guard_refuses_above_the_limit(seeded):
    experiment, as_of = seeded
    frames = builtin_frames()
    backend = duckdb_backend(frames)

    expression = metric_statistics_expression(tables=warehouse_tables(backend=backend), query=warehouse_query(experiment=experiment, as_of=as_of))
    estimate = scanned_rows_estimate(backend=backend, sql=backend.compile(expression))
    # Each table is read at least once (the events twice: the facts and the counted orders).
    assert _rows(frames) <= estimate <= 3 * _rows(frames)

    with pytest.raises(WarehouseCostError, match=rf"about [\d,]+ rows, over the source's limit of "
                                                 rf"{estimate - 1:,} \(max_scanned_rows\)"):
        warehouse_statistics_compute(experiment=experiment, backend=backend, as_of=as_of,
                                     max_scanned_rows=estimate - 1)
    assert warehouse_statistics_compute(experiment=experiment, backend=backend, as_of=as_of,
                                        max_scanned_rows=10 * estimate).subjects


def test_duckdb_over_parquet_files_is_guarded_too(seeded, tmp_path):
    experiment, as_of = seeded
    import ibis

    frames = builtin_frames()
    backend = ibis.duckdb.connect()
    for name, frame in frames.items():
        frame.to_parquet(tmp_path / f"{name}.parquet")
        backend.raw_sql(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{tmp_path / name}.parquet')")  # noqa: S608 (the test's own paths)
    with pytest.raises(WarehouseCostError, match="max_scanned_rows"):
        warehouse_statistics_compute(experiment=experiment, backend=backend, as_of=as_of,
                                     max_scanned_rows=len(frames["events"]) - 1)


def test_a_refused_query_alerts_naming_the_limit_and_writes_nothing(seeded, tmp_path):
    experiment, as_of = seeded
    import ibis

    path = tmp_path / "lake.duckdb"
    backend = ibis.duckdb.connect(str(path))
    for name, frame in builtin_frames().items():
        backend.create_table(name, frame)
    backend.disconnect()
    source = DataSource.objects.create(name="lake", engine="duckdb", url_setting="LAKE_URL", max_scanned_rows=10)
    experiment.data_source = source
    experiment.save(update_fields=["data_source"])
    waits = []
    with override_settings(PRIVACYLAB_WAREHOUSE_URLS={"LAKE_URL": f"duckdb:///{path}"}):
        assert compute_results(experiment=experiment, as_of=as_of, monitor=False) is None
        with pytest.raises(WarehouseCostError):  # refused at once: no retry would change it
            source_statistics = ResolvedSource(name="lake", engine="duckdb", url=f"duckdb:///{path}",
                                               max_scanned_rows=10)
            source_statistics.statistics(experiment=experiment, as_of=as_of, sleep=waits.append)
    assert waits == []
    assert not ResultSnapshot.objects.filter(experiment=experiment).exists()
    alert = ExperimentAlert.objects.get(experiment=experiment, kind=ExperimentAlert.Kind.DATA_SOURCE)
    assert "over the source's limit of 10 (max_scanned_rows)" in alert.message


def test_clickhouse_estimates_mergetree_tables_and_cannot_tell_for_memory_ones(seeded, tmp_path):
    pytest.importorskip("chdb")
    experiment, as_of = seeded
    frames = builtin_frames()
    mapping = {name: {"table": f"w.{name}"} for name in TABLES}

    backend = chdb_backend(frames, tmp_path, table_engine="MergeTree ORDER BY tuple()")
    expression = metric_statistics_expression(tables=warehouse_tables(backend=backend, mapping=mapping),
                                              query=warehouse_query(experiment=experiment, as_of=as_of))
    estimate = scanned_rows_estimate(backend=backend, sql=backend.compile(expression))
    # ClickHouse inlines each CTE where it is used, so it reads the tables many times over.
    assert _rows(frames) <= estimate <= 50 * _rows(frames)
    with pytest.raises(WarehouseCostError, match="max_scanned_rows"):
        warehouse_statistics_compute(experiment=experiment, backend=backend, mapping=mapping, as_of=as_of,
                                     max_scanned_rows=estimate - 1)
    for name in frames:
        backend.query(f"DROP TABLE w.{name}")
    memory = chdb_backend(frames, tmp_path, backend=backend)
    assert scanned_rows_estimate(backend=memory, sql=memory.compile(expression)) is None


@pytest.mark.postgres
def test_postgresql_estimates_from_its_plan_and_the_guard_refuses_above_the_limit(seeded, external_tables):
    experiment, as_of = seeded
    url, mapping = external_tables
    frames = builtin_frames()
    backend = backend_connect(url=url, timeout_seconds=30)

    tables = warehouse_tables(backend=backend, mapping=mapping)
    query = warehouse_query(experiment=experiment, as_of=as_of)
    # The job's two statements, as it compiles them: the metrics and (order lines mapped) the attribution.
    statements = [metric_statistics_expression(tables=tables, query=query, engine=backend.name),
                  recommendation_attribution_expression(tables=tables, query=query)]
    estimate = max(scanned_rows_estimate(backend=backend, sql=backend.compile(s)) for s in statements)
    assert _rows(frames) <= estimate <= 4 * _rows(frames)
    with pytest.raises(WarehouseCostError, match="max_scanned_rows"):
        warehouse_statistics_compute(experiment=experiment, backend=backend, mapping=mapping, as_of=as_of,
                                     max_scanned_rows=estimate - 1)
    assert_same_statistics(
        metric_statistics_compute(experiment=experiment, as_of=as_of),
        warehouse_statistics_compute(experiment=experiment, backend=backend, mapping=mapping, as_of=as_of,
                                     max_scanned_rows=estimate, timeout_seconds=30),
    )
