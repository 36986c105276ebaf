"""``/health/``: is the database, the cache and the broker answering?

Used by the compose health checks and load balancers: 200 when every part
answers, 503 naming the part that does not. No authentication, no personal data.
"""

import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


def _database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return "ok"


def _cache() -> str:
    key, value = f"health:{uuid.uuid4().hex}", "ok"
    if settings.REDIS_URL:
        # The app's cache swallows errors on purpose; health must not.
        from django_redis import get_redis_connection

        get_redis_connection("default").ping()
    cache.set(key, value, timeout=5)
    if cache.get(key) != value:
        raise RuntimeError("cache did not return what was written")
    cache.delete(key)
    return "ok"


def _broker() -> str:
    if settings.CELERY_TASK_ALWAYS_EAGER:
        return "eager"
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
    return "ok"


@never_cache
@require_GET
def health(request):
    checks, healthy = {}, True
    for name, check in (("database", _database), ("cache", _cache), ("broker", _broker)):
        try:
            checks[name] = check()
        except Exception as exc:
            checks[name] = f"error: {type(exc).__name__}"
            healthy = False
    return JsonResponse({"status": "ok" if healthy else "error", "checks": checks}, status=200 if healthy else 503)
