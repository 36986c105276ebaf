"""The results task on a real worker: a worker killed mid-task never double-counts.

The task is ``acks_late`` and the broker redelivers it when the worker process
dies (``task_reject_on_worker_lost``); it carries its analysis time, so the
redelivered run computes the same window and writes the one snapshot of that
window. Killed while its metric facts refresh waits on a lock, the task is redelivered
and the final snapshot equals a clean in-process run.
"""

import os
import signal
import time
from datetime import timedelta

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from experiments.metrics import REFRESH_MARKER
from experiments.models import Guardrail, ResultSnapshot
from experiments.results import results_document
from experiments.tasks import results_compute
from tests.experiments.factories import running_experiment
from tests.experiments.pipeline_kit import populate

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.redis]
# ``django_db_serialized_rollback``: the worker needs committed data (a transactional
# test), and the seeded purposes and notices must survive the flush between tests.


def _raw_connection() -> psycopg.Connection:
    db = connection.settings_dict
    return psycopg.connect(
        dbname=db["NAME"], user=db.get("USER") or "postgres", password=db.get("PASSWORD") or None,
        host=db.get("HOST") or "127.0.0.1", port=db.get("PORT") or 5432,
    )


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"timed out waiting for {what}")


def _experiment():
    experiment = running_experiment(arms=3)
    experiment.started_at = timezone.now() - timedelta(days=3)
    experiment.save(update_fields=["started_at"])
    Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=0.05)
    populate(
        experiment,
        {
            "control": {"n": 150, "conversion": 0.2, "opt_out": 0.05, "impressions": 3, "clicks": 0.3},
            "arm-1": {"n": 150, "conversion": 0.3, "opt_out": 0.04, "impressions": 3, "clicks": 0.4},
            "arm-2": {"n": 150, "conversion": 0.25, "opt_out": 0.06, "impressions": 3, "clicks": 0.35},
        },
    )
    return experiment


def test_killed_mid_task_the_results_task_is_redelivered_and_counts_once(django_db_serialized_rollback, celery_worker_process):
    experiment = _experiment()
    as_of = timezone.now().replace(microsecond=0)

    with _raw_connection() as blocker:
        # Hold the events table so the task's metric facts refresh blocks: the worker is then
        # provably in the middle of compute_results when it is killed.
        blocker.execute("LOCK TABLE experiments_outcomeevent IN ACCESS EXCLUSIVE MODE")
        result = results_compute.delay(experiment.pk, as_of.isoformat())

        def blocked_query_pid():
            with _raw_connection() as observer:
                row = observer.execute(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    " AND query LIKE %s",
                    [f"%{REFRESH_MARKER}%"],
                ).fetchone()
            return row and row[0]

        _wait_for(blocked_query_pid, 60, "the metric facts refresh to block on the lock")
        children = celery_worker_process.child_pids()
        assert len(children) == 1
        os.kill(children[0], signal.SIGKILL)
        _wait_for(lambda: children[0] not in celery_worker_process.child_pids(), 30, "the pool child to die")
        assert ResultSnapshot.objects.count() == 0
        blocker.rollback()  # release the lock: the redelivered task may now run

    snapshot_id = result.get(timeout=120)
    log = celery_worker_process.log()
    assert "WorkerLostError" in log or "SIGKILL" in log, log[-2000:]
    snapshot = ResultSnapshot.objects.get(pk=snapshot_id)
    assert ResultSnapshot.objects.filter(experiment=experiment).count() == 1
    assert snapshot.window_end == as_of and snapshot.subjects == 450

    # The final snapshot equals a clean run over the same window.
    status, clean, _ = results_document(experiment=experiment, as_of=as_of)
    assert snapshot.status == status
    assert snapshot.data == clean

    # Delivered once more (a duplicate delivery), it rewrites the same row.
    assert results_compute.delay(experiment.pk, as_of.isoformat()).get(timeout=120) == snapshot_id
    assert ResultSnapshot.objects.filter(experiment=experiment).count() == 1
    assert ResultSnapshot.objects.get(pk=snapshot_id).data == clean


def test_the_periodic_fan_out_and_the_monitor_run_on_the_real_worker(django_db_serialized_rollback, celery_worker_process):
    experiment = _experiment()
    from experiments.tasks import results_refresh_running

    assert results_refresh_running.delay().get(timeout=60) == [experiment.pk]
    snapshot = _wait_for(
        lambda: ResultSnapshot.objects.filter(experiment=experiment, monitored_at__isnull=False).first(),
        120,
        "the snapshot and its monitor run",
    )
    assert snapshot.status == ResultSnapshot.Status.OK
    assert snapshot.window_end.second == 0 and snapshot.window_end.microsecond == 0
