"""The export appends new exposures and consent decisions once: a rerun adds nothing."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import override_settings
from django.utils import timezone

from consent.models import ConsentEvent, Purpose, Subject
from experiments.metrics.pipeline import metric_statistics_compute
from experiments.models import Exposure
from experiments.tasks import warehouse_export_run
from experiments.warehouse.engine import warehouse_statistics_compute
from experiments.warehouse.export import builtin_frames, warehouse_export
from tests.experiments.factories import started_experiment
from tests.experiments.pipeline_kit import seed_experiment
from tests.experiments.warehouse.test_engine import assert_same_statistics

pytestmark = pytest.mark.django_db


def _one_more_exposure(experiment):
    subject = Subject.objects.create(pseudonym="late-subject-0001")
    Exposure.objects.create(
        experiment=experiment, arm=experiment.arms.first(), subject=subject, phase=experiment.phase,
        first_exposed_at=timezone.now() - timedelta(hours=3),
    )
    ConsentEvent.objects.create(
        subject=subject, purpose_id=Purpose.PERSONALIZATION, action="withdraw", recorded_at=timezone.now()
    )


def test_export_to_duckdb_is_incremental_and_idempotent(tmp_path, capsys):
    import ibis

    experiment = started_experiment(arms=2)
    seed_experiment(experiment, subjects=80, as_of=timezone.now(), seed=21)
    url = f"duckdb:///{tmp_path / 'lake.duckdb'}"
    exposures, consents = Exposure.objects.count(), ConsentEvent.objects.count()

    assert warehouse_export(to=url) == {"exposures": exposures, "consents": consents}
    assert warehouse_export(to=url) == {"exposures": 0, "consents": 0}
    _one_more_exposure(experiment)
    call_command("warehouse_export", "--to", url)
    assert "exposures: 1 appended, consents: 1 appended" in capsys.readouterr().out
    call_command("warehouse_export", "--to", url)
    assert "exposures: 0 appended, consents: 0 appended" in capsys.readouterr().out

    backend = ibis.duckdb.connect(str(tmp_path / "lake.duckdb"))
    exported = backend.table("exposures").execute()
    assert len(exported) == exposures + 1 and exported.exposure_id.is_unique
    # Pseudonymous ids only: the subject's pseudonym, the arm's key; no attribute of the person.
    assert set(exported.columns) == {"exposure_id", "experiment_id", "phase", "arm", "subject_id", "first_exposed_at"}
    assert len(backend.table("consents").execute()) == consents + 1


def test_the_scheduled_task_exports_to_the_configured_url(tmp_path):
    experiment = started_experiment(arms=2)
    seed_experiment(experiment, subjects=20, as_of=timezone.now(), seed=22)
    assert warehouse_export_run.delay().get() == {}  # no URL configured: nothing to do
    with override_settings(PRIVACYLAB_WAREHOUSE_EXPORT_URL=f"parquet://{tmp_path / 'lake'}"):
        first = warehouse_export_run.delay().get()
        again = warehouse_export_run.delay().get()
    assert first["exposures"] == Exposure.objects.count() and again == {"exposures": 0, "consents": 0}


def test_duckdb_over_the_exported_parquet_files_gives_the_built_in_statistics(tmp_path):
    import ibis

    experiment = started_experiment(arms=3)
    as_of = timezone.now() - timedelta(days=1)
    seed_experiment(experiment, subjects=300, as_of=as_of, seed=23)
    lake = tmp_path / "lake"
    warehouse_export(to=f"parquet://{lake}")
    _one_more_exposure(experiment)  # after as_of: in the files, outside the window
    assert warehouse_export(to=f"parquet://{lake}") == {"exposures": 1, "consents": 1}
    assert len(list(lake.glob("exposures-*.parquet"))) == 2
    # The marketplace's own tables (events, subject attributes) are beside them in the lake.
    for name, frame in builtin_frames(tables=["events", "subjects"]).items():
        frame.to_parquet(lake / f"{name}-0-0.parquet", index=False)

    backend = ibis.duckdb.connect()
    for name in ("exposures", "consents", "events", "subjects"):
        backend.read_parquet(str(lake / f"{name}-*.parquet"), table_name=name)
    builtin = metric_statistics_compute(experiment=experiment, as_of=as_of)
    warehouse = warehouse_statistics_compute(experiment=experiment, backend=backend, as_of=as_of)
    assert_same_statistics(builtin, warehouse)
