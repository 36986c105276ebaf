"""The ledger service: each decision written with its source and notice, appended, never rewritten."""

import pytest

from consent.models import ConsentEvent, CurrentConsent
from consent.pseudonyms import subject_pseudonym
from tests.consent.factories import grant, raw_id, withdraw

pytestmark = pytest.mark.django_db


def test_an_event_is_written_with_its_source_and_notice():
    subject = raw_id()
    recorded = grant(
        subject,
        source={
            "experiment": "prompt-test",
            "arm": "modal",
            "prompt": "modal",
            "channel": "ios",
            "language": "en",
        },
    )
    row = ConsentEvent.objects.get(event_id=recorded.event_id)
    assert row.subject_id == subject_pseudonym(subject)
    assert (row.purpose_id, row.action, row.notice.version, row.language) == (
        "personalization",
        "grant",
        "1",
        "en",
    )
    assert (row.source_experiment, row.source_arm, row.source_prompt, row.source_channel) == (
        "prompt-test",
        "modal",
        "modal",
        "ios",
    )
    assert row.expires_at is not None and row.expires_at > row.recorded_at


def test_withdrawal_appends_and_keeps_the_grant():
    subject = raw_id()
    grant(subject)
    withdraw(subject)
    actions = list(
        ConsentEvent.objects.filter(subject_id=subject_pseudonym(subject)).values_list(
            "action", flat=True
        )
    )
    assert actions == ["grant", "withdraw"]
    state = CurrentConsent.objects.get(subject_id=subject_pseudonym(subject))
    assert state.granted is False
