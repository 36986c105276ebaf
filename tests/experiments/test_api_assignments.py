"""POST /api/v1/assignments: contract, exposures, configuration cache, errors and auth."""

import json
import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient
from rest_framework_api_key.models import APIKey

from consent.pseudonyms import subject_pseudonym
from experiments import services
from experiments.models import Exposure, Layer
from tests.experiments.factories import running_experiment

pytestmark = pytest.mark.django_db
URL = "/api/v1/assignments"
CONFIG_TABLES = (
    "experiments_experiment", "experiments_arm", "experiments_privacytreatment", "experiments_holdout",
    "experiments_surface",
)


def post(api, payload, **kwargs):
    return api.post(URL, payload, format="json", **kwargs)


def test_subject_gets_every_running_experiment_with_its_treatment(api):
    first = running_experiment(arms=3)
    second = running_experiment(layer=Layer.objects.create(key="prompts", name="Prompts"))
    response = post(api, {"subject_id": "u-1", "attributes": {"age_band": "25-34", "platform": "android"}})
    assert response.status_code == 200, response.content
    assignments = {a["experiment"]: a for a in response.json()["assignments"]}
    assert set(assignments) == {first.key, second.key}
    arm = first.arms.get(key=assignments[first.key]["arm"])
    assert assignments[first.key]["treatment"]["name"] == arm.treatment.name
    assert assignments[first.key]["treatment"]["personalization_level"] == arm.treatment.personalization_level
    exposure = Exposure.objects.get(experiment=first)
    assert exposure.subject_id == subject_pseudonym("u-1")
    assert exposure.arm == arm
    assert exposure.subject.platform == "android"


def test_returning_subject_keeps_its_arm_and_one_exposure(api):
    experiment = running_experiment()
    arms = {post(api, {"subject_id": "returning"}).json()["assignments"][0]["arm"] for _ in range(5)}
    assert len(arms) == 1
    assert Exposure.objects.filter(experiment=experiment).count() == 1


def test_no_running_experiment_means_no_assignment(api):
    assert post(api, {"subject_id": "u-2"}).json() == {"assignments": [], "treatments": {}}
    assert not Exposure.objects.exists()


def test_targeting_filters_experiments(api):
    running_experiment(targeting={"platform": ["ios"]})
    assert post(api, {"subject_id": "u-3", "attributes": {"platform": "android"}}).json()["assignments"] == []
    assert len(post(api, {"subject_id": "u-3", "attributes": {"platform": "ios"}}).json()["assignments"]) == 1


def test_held_out_subjects_get_nothing(api):
    services.holdout_set_share(share=0.5)
    running_experiment()
    results = [post(api, {"subject_id": f"h-{i}"}).json()["assignments"] for i in range(200)]
    held_out = sum(1 for r in results if not r)
    assert 60 < held_out < 140
    assert Exposure.objects.count() == 200 - held_out


def test_sticky_arm_across_a_new_phase(api, django_capture_on_commit_callbacks):
    experiment = running_experiment()
    before = {f"s-{i}": post(api, {"subject_id": f"s-{i}"}).json()["assignments"][0]["arm"] for i in range(30)}
    with django_capture_on_commit_callbacks(execute=True):
        services.experiment_pause(experiment=experiment)
        services.experiment_new_phase(experiment=experiment, weights={"control": 1, "arm-1": 9})
        services.experiment_resume(experiment=experiment)
    after = {s: post(api, {"subject_id": s}).json()["assignments"][0]["arm"] for s in before}
    assert after == before
    new_arms = [post(api, {"subject_id": f"new-{i}"}).json()["assignments"][0]["arm"] for i in range(100)]
    assert new_arms.count("arm-1") > 70  # the new phase's 90% weight


def test_steady_state_does_no_configuration_query(api):
    running_experiment()
    post(api, {"subject_id": "warm"})  # loads the configuration
    with CaptureQueriesContext(connection) as queries:
        assert post(api, {"subject_id": "warm"}).status_code == 200
    touched = [q["sql"] for q in queries if any(table in q["sql"] for table in CONFIG_TABLES)]
    assert touched == []


