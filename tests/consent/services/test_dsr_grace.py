"""Erasure's grace period and cancellation, the record left after it, and the log of who asked."""

import logging
from datetime import timedelta

import pytest
from django.test import override_settings

from consent import services, tasks
from consent.models import ConsentEvent, DataSubjectRequest, ErasureRecord, Subject
from consent.pseudonyms import subject_pseudonym
from consent.selectors import personalization_allowed
from tests.conftest import api_key_create
from tests.consent.factories import grant, raw_id

pytestmark = pytest.mark.django_db


def _file(api, subject, kind="erasure"):
    return api.post(f"/api/v1/subjects/{subject}/requests", {"type": kind}, format="json")


def test_an_erasure_waits_its_grace_period_restricted_then_runs(api, django_capture_on_commit_callbacks):
    subject = raw_id()
    grant(subject)
    with django_capture_on_commit_callbacks(execute=True):
        response = _file(api, subject)
    assert response.status_code == 202
    body = response.json()
    request = DataSubjectRequest.objects.get(pk=body["request_id"])
    assert request.not_before - request.received_at == timedelta(hours=24)  # the default
    assert request.not_before < request.due_at  # within the 3 × 24 hour due time
    assert body["not_before"] and body["status"] == "received"
    # Nothing is erased yet, and the subject's data is not used meanwhile.
    assert ConsentEvent.objects.filter(subject_id=subject_pseudonym(subject)).exists()
    assert personalization_allowed(subject_id=subject) is False
    assert services.dsr_process(request_id=request.pk, now=request.not_before - timedelta(seconds=1))[
        "outcome"
    ] == "in_grace_period"
    # The hourly requeue does not pick it up before the grace is over, and does after.
    assert services.dsr_enqueue_open(now=request.not_before - timedelta(minutes=1)) == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert services.dsr_process(request_id=request.pk, now=request.not_before)["outcome"] == "completed"
    assert not Subject.objects.filter(pk=subject_pseudonym(subject)).exists()


def test_the_requeue_runs_an_erasure_once_its_grace_is_over(django_capture_on_commit_callbacks, monkeypatch):
    subject = raw_id()
    grant(subject)
    request, _ = services.dsr_file(type="erasure", subject_id=subject)
    enqueued = []
    monkeypatch.setattr("consent.services.dsr.dsr_enqueue", lambda *, request_id: enqueued.append(request_id))
    assert services.dsr_enqueue_open(now=request.not_before) == 1
    assert enqueued == [request.pk]


@override_settings(ERASURE_GRACE_HOURS=2)
def test_the_grace_period_is_configurable():
    request, _ = services.dsr_file(type="erasure", subject_id=raw_id())
    assert request.not_before - request.received_at == timedelta(hours=2)


@override_settings(ERASURE_GRACE_HOURS=0)
def test_without_a_grace_period_the_erasure_runs_at_once(django_capture_on_commit_callbacks):
    subject = raw_id()
    grant(subject)
    with django_capture_on_commit_callbacks(execute=True):
        services.dsr_file(type="erasure", subject_id=subject)
    assert not Subject.objects.filter(pk=subject_pseudonym(subject)).exists()


def test_an_erasure_is_cancelled_in_its_grace_period(api, django_capture_on_commit_callbacks):
    subject = raw_id()
    grant(subject)
    with django_capture_on_commit_callbacks(execute=True):
        request_id = _file(api, subject).json()["request_id"]
    assert personalization_allowed(subject_id=subject) is False
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(f"/api/v1/subjects/{subject}/requests/{request_id}/cancel")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "cancelled" and response.json()["cancelled_at"]
    # The restriction the erasure imposed is lifted; nothing is erased, now or later.
    assert personalization_allowed(subject_id=subject) is True
    request = DataSubjectRequest.objects.get(pk=request_id)
    assert services.dsr_process(request_id=request.pk, now=request.due_at)["outcome"] == "already_done"
    assert ConsentEvent.objects.filter(subject_id=subject_pseudonym(subject)).exists()
    # A second cancel, or cancelling another kind of request, is a conflict; another subject's, a 404.
    assert api.post(f"/api/v1/subjects/{subject}/requests/{request_id}/cancel").status_code == 409
    with django_capture_on_commit_callbacks(execute=True):
        access_id = _file(api, subject, "access").json()["request_id"]
    assert api.post(f"/api/v1/subjects/{subject}/requests/{access_id}/cancel").status_code == 409
    assert api.post(f"/api/v1/subjects/{raw_id()}/requests/{request_id}/cancel").status_code == 404


