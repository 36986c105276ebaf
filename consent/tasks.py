"""Thin Celery tasks over consent services: ids in, one service call, idempotent."""

import uuid

from celery import shared_task

from config.transient import TRANSIENT_ERRORS
from consent.services import cache as cache_invalidation
from consent.services import dsr, retention

# Transient: the database or the cache is briefly unreachable. Anything else is a
# bug, and retrying it would only repeat the failure.
TRANSIENT = (*TRANSIENT_ERRORS, dsr.CacheUnavailable)


@shared_task(
    bind=True,
    acks_late=True,
    time_limit=15 * 60,
    soft_time_limit=14 * 60,
    autoretry_for=TRANSIENT,
    retry_backoff=60,
    retry_backoff_max=3600,
    retry_jitter=True,
    max_retries=24,
)
def dsr_process(self, request_id: str) -> dict:
    """Serve one data subject request (access, erasure, restriction, objection)."""
    try:
        return dsr.dsr_process(request_id=uuid.UUID(request_id))
    except Exception as exc:
        dsr.dsr_note_failure(request_id=uuid.UUID(request_id), error=exc)
        raise


@shared_task(acks_late=True, time_limit=10 * 60, soft_time_limit=9 * 60)
def dsr_enqueue_open() -> int:
    """Enqueue again open requests whose task may have been lost (e.g. the broker was down)."""
    return dsr.dsr_enqueue_open()


@shared_task(acks_late=True, time_limit=60 * 60, soft_time_limit=58 * 60)
def consent_retention_purge() -> dict:
    """Daily: delete raw personal data older than its purpose's retention period."""
    return retention.consent_retention_purge()


@shared_task(acks_late=True, time_limit=120, soft_time_limit=100)
def consent_cache_invalidations_retry() -> dict:
    """Every minute: retry the consent-cache invalidations the cache did not confirm."""
    return cache_invalidation.consent_cache_invalidations_retry()
