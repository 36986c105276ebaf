"""The client's local assignment equals the server's: every published configuration vector, random subjects, exposures."""

import json
import random
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import TestCase
from django.utils import timezone

from consent.pseudonyms import subject_id_problem
from experiments import services
from experiments.models import Arm, Experiment, Exposure, Holdout, Layer
from privacylab_client import FALLBACK_TREATMENT, Client, config_parse, local_assignments
from privacylab_client.surfaces import NON_PERSONAL_LEVELS
from tests.conftest import api_key_create
from tests.experiments.factories import TreatmentFactory, UserFactory, running_experiment

VECTORS = json.loads((Path(__file__).parents[2] / "docs" / "assignment-vectors.json").read_text(encoding="utf-8"))


def _configuration_create(document: dict) -> None:
    """The rows whose running configuration is this published document."""
    owner = UserFactory()
    Holdout.objects.update_or_create(
        id=1, defaults={"salt": (document["holdout"] or {}).get("salt", "none"),
                        "share": (document["holdout"] or {}).get("share", 0.0)},
    )
    for raw in document["experiments"]:
        layer, _ = Layer.objects.get_or_create(salt=raw["layer_salt"], defaults={"key": raw["layer_salt"], "name": raw["layer_salt"]})
        experiment = Experiment.objects.create(
            key=raw["key"], name=raw["key"], owner=owner, salt=raw["salt"], phase=raw["phase"], coverage=raw["coverage"],
            layer=layer, layer_start=raw["layer_range"][0], layer_end=raw["layer_range"][1], targeting=raw["targeting"],
            status=Experiment.Status.RUNNING, started_at=timezone.now() - timedelta(days=1),
        )
        for index, arm in enumerate(raw["arms"]):
            Arm.objects.create(experiment=experiment, key=arm["key"], weight=arm["weight"], treatment=TreatmentFactory(),
                               is_control=index == 0)
    with TestCase.captureOnCommitCallbacks(execute=True):
        services.experiment_config_changed()


@pytest.mark.django_db
@pytest.mark.parametrize("index", range(len(VECTORS["configuration_cases"])))
def test_the_server_passes_every_configuration_vector(api, index):
    case = VECTORS["configuration_cases"][index]
    _configuration_create(case["configuration"])
    published = api.get("/api/v1/config").json()
    for ours, theirs in zip(published["experiments"], case["configuration"]["experiments"], strict=True):
        assert ours["thresholds"] == theirs["thresholds"]
    local = config_parse(published)
    for subject in case["subjects"]:
        assert subject_id_problem(subject["subject_id"]) is None
        served = api.post("/api/v1/assignments", {"subject_id": subject["subject_id"], "attributes": subject["attributes"]},
                          format="json").json()["assignments"]
        assert [{"experiment": a["experiment"], "arm": a["arm"]} for a in served] == subject["assignments"], subject
        assert local_assignments(local, subject["subject_id"], subject["attributes"]) == served


@pytest.mark.django_db
@pytest.mark.parametrize("subject_id", VECTORS["invalid_subject_ids"])
def test_the_server_refuses_the_invalid_ids(api, subject_id):
    running_experiment()
    body = json.dumps({"subject_id": subject_id}, ensure_ascii=True)  # a lone surrogate travels escaped
    response = api.post("/api/v1/assignments", body, content_type="application/json")
    assert response.status_code == 400 and "subject_id" in response.json()


_ALPHABET = "abcxyz0189-_.:@+~ÄéßøЖ用户ไทย\u0301\U0001f600\U0001d4b3"


def _random_subjects(rng: random.Random, n: int) -> list[tuple[str, dict]]:
    subjects = []
    while len(subjects) < n:
        subject_id = "".join(rng.choice(_ALPHABET) for _ in range(rng.randint(1, 24)))
        if subject_id_problem(subject_id) is not None:
            continue
        attributes = {
            name: rng.choice(values)
            for name, values in (("platform", ["android", "ios", "web"]), ("age_band", ["18-24", "25-34", "35-44"]),
                                 ("province", ["DKI Jakarta", "Bali"]))
            if rng.random() < 0.8
        }
        subjects.append((subject_id, attributes))
    return subjects


