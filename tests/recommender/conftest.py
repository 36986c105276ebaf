import pytest

from consent.selectors import purpose_rules_forget


@pytest.fixture(autouse=True)
def _fresh_purpose_rules():
    # Each test's database rolls back: this process's memo of the purposes' rules must not outlive it.
    purpose_rules_forget()
    yield
    purpose_rules_forget()


@pytest.fixture(autouse=True)
def _forget_platform_memo():
    from recommender import selectors

    selectors._platform_memo = (0.0, [])
    yield
    selectors._platform_memo = (0.0, [])


# The real worker process of the integration suite, for the build tests on a real worker.
from tests.integration.conftest import celery_worker_process  # noqa: E402,F401
