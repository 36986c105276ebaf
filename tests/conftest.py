"""Suite-wide fixtures and the service switches of DESIGN.md.

With ``DATABASE_URL``/``REDIS_URL`` set the suite runs against PostgreSQL and
Redis and the integration tests run too; without them those tests are skipped,
unless ``REQUIRE_SERVICES=1`` (CI), which turns a missing service into a failure.
"""

import os

import pytest
from django.conf import settings

from config.celery import app as celery_app

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def _redis_available() -> bool:
    if not settings.REDIS_URL:
        return False
    import redis

    try:
        return bool(redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _is_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"].endswith("postgresql")


def _restore_reference_data_after_flushes(item) -> None:
    """Every transactional test restores the migrated reference data (serialized rollback).

    A transactional test ends with a flush that empties every table, including
    the rows migrations seed (purposes, notices, content types). If only some
    transactional tests restored them, the flush of one that does not would
    recreate content types under new ids, and the next restore would collide
    with them. So all of them restore, and every one starts from the migrated state.
    """
    marker = item.get_closest_marker("django_db")
    transactional = bool(marker and marker.kwargs.get("transaction")) or bool(
        {"transactional_db", "live_server", "django_db_reset_sequences"} & set(getattr(item, "fixturenames", ()))
    )
    if transactional:
        kwargs = dict(marker.kwargs) if marker else {}
        kwargs.update(transaction=True, serialized_rollback=True)
        item.add_marker(pytest.mark.django_db(**kwargs), append=False)


def pytest_collection_modifyitems(config, items):
    missing = {
        "postgres": None if _is_postgres() else "needs PostgreSQL (set DATABASE_URL)",
        "redis": None if _redis_available() else "needs Redis (set REDIS_URL to a running server)",
    }
    for item in items:
        _restore_reference_data_after_flushes(item)
    absent = [reason for reason in missing.values() if reason]
    if REQUIRE_SERVICES and absent:
        raise pytest.UsageError("REQUIRE_SERVICES=1, but the suite " + "; ".join(absent))
    for item in items:
        for marker, reason in missing.items():
            if reason and item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(autouse=True, scope="session")
def _celery_eager():
    # Unit tests run tasks in-process; the worker tests switch this off
    # themselves and talk to a real worker process.
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


@pytest.fixture(autouse=True)
def _fresh_cache():
    from django.core.cache import cache

    from config.authentication import verified_keys_clear

    cache.clear()
    verified_keys_clear()
    yield


def api_key_create(*, scopes=None, name: str = "tests") -> str:
    """A new API key with these scopes (default: every scope); returns the key itself."""
    from rest_framework_api_key.models import APIKey

    from config.permissions import SCOPES
    from experiments.models import ApiKeyScopes

    api_key, key = APIKey.objects.create_key(name=name)
    row = ApiKeyScopes(api_key=api_key)
    row.set_scopes(SCOPES if scopes is None else scopes)
    row.save()
    return key


@pytest.fixture
def api_key(db):
    """A key with every scope: the API's own tests are about what each operation does."""
    return api_key_create()


@pytest.fixture
def api(api_key):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_key}")
    return client