def _surfaces_create() -> None:
    """Surfaces for the configuration's experiments: one experiment on a surface, a targeted rollout ramping on
    another, a third on its default: every source a treatment can have."""
    first, second = Experiment.objects.order_by("id")[:2]
    with TestCase.captureOnCommitCallbacks(execute=True):
        recommendations = services.surface_create(
            key="product-recommendations", name="Product recommendations",
            default_treatment=TreatmentFactory(personalization_level="popularity"))
        services.surface_create(key="checkout-consent-prompt", name="Checkout consent prompt",
                                default_treatment=TreatmentFactory(personalization_level="session"))
        services.surface_create(key="search-ranking", name="Search ranking")  # the built-in fallback
        Experiment.objects.filter(pk=first.pk).update(surface=recommendations)
        services.experiment_ship(experiment=second, arm_key=second.arms.order_by("id").last().key,
                                 reason="PM decision", surface_key="checkout-consent-prompt", steps=[25, 100],
                                 targeting={"age_band": ["18-24", "25-34"]})
        services.experiment_config_changed()


@pytest.mark.django_db
def test_local_equals_server_for_100_000_random_subjects():
    """The published document, parsed as a client does, against the server's own configuration for 100,000 subjects:
    the ``assignments`` and the per-surface ``treatments``.

    The server side is what its assignment computes from the database's configuration
    (``arms_matched`` over ``running_experiment_configs``, then ``subject_treatments``
    over ``surface_defaults``: the calls the endpoint makes) without the exposure
    writes, which the 2,000-subject endpoint test below covers.
    """
    _configuration_create(VECTORS["configuration_cases"][0]["configuration"])
    _surfaces_create()
    from experiments.selectors import (
        arms_matched,
        assignment_config_document,
        running_experiment_configs,
        surface_defaults,
    )
    from experiments.services.assignment import Assignment, subject_treatments
    from privacylab_client import local_treatments

    local = config_parse(assignment_config_document().document)
    configs = running_experiment_configs()
    surfaces = surface_defaults()
    assert set(surfaces.defaults) == set(local.surfaces) and set(surfaces.rollouts) == set(local.rollouts) == {
        "checkout-consent-prompt"}
    mismatches, sources = [], {}
    for subject_id, attributes in _random_subjects(random.Random(20261202), 100_000):
        matched = arms_matched(configs=configs, subject_id=subject_id, attributes=attributes)
        served = [
            Assignment(experiment=config.key, arm=arm_key, treatment=config.arms_by_key[arm_key].contract)
            for config, arm_key in matched.values()
        ]
        treatments = subject_treatments(configs=configs, surfaces=surfaces, assignments=served, subject_id=subject_id,
                                        attributes=attributes)
        assignments = local_assignments(local, subject_id, attributes)
        if assignments != [{"experiment": a.experiment, "arm": a.arm, "treatment": a.treatment.to_dict()}
                           for a in served] or local_treatments(local, assignments, subject_id, attributes) != treatments:
            mismatches.append(subject_id)
        for surface, entry in treatments.items():
            sources[surface, entry["source"]] = sources.get((surface, entry["source"]), 0) + 1
    assert mismatches == []
    # Every source occurs: the comparison is not between empty answers.
    assert {("product-recommendations", "experiment"), ("product-recommendations", "default"),
            ("checkout-consent-prompt", "rollout"), ("checkout-consent-prompt", "default"),
            ("search-ranking", "default")} <= set(sources), sources


@pytest.mark.django_db
def test_local_equals_the_endpoint_for_2000_random_subjects(api):
    _configuration_create(VECTORS["configuration_cases"][0]["configuration"])
    local = config_parse(api.get("/api/v1/config").json())
    for subject_id, attributes in _random_subjects(random.Random(17), 2000):
        served = api.post("/api/v1/assignments", {"subject_id": subject_id, "attributes": attributes}, format="json")
        assert local_assignments(local, subject_id, attributes) == served.json()["assignments"], subject_id


