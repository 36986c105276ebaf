"""An erasure racing a build that writes the subject's lists, on real PostgreSQL with two connections.

Each interleaving is forced with events: the build holds its subjects' rows (FOR KEY SHARE) while
an erasure asks for the subject's row (FOR UPDATE), and the other way round. Whichever goes
first, both commit, and nothing of the erased subject is left in the tables or the cache.
"""

import threading
import time

import pytest
from django.core.cache import cache
from django.db import connection, transaction

from consent.models import Subject
from consent.pseudonyms import subject_pseudonym
from consent.services import subject_erase
from recommender.cache_keys import subject_key
from recommender.models import ModelBuild, RecommendationList
from recommender.services import builds
from tests.recommender.factories import fashion_arm_of_three

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.django_db(transaction=True, serialized_rollback=True),
]


@pytest.fixture
def arm_and_subjects(settings):
    settings.RECOMMENDER_MIN_SUPPORT = 1
    return fashion_arm_of_three()


def _in_thread(target, errors: list):
    def run():
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 — reported to the test
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _publish_and_erase(arm, pseudonym, *, build_locks_first: bool):
    errors: list = []
    locked, erasure_asked, erasure_locked, erasure_may_commit = (threading.Event() for _ in range(4))
    real_live = builds._live_subjects

    def live_subjects(pseudonyms, *, lock):
        if lock and build_locks_first:
            found = real_live(pseudonyms, lock=True)
            locked.set()
            erasure_asked.wait(10)
            time.sleep(0.5)  # the erasure is now waiting for this transaction's lock
            return found
        if lock:
            erasure_locked.wait(10)  # the erasure holds the row; this waits for its commit
            erasure_may_commit.set()
        return real_live(pseudonyms, lock=lock)

    def build():
        builds.recommendations_build(arm_id=arm.pk, build_key="race")

    def erase():
        if build_locks_first:
            locked.wait(10)
            erasure_asked.set()
        with transaction.atomic():
            subject_erase(pseudonym=pseudonym)
            if not build_locks_first:
                erasure_locked.set()
                erasure_may_commit.wait(10)
                time.sleep(0.5)  # the build is now waiting for this transaction's lock

    builds._live_subjects = live_subjects
    try:
        threads = [_in_thread(build, errors), _in_thread(erase, errors)]
        for thread in threads:
            thread.join(60)
    finally:
        builds._live_subjects = real_live
    assert errors == []
    return ModelBuild.objects.get(arm=arm, build_key="race")


@pytest.mark.parametrize("build_locks_first", [True, False], ids=["build-first", "erasure-first"])
def test_an_erasure_racing_a_build_commits_and_leaves_nothing_behind(arm_and_subjects, build_locks_first):
    arm, raws = arm_and_subjects
    pseudonym = subject_pseudonym(raws[0])
    record = _publish_and_erase(arm, pseudonym, build_locks_first=build_locks_first)
    assert record.status == "succeeded"
    assert not Subject.objects.filter(pk=pseudonym).exists()
    assert not RecommendationList.objects.filter(subject_id=pseudonym).exists()
    assert cache.get(subject_key(record.pk, pseudonym)) is None
    # The others were published as usual.
    assert RecommendationList.objects.filter(build=record, subject_id=subject_pseudonym(raws[1])).exists()