def test_configuration_cache_is_invalidated_by_a_change(api, django_capture_on_commit_callbacks):
    experiment = running_experiment()
    assert len(post(api, {"subject_id": "x"}).json()["assignments"]) == 1
    with django_capture_on_commit_callbacks(execute=True):
        services.experiment_pause(experiment=experiment)
    assert post(api, {"subject_id": "x"}).json()["assignments"] == []


def test_logs_carry_no_raw_subject_id(api, caplog):
    running_experiment()
    caplog.set_level(logging.DEBUG)
    secret_id = "raw-subject-id-4242"
    post(api, {"subject_id": secret_id, "attributes": {"platform": "web"}})
    post(api, {"subject_id": secret_id, "unknown": 1})
    APIClient().get(f"/api/v1/subjects/{secret_id}/consents")
    assert caplog.records, "the calls should have logged something"
    assert all(secret_id not in record.getMessage() for record in caplog.records)


# --- bad input -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "subject_id"),
        ({"subject_id": ""}, "subject_id"),
        ({"subject_id": "   "}, "subject_id"),
        ({"subject_id": None}, "subject_id"),
        ({"subject_id": "x" * 300}, "subject_id"),
        ({"subject_id": "a/b"}, "subject_id"),
        ({"subject_id": "tab\there"}, "subject_id"),
        ({"subject_id": 42}, "subject_id"),
        ({"subject_id": "u", "attributes": ["a"]}, "attributes"),
        ({"subject_id": "u", "attributes": "age=1"}, "attributes"),
        ({"subject_id": "u", "attributes": {"nested": {"a": 1}}}, "attributes"),
        ({"subject_id": "u", "attributes": {f"k{i}": "v" for i in range(40)}}, "attributes"),
        ({"subject_id": "u", "colour": "blue"}, "colour"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(api, payload, field):
    running_experiment()
    response = post(api, payload)
    assert response.status_code == 400
    assert field in response.json()
    assert not Exposure.objects.exists()


def test_a_body_that_is_not_an_object_is_a_400(api):
    response = api.post(URL, data=json.dumps(["subject_id"]), content_type="application/json")
    assert response.status_code == 400


def test_malformed_json_is_a_400(api):
    response = api.post(URL, data="{not json", content_type="application/json")
    assert response.status_code == 400
    assert "JSON" in response.json()["detail"]


def test_wrong_content_type_is_a_415(api):
    response = api.post(URL, data="subject_id=u", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415


def test_oversize_payload_is_refused(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    response = api.post(URL, data=json.dumps({"subject_id": "u" * 5000}), content_type="application/json")
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_get_is_not_allowed(api):
    assert api.get(URL).status_code == 405


# --- auth --------------------------------------------------------------------------------


def test_no_key_is_a_401():
    response = APIClient().post(URL, {"subject_id": "u"}, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"


def test_unknown_key_is_a_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Api-Key not.a-real-key")
    assert client.post(URL, {"subject_id": "u"}, format="json").status_code == 401


def test_revoked_key_is_a_401(db):
    api_key, key = APIKey.objects.create_key(name="revoked")
    api_key.revoked = True
    api_key.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    response = client.post(URL, {"subject_id": "u"}, format="json")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]
    assert not Exposure.objects.exists()


def test_a_key_revoked_while_in_use_stops_working_within_the_ttl(db):
    import time_machine

    from config.authentication import VERIFIED_KEY_TTL

    api_key, key = APIKey.objects.create_key(name="soon-revoked")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    with time_machine.travel(1_900_000_000, tick=False) as clock:
        assert client.post(URL, {"subject_id": "u"}, format="json").status_code == 200
        api_key.revoked = True
        api_key.save()
        clock.shift(VERIFIED_KEY_TTL + 0.1)
        assert client.post(URL, {"subject_id": "u"}, format="json").status_code == 401
