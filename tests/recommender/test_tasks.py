"""Builds on a real Celery worker process, through the real Redis broker, against PostgreSQL."""

import pytest
from django.core.cache import cache

from consent.pseudonyms import subject_pseudonym
from recommender.cache_keys import pointer_key, subject_key
from recommender.models import ModelBuild, Product, RecommendationList
from recommender.selectors import recommendations_for_subject
from recommender.tasks import recommendations_build
from tests.recommender.factories import FOUR_HISTORIES, bought, subject

# serialized_rollback: a transactional test flushes the tables, the seeded purposes and notices
# with them; this puts them back for the next test.
pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture
def full_arm(full_arm, celery_worker_process):
    # The worker runs with the production support threshold (a pair needs five subjects): five
    # consenting shoppers outside the experiment repeat each history, which leaves every cosine as it was.
    for skus in FOUR_HISTORIES:
        for _ in range(5):
            bought(subject(), *skus)
    return full_arm


def test_a_build_runs_once_per_key_on_the_worker_and_serves_from_redis(full_arm, celery_worker_process):
    arm, raws = full_arm
    first, second = recommendations_build.delay(arm.pk, "2026-11-28T10"), recommendations_build.delay(arm.pk, "2026-11-28T10")
    results = [first.get(timeout=120), second.get(timeout=120)]
    assert sorted(r["outcome"] for r in results) == ["already_built", "built"]
    build = ModelBuild.objects.get(arm=arm)
    assert build.status == "succeeded" and build.attempts == 1
    assert RecommendationList.objects.filter(build=build, kind="subject").count() == 4
    # The worker published to the shared Redis: this process serves from it.
    assert cache.get(pointer_key(arm.pk)) == build.pk
    assert cache.get(subject_key(build.pk, subject_pseudonym(raws[0]))) is not None
    served = recommendations_for_subject(subject_id=raws[0])
    assert served.personalized and served.items[0]["product"] == "F3"
    assert "recommender.tasks.recommendations_build" in celery_worker_process.log()


def test_a_failed_build_on_the_worker_leaves_the_previous_one_serving(full_arm, celery_worker_process):
    arm, raws = full_arm
    assert recommendations_build.delay(arm.pk, "k1").get(timeout=120)["outcome"] == "built"
    good = ModelBuild.objects.get(arm=arm, build_key="k1")
    before = recommendations_for_subject(subject_id=raws[0])
    Product.objects.update(active=False)  # the next build finds nothing it may use

    with pytest.raises(Exception) as raised:
        recommendations_build.delay(arm.pk, "k2").get(timeout=120)
    assert "InsufficientTrainingData" in repr(raised.value) or "InsufficientTrainingData" in type(raised.value).__name__
    failed = ModelBuild.objects.get(arm=arm, build_key="k2")
    assert failed.status == "failed" and failed.published_at is None
    assert cache.get(pointer_key(arm.pk)) == good.pk
    assert recommendations_for_subject(subject_id=raws[0]) == before

    Product.objects.update(active=True)
    assert recommendations_build.delay(arm.pk, "k2").get(timeout=120)["outcome"] == "built"
    assert cache.get(pointer_key(arm.pk)) == failed.pk
