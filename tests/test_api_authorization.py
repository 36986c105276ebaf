"""Scoped API keys: the command, the admin, and every endpoint × no key, revoked key and each scope.

The matrix is checked against the published OpenAPI schema: an operation the
schema lists that the matrix does not know fails the test, so a new
endpoint cannot ship without its scope being decided and tested.
"""

import io
import uuid

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from rest_framework_api_key.models import APIKey

from config.authentication import verified_keys_clear
from config.permissions import DEFAULT_SCOPES, SCOPES
from consent import services as consent_services
from experiments.models import ApiKeyScopes
from tests.conftest import api_key_create
from tests.experiments.factories import running_experiment
from tests.openapi_schema import schema_served

pytestmark = pytest.mark.django_db
SUBJECT = "matrix-subject"
REQUEST_ID = "6f1c1a4e-5d27-4d6f-9b8c-3f1f8c7b2a10"

# operation id → (method, path, body, the scope it needs)
MATRIX = {
    "assignments_create": ("post", "/api/v1/assignments", {"subject_id": SUBJECT}, "assign"),
    "config_retrieve": ("get", "/api/v1/config", None, "assign"),
    # (refused with a 400 past the scope check: the arm is not the subject's; the scope is the point)
    "exposures_create": (
        "post", "/api/v1/exposures",
        {"exposures": [{"subject_id": SUBJECT, "experiment": "x", "arm": "y", "timestamp": "2026-11-30T10:00:00Z"}]},
        "assign",
    ),
    "recommendations_retrieve": ("get", f"/api/v1/recommendations/{SUBJECT}", None, "recommend"),
    "events_create": (
        "post", "/api/v1/events",
        {"events": [{"event_id": "m-1", "subject_id": SUBJECT, "type": "rec_click",
                     "timestamp": "2026-11-30T10:00:00+07:00", "product_id": "p1"}]},
        "events",
    ),
    "consents_create": (
        "post", "/api/v1/consents", {"subject_id": SUBJECT, "purpose": "marketing", "action": "withdraw"}, "consent"
    ),
    "subject_consents_retrieve": ("get", f"/api/v1/subjects/{SUBJECT}/consents", None, "consent:read"),
    "subject_requests_create": ("post", f"/api/v1/subjects/{SUBJECT}/requests", {"type": "access"}, "dsr"),
    "subject_requests_list": ("get", f"/api/v1/subjects/{SUBJECT}/requests", None, "dsr"),
    "subject_requests_retrieve": ("get", f"/api/v1/subjects/{SUBJECT}/requests/{REQUEST_ID}", None, "dsr"),
    "subject_requests_cancel": ("post", f"/api/v1/subjects/{SUBJECT}/requests/{REQUEST_ID}/cancel", None, "dsr"),
}


def _call(client, operation, key=None):
    method, path, body, _ = MATRIX[operation]
    headers = {"HTTP_AUTHORIZATION": f"Api-Key {key}"} if key else {}
    if method == "get":
        return client.get(path, **headers)
    return client.post(path, body or {}, content_type="application/json", **headers)


@pytest.fixture
def world():
    running_experiment()
    consent_services.dsr_file(type="erasure", subject_id=SUBJECT)  # a request the reads can find


def test_the_matrix_covers_every_operation_of_the_schema(client):
    schema = schema_served(client)
    operations = {op["operationId"] for path in schema["paths"].values() for op in path.values()}
    assert operations == set(MATRIX)


@pytest.mark.parametrize("operation", sorted(MATRIX))
def test_no_key_unknown_key_and_revoked_key_are_401(client, world, operation):
    assert _call(client, operation).status_code == 401
    assert _call(client, operation, key="AbCdEfGh.not-a-real-secret").status_code == 401
    key = api_key_create()
    APIKey.objects.filter(prefix=key.partition(".")[0]).update(revoked=True)
    response = _call(client, operation, key=key)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"


@pytest.mark.parametrize("operation", sorted(MATRIX))
@pytest.mark.parametrize("scope", SCOPES)
def test_each_scope_opens_exactly_its_operations(client, world, operation, scope):
    needed = MATRIX[operation][3]
    response = _call(client, operation, key=api_key_create(scopes={scope}))
    if scope == needed:
        assert response.status_code not in (401, 403), (operation, scope, response.content[:300])
    else:
        assert response.status_code == 403, (operation, scope)
        assert response.json()["detail"] == f"This API key lacks the {needed!r} scope."


