"""Builds: idempotent per arm and key, failures leave the previous build serving, fan-out, records."""

from datetime import timedelta
from unittest import mock

import pytest
from django.core.cache import cache
from django.db import transaction
from django.test import TestCase
from django.utils import timezone

from config.schedule import BEAT_SCHEDULE
from consent.pseudonyms import subject_pseudonym
from consent.services import subject_erase, subject_export
from recommender.cache_keys import arm_of_key, subject_key
from recommender.conf import DP_CLIP, STALE_AFTER
from recommender.models import ModelBuild, Product, RecommendationList
from recommender.selectors import current_build, recommendations_for_subject
from recommender.services.builds import (
    InsufficientTrainingData,
    arms_due,
    build_key_for,
    recommendations_prune,
)
from recommender.tasks import recommendations_build_all
from tests.recommender.factories import bought, build, experiment_with, subject, treatment

pytestmark = pytest.mark.django_db


def test_the_same_build_key_builds_once(full_arm):
    arm, raws = full_arm
    first = build(arm, "2026-11-28T10")
    again = build(arm, "2026-11-28T10")
    assert first.outcome == "built" and again.outcome == "already_built" and again.build_id == first.build_id
    assert ModelBuild.objects.filter(arm=arm).count() == 1
    assert RecommendationList.objects.filter(build_id=first.build_id, kind="subject").count() == 4
    assert ModelBuild.objects.get().attempts == 1


def test_a_build_in_progress_is_not_started_twice_but_an_abandoned_one_is_taken_over(full_arm):
    arm, _ = full_arm
    ModelBuild.objects.create(arm=arm, build_key="k", strategy="full", started_at=timezone.now(), attempts=1)
    assert build(arm, "k").outcome == "in_progress"
    ModelBuild.objects.filter(arm=arm).update(started_at=timezone.now() - STALE_AFTER - timedelta(minutes=1))
    summary = build(arm, "k")
    assert summary.outcome == "built"
    assert ModelBuild.objects.get(arm=arm).attempts == 2


def test_a_failed_build_leaves_the_previous_one_serving_and_can_be_retried(full_arm):
    arm, raws = full_arm
    good = build(arm, "k1")
    before = recommendations_for_subject(subject_id=raws[0])
    with mock.patch.object(RecommendationList.objects, "bulk_create", side_effect=RuntimeError("disk full")), \
            pytest.raises(RuntimeError):
        build(arm, "k2")
    failed = ModelBuild.objects.get(arm=arm, build_key="k2")
    assert failed.status == "failed" and failed.error == "RuntimeError" and failed.published_at is None
    assert current_build(arm_id=arm.pk) == good.build_id
    cache.clear()  # and from the database record alike
    assert current_build(arm_id=arm.pk) == good.build_id
    assert recommendations_for_subject(subject_id=raws[0]) == before
    retried = build(arm, "k2")
    assert retried.outcome == "built" and ModelBuild.objects.get(pk=failed.pk).attempts == 2
    assert current_build(arm_id=arm.pk) == failed.pk


def test_a_build_without_usable_data_fails_instead_of_publishing_empty_lists(full_arm):
    arm, raws = full_arm
    good = build(arm, "k1")
    Product.objects.update(active=False)
    with pytest.raises(InsufficientTrainingData):
        build(arm, "k2")
    assert current_build(arm_id=arm.pk) == good.build_id
    assert recommendations_for_subject(subject_id=raws[0]).personalized


def test_dp_builds_record_the_budget_they_spent(full_arm):
    arm = experiment_with(treatment("dp_popularity", dp_epsilon=0.5))[0]
    for raw in [subject(arm=arm) for _ in range(3)]:
        bought(raw, "F1", "F3")
    build(arm, "k1")
    build(arm, "k2")
    builds = ModelBuild.objects.filter(arm=arm, status="succeeded")
    assert [b.epsilon_spent for b in builds] == [0.5, 0.5]
    assert builds[0].params["clip"] == DP_CLIP and builds[0].params["mechanism"] == "laplace"


def test_only_the_newest_builds_keep_their_lists(full_arm, monkeypatch):
    arm, _ = full_arm
    for key in ("k1", "k2", "k3"):
        build(arm, key)
    recommendations_prune(arm_id=arm.pk, keep=2)
    kept = set(RecommendationList.objects.values_list("build__build_key", flat=True))
    assert kept == {"k2", "k3"}
    assert ModelBuild.objects.filter(arm=arm).count() == 3  # the build rows stay, as the record


