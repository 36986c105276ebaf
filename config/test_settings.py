"""Test settings: production settings, changed only where a test run must differ."""

import os
from urllib.parse import urlsplit, urlunsplit

# Tests run with DEBUG off against the services, like production; they bring
# throwaway secrets instead of the environment's.
os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-" + "t" * 40)
os.environ.setdefault("PRIVACYLAB_PSEUDONYM_KEY", "test-pseudonym-key-" + "p" * 32)


def _redis_url_for_worker(url: str, worker: str) -> str:
    """The Redis URL of one pytest-xdist worker: its own database, as pytest-django gives it its own
    test database, so that one worker's cache flush, broker queue or lock never reaches another's tests."""
    if not url or not worker.startswith("gw"):
        return url
    parts = urlsplit(url)
    database = int(parts.path.strip("/") or 0) + int(worker[2:])
    if database > 15:
        raise RuntimeError(f"REDIS_URL {url!r}: worker {worker} would need Redis database {database} (0-15); "
                           "choose a lower database or fewer workers (pytest -n)")
    return urlunsplit(parts._replace(path=f"/{database}"))


# Only the pytest worker process shifts it: the worker and server processes a test starts inherit the shifted
# URL and this marker, and must not shift it again. The xdist controller does not shift and must not set the
# marker either: its environment is the one the pytest-xdist workers start with, and a marker inherited from it
# kept every worker on the same Redis database (one worker's cache flush wiped another's test's cache).
_XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if os.environ.get("REDIS_URL") and _XDIST_WORKER.startswith("gw") and not os.environ.get("PRIVACYLAB_TEST_REDIS_SHIFTED"):
    os.environ["REDIS_URL"] = _redis_url_for_worker(os.environ["REDIS_URL"], _XDIST_WORKER)
    os.environ["PRIVACYLAB_TEST_REDIS_SHIFTED"] = "1"

from config.settings import *  # noqa: E402,F403

# Django's test client calls itself "testserver".
ALLOWED_HOSTS = [*ALLOWED_HOSTS, "testserver"]  # noqa: F405
# The test client speaks plain HTTP.
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
# Password hashing is deliberately slow; tests log users in by the hundred.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # noqa: S303
# Static files come from the app folders, with no collectstatic step.
STORAGES["staticfiles"]["BACKEND"] = "django.contrib.staticfiles.storage.StaticFilesStorage"  # noqa: F405
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = True
STATIC_ROOT.mkdir(exist_ok=True)  # noqa: F405
# A data source's retries wait milliseconds, not seconds (the tests' sources fail for real).
PRIVACYLAB_WAREHOUSE_RETRY = {"attempts": 3, "backoff_seconds": 0.05, "backoff_max_seconds": 0.2}
