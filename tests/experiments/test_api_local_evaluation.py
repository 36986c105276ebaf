"""GET /api/v1/config and POST /api/v1/exposures: the document, its ETag and cache, exposures' rules and scope."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from consent.models import Subject
from consent.pseudonyms import subject_pseudonym
from experiments import services
from experiments.assignment import assign
from experiments.models import Experiment, Exposure, Layer
from privacylab_client import config_parse, local_assignments
from tests.conftest import api_key_create
from tests.experiments.factories import running_experiment

pytestmark = pytest.mark.django_db
CONFIG = "/api/v1/config"
EXPOSURES = "/api/v1/exposures"


def _arm_of(experiment, subject_id: str) -> str:
    from experiments.selectors import experiment_spec

    return assign(experiment_spec(experiment=experiment), subject_id)


def exposure(experiment, subject_id: str, **overrides) -> dict:
    return {
        "subject_id": subject_id,
        "experiment": experiment.key,
        "arm": _arm_of(experiment, subject_id),
        "timestamp": timezone.now().isoformat(),
        **overrides,
    }


def post(api, exposures):
    return api.post(EXPOSURES, {"exposures": exposures}, format="json")


# --- the configuration -------------------------------------------------------------


def test_config_has_what_local_assignment_needs(api):
    services.holdout_set_share(share=0.1)
    experiment = running_experiment(arms=3, targeting={"platform": ["android"]})
    response = api.get(CONFIG)
    assert response.status_code == 200
    document = response.json()
    assert document["format"] == 1 and response["ETag"] == f'"{document["version"]}"'
    assert document["holdout"]["share"] == 0.1
    (published,) = document["experiments"]
    assert published["key"] == experiment.key and published["salt"] == experiment.salt
    assert published["targeting"] == {"platform": ["android"]}
    assert [arm["key"] for arm in published["arms"]] == list(experiment.arms.order_by("id").values_list("key", flat=True))
    assert published["thresholds"][-1] == 1.0
    assert set(published["arms"][0]["treatment"]) >= {"name", "personalization_level"}


def test_config_etag_gives_304_and_moves_when_the_configuration_changes(api, django_capture_on_commit_callbacks):
    experiment = running_experiment()
    first = api.get(CONFIG)
    etag = first["ETag"]
    not_modified = api.get(CONFIG, HTTP_IF_NONE_MATCH=etag)
    assert not_modified.status_code == 304 and not_modified.content == b"" and not_modified["ETag"] == etag
    assert api.get(CONFIG, HTTP_IF_NONE_MATCH=f'"other", W/{etag}').status_code == 304
    assert api.get(CONFIG, HTTP_IF_NONE_MATCH='"other"').status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        services.experiment_pause(experiment=experiment)
    changed = api.get(CONFIG, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200 and changed["ETag"] != etag and changed.json()["experiments"] == []


def test_config_is_answered_from_cache(api):
    running_experiment(arms=3)
    api.get(CONFIG)
    with CaptureQueriesContext(connection) as queries:
        response = api.get(CONFIG)
    assert response.status_code == 200
    tables = " ".join(query["sql"] for query in queries.captured_queries)
    for table in ("experiments_experiment", "experiments_arm", "experiments_holdout", "experiments_layer"):
        assert table not in tables


def test_config_same_version_in_every_process(api):
    running_experiment()
    etag = api.get(CONFIG)["ETag"]
    from experiments import selectors

    selectors.running_experiment_configs_forget()  # another process: nothing memoised
    assert api.get(CONFIG)["ETag"] == etag


def test_config_and_assignment_agree(api):
    running_experiment(arms=3)
    running_experiment(layer=Layer.objects.create(key="prompts", name="Prompts"), layer_end=0.5)
    local = config_parse(api.get(CONFIG).json())
    for i in range(100):
        subject = f"agree-{i}"
        served = api.post("/api/v1/assignments", {"subject_id": subject}, format="json").json()["assignments"]
        assert local_assignments(local, subject, {}) == served


@pytest.mark.parametrize("path,method", [(CONFIG, "get"), (EXPOSURES, "post")])
def test_a_key_without_assign_is_refused(path, method):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key_create(scopes=['events', 'recommend'])}")
    response = getattr(client, method)(path, {"exposures": []} if method == "post" else None, format="json")
    assert response.status_code == 403 and "assign" in response.json()["detail"]
    assert APIClient().get(CONFIG).status_code == 401


# --- exposures ---------------------------------------------------------------------


def test_exposures_are_recorded_once_with_the_earliest_time(api):
    experiment = running_experiment(arms=3)
    Experiment.objects.filter(pk=experiment.pk).update(started_at=timezone.now() - timedelta(hours=1))
    now = timezone.now()
    batch = [exposure(experiment, f"e-{i}", timestamp=now.isoformat(), attributes={"platform": "ios"}) for i in range(20)]
    response = post(api, batch)
    assert response.status_code == 201, response.content
    assert response.json() == {"received": 20, "recorded": 20, "duplicates": 0, "withheld": 0}
    assert Subject.objects.get(pk=subject_pseudonym("e-3")).platform == "ios"
    earlier = (now - timedelta(seconds=30)).isoformat()
    replay = post(api, [dict(batch[0], timestamp=earlier), batch[1]]).json()
    assert replay == {"received": 2, "recorded": 0, "duplicates": 2, "withheld": 0}
    assert Exposure.objects.filter(experiment=experiment).count() == 20
    stored = Exposure.objects.get(subject_id=subject_pseudonym("e-0"))
    assert abs((stored.first_exposed_at - (now - timedelta(seconds=30))).total_seconds()) < 1e-3
    assert stored.arm.key == batch[0]["arm"]
    later = post(api, [dict(batch[0], timestamp=now.isoformat())]).json()
    assert later["duplicates"] == 1
    assert Exposure.objects.get(subject_id=subject_pseudonym("e-0")).first_exposed_at == stored.first_exposed_at


def test_the_same_exposure_twice_in_a_batch_is_one(api):
    experiment = running_experiment()
    Experiment.objects.filter(pk=experiment.pk).update(started_at=timezone.now() - timedelta(hours=1))
    now = timezone.now()
    one = exposure(experiment, "twice", timestamp=now.isoformat())
    response = post(api, [one, dict(one, timestamp=(now - timedelta(seconds=5)).isoformat())])
    assert response.json() == {"received": 2, "recorded": 1, "duplicates": 0, "withheld": 0}


def test_server_assignment_and_client_exposure_are_one_exposure(api):
    experiment = running_experiment()
    api.post("/api/v1/assignments", {"subject_id": "both"}, format="json")
    assert post(api, [exposure(experiment, "both")]).json()["duplicates"] == 1
    assert Exposure.objects.filter(experiment=experiment).count() == 1


@pytest.mark.parametrize(
    "change,field",
    [
        ({"experiment": "no-such-experiment"}, "experiment"),
        ({"arm": "no-such-arm"}, "arm"),
        ({"subject_id": "has space"}, "subject_id"),
        ({"timestamp": "yesterday"}, "timestamp"),
        ({"timestamp": "2000-01-02T00:00:00Z"}, "timestamp"),  # before the experiment started
        ({"attributes": {"platform": 7}}, "attributes.platform"),
        ({"attributes": "android"}, "attributes"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_exposures_write_nothing_and_name_the_field(api, change, field):
    experiment = running_experiment()
    good = exposure(experiment, "good")
    response = post(api, [good, exposure(experiment, "bad") | change])
    assert response.status_code == 400, response.content
    assert list(response.json()) == [f"exposures[1].{field}"]
    assert not Exposure.objects.exists() and not Subject.objects.exists()


def test_another_arm_than_the_algorithm_assigns_is_refused(api):
    experiment = running_experiment(arms=3)
    right = _arm_of(experiment, "picky")
    wrong = next(key for key in experiment.arms.values_list("key", flat=True) if key != right)
    response = post(api, [exposure(experiment, "picky", arm=wrong)])
    assert response.status_code == 400
    assert repr(right) in response.json()["exposures[0].arm"][0]


def test_targeting_and_holdout_apply_as_in_the_servers_assignment(api):
    services.holdout_set_share(share=0.5)
    experiment = running_experiment(targeting={"platform": ["ios"]})
    from experiments.assignment import in_holdout
    from experiments.selectors import experiment_spec

    spec = experiment_spec(experiment=experiment)
    inside = next(f"t-{i}" for i in range(100) if not in_holdout(spec.holdout, f"t-{i}"))
    held = next(f"t-{i}" for i in range(100) if in_holdout(spec.holdout, f"t-{i}"))
    bad_target = post(api, [exposure(experiment, inside, attributes={"platform": "android"})])
    assert list(bad_target.json()) == ["exposures[0].attributes"]
    held_out = post(api, [exposure(experiment, inside, attributes={"platform": "ios"}),
                          exposure(experiment, held, arm="control", attributes={"platform": "ios"})])
    assert list(held_out.json()) == ["exposures[1].arm"]
    assert post(api, [exposure(experiment, inside, attributes={"platform": "ios"})]).status_code == 201


def test_restricted_subjects_are_withheld(api):
    experiment = running_experiment()
    api.post("/api/v1/assignments", {"subject_id": "other"}, format="json")
    Subject.objects.create(pseudonym=subject_pseudonym("quiet"), restricted_at=timezone.now())
    response = post(api, [exposure(experiment, "quiet"), exposure(experiment, "fresh")])
    assert response.json() == {"received": 2, "recorded": 1, "duplicates": 0, "withheld": 1}
    assert not Exposure.objects.filter(subject_id=subject_pseudonym("quiet")).exists()


@pytest.mark.parametrize("body,field", [([], "non_field_errors"), ({}, "exposures"), ({"exposures": []}, "exposures"),
                                        ({"exposures": [{}] * 1001}, "exposures"), ({"exposures": [], "x": 1}, "x")])
def test_bad_envelopes(api, body, field):
    response = api.post(EXPOSURES, body, format="json")
    assert response.status_code == 400 and field in response.json()
