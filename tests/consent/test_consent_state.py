"""Derived state and ``consent_state``: replay equality, expiry, re-consent, the cache."""

import uuid
from datetime import timedelta

import pytest
import time_machine
from django.core.cache import cache
from django.core.management import call_command
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent import services
from consent.models import ConsentEvent, CurrentConsent, Purpose
from consent.pseudonyms import subject_pseudonym
from consent.selectors import (
    TOMBSTONE,
    ConsentState,
    Status,
    consent_state,
    consenting_subject_ids,
    personalization_allowed,
    sensitive_allowed,
    state_cache_key,
)
from consent.services import ConsentEventInput
from tests.consent.factories import NoticeFactory, grant, raw_id, tombstone_expire, withdraw

pytestmark = pytest.mark.django_db
PURPOSES = ["personalization", "sensitive_profiling", "behavioral_tracking", "marketing"]


# --- the derived state equals a replay of the ledger ---------------------------------------------


def _replay(pseudonyms):
    """An independent oracle: the last event per subject and purpose, in ledger order."""
    last = {}
    for event in ConsentEvent.objects.filter(subject_id__in=pseudonyms).order_by("id"):
        last[(event.subject_id, event.purpose_id)] = (
            event.action == "grant",
            event.notice_id,
            event.id,
        )
    return last


decisions = st.lists(
    st.lists(
        st.tuples(
            st.integers(0, 3), st.sampled_from(PURPOSES), st.sampled_from(["grant", "withdraw"])
        ),
        min_size=1,
        max_size=6,
        unique_by=lambda d: (d[0], d[1]),  # one decision per subject and purpose in a batch
    ),
    min_size=1,
    max_size=8,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=decisions)
def test_derived_state_equals_a_replay_of_the_ledger(batches):
    run = uuid.uuid4().hex[:8]
    subjects = [f"{run}-{i}" for i in range(4)]
    pseudonyms = [subject_pseudonym(s) for s in subjects]
    for batch in batches:
        services.consent_record(
            events=[
                ConsentEventInput(
                    subject_id=subjects[i],
                    purpose=purpose,
                    action=action,
                    notice_version="1" if action == "grant" else None,
                )
                for i, purpose, action in batch
            ]
        )
    stored = {
        (s.subject_id, s.purpose_id): (s.granted, s.notice_id, s.last_event_id)
        for s in CurrentConsent.objects.filter(subject_id__in=pseudonyms)
    }
    assert stored == _replay(pseudonyms)
    for subject, pseudonym in zip(subjects, pseudonyms, strict=True):
        state = consent_state(subject_id=subject)
        for purpose in PURPOSES:
            expected = stored.get((pseudonym, purpose))
            assert state.granted(purpose) == bool(expected and expected[0])
    assert services.consent_state_rebuild(apply=False).differences == 0


def test_rebuild_reports_and_corrects_drift(capsys):
    a, b, c = raw_id(), raw_id(), raw_id()
    grant(a)
    grant(b)
    withdraw(b)
    grant(c, "marketing")
    CurrentConsent.objects.filter(subject_id=subject_pseudonym(a)).delete()  # missing
    CurrentConsent.objects.filter(subject_id=subject_pseudonym(b)).update(
        granted=True
    )  # mismatched
    CurrentConsent.objects.create(  # extra: no ledger event supports it
        subject_id=subject_pseudonym(c),
        purpose_id="behavioral_tracking",
        granted=False,
        last_event_id=0,
        changed_at=timezone.now(),
    )

    with pytest.raises(Exception, match="3 differences"):
        call_command("consent_rebuild_state", "--check")
    out = capsys.readouterr().out
    assert "1 missing, 1 extra, 1 mismatched" in out
    assert subject_pseudonym(a) not in out  # only a short prefix is printed
    assert CurrentConsent.objects.filter(
        subject_id=subject_pseudonym(b), granted=True
    ).exists()  # --check changed nothing

    call_command("consent_rebuild_state")
    assert "corrected" in capsys.readouterr().out
    assert services.consent_state_rebuild(apply=False).differences == 0
    assert personalization_allowed(subject_id=a) is True
    assert personalization_allowed(subject_id=b) is False
    call_command("consent_rebuild_state", "--check")
    assert "matches the ledger" in capsys.readouterr().out


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_decisions_for_one_subject_keep_state_and_ledger_in_step():
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    subject = raw_id()
    grant(subject)

    def decide(i):
        try:
            action = grant if i % 2 else withdraw
            for purpose in ("personalization", "marketing"):
                action(subject, purpose)
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(decide, range(24)))
    pseudonym = subject_pseudonym(subject)
    stored = {
        (s.subject_id, s.purpose_id): (s.granted, s.notice_id, s.last_event_id)
        for s in CurrentConsent.objects.filter(subject_id=pseudonym)
    }
    assert stored == _replay([pseudonym])
    assert ConsentEvent.objects.filter(subject_id=pseudonym).count() == 1 + 24 * 2


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
