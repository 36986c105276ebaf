"""The consent operation's schema states the purposes and notice versions the database holds now."""

from datetime import timedelta

import pytest
from django.utils import timezone

from consent.models import Purpose
from tests.consent.factories import NoticeFactory
from tests.openapi_schema import component_alternatives, schema_components

pytestmark = pytest.mark.django_db
CONSENTS = "/api/v1/consents"


def _alternatives(client) -> dict[tuple[str, str], dict]:
    """(action, purpose) → the alternative of ConsentEventIn that accepts it."""
    found = {}
    for alternative in component_alternatives(schema_components(client), "ConsentEventIn"):
        (action,) = alternative["properties"]["action"]["enum"]
        for purpose in alternative["properties"]["purpose"]["enum"]:
            assert (action, purpose) not in found, "alternatives must not overlap (oneOf)"
            found[action, purpose] = alternative
    return found


def _versions(alternative: dict) -> list[str] | None:
    return alternative["properties"].get("notice_version", {}).get("enum")


def test_every_purpose_is_an_alternative_with_its_notice_versions(client):
    found = _alternatives(client)
    assert {purpose for _, purpose in found} == set(Purpose.objects.values_list("key", flat=True))
    grant = found["grant", Purpose.PERSONALIZATION]
    assert _versions(grant) == ["1"] and "notice_version" in grant["required"]
    withdraw = found["withdraw", Purpose.PERSONALIZATION]
    assert _versions(withdraw) == ["1"] and "notice_version" not in withdraw["required"]
    assert withdraw["additionalProperties"] is False


def test_the_schema_follows_the_notices_an_administrator_adds(client, api):
    # A new version requiring re-consent supersedes "1" for grants; a withdrawal may still cite either.
    NoticeFactory(version="2", requires_reconsent=True)
    # A version not yet in effect cannot be granted under, but can be withdrawn from.
    NoticeFactory(version="3", effective_at=timezone.now() + timedelta(days=7))
    found = _alternatives(client)
    assert _versions(found["grant", Purpose.PERSONALIZATION]) == ["2"]
    assert _versions(found["withdraw", Purpose.PERSONALIZATION]) == ["1", "2", "3"]
    assert _versions(found["grant", Purpose.MARKETING]) == ["1"]
    # And the server agrees with it, both ways.
    body = {"subject_id": "u-schema", "purpose": Purpose.PERSONALIZATION, "action": "grant"}
    assert api.post(CONSENTS, {**body, "notice_version": "2"}, format="json").status_code == 201
    for refused in ("1", "3"):
        assert api.post(CONSENTS, {**body, "notice_version": refused}, format="json").status_code == 400


def test_a_purpose_without_a_notice_in_effect_offers_no_grant(client):
    Purpose.objects.create(key="surveys", name="Surveys", retention_days=30)
    found = _alternatives(client)
    assert ("grant", "surveys") not in found
    assert "notice_version" not in found["withdraw", "surveys"]["properties"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        # Numbers are not text: DRF's fields would have turned them into "0", UUID 0 or "1".
        ({"event_id": False}, "event_id"),
        ({"event_id": 0}, "event_id"),
        ({"notice_version": 1}, "notice_version"),
        ({"source": {"arm": 0}}, "source"),
    ],
)
def test_values_of_the_wrong_type_are_refused_as_the_schema_says(api, overrides, field):
    body = {"subject_id": "u-types", "purpose": Purpose.PERSONALIZATION, "action": "grant", "notice_version": "1"}
    response = api.post(CONSENTS, {**body, **overrides}, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()