@pytest.mark.parametrize("operation", sorted(MATRIX))
def test_a_key_without_a_scopes_row_has_the_default_scopes(client, world, operation):
    """Keys created before scopes existed: serving only, never consent:read or dsr."""
    _, key = APIKey.objects.create_key(name="legacy")
    allowed = MATRIX[operation][3] in DEFAULT_SCOPES
    assert (_call(client, operation, key=key).status_code != 403) is allowed


def test_a_view_that_names_no_scope_is_refused():
    from rest_framework.test import APIRequestFactory, force_authenticate
    from rest_framework.views import APIView

    from config.authentication import ApiClient

    class Unscoped(APIView):
        def get(self, request):
            raise AssertionError("must not run")

    request = APIRequestFactory().get("/x")
    force_authenticate(request, user=ApiClient(name="k", prefix="p", scopes=frozenset(SCOPES)))
    assert Unscoped.as_view()(request).status_code == 403


def test_scope_changes_take_effect(client, world):
    key = api_key_create(scopes={"assign"})
    assert _call(client, "subject_requests_list", key=key).status_code == 403
    row = ApiKeyScopes.objects.get(api_key__prefix=key.partition(".")[0])
    row.dsr = True
    row.save()
    verified_keys_clear()  # each process forgets a verified key within VERIFIED_KEY_TTL seconds
    assert _call(client, "subject_requests_list", key=key).status_code == 200


# --- create_api_key ------------------------------------------------------------------


def _create(*args):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_key", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def test_create_api_key_prints_a_key_with_the_scopes_asked_for(client, world):
    key, note = _create("checkout-service", "--scopes", "assign,recommend")
    assert "scopes: assign,recommend" in note
    scopes = ApiKeyScopes.objects.get(api_key__prefix=key.partition(".")[0])
    assert scopes.scope_names == {"assign", "recommend"}
    assert _call(client, "assignments_create", key=key).status_code == 200
    assert _call(client, "events_create", key=key).status_code == 403


def test_create_api_key_without_scopes_gets_serving_never_dsr_or_consent_read():
    key, note = _create("default-service")
    scopes = ApiKeyScopes.objects.get(api_key__prefix=key.partition(".")[0]).scope_names
    assert scopes == DEFAULT_SCOPES == {"assign", "recommend", "events", "consent"}
    assert "scopes: assign,recommend,events,consent" in note


@pytest.mark.parametrize("scopes", ["assign,telepathy", ",", "dsr;assign"])
def test_create_api_key_refuses_unknown_scopes(scopes):
    with pytest.raises(CommandError, match="scope"):
        _create("bad", "--scopes", scopes)
    assert not APIKey.objects.exists()


# --- the admin ---------------------------------------------------------------------


def test_scopes_are_visible_and_editable_in_the_admin(client):
    key = api_key_create(scopes={"assign", "recommend"})
    api_key = APIKey.objects.get(prefix=key.partition(".")[0])
    client.force_login(get_user_model().objects.create_superuser("admin", password=uuid.uuid4().hex))
    listing = client.get("/admin/rest_framework_api_key/apikey/").content.decode()
    assert "assign, recommend" in listing
    page = client.get(f"/admin/rest_framework_api_key/apikey/{api_key.pk}/change/")
    assert page.status_code == 200 and 'name="scopes-0-dsr"' in page.content.decode()
    form = {
        "name": api_key.name, "expiry_date_0": "", "expiry_date_1": "",
        "scopes-TOTAL_FORMS": "1", "scopes-INITIAL_FORMS": "1", "scopes-MIN_NUM_FORMS": "1", "scopes-MAX_NUM_FORMS": "1",
        "scopes-0-api_key": api_key.pk, "scopes-0-assign": "on", "scopes-0-dsr": "on",
    }
    response = client.post(f"/admin/rest_framework_api_key/apikey/{api_key.pk}/change/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert ApiKeyScopes.objects.get(api_key=api_key).scope_names == {"assign", "dsr"}
