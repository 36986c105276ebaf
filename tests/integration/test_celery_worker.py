"""A task round-trip through the real Redis broker to a real worker process."""

from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.models import Experiment
from experiments.tasks import experiments_apply_schedule
from tests.experiments.factories import ExperimentFactory

pytestmark = [pytest.mark.integration, pytest.mark.postgres, pytest.mark.redis]


def test_scheduled_start_runs_on_a_real_worker(celery_worker_process):
    experiment = ExperimentFactory(scheduled_start=timezone.now() - timedelta(minutes=5))

    result = experiments_apply_schedule.delay().get(timeout=60)

    assert result["started"] == [experiment.key]
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.Status.RUNNING
    assert "experiments.tasks.experiments_apply_schedule" in celery_worker_process.log()
    # Redelivered or repeated, the task changes nothing more.
    assert experiments_apply_schedule.delay().get(timeout=60) == {"started": [], "stopped": [], "failed": []}
