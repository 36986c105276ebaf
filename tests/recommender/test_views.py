"""GET /api/v1/recommendations/<subject_id>: contract, bad input, auth, faults."""

import json
from unittest import mock

import pytest
from django.db import DatabaseError

from consent.pseudonyms import subject_pseudonym
from experiments.models import OutcomeEvent
from recommender import selectors
from recommender.models import ModelBuild
from tests.recommender.factories import (
    bought,
    build,
    catalog,
    experiment_with,
    subject,
    treatment,
    withdraw,
)

pytestmark = pytest.mark.django_db

URL = "/api/v1/recommendations/{}"


def test_personal_answer_follows_the_contract_and_records_impressions(api, world):
    _, raws = world
    response = api.get(URL.format(raws[0]), {"limit": 3})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"items", "strategy", "personalized"}
    assert body["strategy"] == "full" and body["personalized"] is True
    assert body["items"][0]["product"] == "F3"  # the hand-worked best unseen item for {F1, F2}
    assert all(set(item) == {"product", "category", "score", "reason"} for item in body["items"])
    assert len(body["items"]) == 3
    impressions = OutcomeEvent.objects.filter(type="rec_impression").order_by("position")
    assert [(e.product_id, e.position) for e in impressions] == [(i["product"], n) for n, i in enumerate(body["items"])]


def test_no_reasons_when_the_treatment_hides_explanations(api):
    catalog({"fashion": ["F1", "F2", "F3"]})
    arm = experiment_with(treatment("full", show_explanations=False))[0]
    raws = [subject(arm=arm) for _ in range(2)]
    bought(raws[0], "F1", "F2")
    bought(raws[1], "F2", "F3")
    build(arm)
    body = api.get(URL.format(raws[0])).json()
    assert body["personalized"] and body["items"] and all("reason" not in item for item in body["items"])


def test_unknown_subject_gets_non_personal_best_sellers(api, world):
    body = api.get(URL.format("somebody-new")).json()
    assert body["strategy"] == "popularity" and body["personalized"] is False
    assert [i["product"] for i in body["items"]][:2] == ["F1", "F2"]  # 3 buyers each; F1 first by sku
    assert not OutcomeEvent.objects.filter(type="rec_impression").exists()  # nobody to attribute them to


@pytest.mark.parametrize(
    "query, field",
    [
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"session": "F1,,F2"}, "session"),
        ({"session": ","}, "session"),
        ({"session": "F1, F2"}, "session"),
        ({"session": "x" * 65}, "session"),
        ({"session": ",".join(f"P{i}" for i in range(51))}, "session"),
        ({"session": "F1\x01"}, "session"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(api, world, query, field):
    response = api.get(URL.format(world[1][0]), query)
    assert response.status_code == 400
    assert field in response.json()


def test_bad_subject_id_is_a_400(api, world):
    response = api.get(URL.format("a%20b"))
    assert response.status_code == 400 and "subject_id" in response.json()


@pytest.mark.parametrize("header", [None, "Api-Key not-a-key", "Bearer whatever"])
def test_authentication_is_required(client, world, header):
    kwargs = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.get(URL.format(world[1][0]), **kwargs)
    assert response.status_code == 401


def test_a_valid_key_is_accepted(client, api_key, world):
    response = client.get(URL.format(world[1][0]), HTTP_AUTHORIZATION=f"Api-Key {api_key}")
    assert response.status_code == 200


# A Redis nobody listens on, configured as production configures it (errors become misses).
UNREACHABLE_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:1/0",
        "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.05, "SOCKET_TIMEOUT": 0.05, "IGNORE_EXCEPTIONS": True},
    }
}


def test_cache_down_serves_the_database_record(api, world, settings):
    _, raws = world
    expected = api.get(URL.format(raws[0])).json()
    settings.CACHES = UNREACHABLE_REDIS
    settings.DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = False
    body = api.get(URL.format(raws[0])).json()
    assert body == expected and body["personalized"] is True
    withdraw(raws[0])  # with the cache down, the withdrawal still counts on the next request
    assert api.get(URL.format(raws[0])).json()["personalized"] is False


def test_consent_unreadable_fails_closed_to_popularity(api, world):
    _, raws = world
    with mock.patch("recommender.selectors.consent_state", side_effect=RuntimeError("cache and database down")):
        response = api.get(URL.format(raws[0]))
    assert response.status_code == 200
    body = response.json()
    assert body["strategy"] == "popularity" and body["personalized"] is False and body["items"]


def test_database_and_cache_down_still_answers_without_a_500(api, world):
    _, raws = world
    api.get(URL.format("warm-the-platform-memo"))
    with (
        mock.patch.object(selectors, "subject_arm", side_effect=DatabaseError("down")),
        mock.patch.object(selectors, "current_build", side_effect=DatabaseError("down")),
    ):
        response = api.get(URL.format(raws[0]))
    assert response.status_code == 200
    body = response.json()
    assert body["personalized"] is False and body["strategy"] == "popularity" and body["items"]


