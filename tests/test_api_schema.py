"""The OpenAPI schema tells the truth: schemathesis, every check and phase, every operation, zero failures.

``schemathesis run --checks all --phases examples,coverage,fuzzing,stateful``
against a live server on the suite's database (PostgreSQL under CI), with a
valid key that has every scope. The schema must say every status an
operation answers, every constraint the server enforces (so that data the
schema allows is accepted and data it forbids refused), and examples the
server accepts. The hooks (``tests/schemathesis_hooks.py``) set up only the
preconditions no schema can state, and say which.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.test import override_settings

from consent.models import Subject
from consent.pseudonyms import subject_pseudonym
from experiments.selectors import assignment_config_document
from experiments.services import assignments_for_subject
from tests.conftest import api_key_create
from tests.experiments.factories import running_experiment
from tests.openapi_schema import (
    SCHEMA_URL,
    component_alternatives,
    schema_components,
    schema_served,
)

# The schema reads the purposes and notices from the database (consent.schema).
pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
KNOWN_SUBJECT = "user-42"


def test_schema_and_docs_are_served_locally(client):
    schema_response = client.get(SCHEMA_URL)
    assert schema_response.status_code == 200
    paths = schema_response.json()["paths"]
    assert "/api/v1/assignments" in paths
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "cdn" not in html.lower() and "/static/drf_spectacular_sidecar/" in html


def test_every_operation_names_its_errors(client):
    schema = schema_served(client)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert {"400", "401", "403", "429"} <= statuses, (method, path, statuses)
            assert "Retry-After" in operation["responses"]["429"]["headers"], (method, path)
            if "{" in path:
                assert "404" in statuses, (method, path)
            if method == "post":
                assert "413" in statuses, (method, path)


def test_request_bodies_refuse_unknown_fields(client):
    schemas = schema_components(client)
    for name in ("AssignmentRequest", "ConsentEventIn", "ConsentBatchIn", "ConsentSource", "RequestIn",
                 "EventsRequest", "OutcomeEventIn", "OrderLine"):
        for schema in component_alternatives(schemas, name):
            assert schema["additionalProperties"] is False, name


@pytest.mark.django_db
def test_every_request_body_is_required_as_the_server_requires_it(api):
    paths = schema_served(api)["paths"]
    posts = {path: ops["post"] for path, ops in paths.items() if "post" in ops and "requestBody" in ops["post"]}
    assert "/api/v1/consents" in posts and len(posts) >= 4
    for path, operation in posts.items():
        assert operation["requestBody"]["required"] is True, path
    # ... because without one the server names what is missing (a 400), as for any bad body.
    response = api.post("/api/v1/consents")
    assert response.status_code == 400 and "subject_id" in response.json()


def test_batches_state_their_bounds(client):
    schemas = schema_components(client)
    for name in ("ConsentBatchIn", "EventsRequest"):
        events = schemas[name]["properties"]["events"]
        assert (events["minItems"], events["maxItems"]) == (1, 1000), name
    lines = schemas["OrderEventIn"]["properties"]["lines"]
    assert (lines["minItems"], lines["maxItems"]) == (1, 200)
    # An order and an impression are different shapes: each requires its own fields, and no other's.
    assert {"amount", "lines"} <= set(schemas["OrderEventIn"]["required"])
    assert "product_id" in schemas["RecommendationEventIn"]["required"]
    assert "amount" not in schemas["RecommendationEventIn"]["properties"]


def _schemathesis(live_server, key: str, name: str, *extra: str, config: str = "") -> subprocess.CompletedProcess:
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", f"{live_server.url}{SCHEMA_URL}",
        "--phases", "examples,coverage,fuzzing,stateful",
        "--header", f"Authorization: Api-Key {key}",
        "--max-examples", os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "30"),
        "--seed", "20261201",
        "--workers", "1",
        "--request-timeout", "30",
        "--suppress-health-check", "all",
        "--report", "junit", "--report-junit-path", str(ARTIFACTS / f"schemathesis-{name}.xml"),
        *extra,
    ]
    # The hooks meet the preconditions no schema can state (their docstring lists them).
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
        "PRIVACYLAB_SCHEMATHESIS_SUBJECT": KNOWN_SUBJECT,
        # The exposures' preconditions (a running experiment, the algorithm's arm) are met from it.
        "PRIVACYLAB_SCHEMATHESIS_CONFIG": config,
    }
    # The subject endpoints' tight default throttle would turn most of the run into 429s.
    rates = {**django_settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "subjects": "1000000/min"}
    with override_settings(REST_FRAMEWORK={**django_settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}):
        result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1500)
    (ARTIFACTS / f"schemathesis-{name}.txt").write_text(result.stdout + result.stderr)
    return result


def _exposures_example_experiment() -> None:
    """The experiment the exposures example names, as written: "checkout-consent", where user-42 is in "banner"
    (its salt chosen so), started before the example's time."""
    from datetime import UTC, datetime

    from django.test import TestCase

    from experiments.models import Arm, Experiment, Layer
    from experiments.services import experiment_start
    from tests.experiments.factories import ExperimentFactory, TreatmentFactory

    experiment = ExperimentFactory(
        key="checkout-consent", arms=0, salt="checkout-consent-3",
        layer=Layer.objects.create(key="checkout", name="Checkout"),
    )
    Arm.objects.create(experiment=experiment, key="control", treatment=TreatmentFactory(), is_control=True)
    Arm.objects.create(experiment=experiment, key="banner", treatment=TreatmentFactory())
    with TestCase.captureOnCommitCallbacks(execute=True):
        experiment_start(experiment=experiment)
    Experiment.objects.filter(pk=experiment.pk).update(started_at=datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.django_db(transaction=True)
def test_schemathesis_finds_nothing_with_every_check_and_phase(live_server):
    running_experiment(arms=3)
    # The events' documented precondition: their subject is known (here, by an assignment).
    # It is the subject of the events example, which must be accepted as written.
    assignments_for_subject(subject_id=KNOWN_SUBJECT, attributes={})
    assert Subject.objects.filter(pk=subject_pseudonym(KNOWN_SUBJECT)).exists()
    _exposures_example_experiment()
    key = api_key_create()
    ARTIFACTS.mkdir(exist_ok=True)
    config = assignment_config_document().body.decode()
    every = _schemathesis(live_server, key, "all-checks", "--checks", "all", config=config)
    assert every.returncode == 0, every.stdout[-12000:] + every.stderr[-3000:]
    assert "Selected: 11/11" in every.stdout and "Tested: 11" in every.stdout
    out = every.stdout
    assert "FAILURES" not in out and "Schema validation mismatch" not in out, out[-12000:]
    if "No issues found" not in out:
        # The one warning a run can end with and still have no failure: the fuzzed request ids of the
        # cancel operation are unknown requests, so it answers 404 to most of them ("Missing test data").
        # A warning is not a failure; any other warning is treated as one.
        warnings = out.split("WARNINGS", 1)[1].split("SUMMARY", 1)[0]
        assert "Missing test data" in warnings, out[-12000:]
        assert re.findall(r"^  - (.+)$", warnings, re.MULTILINE) == [
            "POST /api/v1/subjects/{subject_id}/requests/{request_id}/cancel"
        ], out[-12000:]
        assert re.search(r"= 1 warning in [\d.]+s =", out), out[-12000:]


def test_no_page_names_an_outside_url_nor_asks_a_validator(client):
    """No CDN anywhere: every template and static file of the project loads from this site only."""
    import re

    outside = re.compile(r"""(?:src|href|url)\s*[=(]\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
    found = []
    for folder in ("templates", "experiments/templates", "consent/templates", "experiments/static", "consent/static"):
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and path.suffix in {".html", ".css", ".js", ".svg"}:
                text = path.read_text(encoding="utf-8")
                found += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in outside.finditer(text)]
                # The only absolute URL allowed is a namespace name (never fetched).
                urls = set(re.findall(r"https?://[^\s\"'<>)]+", text)) - {"http://www.w3.org/2000/svg"}
                found += [f"{path.relative_to(ROOT)}: {url}" for url in urls]
    assert found == []
    # Swagger UI's validator badge would come from validator.swagger.io: switched off.
    script = client.get("/api/docs/?script=").content.decode()
    assert '"validatorUrl": null' in script
    # ReDoc (fonts from the internet) is not served at all.
    assert client.get("/api/redoc/").status_code == 404
