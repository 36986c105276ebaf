"""``consent_state`` and its helpers: what counts as consent now (expiry, re-consent, restriction), the cache."""

from datetime import timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.utils import timezone

from consent import services
from consent.models import Purpose
from consent.pseudonyms import subject_pseudonym
from consent.selectors import (
    TOMBSTONE,
    ConsentState,
    Status,
    consent_state,
    consenting_subject_ids,
    consenting_subject_ids_as_of,
    personalization_allowed,
    sensitive_allowed,
    state_cache_key,
)
from tests.consent.factories import NoticeFactory, grant, raw_id, tombstone_expire, withdraw

pytestmark = pytest.mark.django_db
PURPOSES = ["personalization", "sensitive_profiling", "behavioral_tracking", "marketing"]


# --- what counts as consent now ---------------------------------------------------------------


def test_nothing_recorded_means_nothing_allowed():
    state = consent_state(subject_id=raw_id())
    assert state.confirmed
    assert not state.personalization_allowed and not state.sensitive_allowed
    assert {p.status for p in state.purposes.values()} == {Status.NOT_SET}
    assert set(state.purposes) == set(PURPOSES)


def test_grant_and_withdraw_per_purpose():
    subject = raw_id()
    grant(subject)
    grant(subject, "sensitive_profiling")
    assert sensitive_allowed(subject_id=subject) is True
    withdraw(subject, "sensitive_profiling")
    state = consent_state(subject_id=subject)
    assert state.personalization_allowed and not state.sensitive_allowed
    assert state.get("sensitive_profiling").status == Status.WITHDRAWN


def test_sensitive_needs_personalization_too():
    subject = raw_id()
    grant(subject, "sensitive_profiling")
    assert consent_state(subject_id=subject).granted("sensitive_profiling")
    assert sensitive_allowed(subject_id=subject) is False


def test_a_grant_expires_after_the_purposes_validity():
    subject = raw_id()
    recorded = grant(subject, "sensitive_profiling")  # valid 180 days
    assert recorded.expires_at - recorded.recorded_at == timedelta(days=180)
    with time_machine.travel(timezone.now() + timedelta(days=179), tick=False):
        assert consent_state(subject_id=subject).get("sensitive_profiling").status == Status.GRANTED
    with time_machine.travel(timezone.now() + timedelta(days=181), tick=False):
        assert consent_state(subject_id=subject).get("sensitive_profiling").status == Status.EXPIRED
        assert not consent_state(subject_id=subject).allowed("sensitive_profiling")


def test_a_notice_that_requires_reconsent_lapses_older_grants():
    subject, later = raw_id(), raw_id()
    grant(subject)
    notice = NoticeFactory(
        version="2", requires_reconsent=True, effective_at=timezone.now() + timedelta(days=7)
    )
    services.notice_save(notice=notice)
    assert personalization_allowed(subject_id=subject) is True  # not in effect yet
    with time_machine.travel(timezone.now() + timedelta(days=8), tick=False):
        state = consent_state(subject_id=subject)
        assert state.get("personalization").status == Status.RECONSENT_REQUIRED
        assert not state.personalization_allowed
        with pytest.raises(Exception, match="superseded by version '2'"):
            grant(later, version="1")
        grant(later, version="2")
        assert personalization_allowed(subject_id=later) is True


def test_a_notice_without_reconsent_keeps_older_grants():
    subject = raw_id()
    grant(subject)
    services.notice_save(notice=NoticeFactory(version="1.1"))
    assert personalization_allowed(subject_id=subject) is True


def test_restriction_and_objection_block_whatever_the_consents_say():
    restricted, objected = raw_id(), raw_id()
    for subject in (restricted, objected):
        for purpose in PURPOSES:
            grant(subject, purpose)
    services.dsr_file(type="restriction", subject_id=restricted)
    services.dsr_file(type="objection", subject_id=objected)
    state = consent_state(subject_id=restricted)
    assert state.restricted and not any(state.allowed(p) for p in PURPOSES)
    state = consent_state(subject_id=objected)
    assert state.objected and not state.personalization_allowed and not state.sensitive_allowed
    assert state.allowed("marketing")  # marketing does not profile; consents stay on record
    assert all(state.granted(p) for p in PURPOSES)


def test_unconfirmed_state_fails_closed():
    state = ConsentState.unconfirmed()
    assert (
        not state.personalization_allowed
        and not state.sensitive_allowed
        and not state.granted("marketing")
    )


def test_helpers_fail_closed_when_the_database_fails(monkeypatch):
    subject = raw_id()
    grant(subject)
    cache.clear()

    def broken(pseudonym):
        raise ConnectionError("database unreachable")

    monkeypatch.setattr("consent.selectors._state_from_db", broken)
    assert personalization_allowed(subject_id=subject) is False
    assert sensitive_allowed(subject_id=subject) is False
    with pytest.raises(TypeError):
        personalization_allowed()


def test_consenting_subject_ids_for_model_builds():
    yes, no, withdrawn, restricted, expired = (raw_id() for _ in range(5))
    for subject in (yes, withdrawn, restricted):
        grant(subject)
    grant(no, "marketing")
    withdraw(withdrawn)
    services.dsr_file(type="restriction", subject_id=restricted)
    with time_machine.travel(timezone.now() - timedelta(days=400), tick=False):
        grant(expired)
    ids = set(consenting_subject_ids(purposes=["personalization"]))
    assert ids == {subject_pseudonym(yes)}
    grant(yes, "sensitive_profiling")
    assert set(consenting_subject_ids(purposes=["personalization", "sensitive_profiling"])) == {
        subject_pseudonym(yes)
    }
    assert not set(consenting_subject_ids(purposes=["sensitive_profiling", "marketing"]))
    with pytest.raises(ValueError, match="unknown purposes"):
        consenting_subject_ids(purposes=["telepathy"])


