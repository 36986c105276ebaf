"""Hostile input is a clear 400, never a 500: deep JSON, over-long attributes (on PostgreSQL)."""

import pytest

from consent.models import Subject
from consent.pseudonyms import subject_pseudonym
from tests.experiments.factories import running_experiment

pytestmark = pytest.mark.django_db

DEEP = 5000  # far past Python's recursion limit


def _deep(levels: int, leaf: str = "1") -> str:
    return "[" * levels + leaf + "]" * levels


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/consents", '{"events": ' + _deep(DEEP) + "}"),
        ("/api/v1/consents", '{"subject_id": "u-1", "source": ' + _deep(DEEP) + "}"),
        ("/api/v1/events", '{"events": [{"type": ' + _deep(DEEP) + "}]}"),
        ("/api/v1/events", _deep(DEEP)),
        ("/api/v1/assignments", '{"subject_id": "u-1", "attributes": {"a": ' + _deep(DEEP) + "}}"),
        ("/api/v1/subjects/u-1/requests", '{"type": ' + _deep(DEEP) + "}"),
        ("/api/v1/events", '{"events": [{"type": ' + _deep(30) + "}]}"),  # deep, but not enough to recurse
    ],
)
def test_deeply_nested_json_is_a_400(api, path, body):
    response = api.generic("POST", path, body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert "nested more than" in response.json()["detail"]


def test_ordinary_nesting_is_read_as_before(api):
    running_experiment()
    response = api.post(
        "/api/v1/assignments", {"subject_id": "u-1", "attributes": {"platform": "ios"}}, format="json"
    )
    assert response.status_code == 200


@pytest.mark.postgres
@pytest.mark.parametrize(("attribute", "limit"), [("age_band", 16), ("platform", 16), ("province", 64)])
@pytest.mark.parametrize("extra", [1, 50])
def test_an_attribute_longer_than_its_column_is_a_400_naming_it_on_postgresql(api, attribute, limit, extra):
    running_experiment()
    value = "x" * (limit + extra)
    response = api.post("/api/v1/assignments", {"subject_id": "u-long", "attributes": {attribute: value}}, format="json")
    assert response.status_code == 400, response.content[:300]
    assert response.json() == {"attributes": {attribute: [f"At most {limit} characters."]}}
    assert not Subject.objects.filter(pk=subject_pseudonym("u-long")).exists()  # nothing written


@pytest.mark.postgres
def test_an_attribute_at_its_column_length_is_stored_on_postgresql(api):
    running_experiment()
    attributes = {"age_band": "a" * 16, "platform": "p" * 16, "province": "v" * 64, "other": "o" * 128}
    response = api.post("/api/v1/assignments", {"subject_id": "u-edge", "attributes": attributes}, format="json")
    assert response.status_code == 200
    subject = Subject.objects.get(pk=subject_pseudonym("u-edge"))
    assert (subject.age_band, subject.platform, subject.province) == ("a" * 16, "p" * 16, "v" * 64)


def test_other_attributes_may_be_longer_but_not_without_bound(api):
    running_experiment()
    ok = api.post("/api/v1/assignments", {"subject_id": "u-2", "attributes": {"segment": "s" * 128}}, format="json")
    assert ok.status_code == 200
    too_long = api.post("/api/v1/assignments", {"subject_id": "u-2", "attributes": {"segment": "s" * 129}}, format="json")
    assert too_long.status_code == 400 and "segment" in too_long.json()["attributes"]
