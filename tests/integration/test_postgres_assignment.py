"""First exposures under concurrency, and the constraints, on the real PostgreSQL."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from consent.models import Subject
from consent.pseudonyms import subject_pseudonym
from experiments.models import Exposure
from tests.experiments.factories import running_experiment

pytestmark = [pytest.mark.integration, pytest.mark.postgres]
THREADS = 50


def _concurrent_first_requests(api_key: str, subject_id: str) -> list[tuple[int, str]]:
    barrier = threading.Barrier(THREADS)

    def request(_):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key}")
        try:
            barrier.wait(timeout=30)
            response = client.post("/api/v1/assignments", {"subject_id": subject_id}, format="json")
            return response.status_code, response.json()["assignments"][0]["arm"]
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(request, range(THREADS)))


def test_fifty_concurrent_first_requests_leave_one_exposure(transactional_db, api_key):
    experiment = running_experiment(arms=3)
    results = _concurrent_first_requests(api_key, "concurrent-subject")
    assert {status for status, _ in results} == {200}
    assert len({arm for _, arm in results}) == 1
    exposures = Exposure.objects.filter(experiment=experiment)
    assert exposures.count() == 1
    assert exposures.get().arm.key == results[0][1]


def test_the_stored_exposure_wins_over_the_hash(transactional_db, api_key):
    """The read-back makes the stored arm authoritative (e.g. a subject from an earlier phase)."""
    experiment = running_experiment(arms=3)
    subject_id = "earlier-phase-subject"
    hashed = APIClient()
    hashed.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key}")
    hashed_arm = hashed.post("/api/v1/assignments", {"subject_id": "probe"}, format="json")
    assert hashed_arm.status_code == 200
    pseudonym = subject_pseudonym(subject_id)
    Subject.objects.create(pseudonym=pseudonym)
    from experiments.assignment import assign
    from experiments.selectors import experiment_spec

    computed = assign(experiment_spec(experiment=experiment), subject_id)
    stored = experiment.arms.exclude(key=computed).first()
    Exposure.objects.create(
        experiment=experiment, arm=stored, subject_id=pseudonym, first_exposed_at=timezone.now()
    )
    results = _concurrent_first_requests(api_key, subject_id)
    assert {arm for _, arm in results} == {stored.key}
    assert Exposure.objects.filter(experiment=experiment, subject_id=pseudonym).count() == 1


def test_database_enforces_one_exposure_per_subject(transactional_db):
    experiment = running_experiment()
    subject = Subject.objects.create(pseudonym=subject_pseudonym("dup"))
    arm = experiment.arms.first()
    Exposure.objects.create(experiment=experiment, arm=arm, subject=subject, first_exposed_at=timezone.now())
    with pytest.raises(IntegrityError), transaction.atomic():
        Exposure.objects.create(experiment=experiment, arm=arm, subject=subject, first_exposed_at=timezone.now())
