"""Project configuration: settings, URLs, the Celery app, and the plumbing every app shares (see each module)."""

from config.celery import app as celery_app

__all__ = ["celery_app"]
