"""Thin Celery tasks over experiments services: ids in, one service call, idempotent."""

from celery import shared_task

from experiments import services


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)
def experiments_apply_schedule() -> dict:
    return services.experiments_apply_schedule()
