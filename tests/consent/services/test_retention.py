"""The daily retention purge: batched, idempotent, and the current proof of consent stays."""

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from config.schedule import BEAT_SCHEDULE
from consent import services, tasks
from consent.models import ConsentEvent, ConsentTally, CurrentConsent, DataSubjectRequest, Subject
from consent.pseudonyms import subject_pseudonym
from consent.selectors import consent_state
from experiments.models import OrderLine, OutcomeEvent
from experiments.services import events_record
from tests.consent.factories import SubjectFactory, grant, raw_id, withdraw

pytestmark = pytest.mark.django_db
DAY = timedelta(days=1)


@pytest.fixture
def t0():
    return timezone.now() - 400 * DAY


def at(moment):
    return time_machine.travel(moment, tick=False)


def events_for(pseudonym, purpose=None):
    rows = ConsentEvent.objects.filter(subject_id=pseudonym)
    if purpose:
        rows = rows.filter(purpose_id=purpose)
    return list(rows.order_by("id").values_list("action", flat=True))


def test_the_ledger_keeps_the_current_proof_and_forgets_what_ended_long_ago(t0):
    regranted, withdrawn, fresh, sensitive = raw_id(), raw_id(), raw_id(), raw_id()
    with at(t0):
        grant(regranted)
        grant(withdrawn)
        grant(sensitive, "sensitive_profiling")  # valid 180 days, kept 90 days after
    with at(t0 + 10 * DAY):
        withdraw(regranted)
        withdraw(withdrawn)
    with at(t0 + 20 * DAY):
        grant(regranted)
    grant(fresh)
    tallies = list(ConsentTally.objects.order_by("pk").values_list("count", flat=True))

    counts = services.consent_retention_purge()

    # Superseded decisions older than the retention period go; the grant in force stays.
    assert events_for(subject_pseudonym(regranted)) == ["grant"]
    assert (
        consent_state(subject_id=regranted).get("personalization").changed_at.date()
        == (t0 + 20 * DAY).date()
    )
    # A consent withdrawn longer ago than the retention period is forgotten entirely.
    assert events_for(subject_pseudonym(withdrawn)) == []
    assert not CurrentConsent.objects.filter(subject_id=subject_pseudonym(withdrawn)).exists()
    assert consent_state(subject_id=withdrawn).get("personalization").status == "not_set"
    # So is a grant that expired longer ago than its purpose's retention.
    assert events_for(subject_pseudonym(sensitive)) == []
    assert events_for(subject_pseudonym(fresh)) == ["grant"]
    assert counts["consent.superseded_events"] == 2
    assert counts["consent.ended_consents"] == 3 + 2  # two states and their three events
    # The state table still equals a replay of what is left; aggregates stay.
    assert services.consent_state_rebuild(apply=False).differences == 0
    assert list(ConsentTally.objects.order_by("pk").values_list("count", flat=True)) == tallies


def test_registered_sources_are_purged_by_their_purposes_retention_in_batches():
    subject = raw_id()
    grant(subject, "behavioral_tracking")
    now = timezone.now()

    def outcome(event_id, days_ago, kind="rec_click"):
        body = {
            "event_id": event_id,
            "subject_id": subject,
            "type": kind,
            "timestamp": now - days_ago * DAY,
        }
        if kind == "order":
            body.update(
                amount="100000.00",
                lines=[{"product_id": "p1", "category": "health", "quantity": 1, "price": 100000}],
            )
        else:
            body.update(product_id="p1", category="fashion", position=0)
        return body

    events_record(
        events=[outcome(f"old-{i}", 181 + i) for i in range(5)]
        + [
            outcome("old-order", 200, "order"),
            outcome("recent", 10),
            outcome("recent-order", 5, "order"),
        ]
    )
    assert OutcomeEvent.objects.count() == 8

    counts = services.consent_retention_purge(batch_size=2)

    assert set(OutcomeEvent.objects.values_list("event_id", flat=True)) == {
        "recent",
        "recent-order",
    }
    assert OrderLine.objects.count() == 1
    assert counts["experiments.outcomeevent"] >= 6
    assert services.consent_retention_purge()["experiments.outcomeevent"] == 0


def test_the_purge_is_idempotent(t0):
    subject = raw_id()
    with at(t0):
        grant(subject)
    with at(t0 + DAY):
        withdraw(subject)
    first = services.consent_retention_purge()
    assert any(first.values())
    second = services.consent_retention_purge()
    assert not any(second.values()), second


def test_answers_to_access_requests_are_cleared_after_30_days(django_capture_on_commit_callbacks):
    subject = raw_id()
    grant(subject)
    with django_capture_on_commit_callbacks(execute=True):
        request, _ = services.dsr_file(type="access", subject_id=subject)
    request.refresh_from_db()
    assert request.export is not None
    services.consent_retention_purge(now=timezone.now() + 29 * DAY)
    request.refresh_from_db()
    assert request.export is not None
    services.consent_retention_purge(now=timezone.now() + 31 * DAY)
    request.refresh_from_db()
    assert request.export is None and request.export_cleared_at is not None
    assert request.status == "completed"
    services.consent_retention_purge(now=timezone.now() + 3 * 366 * DAY)
    assert not DataSubjectRequest.objects.filter(pk=request.pk).exists()


def test_subjects_nobody_holds_anything_about_are_deleted():
    long_ago = timezone.now() - 740 * DAY  # longer than the longest retention (730)
    with at(long_ago):
        orphan = SubjectFactory()
        restricted = SubjectFactory(restricted_at=timezone.now())
        consenting = SubjectFactory(raw="consenting-1")
        grant("consenting-1", "marketing")
    recent = SubjectFactory()
    counts = services.consent_retention_purge()
    remaining = set(Subject.objects.values_list("pk", flat=True))
    assert orphan.pk not in remaining
    assert {
        restricted.pk,
        recent.pk,
    } <= remaining  # a restriction must outlive the data it restricts
    assert consenting.pk in remaining  # its (expired) grant is still within marketing's retention
    assert counts["consent.subjects"] == 1


def test_the_task_runs_the_purge_and_is_scheduled_daily():
    with at(timezone.now() - 400 * DAY):
        subject = raw_id()
        grant(subject)
        withdraw(subject)
    result = tasks.consent_retention_purge.delay().get()
    assert result["consent.ended_consents"] == 3
    entry = BEAT_SCHEDULE["consent-retention-purge"]
    assert entry["task"] == "consent.tasks.consent_retention_purge"
    assert entry["schedule"] == timedelta(days=1)
    assert 0 < entry["options"]["expires"] <= 24 * 3600
