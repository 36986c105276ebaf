"""The cache keys of the recommender: a build's lists, each arm's pointer, a subject's arm.

Builds write them (``services.builds``), serving reads them (``selectors``),
an erasure deletes a subject's (``subject_cache_keys``, through the consent
registry).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from django.utils import timezone

from recommender.conf import CACHE_SECONDS, STALE_AFTER
from recommender.models import ModelBuild

KEY_PREFIX = "reco:v1:"


def _digest(text: str) -> str:
    # Skus and cohort keys may hold spaces and '&': hashed, every key stays cache-safe.
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def pointer_key(arm_id: int | None) -> str:
    return f"{KEY_PREFIX}current:{arm_id if arm_id is not None else 'platform'}"


def subject_key(build_id: int, pseudonym: str) -> str:
    return f"{KEY_PREFIX}{build_id}:s:{pseudonym}"


def cohort_key(build_id: int, cohort: str) -> str:
    return f"{KEY_PREFIX}{build_id}:c:{_digest(cohort)}"


def item_key(build_id: int, sku: str) -> str:
    return f"{KEY_PREFIX}{build_id}:i:{_digest(sku)}"


def fallback_key(build_id: int) -> str:
    return f"{KEY_PREFIX}{build_id}:f"


def arm_of_key(pseudonym: str) -> str:
    return f"{KEY_PREFIX}arm-of:{pseudonym}"


def subject_cache_keys(pseudonym: str) -> list[str]:
    """Every cache key that may hold this subject's data (for erasure).

    Every build that may have written keys still alive: whatever its status —
    running (it may be publishing right now), failed (it may have written its
    keys before failing) or succeeded — if it started within a key's lifetime
    plus the longest a build may run.
    """
    since = timezone.now() - timedelta(seconds=CACHE_SECONDS) - STALE_AFTER
    build_ids = ModelBuild.objects.filter(started_at__gte=since).values_list("id", flat=True)
    return [arm_of_key(pseudonym), *(subject_key(build_id, pseudonym) for build_id in build_ids)]
