"""The consent API: contracts, proof of consent, data subject requests, errors and auth."""

import logging
import uuid

import pytest
from rest_framework.test import APIClient
from rest_framework_api_key.models import APIKey

from consent.models import ConsentEvent, ConsentTally, CurrentConsent, DataSubjectRequest, Subject
from consent.pseudonyms import subject_pseudonym
from consent.selectors import personalization_allowed
from tests.consent.factories import grant, raw_id

pytestmark = pytest.mark.django_db
CONSENTS = "/api/v1/consents"
LEDGER_TABLES = (ConsentEvent, CurrentConsent, Subject, ConsentTally, DataSubjectRequest)


def event(subject_id="u-1", **overrides):
    body = {
        "subject_id": subject_id,
        "purpose": "personalization",
        "action": "grant",
        "notice_version": "1",
        "source": {
            "experiment": "prompt-test",
            "arm": "modal",
            "prompt": "modal",
            "channel": "android",
        },
    }
    body.update(overrides)
    return body


def counts():
    return {model.__name__: model.objects.count() for model in LEDGER_TABLES}


# --- POST /consents -----------------------------------------------------------------------------


def test_a_single_grant_is_recorded(api):
    response = api.post(CONSENTS, event("u-1"), format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == {
        "event_id",
        "purpose",
        "action",
        "notice_version",
        "recorded_at",
        "expires_at",
        "replayed",
    }
    assert (body["purpose"], body["action"], body["notice_version"], body["replayed"]) == (
        "personalization",
        "grant",
        "1",
        False,
    )
    row = ConsentEvent.objects.get(event_id=body["event_id"])
    assert row.subject_id == subject_pseudonym("u-1")
    assert (row.source_experiment, row.source_arm, row.source_prompt, row.source_channel) == (
        "prompt-test",
        "modal",
        "modal",
        "android",
    )
    assert personalization_allowed(subject_id="u-1")


def test_a_batch_is_recorded_in_order(api):
    events = [
        event(f"b-{i}", purpose=purpose)
        for i in range(3)
        for purpose in ("personalization", "marketing")
    ]
    events.append(
        event("b-0", purpose="behavioral_tracking", action="withdraw", notice_version=None)
    )
    events[-1].pop("notice_version")
    response = api.post(CONSENTS, {"events": events}, format="json")
    assert response.status_code == 201, response.content
    recorded = response.json()["events"]
    assert [(r["purpose"], r["action"]) for r in recorded] == [
        (e["purpose"], e["action"]) for e in events
    ]
    assert ConsentEvent.objects.count() == 7
    assert ConsentTally.objects.get(purpose="personalization", action="grant").count == 3


def test_a_withdrawal_is_visible_on_the_next_request(api):
    api.post(CONSENTS, event("w-1"), format="json")
    assert personalization_allowed(subject_id="w-1")
    response = api.post(CONSENTS, event("w-1", action="withdraw"), format="json")
    assert response.status_code == 201
    assert personalization_allowed(subject_id="w-1") is False
    state = api.get("/api/v1/subjects/w-1/consents").json()
    assert {p["purpose"]: p["status"] for p in state["purposes"]}["personalization"] == "withdrawn"


def test_a_retried_event_is_not_recorded_twice(api):
    body = event("r-1", event_id=str(uuid.uuid4()))
    first = api.post(CONSENTS, body, format="json").json()
    again = api.post(CONSENTS, body, format="json")
    assert again.status_code == 201
    assert again.json()["replayed"] is True and again.json()["event_id"] == first["event_id"]
    assert ConsentEvent.objects.count() == 1
    conflicting = api.post(CONSENTS, {**body, "action": "withdraw"}, format="json")
    assert conflicting.status_code == 400
    assert "event_id" in conflicting.json()
    assert ConsentEvent.objects.count() == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (event(purpose="telepathy"), "purpose"),
        (event(notice_version="99"), "notice_version"),
        (event(action="maybe"), "action"),
        (event(notice_version=None), "notice_version"),
        (event(subject_id=""), "subject_id"),
        (event(subject_id="has space"), "subject_id"),
        (event(subject_id="a/b"), "subject_id"),
        (event(subject_id="x" * 257), "subject_id"),
        (event(subject_id=42), "subject_id"),
        (event(subject_id=None), "subject_id"),
        (event(source={"prompt": "popup"}), "source"),
        (event(source={"colour": "red"}), "source"),
        (event(source="banner"), "source"),
        (event(event_id="not-a-uuid"), "event_id"),
        ({**event(), "email": "a@example.com"}, "email"),
        ({"subject_id": "u-1"}, "purpose"),
    ],
)
def test_bad_single_events_get_a_400_naming_the_field_and_write_nothing(api, body, field):
    if body.get("notice_version", "") is None:
        body = {k: v for k, v in body.items() if k != "notice_version"}
    before = counts()
    response = api.post(CONSENTS, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert counts() == before


@pytest.mark.parametrize(
    ("events", "index", "field"),
    [
        (
            [event("d-1"), event("d-1", action="withdraw")],
            1,
            "purpose",
        ),  # two decisions, one subject+purpose
        (
            [
                event("d-1", event_id="6f1c1a4e-5d27-4d6f-9b8c-3f1f8c7b2a10"),
                event("d-2", event_id="6f1c1a4e-5d27-4d6f-9b8c-3f1f8c7b2a10"),
            ],
            1,
            "event_id",
        ),
        ([event("d-1"), event("d-2", purpose="telepathy")], 1, "purpose"),
        ([event("d-1"), event("d-2", notice_version="7")], 1, "notice_version"),
        ([event("d-1"), event("d 2")], 1, "subject_id"),
        ([event("d-1"), event("d-2", action="revoke")], 1, "action"),
    ],
)
def test_a_bad_batch_writes_nothing_and_names_the_event_and_field(api, events, index, field):
    before = counts()
    response = api.post(CONSENTS, {"events": events}, format="json")
    assert response.status_code == 400, response.content
    errors = response.json()["events"]
    assert set(errors) == {str(index)}, errors  # only the failing event, by its index
    assert field in errors[str(index)], errors
    assert counts() == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"events": []}, "events"),
        ({"events": "x"}, "events"),
        ({"events": [event(f"m-{i}") for i in range(1001)]}, "events"),
        ({"events": [event()], "extra": 1}, "extra"),
        ([event()], "non_field_errors"),
        ("grant", "non_field_errors"),
    ],
)
def test_malformed_bodies_are_400(api, body, field):
    response = api.post(CONSENTS, body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert ConsentEvent.objects.count() == 0


def test_non_json_is_refused(api):
    response = api.post(CONSENTS, "subject_id=u", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    response = api.post(CONSENTS, "{not json", content_type="application/json")
    assert response.status_code == 400


def test_grant_under_a_notice_not_yet_in_effect_is_refused(api):
    from datetime import timedelta

    from django.utils import timezone

    from tests.consent.factories import NoticeFactory

    NoticeFactory(version="2", effective_at=timezone.now() + timedelta(days=3))
    response = api.post(CONSENTS, event(notice_version="2"), format="json")
    assert response.status_code == 400
    assert "not in effect" in response.json()["notice_version"][0]


# --- GET /subjects/<id>/consents ------------------------------------------------------------------


def test_proof_of_consent_shows_state_and_history(api):
    api.post(
        CONSENTS,
        event("p-1", source={"prompt": "banner", "channel": "web", "language": "en"}),
        format="json",
    )
    api.post(CONSENTS, event("p-1", purpose="marketing"), format="json")
    api.post(CONSENTS, event("p-1", purpose="marketing", action="withdraw"), format="json")
    response = api.get("/api/v1/subjects/p-1/consents")
    assert response.status_code == 200
    body = response.json()
    assert (body["restricted"], body["objected"]) == (False, False)
    purposes = {p["purpose"]: p for p in body["purposes"]}
    assert set(purposes) == {
        "personalization",
        "sensitive_profiling",
        "behavioral_tracking",
        "marketing",
    }
    assert purposes["personalization"]["granted"] and purposes["personalization"]["allowed"]
    assert purposes["marketing"]["status"] == "withdrawn"
    assert purposes["sensitive_profiling"]["status"] == "not_set"
    history = body["history"]
    assert [(h["purpose"], h["action"]) for h in history] == [
        ("personalization", "grant"),
        ("marketing", "grant"),
        ("marketing", "withdraw"),
    ]
    assert history[0]["notice_version"] == "1" and history[0]["language"] == "en"
    assert history[0]["source"] == {"prompt": "banner", "channel": "web"}
    assert history[1]["source"] == {
        "prompt": "modal",
        "channel": "android",
        "experiment": "prompt-test",
        "arm": "modal",
    }


def test_an_unknown_subject_has_no_consent_and_is_not_created(api):
    response = api.get("/api/v1/subjects/nobody/consents")
    assert response.status_code == 200
    assert response.json()["history"] == []
    assert not any(p["granted"] for p in response.json()["purposes"])
    assert not Subject.objects.exists()


def test_malformed_subject_in_path_is_400(api):
    response = api.get("/api/v1/subjects/" + "x" * 300 + "/consents")
    assert response.status_code == 400
    assert "subject_id" in response.json()
    response = api.get("/api/v1/subjects/has%20space/consents")
    assert response.status_code == 400


# --- data subject requests ------------------------------------------------------------------------


def test_filing_an_access_request(api, django_capture_on_commit_callbacks):
    grant("a-1")
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/subjects/a-1/requests", {"type": "access"}, format="json")
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["type"] == "access"
    from datetime import datetime

    received, due = (datetime.fromisoformat(body[k]) for k in ("received_at", "due_at"))
    assert (due - received).total_seconds() == 72 * 3600
    detail = api.get(f"/api/v1/subjects/a-1/requests/{body['request_id']}").json()
    assert detail["status"] == "completed"
    assert detail["export"]["consent"]["history"][0]["purpose"] == "personalization"
    listing = api.get("/api/v1/subjects/a-1/requests").json()["requests"]
    assert [r["request_id"] for r in listing] == [body["request_id"]]
    # Another subject cannot read it.
    assert api.get(f"/api/v1/subjects/a-2/requests/{body['request_id']}").status_code == 404


def test_an_open_request_is_not_filed_twice(api):
    first = api.post("/api/v1/subjects/o-1/requests", {"type": "erasure"}, format="json")
    second = api.post("/api/v1/subjects/o-1/requests", {"type": "erasure"}, format="json")
    assert (first.status_code, second.status_code) == (202, 200)
    assert first.json()["request_id"] == second.json()["request_id"]
    assert DataSubjectRequest.objects.count() == 1


def test_restriction_and_objection_stop_personalization_at_once(api):
    for subject, kind in (("rs-1", "restriction"), ("ob-1", "objection")):
        grant(subject)
        assert personalization_allowed(subject_id=subject)
        response = api.post(f"/api/v1/subjects/{subject}/requests", {"type": kind}, format="json")
        assert response.status_code == 202
        assert personalization_allowed(subject_id=subject) is False
        flags = api.get(f"/api/v1/subjects/{subject}/consents").json()
        assert flags["restricted" if kind == "restriction" else "objected"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "delete-everything"}, "type"),
        ({}, "type"),
        ({"type": "access", "why": "x"}, "why"),
    ],
)
def test_bad_requests_are_400(api, body, field):
    response = api.post("/api/v1/subjects/q-1/requests", body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert not DataSubjectRequest.objects.exists()


def test_unknown_request_id_is_404(api):
    assert api.get(f"/api/v1/subjects/q-1/requests/{uuid.uuid4()}").status_code == 404


# --- auth: every endpoint × no key / revoked key / valid key ----------------------------------------

ENDPOINTS = [
    ("post", CONSENTS, event("auth-1")),
    ("get", "/api/v1/subjects/auth-1/consents", None),
    ("post", "/api/v1/subjects/auth-1/requests", {"type": "access"}),
    ("get", "/api/v1/subjects/auth-1/requests", None),
    ("get", "/api/v1/subjects/auth-1/requests/6f1c1a4e-5d27-4d6f-9b8c-3f1f8c7b2a10", None),
]


def call(client, method, url, body):
    return (
        getattr(client, method)(url, body, format="json")
        if body is not None
        else getattr(client, method)(url)
    )


@pytest.mark.parametrize(("method", "url", "body"), ENDPOINTS)
def test_no_key_is_401(method, url, body):
    response = call(APIClient(), method, url, body)
    assert response.status_code == 401
    assert not ConsentEvent.objects.exists() and not DataSubjectRequest.objects.exists()


@pytest.mark.parametrize(("method", "url", "body"), ENDPOINTS)
def test_revoked_or_unknown_key_is_refused(method, url, body):
    api_key, key = APIKey.objects.create_key(name="revoked")
    api_key.revoked = True
    api_key.save()
    for credentials in (f"Api-Key {key}", "Api-Key not.a-key"):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=credentials)
        assert call(client, method, url, body).status_code in (401, 403)
    assert not ConsentEvent.objects.exists() and not DataSubjectRequest.objects.exists()


@pytest.mark.parametrize(("method", "url", "body"), ENDPOINTS)
def test_valid_key_is_served(api, method, url, body):
    response = call(api, method, url, body)
    assert response.status_code in (200, 201, 202) or (
        response.status_code == 404 and "requests/" in url
    )


def test_logs_carry_no_raw_subject_ids(api, caplog, django_capture_on_commit_callbacks):
    secret = "user-4711-" + raw_id()
    with caplog.at_level(logging.DEBUG), django_capture_on_commit_callbacks(execute=True):
        api.post(CONSENTS, event(secret), format="json")
        api.post(CONSENTS, event(secret, purpose="telepathy"), format="json")
        api.get(f"/api/v1/subjects/{secret}/consents")
        api.post(f"/api/v1/subjects/{secret}/requests", {"type": "access"}, format="json")
        api.post(f"/api/v1/subjects/{secret}/requests", {"type": "erasure"}, format="json")
    text = "\n".join(record.getMessage() for record in caplog.records)
    assert secret not in text
    assert subject_pseudonym(secret) not in text
