"""The scheduled jobs: start and stop on time (frozen clock), the periodic results and monitor entries."""

from datetime import datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from config.celery import app as celery_app
from config.schedule import BEAT_SCHEDULE
from experiments.models import Experiment, ResultSnapshot
from experiments.tasks import (
    experiments_apply_schedule,
    experiments_monitor_pending,
    results_refresh_running,
)
from tests.experiments.factories import ExperimentFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.get_default_timezone())
END = START + timedelta(days=14)


def test_the_schedule_starts_and_stops_experiments_on_time(django_capture_on_commit_callbacks):
    experiment = ExperimentFactory(scheduled_start=START, scheduled_end=END)

    with time_machine.travel(START - timedelta(seconds=30), tick=False):
        assert experiments_apply_schedule.delay().get() == {"started": [], "stopped": [], "failed": []}
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.DRAFT

    with time_machine.travel(START + timedelta(seconds=20), tick=False):
        assert experiments_apply_schedule.delay().get()["started"] == [experiment.key]
        # Results run on the running experiment, over the window that has begun.
        with django_capture_on_commit_callbacks(execute=True):
            assert results_refresh_running.delay().get() == [experiment.pk]
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.RUNNING
    assert experiment.started_at == START + timedelta(seconds=20)
    snapshot = ResultSnapshot.objects.get(experiment=experiment)
    assert snapshot.status == ResultSnapshot.Status.NO_EXPOSURES
    # The run's time is truncated to the minute (09:00), which is before the start: an empty window.
    assert snapshot.window_start == snapshot.window_end == experiment.started_at

    with time_machine.travel(END - timedelta(seconds=1), tick=False):
        assert experiments_apply_schedule.delay().get()["stopped"] == []
    with time_machine.travel(END + timedelta(seconds=5), tick=False):
        assert experiments_apply_schedule.delay().get()["stopped"] == [experiment.key]
        assert experiments_apply_schedule.delay().get() == {"started": [], "stopped": [], "failed": []}
        with django_capture_on_commit_callbacks(execute=True):
            assert results_refresh_running.delay().get() == []  # stopped: no more periodic runs
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.STOPPED
    assert experiment.ended_at == END + timedelta(seconds=5)


def test_a_draft_whose_window_has_passed_is_not_started():
    ExperimentFactory(scheduled_start=START, scheduled_end=END)
    with time_machine.travel(END + timedelta(hours=1), tick=False):
        assert experiments_apply_schedule.delay().get() == {"started": [], "stopped": [], "failed": []}


def test_periodic_entries_for_results_and_monitoring():
    celery_app.loader.import_default_modules()
    results = BEAT_SCHEDULE["experiments-results"]
    assert results["task"] == "experiments.tasks.results_refresh_running"
    assert results["schedule"] == timedelta(minutes=15)
    assert 0 < results["options"]["expires"] < results["schedule"].total_seconds()
    monitor = BEAT_SCHEDULE["experiments-monitor"]
    assert monitor["task"] == "experiments.tasks.experiments_monitor_pending"
    assert 0 < monitor["options"]["expires"] < monitor["schedule"].total_seconds()
    assert experiments_monitor_pending.delay().get() == []
    for name in ("results_compute", "results_refresh_running", "experiment_monitor", "experiments_monitor_pending"):
        task = celery_app.tasks[f"experiments.tasks.{name}"]
        assert task.acks_late is True and task.time_limit and task.soft_time_limit < task.time_limit
