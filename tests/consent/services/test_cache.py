"""The consent cache cannot keep a stale "granted": the reader/withdrawal races, deterministically.

Each test interleaves a reader of ``consent_state`` and a withdrawal step by
step (the reader's database read is the point where the writer runs), on the
cache the suite runs with: local memory on the embedded default, the real
Redis under CI (``.ci/run``). The last test runs only against Redis.
"""

import time

import pytest
from django.core.cache import cache
from django.test import override_settings

from consent import selectors, services, tasks
from consent.models import PendingCacheInvalidation
from consent.pseudonyms import subject_pseudonym
from consent.selectors import (
    TOMBSTONE,
    TOMBSTONE_SECONDS,
    consent_state,
    personalization_allowed,
    state_cache_fill,
    state_cache_key,
)
from tests.consent.factories import grant, raw_id, tombstone_expire, withdraw

pytestmark = pytest.mark.django_db
UNREACHABLE_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:6390/0",  # nothing listens here
        "OPTIONS": {"IGNORE_EXCEPTIONS": True, "SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
    }
}


@pytest.fixture
def granted_subject():
    subject = raw_id()
    grant(subject)
    tombstone_expire(subject)
    return subject, state_cache_key(subject_pseudonym(subject))


def _reader_reads_then(monkeypatch, step):
    """Make the next ``consent_state`` run ``step`` right after its database read, before it fills the cache."""
    real = selectors._state_from_db

    def read_then_step(pseudonym):
        raw = real(pseudonym)
        step()
        return raw

    monkeypatch.setattr(selectors, "_state_from_db", read_then_step)
    return lambda: monkeypatch.setattr(selectors, "_state_from_db", real)


def test_a_reader_that_read_before_a_withdrawal_committed_cannot_cache_the_old_grant(
    granted_subject, monkeypatch, django_capture_on_commit_callbacks
):
    subject, key = granted_subject
    assert cache.get(key) is None  # a cold entry: the reader will read the database and fill it

    def withdrawal_commits():
        with django_capture_on_commit_callbacks(execute=True):  # commit, then the post-commit invalidation
            withdraw(subject)

    restore = _reader_reads_then(monkeypatch, withdrawal_commits)
    # The reader answers from what it read (that was true when it read)…
    assert consent_state(subject_id=subject).personalization_allowed
    restore()
    # …but its late fill met the tombstone and did not land: every later read sees the withdrawal.
    assert cache.get(key) == TOMBSTONE
    assert personalization_allowed(subject_id=subject) is False
    # Once the tombstone expires, readers fill from the database again, which says withdrawn.
    tombstone_expire(subject)
    assert personalization_allowed(subject_id=subject) is False
    assert cache.get(key) is not None and cache.get(key) != TOMBSTONE
    assert personalization_allowed(subject_id=subject) is False


def test_a_reader_between_the_invalidation_and_the_commit_cannot_cache_either(
    granted_subject, monkeypatch, django_capture_on_commit_callbacks
):
    """The reader reads inside the writer's transaction window: after its tombstone, before its commit."""
    subject, key = granted_subject
    with django_capture_on_commit_callbacks(execute=False) as after_commit:
        withdraw(subject)  # written and tombstoned, the post-commit step not run yet
    assert cache.get(key) == TOMBSTONE
    assert consent_state(subject_id=subject)  # a reader meets the tombstone: it reads, it does not fill
    assert cache.get(key) == TOMBSTONE
    for callback in after_commit:
        callback()
    assert cache.get(key) == TOMBSTONE
    assert personalization_allowed(subject_id=subject) is False


def test_a_stalled_reader_does_not_fill_after_the_tombstone_could_have_expired(granted_subject):
    subject, key = granted_subject
    raw = selectors._state_from_db(subject_pseudonym(subject))
    assert state_cache_fill(key=key, raw=raw, read_began=time.monotonic() - TOMBSTONE_SECONDS / 2) is False
    assert cache.get(key) is None
    assert state_cache_fill(key=key, raw=raw, read_began=time.monotonic()) is True
    assert cache.get(key) is not None


def test_tombstones_are_short_lived(granted_subject, django_capture_on_commit_callbacks):
    subject, key = granted_subject
    with django_capture_on_commit_callbacks(execute=True):
        withdraw(subject)
    assert cache.get(key) == TOMBSTONE
    if hasattr(cache, "ttl"):  # django-redis
        ttl = cache.ttl(key)
    else:  # local memory
        ttl = cache._expire_info[cache.make_key(key)] - time.time()
    assert 0 < ttl <= TOMBSTONE_SECONDS


def test_an_invalidation_the_cache_did_not_confirm_is_retried_until_it_is(
    granted_subject, django_capture_on_commit_callbacks
):
    """The cache is unreachable from the writer while it withdraws, and comes back with its old entry."""
    subject, key = granted_subject
    assert personalization_allowed(subject_id=subject)
    stale = cache.get(key)
    assert stale is not None and stale != TOMBSTONE  # a warm "granted" entry
    with override_settings(CACHES=UNREACHABLE_REDIS):
        with django_capture_on_commit_callbacks(execute=True):
            withdraw(subject)  # committed: the database does not depend on the cache
        assert personalization_allowed(subject_id=subject) is False  # no cache: the database answers
    # The cache answers again, still holding the entry from before: this is the hazard…
    assert cache.get(key) == stale
    # …recorded durably, with the withdrawal's transaction:
    assert list(PendingCacheInvalidation.objects.values_list("pseudonym", flat=True)) == [subject_pseudonym(subject)]
    assert tasks.consent_cache_invalidations_retry.delay().get() == {"confirmed": 1, "pending": 0}
    assert cache.get(key) == TOMBSTONE
    assert personalization_allowed(subject_id=subject) is False
    assert not PendingCacheInvalidation.objects.exists()


def test_a_retry_while_the_cache_is_still_down_keeps_the_record(granted_subject, django_capture_on_commit_callbacks):
    subject, _ = granted_subject
    with override_settings(CACHES=UNREACHABLE_REDIS):
        with django_capture_on_commit_callbacks(execute=True):
            withdraw(subject)
        assert services.consent_cache_invalidations_retry() == {"confirmed": 0, "pending": 1}
    assert services.consent_cache_invalidations_retry() == {"confirmed": 1, "pending": 0}


def test_a_confirmed_invalidation_leaves_no_record(granted_subject, django_capture_on_commit_callbacks):
    subject, _ = granted_subject
    with django_capture_on_commit_callbacks(execute=True):
        withdraw(subject)
    assert not PendingCacheInvalidation.objects.exists()


@pytest.mark.redis
def test_the_race_on_the_real_redis(granted_subject, monkeypatch, django_capture_on_commit_callbacks):
    from django_redis import get_redis_connection

    subject, key = granted_subject

    def withdrawal_commits():
        with django_capture_on_commit_callbacks(execute=True):
            withdraw(subject)

    restore = _reader_reads_then(monkeypatch, withdrawal_commits)
    consent_state(subject_id=subject)
    restore()
    redis = get_redis_connection("default")
    assert redis.get(cache.make_key(key)) == b'"consent:invalidated"'  # JSON: the reader's fill did not land
    assert 0 < redis.pttl(cache.make_key(key)) <= TOMBSTONE_SECONDS * 1000
    assert personalization_allowed(subject_id=subject) is False
