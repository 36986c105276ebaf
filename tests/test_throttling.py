"""Per-key throttles: tight on subjects/*, far above benchmark throughput on serving; 429 with Retry-After."""

import pytest
from django.conf import settings
from django.test import override_settings

from config.throttling import rate_parse
from tests.conftest import api_key_create

pytestmark = pytest.mark.django_db
SUBJECTS_URL = "/api/v1/subjects/throttled-subject/consents"
UNREACHABLE_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:6390/0",
        "OPTIONS": {"IGNORE_EXCEPTIONS": True, "SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
    }
}


def _rates(**rates):
    return {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **rates}}


def _get(client, key, url=SUBJECTS_URL):
    return client.get(url, HTTP_AUTHORIZATION=f"Api-Key {key}")


@pytest.mark.parametrize(
    ("rate", "parsed"),
    [("600000/min", (600000, 60)), ("60/m", (60, 60)), ("5/s", (5, 1)), ("10/hour", (10, 3600)), ("1/day", (1, 86400))],
)
def test_rates_are_read_like_drfs(rate, parsed):
    assert rate_parse(rate) == parsed


@pytest.mark.parametrize("rate", ["", "ten/min", "0/min", "5/fortnight", "-1/s"])
def test_a_bad_rate_is_refused(rate):
    with pytest.raises(ValueError, match="throttle rate"):
        rate_parse(rate)


def test_the_subject_endpoints_answer_429_with_retry_after_past_their_rate(client):
    key, other = api_key_create(), api_key_create(name="other")
    with override_settings(REST_FRAMEWORK=_rates(subjects="3/min")):
        assert [_get(client, key).status_code for _ in range(3)] == [200, 200, 200]
        throttled = _get(client, key)
        assert throttled.status_code == 429
        assert 1 <= int(throttled["Retry-After"]) <= 60
        assert "throttled" in throttled.json()["detail"].lower()
        # Per key: another key is not held back; and the serving endpoints have their own budget.
        assert _get(client, other).status_code == 200
        assert client.get("/api/v1/recommendations/throttled-subject", HTTP_AUTHORIZATION=f"Api-Key {key}").status_code == 200


def test_the_serving_defaults_are_far_above_what_one_host_serves():
    """docs/benchmarks.md: about 1,400 assignment requests/s on this machine; the default admits 20,000/s per key."""
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    count, seconds = rate_parse(rates["serving"])
    assert count / seconds >= 10_000
    count, seconds = rate_parse(rates["subjects"])
    assert count / seconds <= 5  # the data-subject endpoints are strict


def test_throttling_never_takes_the_service_down_when_the_cache_does_not_answer(client):
    key = api_key_create()
    with override_settings(CACHES=UNREACHABLE_REDIS, REST_FRAMEWORK=_rates(subjects="1/min")):
        assert [_get(client, key).status_code for _ in range(3)] == [200, 200, 200]


@pytest.mark.redis
def test_the_counter_lives_in_redis_per_key_and_window(client):
    from django_redis import get_redis_connection

    key = api_key_create()
    prefix = key.partition(".")[0]
    with override_settings(REST_FRAMEWORK=_rates(subjects="2/min")):
        assert [_get(client, key).status_code for _ in range(3)] == [200, 200, 429]
    redis = get_redis_connection("default")
    counters = list(redis.scan_iter(match=f"*throttle:subjects:{prefix}:*"))
    assert len(counters) == 1
    assert int(redis.get(counters[0])) == 3 and 0 < redis.ttl(counters[0]) <= 61
