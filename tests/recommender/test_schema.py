"""schemathesis over the recommendations operation, with built lists behind it: never a 5xx."""

import pytest
import schemathesis
from django.core import signals
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.recommender.factories import bought, build, catalog, experiment_with, subject, treatment


@pytest.fixture
def recommender_schema(db):
    # Like Django's test client: a request must not close the test's connection,
    # which holds the test's transaction (on PostgreSQL a closed one fails the next query).
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield schemathesis.openapi.from_wsgi("/api/schema/?format=json", get_wsgi_application())
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def built(db):
    catalog({"fashion": ["F1", "F2", "F3"], "health": ["H1"]}, sensitive=("health",))
    for level in ("full", "session", "cohort"):
        arm = experiment_with(treatment(level))[0]
        raws = [subject(arm=arm, sensitive=True) for _ in range(3)]
        for raw, skus in zip(raws, [("F1", "F2"), ("F2", "F3", "H1"), ("F1", "H1")], strict=True):
            bought(raw, *skus)
        build(arm)
    build(None)


schema = schemathesis.pytest.from_fixture("recommender_schema")


@schema.include(path_regex="recommendations").parametrize()
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_recommendations_never_answer_5xx(case, api_key, built):
    case.call_and_validate(headers={"Authorization": f"Api-Key {api_key}"}, checks=[not_a_server_error])