# --- the client over real HTTP -------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_client_assigns_locally_and_sends_each_exposure_once(live_server):
    experiment = running_experiment(arms=3)
    Experiment.objects.filter(pk=experiment.pk).update(started_at=timezone.now() - timedelta(minutes=5))
    key = api_key_create(scopes=["assign"])
    client = Client(live_server.url, key, poll_interval=0.2, flush_interval=0.05, batch_size=50)
    assert client.config_status == "fresh"
    subjects = [f"c-{i}" for i in range(300)]
    answers = {}
    for _ in range(3):  # returning subjects queue nothing new
        for subject_id in subjects:
            answers[subject_id] = client.assign(subject_id, {"platform": "android"})
    client.close()
    assert client.exposures_sent == 300 and client.exposures_dropped == 0 and client.exposures_rejected == 0
    assert Exposure.objects.filter(experiment=experiment).count() == 300
    # Counted once: the same subjects from the server's own assignment add nothing.
    from rest_framework.test import APIClient

    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    for subject_id in subjects[:50]:
        assert api.post("/api/v1/assignments", {"subject_id": subject_id}, format="json").json() == answers[subject_id]
    assert Exposure.objects.filter(experiment=experiment).count() == 300


@pytest.mark.django_db(transaction=True)
def test_client_polls_with_the_etag_and_keeps_its_last_good_copy(live_server, django_capture_on_commit_callbacks):
    experiment = running_experiment()
    client = Client(live_server.url, api_key_create(scopes=["assign"]), start=False)
    assert client.assign("early") == {"assignments": [], "treatments": {}} and client.config_status == "missing"
    assert client.refresh() and client.config_status == "fresh"
    copy = client.config
    assert client.refresh() and client.config is copy  # 304: the copy is kept, not parsed again
    with django_capture_on_commit_callbacks(execute=True):
        services.experiment_pause(experiment=experiment)
    assert client.refresh() and client.config is not copy and client.config.experiments == ()
    held = client.config
    client.base_url = "http://127.0.0.1:9"  # nothing listens: the fetch fails
    client.timeout = 0.5
    assert client.refresh() and client.config is held and client.config_status == "stale"


def test_client_without_any_configuration_assigns_nothing_and_says_so(caplog):
    client = Client("http://127.0.0.1:9", "key", timeout=0.5, start=False, surfaces=("product-recommendations",))
    assert client.refresh() is False
    answer = client.assign("anyone", {})
    assert answer["assignments"] == []
    assert answer["treatments"] == {
        "product-recommendations": {"treatment": FALLBACK_TREATMENT, "source": "fallback", "experiment": None, "arm": None}
    }
    assert answer["treatments"]["product-recommendations"]["treatment"]["personalization_level"] in NON_PERSONAL_LEVELS
    assert client.config_status == "missing" and "no assignments" in caplog.text


def _offline_client(**kwargs) -> Client:
    client = Client("http://127.0.0.1:9", "key", timeout=0.2, start=False, sleep=lambda seconds: None, **kwargs)
    client.config = config_parse(VECTORS["configuration_cases"][1]["configuration"])  # everyone is in "solo"
    return client


def test_the_exposure_buffer_is_bounded():
    client = _offline_client(max_buffer=3)
    for i in range(10):
        client.assign(f"b-{i}")
    assert client.exposures_pending == 3 and client.exposures_dropped == 7


def test_failed_sends_are_retried_then_kept():
    client = _offline_client(max_retries=2)
    client.assign("r-1")
    client.assign("r-1")  # deduplicated in the client
    client.flush()
    assert client.exposures_pending == 1 and client.exposures_sent == 0


@pytest.mark.django_db(transaction=True)
def test_a_refused_exposure_is_dropped_and_the_rest_sent(live_server):
    experiment = running_experiment()
    Experiment.objects.filter(pk=experiment.pk).update(started_at=timezone.now() - timedelta(minutes=5))
    client = Client(live_server.url, api_key_create(scopes=["assign"]), start=False, sleep=lambda seconds: None)
    client.refresh()
    client.assign("fine-1")
    client.assign("fine-2")
    client._queue[0]["arm"] = "no-such-arm"
    client.flush()
    assert client.exposures_rejected == 1 and client.exposures_sent == 1
    assert Exposure.objects.filter(experiment=experiment).count() == 1