def test_the_hourly_job_fans_out_one_build_per_arm_and_the_platform(full_arm):
    arm, _ = full_arm
    arms = experiment_with(treatment("cohort"), treatment("popularity"))
    with TestCase.captureOnCommitCallbacks(execute=True):
        result = recommendations_build_all.delay().get()
    assert sorted(result["arms"]) == sorted([arm.pk, *(a.pk for a in arms), *arm.experiment.arms.exclude(pk=arm.pk).values_list("pk", flat=True)])
    built = ModelBuild.objects.filter(build_key=result["build_key"])
    assert set(built.values_list("arm_id", flat=True)) == {None, *result["arms"]}
    assert result["build_key"] == build_key_for(timezone.now())


def test_the_schedule_rebuilds_a_dp_arm_only_as_often_as_its_budget_sustains(full_arm):
    arm, _ = full_arm  # full personalization: rebuilt every hour
    dp, never_built = experiment_with(treatment("dp_popularity", dp_epsilon=1.0), treatment("dp_popularity"))
    for raw in [subject(arm=dp) for _ in range(3)]:
        bought(raw, "F1", "F3")
    build(arm, "k1")
    build(dp, "k1")
    now = timezone.now()
    # ε = 1 a build, 10 per 30 days: every 3 days. Just built: not due; the others are.
    assert arms_due(arm_ids=[arm.pk, dp.pk, never_built.pk], now=now) == [arm.pk, never_built.pk]
    assert arms_due(arm_ids=[dp.pk], now=now + timedelta(days=2, hours=23)) == []
    assert arms_due(arm_ids=[dp.pk], now=now + timedelta(days=3, minutes=1)) == [dp.pk]
    with TestCase.captureOnCommitCallbacks(execute=True):
        result = recommendations_build_all.delay().get()
    assert dp.pk not in result["arms"] and {arm.pk, never_built.pk} <= set(result["arms"])
    assert not ModelBuild.objects.filter(arm=dp, build_key=result["build_key"]).exists()
    # A build asked for by name (the admin's "build now") is not paced: the budget still guards it.
    from recommender.services.builds import recommendations_build_enqueue

    assert recommendations_build_enqueue(arm_ids=[dp.pk], include_platform=False)["arms"] == [dp.pk]


def test_the_schedule_runs_the_fan_out_hourly_with_an_expiry():
    entry = BEAT_SCHEDULE["recommender-build-all"]
    assert entry["task"] == "recommender.tasks.recommendations_build_all"
    assert entry["schedule"] == timedelta(hours=1)
    assert 0 < entry["options"]["expires"] <= 3600


def test_erasure_and_export_reach_the_precomputed_lists(full_arm):
    arm, raws = full_arm
    summary = build(arm, "k")
    pseudonym = subject_pseudonym(raws[0])
    recommendations_for_subject(subject_id=raws[0])  # caches the subject's arm too
    assert cache.get(subject_key(summary.build_id, pseudonym)) is not None
    exported = subject_export(pseudonym=pseudonym)["sources"]["recommender.recommendationlist"]
    assert len(exported) == 1 and exported[0]["items"]
    with transaction.atomic():
        subject_erase(pseudonym=pseudonym)
    assert not RecommendationList.objects.filter(subject_id=pseudonym).exists()
    assert cache.get(subject_key(summary.build_id, pseudonym)) is None
    assert cache.get(arm_of_key(pseudonym)) is None
    assert RecommendationList.objects.filter(kind="fallback").exists()  # aggregates stay


def test_a_publish_the_cache_does_not_take_leaves_serving_on_the_database(full_arm, settings):
    arm, raws = full_arm
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.05, "SOCKET_TIMEOUT": 0.05, "IGNORE_EXCEPTIONS": True},
        }
    }
    settings.DJANGO_REDIS_LOG_IGNORED_EXCEPTIONS = False
    summary = build(arm, "k")  # the cache is down for the whole build: it still succeeds
    assert ModelBuild.objects.get(pk=summary.build_id).status == "succeeded"
    served = recommendations_for_subject(subject_id=raws[0])
    assert served.personalized and served.items


# --- admin -------------------------------------------------------------------------------------


def test_the_admin_builds_selected_arms_on_demand(full_arm, admin_client):
    arm, _ = full_arm
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = admin_client.post(
            "/admin/recommender/armrecommendations/",
            {"action": "build_now", "_selected_action": [arm.pk]},
            follow=True,
        )
    assert response.status_code == 200
    built = ModelBuild.objects.get(arm=arm)
    assert built.build_key.startswith("manual-") and built.status == "succeeded"
    for url in ("/admin/recommender/armrecommendations/", "/admin/recommender/modelbuild/",
                "/admin/recommender/product/", "/admin/recommender/category/"):
        assert admin_client.get(url).status_code == 200
