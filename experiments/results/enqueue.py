"""Enqueueing results runs and monitor runs: the one way either task is queued.

Every results run, whoever asks for it (the periodic fan-out, the admin's
"compute now", the dashboard's recompute), goes through ``results_enqueue``:
one task per experiment, sent once the caller's transaction commits, with the
window's end fixed at enqueue time so a redelivered task analyses the same
window.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from config.task_registry import registered_task
from experiments.models import Experiment

# The tasks (experiments.tasks), by name: that module imports this package.
RESULTS_COMPUTE_TASK = "experiments.tasks.results_compute"
MONITOR_TASK = "experiments.tasks.experiment_monitor"


def results_enqueue(
    *,
    experiment_ids: Iterable[int],
    as_of: datetime | None = None,
    task_id: str | None = None,
    after_commit: bool = True,
) -> int:
    """Queue a results run for each of these experiments that exists; returns how many were queued.

    ``as_of`` (default: now) is the end of the analysed window. The tasks are
    sent once the current transaction commits; ``after_commit=False`` sends
    them at once, for a caller already running after its commit that wants a
    failure to send in its hands (the dashboard's recompute request, which
    names its task with ``task_id`` to follow its progress).
    """
    results_compute = registered_task(RESULTS_COMPUTE_TASK)
    moment = (as_of or timezone.now()).isoformat()
    ids = list(Experiment.objects.filter(pk__in=list(experiment_ids)).order_by("pk").values_list("pk", flat=True))
    for experiment_id in ids:
        def send(experiment_id: int = experiment_id) -> None:
            results_compute.apply_async(args=[experiment_id, moment], task_id=task_id)

        if after_commit:
            transaction.on_commit(send)
        else:
            send()
    return len(ids)


def results_enqueue_running(*, now: datetime | None = None) -> list[int]:
    """Enqueue a results run for every running experiment, as of this minute.

    The analysis time is truncated to the minute, so a fan-out that is itself
    redelivered asks for the same windows and changes nothing.
    """
    as_of = (now or timezone.now()).replace(second=0, microsecond=0)
    ids = list(Experiment.objects.filter(status=Experiment.Status.RUNNING).order_by("id").values_list("id", flat=True))
    results_enqueue(experiment_ids=ids, as_of=as_of)
    return ids


def monitor_enqueue(*, snapshot_id: int) -> None:
    """Queue the monitor of a stored run, once the transaction that stored it commits."""
    transaction.on_commit(lambda: registered_task(MONITOR_TASK).delay(snapshot_id))
