"""Results read from a data source: the same snapshot as the built-in; a source that fails keeps the last one."""

import socket
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.test import override_settings
from django.utils import timezone

from experiments.models import DataSource, ExperimentAlert, ResultSnapshot
from experiments.results.snapshots import compute_results
from experiments.warehouse.export import builtin_frames
from tests.experiments.factories import started_experiment
from tests.experiments.pipeline_kit import seed_experiment

pytestmark = pytest.mark.django_db


def duckdb_file(path):
    import ibis

    backend = ibis.duckdb.connect(str(path))
    for name, frame in builtin_frames().items():
        backend.create_table(name, frame, overwrite=True)
    backend.disconnect()
    return f"duckdb:///{path}"


def test_a_data_source_gives_the_built_in_snapshot_and_records_its_name(tmp_path, monkeypatch):
    # A data source returns no CUPED++ stratum cells (docs/metrics.md): the built-in run is held to
    # the single-covariate statistics both give, and what only the built-in database knows is set aside.
    monkeypatch.setattr("experiments.results.adjustment.SUBJECTS_PER_REGRESSOR", 10**9)
    experiment = started_experiment(arms=3)
    as_of = timezone.now() - timedelta(days=1)
    seed_experiment(experiment, subjects=300, as_of=as_of, seed=11)
    builtin = compute_results(experiment=experiment, as_of=as_of, monitor=False)
    builtin_data = builtin.data

    url = duckdb_file(tmp_path / "warehouse.duckdb")
    # With the order lines mapped (the canonical table name, so an empty spec), the attribution too.
    source = DataSource.objects.create(name="lake", engine="duckdb", url_setting="LAKE_URL",
                                       mapping={"order_lines": {}})
    experiment.data_source = source
    experiment.save(update_fields=["data_source"])
    with override_settings(PRIVACYLAB_WAREHOUSE_URLS={"LAKE_URL": url}):
        snapshot = compute_results(experiment=experiment, as_of=as_of, monitor=False)
    assert snapshot.pk == builtin.pk  # the same window's snapshot, rewritten
    data = snapshot.data
    assert data.pop("source") == {"name": "lake", "engine": "duckdb"}
    assert "source" not in builtin_data
    # The order lines are mapped: the attribution comes from the source too, and is compared below.
    assert any(share["attributed"] > 0 for share in builtin_data["recommendation_gmv"].values())
    for document in (data, builtin_data):
        document["settings"].pop("covariates"), document["settings"].pop("strata")
        for entry in document["adjustment"].values():
            entry.pop("fallback_reason")  # the built-in run tried CUPED++ and says why not
        document["heterogeneity"].pop("exposure_days"), document["heterogeneity"].pop("exposure_days_reason")
        document["health"].pop("multiple_exposures")  # 0 by constraint in the database, unknown in a source
    # The whole document agrees: labels, counts and decisions exactly, floats to rounding
    # (the engines add in other orders).
    assert_same_document(data, builtin_data, "data")


def assert_same_document(mine, theirs, where):
    if isinstance(theirs, dict):
        assert isinstance(mine, dict) and mine.keys() == theirs.keys(), where
        for key in theirs:
            assert_same_document(mine[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list):
        assert isinstance(mine, list) and len(mine) == len(theirs), where
        for n, (a, b) in enumerate(zip(mine, theirs, strict=True)):
            assert_same_document(a, b, f"{where}[{n}]")
    elif isinstance(theirs, float) and not isinstance(mine, bool):
        assert mine == pytest.approx(theirs, rel=1e-9, abs=1e-12), where
    else:
        assert mine == theirs, where


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed once the probe is: connections are refused


def test_a_source_refusing_connections_raises_an_alert_and_keeps_the_last_snapshot():
    experiment = started_experiment(arms=2)
    as_of = timezone.now() - timedelta(days=1)
    seed_experiment(experiment, subjects=60, as_of=as_of, seed=12)
    previous = compute_results(experiment=experiment, as_of=as_of - timedelta(hours=1), monitor=False)

    url = f"postgres://nobody@127.0.0.1:{_closed_port()}/none"
    kept = compute_results(experiment=experiment, as_of=as_of, monitor=False, source=url)
    assert kept.pk == previous.pk
    assert ResultSnapshot.objects.filter(experiment=experiment).count() == 1
    alert = ExperimentAlert.objects.get(experiment=experiment, kind=ExperimentAlert.Kind.DATA_SOURCE)
    assert alert.snapshot_id == previous.pk and "cannot connect" in alert.details["error"]

    with pytest.raises(CommandError, match="cannot connect"):
        call_command("compute_results", experiment.key, "--source", url)
    assert ResultSnapshot.objects.filter(experiment=experiment).count() == 1


def test_a_source_whose_setting_is_unset_is_reported_by_name():
    experiment = started_experiment(arms=2)
    DataSource.objects.create(name="missing", engine="duckdb", url_setting="PRIVACYLAB_TEST_UNSET_URL")
    with pytest.raises(CommandError, match="PRIVACYLAB_TEST_UNSET_URL is not set"):
        call_command("compute_results", experiment.key, "--source", "missing")
    assert not ResultSnapshot.objects.filter(experiment=experiment).exists()
    assert ExperimentAlert.objects.filter(experiment=experiment, kind="data_source").count() == 1


def test_compute_results_command_on_the_built_in_database(capsys):
    experiment = started_experiment(arms=2)
    seed_experiment(experiment, subjects=40, as_of=timezone.now(), seed=13)
    call_command("compute_results", experiment.key)
    assert ResultSnapshot.objects.filter(experiment=experiment).count() == 1
    assert experiment.key in capsys.readouterr().out
    with pytest.raises(CommandError, match="No experiment"):
        call_command("compute_results", "no-such-experiment")


@pytest.mark.postgres
def test_a_source_timing_out_raises_an_alert_and_keeps_the_last_snapshot():
    from tests.experiments.warehouse.test_engine import external_copy

    experiment = started_experiment(arms=2)
    as_of = timezone.now() - timedelta(days=1)
    seed_experiment(experiment, subjects=40, as_of=as_of, seed=14)
    previous = compute_results(experiment=experiment, as_of=as_of - timedelta(hours=1), monitor=False)

    with external_copy() as (url, backend, mapping):
        events = mapping["events"]["table"]
        slow = "slow_" + events.removeprefix("events_")
        try:
            # The events behind a view that takes 3 s to read, against a 1 s limit.
            backend.raw_sql(
                f'CREATE VIEW "{slow}" AS SELECT e.* FROM "{events}" e, (SELECT pg_sleep(3)) s'  # noqa: S608 (the test's own tables)
            ).close()
            source = DataSource.objects.create(
                name="slow", engine="postgres", url_setting="SLOW_URL",
                mapping={**mapping, "events": {"table": slow}}, query_timeout_seconds=1,
            )
            experiment.data_source = source
            experiment.save(update_fields=["data_source"])
            with override_settings(PRIVACYLAB_WAREHOUSE_URLS={"SLOW_URL": url}):
                kept = compute_results(experiment=experiment, as_of=as_of, monitor=False)
        finally:
            backend.raw_sql(f'DROP VIEW IF EXISTS "{slow}"').close()
    assert kept.pk == previous.pk
    assert ResultSnapshot.objects.filter(experiment=experiment).count() == 1
    alert = ExperimentAlert.objects.get(experiment=experiment, kind=ExperimentAlert.Kind.DATA_SOURCE)
    assert "statement timeout" in alert.details["error"]