def test_cancelling_keeps_a_restriction_the_subject_asked_for(django_capture_on_commit_callbacks):
    subject = raw_id()
    grant(subject)
    with django_capture_on_commit_callbacks(execute=True):
        services.dsr_file(type="restriction", subject_id=subject)
        erasure, _ = services.dsr_file(type="erasure", subject_id=subject)
    services.dsr_cancel(request_id=erasure.pk, pseudonym=subject_pseudonym(subject))
    assert Subject.objects.get(pk=subject_pseudonym(subject)).restricted_at is not None


def test_an_erasure_that_ran_cannot_be_cancelled_and_its_record_stays_readable(
    api, django_capture_on_commit_callbacks
):
    subject = raw_id()
    grant(subject)
    with django_capture_on_commit_callbacks(execute=True):
        request_id = _file(api, subject).json()["request_id"]
    request = DataSubjectRequest.objects.get(pk=request_id)
    with django_capture_on_commit_callbacks(execute=True):
        tasks.dsr_process.apply(args=[request_id])  # in its grace: nothing happens
        services.dsr_process(request_id=request.pk, now=request.not_before)
    # The subject is gone; the request's record is kept without the pseudonym…
    record = DataSubjectRequest.objects.get(pk=request_id)
    assert record.subject_pseudonym == "" and record.status == "completed" and record.export is None
    # …and the caller confirms the erasure by the request's id.
    response = api.get(f"/api/v1/subjects/{subject}/requests/{request_id}")
    assert response.status_code == 200
    assert response.json()["status"] == "completed" and response.json()["type"] == "erasure"
    assert api.post(f"/api/v1/subjects/{subject}/requests/{request_id}/cancel").status_code == 404
    # Other requests of the subject are not kept; a made-up id is still a 404.
    assert api.get(f"/api/v1/subjects/{subject}/requests").json() == {"requests": []}
    assert api.get(f"/api/v1/subjects/{subject}/requests/6f1c1a4e-5d27-4d6f-9b8c-3f1f8c7b2a10").status_code == 404


def test_an_erasure_that_finds_nothing_raises_an_alert(caplog, django_capture_on_commit_callbacks):
    subject = raw_id()  # never seen: e.g. the data was stored under another pseudonym key
    request, _ = services.dsr_file(type="erasure", subject_id=subject)
    with caplog.at_level(logging.ERROR, logger="consent.services"), django_capture_on_commit_callbacks(execute=True):
        services.dsr_process(request_id=request.pk, now=request.not_before)
    record = ErasureRecord.objects.get()
    assert record.found_nothing
    alerts = [r for r in caplog.records if r.levelno == logging.ERROR and "ALERT" in r.getMessage()]
    assert len(alerts) == 1 and "PRIVACYLAB_PSEUDONYM_KEY" in alerts[0].getMessage()
    assert subject not in alerts[0].getMessage() and subject_pseudonym(subject) not in alerts[0].getMessage()


def test_an_erasure_that_finds_data_raises_no_alert(caplog, django_capture_on_commit_callbacks):
    subject = raw_id()
    grant(subject)
    request, _ = services.dsr_file(type="erasure", subject_id=subject)
    with caplog.at_level(logging.ERROR, logger="consent.services"), django_capture_on_commit_callbacks(execute=True):
        services.dsr_process(request_id=request.pk, now=request.not_before)
    assert not ErasureRecord.objects.get().found_nothing
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_every_call_that_files_reads_or_cancels_a_request_is_logged_with_the_key_prefix(
    client, caplog, django_capture_on_commit_callbacks
):
    key = api_key_create(scopes={"dsr"})
    prefix = key.partition(".")[0]
    headers = {"HTTP_AUTHORIZATION": f"Api-Key {key}"}
    subject = raw_id()
    with caplog.at_level(logging.INFO):
        with django_capture_on_commit_callbacks(execute=True):
            filed = client.post(
                f"/api/v1/subjects/{subject}/requests", {"type": "erasure"}, content_type="application/json", **headers
            ).json()
        client.get(f"/api/v1/subjects/{subject}/requests", **headers)
        client.get(f"/api/v1/subjects/{subject}/requests/{filed['request_id']}", **headers)
        with django_capture_on_commit_callbacks(execute=True):
            client.post(f"/api/v1/subjects/{subject}/requests/{filed['request_id']}/cancel", **headers)
    lines = [record.getMessage() for record in caplog.records]
    mentions = [line for line in lines if f"api-key:{prefix}" in line]
    assert any("received" in line for line in mentions)
    assert any("listed" in line for line in mentions)
    assert any("read by" in line for line in mentions)
    assert any("cancelled by" in line for line in mentions)
    assert all(filed["request_id"] in line for line in mentions if "listed" not in line)
    for line in lines:
        assert subject not in line and subject_pseudonym(subject) not in line
    assert DataSubjectRequest.objects.get(pk=filed["request_id"]).filed_by == f"api-key:{prefix}"
