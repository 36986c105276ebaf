"""Cache invalidation of the subjects' consent state, and of the purposes' rules.

Every write that changes what ``consent_state`` answers invalidates the
subject's cache entry explicitly in the same operation, by writing a
short-lived tombstone over it (``consent.selectors``: a late fill cannot
replace it): once inside the transaction (so no reader after it is served the
old entry) and again after commit (so a reader that read the database before
the commit cannot cache what it read). The database write does not depend on
the cache: with Redis down a withdrawal is still committed before the
response, and readers then go to the database; an invalidation the cache did
not confirm is recorded in the same transaction and retried until it is.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from consent.models import PendingCacheInvalidation
from consent.selectors import (
    RULES_TOKEN_KEY,
    TOMBSTONE,
    TOMBSTONE_SECONDS,
    purpose_rules_forget,
    state_cache_key,
)

logger = logging.getLogger(__name__)


def consent_cache_invalidate(*, pseudonyms: Iterable[str]) -> list[str]:
    """Write tombstones over the subjects' cached consent state, now and again after commit.

    Each time the cache must confirm it holds the tombstones; the subjects it
    does not confirm are recorded (``PendingCacheInvalidation``: first in this
    transaction, then after commit) and retried every minute until it does.
    """
    pseudonyms = sorted(set(pseudonyms))
    keys = [state_cache_key(pseudonym) for pseudonym in pseudonyms]
    if not keys:
        return keys
    unconfirmed = _tombstones_write(pseudonyms)
    if unconfirmed:
        _pending_record(unconfirmed, timezone.now())

    def after_commit() -> None:
        failed = _tombstones_write(pseudonyms)
        if failed:
            _pending_record(failed, timezone.now())
        if unconfirmed and not failed:
            PendingCacheInvalidation.objects.filter(pseudonym__in=unconfirmed).delete()

    transaction.on_commit(after_commit, robust=True)
    return keys


def _tombstones_write(pseudonyms: Sequence[str]) -> list[str]:
    """Tombstone the subjects' state entries; the pseudonyms whose tombstone the cache did not confirm."""
    keys = {state_cache_key(pseudonym): pseudonym for pseudonym in pseudonyms}
    cache.set_many(dict.fromkeys(keys, TOMBSTONE), timeout=TOMBSTONE_SECONDS)
    held = cache.get_many(list(keys))  # {} when the cache does not answer
    return [pseudonym for key, pseudonym in keys.items() if held.get(key) != TOMBSTONE]


def _pending_record(pseudonyms: Sequence[str], now: datetime) -> None:
    PendingCacheInvalidation.objects.bulk_create(
        [PendingCacheInvalidation(pseudonym=pseudonym, since=now) for pseudonym in pseudonyms],
        ignore_conflicts=True,
    )
    logger.warning("consent cache did not confirm %d invalidation(s): recorded for retry", len(pseudonyms))


def consent_cache_invalidations_retry(*, batch_size: int = 1000) -> dict[str, int]:
    """Retry the invalidations the cache did not confirm; the confirmed ones are forgotten."""
    confirmed = 0
    pending = list(PendingCacheInvalidation.objects.order_by("since").values_list("pseudonym", flat=True)[:batch_size])
    if pending:
        failed = set(_tombstones_write(pending))
        done = [pseudonym for pseudonym in pending if pseudonym not in failed]
        confirmed, _ = PendingCacheInvalidation.objects.filter(pseudonym__in=done).delete()
    return {"confirmed": confirmed, "pending": PendingCacheInvalidation.objects.count()}


def purpose_rules_changed() -> None:
    """Tell every process that purposes or notices changed (now, and after commit)."""

    def bump() -> None:
        cache.set(RULES_TOKEN_KEY, uuid.uuid4().hex, timeout=None)
        purpose_rules_forget()

    bump()
    transaction.on_commit(bump, robust=True)
