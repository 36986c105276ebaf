"""The Celery app: configured from Django settings (``CELERY_*``), tasks discovered in every app, one schedule."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("privacylab")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _install_schedule(sender: Celery, **kwargs) -> None:
    # The one schedule module; django-celery-beat's DatabaseScheduler copies it
    # into the database at start-up, where PMs can see and pause entries.
    from config.schedule import BEAT_SCHEDULE

    sender.conf.beat_schedule = BEAT_SCHEDULE
