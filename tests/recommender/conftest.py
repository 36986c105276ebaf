"""Fixtures every recommender test shares: fresh in-process memos, a hand-sized support threshold, built arms."""

import pytest

from consent.selectors import purpose_rules_forget
from tests.recommender.factories import build, fashion_and_home_arm


@pytest.fixture(autouse=True)
def _fresh_purpose_rules():
    # Each test's database rolls back: this process's memo of the purposes' rules must not outlive it.
    purpose_rules_forget()
    yield
    purpose_rules_forget()


@pytest.fixture(autouse=True)
def _hand_sized_support(settings):
    # These tests build from a handful of subjects: a pair two of them co-bought must count.
    # The support threshold itself (default 5) is tested with it set back where it matters.
    settings.RECOMMENDER_MIN_SUPPORT = 1


@pytest.fixture(autouse=True)
def _forget_platform_memo():
    from recommender import selectors

    selectors._platform_memo.forget()
    yield
    selectors._platform_memo.forget()


@pytest.fixture
def full_arm():
    """A full-history arm over fashion and home, four exposed subjects with history: (arm, raw ids)."""
    return fashion_and_home_arm()


@pytest.fixture
def world(full_arm):
    """``full_arm`` built, and the platform list: (arm, raw ids)."""
    build(full_arm[0])
    build(None)
    return full_arm


# The real worker process of the integration suite, for the build tests on a real worker.
from tests.integration.conftest import celery_worker_process  # noqa: E402,F401
