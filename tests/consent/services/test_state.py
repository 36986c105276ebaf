"""The derived state: always a replay of the ledger, and ``consent_rebuild_state`` corrects drift."""

import uuid

import pytest
from django.core.management import call_command
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent import services
from consent.models import ConsentEvent, CurrentConsent
from consent.pseudonyms import subject_pseudonym
from consent.selectors import (
    consent_state,
    personalization_allowed,
)
from consent.services import ConsentEventInput
from tests.consent.factories import grant, raw_id, withdraw

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
