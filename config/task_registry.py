"""A Celery task by its registered name: how a module queues a task of its own app without
importing the app's ``tasks`` module, which imports it back (an import cycle, even inside a function).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from config.celery import app

if TYPE_CHECKING:
    from celery import Task


def registered_task(name: str) -> Task:
    """The task registered under ``name`` (e.g. ``"experiments.tasks.results_compute"``).

    A web process has not necessarily imported the tasks modules: the first miss imports every
    app's (Celery's autodiscovery, as a worker does at start). An unknown name raises KeyError.
    """
    if name not in app.tasks:
        app.loader.import_default_modules()
    return app.tasks[name]
