"""registered_task: each name a module queues by resolves to that app's task, and an unknown name fails loudly."""

import pytest

from config.task_registry import registered_task
from consent.services.dsr import DSR_PROCESS_TASK
from experiments.results.enqueue import MONITOR_TASK, RESULTS_COMPUTE_TASK
from experiments.services.rollouts import ROLLOUT_STEP_TASK
from recommender.services.builds import BUILD_TASK
from recommender.services.impressions import IMPRESSIONS_RECORD_TASK


@pytest.mark.parametrize(
    "name",
    [DSR_PROCESS_TASK, RESULTS_COMPUTE_TASK, MONITOR_TASK, ROLLOUT_STEP_TASK, BUILD_TASK, IMPRESSIONS_RECORD_TASK],
)
def test_each_queued_name_is_its_apps_task(name):
    module, _, function = name.rpartition(".")
    tasks = __import__(module, fromlist=[function])
    assert registered_task(name).name == getattr(tasks, function).name == name


def test_an_unknown_name_raises():
    with pytest.raises(KeyError):
        registered_task("experiments.tasks.no_such_task")
