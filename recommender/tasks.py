"""Thin Celery tasks over recommender services: ids in, one service call, idempotent."""

from celery import shared_task

from config.transient import TRANSIENT_ERRORS
from recommender.services import builds, impressions

# Only TRANSIENT_ERRORS are retried. Anything else (a bug, too little data)
# fails the build, and the previous build keeps serving until the next one.


@shared_task(
    acks_late=True,
    time_limit=30 * 60,
    soft_time_limit=28 * 60,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=30,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=3,
)
def recommendations_build(arm_id: int | None, build_key: str) -> dict:
    """Build one arm's recommendations (None: the platform popularity list) for ``build_key``."""
    return builds.recommendations_build(arm_id=arm_id, build_key=build_key).as_dict()


@shared_task(acks_late=True, time_limit=5 * 60, soft_time_limit=4 * 60)
def recommendations_build_all(build_key: str | None = None) -> dict:
    """Hourly: fan out one build per arm of every running experiment, plus the platform list."""
    return builds.recommendations_build_enqueue(build_key=build_key)


@shared_task(
    acks_late=True,
    time_limit=60,
    soft_time_limit=50,
    autoretry_for=TRANSIENT_ERRORS,
    retry_backoff=5,
    retry_backoff_max=300,
    max_retries=5,
)
def recommendations_impressions_record(pseudonym: str, request_id: str, shown_at: str, items: list[list[str]]) -> int:
    """Record what one recommendation answer showed ([sku, category] per position); idempotent by request id.

    Takes the subject's pseudonym: the raw id never goes into the broker.
    """
    return impressions.impressions_record(pseudonym=pseudonym, request_id=request_id, shown_at=shown_at, items=items)
