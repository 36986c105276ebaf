"""What every page may say about how this deployment runs."""

from django.conf import settings

from config.schedule import RESULTS_EVERY_MINUTES


def operations(request) -> dict:
    # Without a worker and beat (the embedded default served with --no-worker, or any
    # eager-task setup) nothing scheduled runs, and the pages say so instead of promising it.
    return {
        "scheduled_tasks_run": settings.SCHEDULED_TASKS_RUN,
        "results_every_minutes": RESULTS_EVERY_MINUTES,
    }
