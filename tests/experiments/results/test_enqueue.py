"""results_enqueue: the one way a results run is queued."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from experiments.results.enqueue import results_enqueue
from tests.experiments.factories import running_experiment

pytestmark = pytest.mark.django_db


def test_a_run_is_sent_after_the_commit_with_its_window_end_fixed(django_capture_on_commit_callbacks):
    experiment = running_experiment()
    as_of = timezone.now() - timedelta(minutes=3)
    with mock.patch("experiments.tasks.results_compute.apply_async") as send:
        with django_capture_on_commit_callbacks(execute=False) as callbacks:
            assert results_enqueue(experiment_ids=[experiment.pk, 987654], as_of=as_of) == 1
        send.assert_not_called()
        for callback in callbacks:
            callback()
    send.assert_called_once_with(args=[experiment.pk, as_of.isoformat()], task_id=None)


def test_after_commit_false_sends_at_once_and_names_the_task():
    experiment = running_experiment()
    failing = mock.patch("experiments.tasks.results_compute.apply_async", side_effect=ConnectionError("down"))
    with failing, pytest.raises(ConnectionError):
        results_enqueue(experiment_ids=[experiment.pk], task_id="t-1", after_commit=False)
    with mock.patch("experiments.tasks.results_compute.apply_async") as send:
        results_enqueue(experiment_ids=[experiment.pk], task_id="t-1", after_commit=False)
    assert send.call_args.kwargs["task_id"] == "t-1"
