"""Per-key request throttling for the API, counted in the shared cache (Redis in production).

Each view names its ``throttle_scope``: ``serving`` for the marketplace's
production traffic (assignments, recommendations, events, consents) and
``subjects`` for ``/api/v1/subjects/*`` (a subject's consent history and data
subject requests: the endpoints that read or erase one person's data, so
the tightest). Rates live in ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]``
(``"600000/min"``; the environment sets them, see config/settings.py).

A fixed window counted with one atomic ``INCR`` per request: DRF's own
``SimpleRateThrottle`` keeps every request's timestamp in one cache entry and
rewrites it on each request, which at serving rates (hundreds of thousands
per minute) would cost more than the request itself. A fixed window admits at
most twice the rate across a window boundary; that is the price of one
round trip. An over-limit request gets 429 with ``Retry-After`` (the seconds
to the window's end). If the cache does not answer, requests are let through:
throttling protects the service, it must not take it down.
"""

from __future__ import annotations

import time

from django.core.cache import cache
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def rate_parse(rate: str) -> tuple[int, int]:
    """``"600000/min"`` → (600000 requests, 60 seconds); the period is read by its first letter."""
    count, _, period = rate.partition("/")
    seconds = _PERIODS.get(period.strip()[:1].lower())
    if not count.strip().isdigit() or seconds is None or int(count) < 1:
        raise ValueError(f"a throttle rate looks like '600000/min' or '60/m', not {rate!r}")
    return int(count), seconds


class KeyRateThrottle(BaseThrottle):
    """At most the scope's rate of requests per API key and window."""

    cache_prefix = "throttle"

    def __init__(self) -> None:
        self._wait: float | None = None

    def allow_request(self, request, view) -> bool:
        scope = getattr(view, "throttle_scope", None)
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(scope) if scope else None
        prefix = getattr(request.user, "prefix", None)
        if rate is None or prefix is None:
            return True  # no rate for this view, or no key (the permission refuses it)
        limit, period = rate_parse(rate)
        now = time.time()
        window = int(now // period)
        key = f"{self.cache_prefix}:{scope}:{prefix}:{window}"
        count = _count(key, timeout=period + 1)
        if count is None or count <= limit:
            return True
        self._wait = (window + 1) * period - now
        return False

    def wait(self) -> float | None:
        return self._wait


def _count(key: str, *, timeout: int) -> int | None:
    """Add one to the window's counter and return it (None: the cache did not answer)."""
    try:
        return cache.incr(key)
    except ValueError:  # the window's first request
        if cache.add(key, 1, timeout=timeout):
            return 1
        try:
            return cache.incr(key)  # another request created it meanwhile
        except ValueError:
            return None  # the cache is not keeping anything (it is down)
