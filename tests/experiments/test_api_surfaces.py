"""Surfaces and their defaults: the ``treatments`` of POST /api/v1/assignments, the published configuration, the admin."""

import random

import pytest
from django.core.exceptions import ValidationError
from django.test import TestCase

from consent import services as consent_services
from experiments import services
from experiments.models import PrivacyTreatment
from privacylab_client import FALLBACK_TREATMENT, config_parse, local_assignments, local_treatments
from privacylab_client.surfaces import NON_PERSONAL_LEVELS, SOURCES
from tests.consent.factories import grant, raw_id
from tests.experiments.factories import ExperimentFactory, TreatmentFactory, running_experiment
from tests.openapi_schema import schema_components

pytestmark = pytest.mark.django_db
URL = "/api/v1/assignments"
SURFACE = "product-recommendations"


def surface(key=SURFACE, default=None):
    with TestCase.captureOnCommitCallbacks(execute=True):
        return services.surface_create(key=key, name=key, default_treatment=default)


def non_personal():
    return TreatmentFactory(
        personalization_level=PrivacyTreatment.PersonalizationLevel.POPULARITY,
        consent_prompt=PrivacyTreatment.ConsentPrompt.NONE,
    )


def treatments(api, subject_id, attributes=None):
    response = api.post(URL, {"subject_id": subject_id, "attributes": attributes or {}}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["treatments"]


def test_a_subject_outside_every_experiment_gets_each_surfaces_default(api):
    default = TreatmentFactory()
    surface(default=default)
    surface(key="checkout-consent-prompt")  # no default set: the built-in fallback is its default
    answer = treatments(api, "u-1")
    assert answer[SURFACE] == {"treatment": default.as_contract().to_dict(), "source": "default", "experiment": None, "arm": None}
    assert answer["checkout-consent-prompt"]["treatment"] == FALLBACK_TREATMENT
    assert answer["checkout-consent-prompt"]["source"] == "default"


def test_an_experiment_on_a_surface_overrides_its_default_for_its_subjects_only(api):
    default = non_personal()
    target = surface(default=default)
    experiment = running_experiment(surface=target, coverage=0.5)
    sources = {"experiment": 0, "default": 0}
    for i in range(200):
        subject_id = f"s-{i}"
        response = api.post(URL, {"subject_id": subject_id}, format="json").json()
        entry = response["treatments"][SURFACE]
        sources[entry["source"]] += 1
        if response["assignments"]:
            (assignment,) = response["assignments"]
            assert entry == {"treatment": assignment["treatment"], "source": "experiment",
                             "experiment": experiment.key, "arm": assignment["arm"]}
        else:
            assert entry == {"treatment": default.as_contract().to_dict(), "source": "default", "experiment": None, "arm": None}
    assert 60 < sources["experiment"] < 140  # coverage 0.5


def test_an_experiment_on_no_surface_changes_no_treatment(api):
    surface(default=non_personal())
    running_experiment()
    response = api.post(URL, {"subject_id": "u-2"}, format="json").json()
    assert len(response["assignments"]) == 1 and response["treatments"][SURFACE]["source"] == "default"


@pytest.mark.parametrize("request_type", ["restriction", "objection"])
def test_a_restricted_subject_gets_no_personal_treatment(api, request_type):
    personal = surface(default=TreatmentFactory(personalization_level=PrivacyTreatment.PersonalizationLevel.FULL))
    kept = non_personal()
    surface(key="checkout-consent-prompt", default=kept)
    running_experiment(surface=personal)
    subject = raw_id()
    grant(subject)
    consent_services.dsr_file(type=request_type, subject_id=subject)
    response = api.post(URL, {"subject_id": subject}, format="json").json()
    assert response["assignments"] == []
    assert response["treatments"][SURFACE] == {"treatment": FALLBACK_TREATMENT, "source": "fallback",
                                               "experiment": None, "arm": None}
    assert response["treatments"]["checkout-consent-prompt"]["treatment"] == kept.as_contract().to_dict()


def test_a_restricted_subject_outside_any_experiment_gets_no_personal_default(api):
    surface(default=TreatmentFactory(personalization_level=PrivacyTreatment.PersonalizationLevel.COHORT))
    subject = raw_id()
    grant(subject)
    consent_services.dsr_file(type="restriction", subject_id=subject)
    assert treatments(api, subject)[SURFACE]["source"] == "fallback"
    assert treatments(api, raw_id())[SURFACE]["source"] == "default"


def test_a_changed_default_is_served_after_commit(api, django_capture_on_commit_callbacks):
    target = surface(default=non_personal())
    assert treatments(api, "u-3")[SURFACE]["treatment"]["personalization_level"] == "popularity"
    replacement = TreatmentFactory(name="session only", personalization_level="session")
    target.default_treatment = replacement
    with django_capture_on_commit_callbacks(execute=True):
        services.surface_save(surface=target)
    assert treatments(api, "u-3")[SURFACE]["treatment"] == replacement.as_contract().to_dict()
    replacement.show_explanations = not replacement.show_explanations
    with django_capture_on_commit_callbacks(execute=True):
        services.treatment_save(treatment=replacement)  # the default treatment itself changed
    assert treatments(api, "u-3")[SURFACE]["treatment"]["show_explanations"] == replacement.show_explanations


def test_a_bad_surface_key_is_refused_and_nothing_written():
    with pytest.raises(ValidationError) as error:
        services.surface_create(key="not a slug!", name="x")
    assert "key" in error.value.message_dict
    from experiments.models import Surface

    assert not Surface.objects.exists()


def test_a_running_experiments_surface_is_frozen():
    experiment = running_experiment()
    experiment.surface = surface()
    with pytest.raises(ValidationError) as error:
        services.experiment_validate_change(experiment=experiment, changed=["surface"])
    assert "surface" in error.value.message_dict


def test_a_draft_may_choose_its_surface():
    experiment = ExperimentFactory()
    experiment.surface = surface()
    services.experiment_validate_change(experiment=experiment, changed=["surface"])  # no error


def test_the_configuration_publishes_surfaces_and_the_client_resolves_the_same_treatments(api):
    surface(default=non_personal())
    surface(key="checkout-consent-prompt", default=TreatmentFactory())
    first = running_experiment(surface=surface(key="search"), coverage=0.7)
    running_experiment(surface=first.surface, arms=3, layer=_layer("second"))  # same surface, another layer
    published = api.get("/api/v1/config").json()
    assert {s["key"] for s in published["surfaces"]} == {SURFACE, "checkout-consent-prompt", "search"}
    assert {e["surface"] for e in published["experiments"]} == {"search"}
    local = config_parse(published)
    rng = random.Random(17)
    for i in range(300):
        subject_id = f"r-{rng.random()}-{i}"
        served = api.post(URL, {"subject_id": subject_id}, format="json").json()
        assignments = local_assignments(local, subject_id, {})
        assert assignments == served["assignments"]
        assert local_treatments(local, assignments, subject_id, {}) == served["treatments"]


def _layer(key):
    from experiments.models import Layer

    return Layer.objects.create(key=key, name=key)


def test_the_schema_documents_the_treatments(client):
    schemas = schema_components(client)
    response = schemas["AssignmentResponse"]
    assert "treatments" in response["required"]
    entry_ref = response["properties"]["treatments"]["additionalProperties"]["$ref"].rsplit("/", 1)[1]
    entry = schemas[entry_ref]
    assert set(entry["required"]) == {"treatment", "source", "experiment", "arm"}
    assert entry["properties"]["source"]["allOf"] == [{"$ref": "#/components/schemas/TreatmentSourceEnum"}]
    assert tuple(schemas["TreatmentSourceEnum"]["enum"]) == SOURCES


def test_the_fallback_is_non_personal_as_consent_defines_it():
    from consent.compliance import NON_PERSONAL_LEVELS as CONSENT_NON_PERSONAL

    assert NON_PERSONAL_LEVELS == CONSENT_NON_PERSONAL
    assert FALLBACK_TREATMENT["personalization_level"] in CONSENT_NON_PERSONAL
    assert FALLBACK_TREATMENT["default_personalization_consent"] is False
    assert FALLBACK_TREATMENT["sensitive_category_policy"] == "exclude"


def test_steady_state_reads_no_surface_row(api):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    running_experiment(surface=surface(default=TreatmentFactory()))
    treatments(api, "warm")  # loads the configuration
    with CaptureQueriesContext(connection) as queries:
        treatments(api, "warm")
    assert [q["sql"] for q in queries if "experiments_surface" in q["sql"] or "privacytreatment" in q["sql"]] == []


def test_the_admin_saves_a_surface_and_records_who_changed_its_default(staff_client, api):
    from django.contrib.admin.models import LogEntry

    default = non_personal()
    response = staff_client.post(
        "/admin/experiments/surface/add/", {"key": SURFACE, "name": "Product recommendations",
                                            "description": "", "default_treatment": default.pk},
    )
    assert response.status_code == 302, response.content
    assert treatments(api, "u-9")[SURFACE]["treatment"] == default.as_contract().to_dict()
    entry = LogEntry.objects.get(object_repr=SURFACE)
    assert entry.user.username == "pm"