def test_record_unreadable_after_the_consent_check_fails_closed(api, world):
    _, raws = world
    with mock.patch.object(selectors, "subject_list", side_effect=DatabaseError("down")):
        body = api.get(URL.format(raws[0])).json()
    assert body["personalized"] is False


def test_an_arm_never_built_serves_non_personal(api):
    catalog({"fashion": ["F1"]})
    arm = experiment_with(treatment("full"))[0]
    raw = subject(arm=arm)
    body = api.get(URL.format(raw)).json()
    assert body == {"items": [], "strategy": "popularity", "personalized": False}
    assert not ModelBuild.objects.exists()


def test_session_items_drive_the_session_arm(api):
    catalog({"fashion": ["F1", "F2", "F3"], "home": ["H1"]})
    arm = experiment_with(treatment("session"))[0]
    raws = [subject(arm=arm) for _ in range(3)]
    bought(raws[0], "F1", "F2")
    bought(raws[1], "F1", "F2")
    bought(raws[2], "F3", "H1")
    build(arm)
    body = api.get(URL.format(raws[2]), {"session": "F1,unknown-sku", "limit": 2}).json()
    assert body["strategy"] == "session" and body["personalized"] is True
    assert body["items"][0]["product"] == "F2" and body["items"][0]["reason"].startswith("Similar to Product F1")
    no_session = api.get(URL.format(raws[2])).json()
    assert no_session["personalized"] is False and no_session["strategy"] == "popularity"


def test_schema_documents_the_endpoint(client):
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/recommendations/{subject_id}"]["get"]
    assert {p["name"] for p in operation["parameters"]} >= {"subject_id", "limit", "session"}
    assert "200" in operation["responses"] and "400" in operation["responses"]




# --- the serving path's shape and round trips (issue 15: p99 ≤ 5 ms) ---------------------------------


@pytest.mark.parametrize("query", [{"limit": 3}, {"limit": 100}, {"limit": 5, "session": "F1"}])
def test_the_body_is_what_the_response_serializer_would_render(api, world, query):
    """The view answers with the served items as they are; the schema's serializer must agree with it."""
    from recommender.serializers import RecommendationResponseSerializer

    for raw in [*world[1], "somebody-new"]:
        body = api.get(URL.format(raw), query).json()
        assert body == json.loads(json.dumps(RecommendationResponseSerializer(body).data))


def test_a_personal_answer_reads_its_list_and_the_fallback_in_one_round_trip(api, world):
    from django.core.cache import cache

    from recommender.cache_keys import fallback_key, subject_key
    from recommender.selectors import current_build

    arm, raws = world
    api.get(URL.format(raws[0]))  # warm: the subject's arm and consent state are cached
    build_id = current_build(arm_id=arm.pk)
    keys = [subject_key(build_id, subject_pseudonym(raws[0])), fallback_key(build_id)]
    real_get, real_get_many = cache.get, cache.get_many
    round_trips: list[list[str]] = []  # the keys of each read
    nested: list[bool] = []  # a local-memory get_many calls get itself: not a round trip of its own

    def get(key, *args, **kwargs):
        if not nested:
            round_trips.append([key])
        return real_get(key, *args, **kwargs)

    def get_many(many, *args, **kwargs):
        round_trips.append(list(many))
        nested.append(True)
        try:
            return real_get_many(many, *args, **kwargs)
        finally:
            nested.pop()

    with mock.patch.object(cache, "get", get), mock.patch.object(cache, "get_many", get_many):
        body = api.get(URL.format(raws[0]), {"limit": 6}).json()
    assert body["personalized"] is True
    assert "Best seller" in [item["reason"] for item in body["items"]]  # a short list, filled from the fallback
    assert keys in round_trips
    assert not [trip for trip in round_trips if trip != keys and set(trip) & set(keys)]  # neither read again


def test_a_warm_cache_still_refuses_personal_lists_once_consent_is_withdrawn(api, world):
    from django.core.cache import cache

    from recommender.cache_keys import subject_key
    from recommender.selectors import current_build

    arm, raws = world
    assert api.get(URL.format(raws[0])).json()["personalized"] is True
    withdraw(raws[0])
    build_id = current_build(arm_id=arm.pk)
    assert cache.get(subject_key(build_id, subject_pseudonym(raws[0]))) is not None  # the list is still cached
    body = api.get(URL.format(raws[0])).json()
    assert body["personalized"] is False and body["strategy"] == "popularity"
    assert all("reason" not in item or item["reason"] == "Best seller" for item in body["items"])