def test_consent_as_of_a_past_moment_is_the_ledgers_then():
    """A build for a moment in the past trains on the consents of that moment, not on later ones."""
    now = timezone.now()
    t0, t1, t2 = now - timedelta(days=3), now - timedelta(days=2), now - timedelta(days=1)
    late, withdrawn, steady = raw_id(), raw_id(), raw_id()
    grant(late, now=t2)  # consents at t2
    grant(withdrawn, now=t0)
    withdraw(withdrawn, now=t1)  # withdraws at t1
    grant(steady, now=t0)
    pseudonym = {subject: subject_pseudonym(subject) for subject in (late, withdrawn, steady)}

    def consenting(moment):
        return set(consenting_subject_ids(purposes=["personalization"], now=moment))

    assert consenting(t0 + timedelta(hours=1)) == {pseudonym[withdrawn], pseudonym[steady]}
    assert consenting(t1 - timedelta(seconds=1)) == {pseudonym[withdrawn], pseudonym[steady]}
    assert consenting(t1) == consenting(t2 - timedelta(seconds=1)) == {pseudonym[steady]}
    assert consenting(t2) == consenting(now) == {pseudonym[late], pseudonym[steady]}
    assert consenting(t0 - timedelta(seconds=1)) == set()
    # A grant of another purpose later does not change what personalization allowed then.
    grant(steady, "sensitive_profiling", now=t2)
    assert set(consenting_subject_ids(purposes=["personalization", "sensitive_profiling"], now=t1)) == set()
    assert set(consenting_subject_ids(purposes=["personalization", "sensitive_profiling"], now=now)) == {
        pseudonym[steady]
    }


def test_consent_as_of_now_is_the_current_state_in_one_query(django_assert_num_queries):
    """In production ``now`` is now: the ledger as of now and ``CurrentConsent`` give the same subjects."""
    yes, no, withdrawn, restricted, expired, regranted = (raw_id() for _ in range(6))
    for subject in (yes, withdrawn, restricted, regranted):
        grant(subject)
    grant(no, "marketing")
    withdraw(withdrawn)
    withdraw(regranted)
    grant(regranted)
    services.dsr_file(type="restriction", subject_id=restricted)
    with time_machine.travel(timezone.now() - timedelta(days=400), tick=False):
        grant(expired)
    now = timezone.now()
    for purposes in (["personalization"], ["personalization", "sensitive_profiling"], ["marketing"]):
        current = set(consenting_subject_ids(purposes=purposes, now=now))
        with django_assert_num_queries(3):  # the notices and the purposes (their rules), then the subjects
            as_of = set(consenting_subject_ids_as_of(purposes=purposes, as_of=now))
        assert as_of == current
    assert current == {subject_pseudonym(no)}
    assert set(consenting_subject_ids_as_of(purposes=["personalization"], as_of=now)) == {
        subject_pseudonym(yes), subject_pseudonym(regranted)
    }
    with pytest.raises(ValueError, match="unknown purposes"):
        consenting_subject_ids_as_of(purposes=["telepathy"], as_of=now)


# --- the cache ----------------------------------------------------------------------------------


def test_warm_reads_touch_no_table(django_assert_num_queries):
    subject = raw_id()
    grant(subject)
    tombstone_expire(subject)
    consent_state(subject_id=subject)
    assert cache.get(state_cache_key(subject_pseudonym(subject))) is not None
    with django_assert_num_queries(0):
        assert consent_state(subject_id=subject).personalization_allowed


def test_withdrawal_is_visible_on_the_next_read_with_the_cache_warm(django_assert_num_queries):
    subject = raw_id()
    grant(subject)
    tombstone_expire(subject)
    assert personalization_allowed(subject_id=subject)
    with django_assert_num_queries(0):
        assert personalization_allowed(subject_id=subject)  # served from the cache
    withdraw(subject)
    assert personalization_allowed(subject_id=subject) is False


def test_withdrawal_invalidates_the_cache_after_commit_too(django_capture_on_commit_callbacks):
    subject = raw_id()
    grant(subject)
    key = state_cache_key(subject_pseudonym(subject))
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        withdraw(subject)
        # A reader that refilled the entry from the pre-commit database…
        cache.set(key, (False, False, (("personalization", True, "1", 0.0, None),)))
    for callback in callbacks:
        callback()
    # …is replaced by the post-commit invalidation's tombstone.
    assert cache.get(key) == TOMBSTONE
    assert personalization_allowed(subject_id=subject) is False


def test_rules_change_reaches_readers_without_a_restart():
    subject = raw_id()
    grant(subject, "marketing")
    services.dsr_file(type="objection", subject_id=subject)
    assert consent_state(subject_id=subject).allowed("marketing")  # rules now held in-process
    purpose = Purpose.objects.get(key="marketing")
    purpose.involves_profiling = True
    services.purpose_save(purpose=purpose)
    assert not consent_state(subject_id=subject).allowed("marketing")
