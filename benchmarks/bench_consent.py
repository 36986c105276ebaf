"""Consent: the hot ``consent_state`` read and batch ingestion into PostgreSQL.

1. ``consent_state`` for subjects whose entry is warm in the Redis cache, in
   process, as the recommendation endpoint calls it (target: p99 < 1 ms),
   beside the floor it cannot beat: one Redis PING, timed the same way in the
   same run; and against the local-memory cache of the embedded mode.
2. Consent events recorded through ``consent_record`` in batches of 1,000 into
   PostgreSQL: ledger, derived state, tallies and cache invalidation in one
   transaction per batch (target: ≥ 10,000 events/s); and the same batches
   through ``POST /api/v1/consents`` in process (validation included).

Runs in a child process against the services (``BENCH_DATABASE_URL``,
``BENCH_REDIS_URL``), like the assignment benchmark.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from benchmarks.load import closed_loop, request_bytes
from benchmarks.services import gunicorn, service_env
from benchmarks.table import Row

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = r"""
import json, random, statistics, sys, time, uuid
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.core.cache import cache
from rest_framework.test import APIClient
from rest_framework_api_key.models import APIKey
from consent.selectors import consent_state
from consent.services import ConsentEventInput, consent_record

quick = sys.argv[1] == "1"
run = uuid.uuid4().hex[:8]
purposes = ["personalization", "sensitive_profiling", "behavioral_tracking", "marketing"]

# 1. warm reads
subjects = [f"bench-{run}-{i}" for i in range(1000)]
for start in range(0, len(subjects), 250):
    consent_record(events=[
        ConsentEventInput(subject_id=s, purpose=p, action="grant", notice_version="1")
        for s in subjects[start:start + 250] for p in purposes[:2]
    ])
for s in subjects:
    consent_state(subject_id=s)
reads = 5_000 if quick else 50_000
order = [random.choice(subjects) for _ in range(reads)]
samples = []
for s in order:
    started = time.perf_counter()
    consent_state(subject_id=s).personalization_allowed
    samples.append(time.perf_counter() - started)
def percentiles(samples):
    samples = sorted(samples)
    return samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99) - 1] * 1e6

result = {"reads": reads}
result["p50_us"], result["p99_us"] = percentiles(samples)
# The floor: one Redis round trip, measured the same way in the same run.
from django_redis import get_redis_connection
redis = get_redis_connection("default")
ping = []
for _ in range(reads):
    started = time.perf_counter()
    redis.ping()
    ping.append(time.perf_counter() - started)
result["ping_p50_us"], result["ping_p99_us"] = percentiles(ping)
# The embedded mode: the same reads against the local-memory cache.
from django.test import override_settings
local_cache = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "OPTIONS": {"MAX_ENTRIES": 100_000}}
with override_settings(CACHES={"default": local_cache}):
    for s in subjects:
        consent_state(subject_id=s)
    local = []
    for s in order:
        started = time.perf_counter()
        consent_state(subject_id=s).personalization_allowed
        local.append(time.perf_counter() - started)
result["local_p50_us"], result["local_p99_us"] = percentiles(local)

# 2. ingestion, batches of 1,000 (250 subjects x 4 purposes), alternating grants and withdrawals
batches = 10 if quick else 50
def batch(i, action):
    ids = [f"ingest-{run}-{i}-{j}" for j in range(250)]
    return [ConsentEventInput(subject_id=s, purpose=p, action=action,
                              notice_version="1" if action == "grant" else None)
            for s in ids for p in purposes]
prepared = [batch(i % (batches // 2), "grant" if i < batches // 2 else "withdraw") for i in range(batches)]
started = time.perf_counter()
for events in prepared:
    consent_record(events=events)
elapsed = time.perf_counter() - started
result["service_events_per_s"] = batches * 1000 / elapsed

_, key = APIKey.objects.create_key(name=f"bench-{run}")
client = APIClient(HTTP_HOST="127.0.0.1")
client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
api_batches = 5 if quick else 20
bodies = [{"events": [{"subject_id": f"api-{run}-{i}-{j}", "purpose": p, "action": "grant", "notice_version": "1"}
                      for j in range(250) for p in purposes]} for i in range(api_batches)]
started = time.perf_counter()
for body in bodies:
    response = client.post("/api/v1/consents", body, format="json")
    assert response.status_code == 201, response.content[:300]
elapsed = time.perf_counter() - started
result["api_events_per_s"] = api_batches * 1000 / elapsed
# A key for the gunicorn run that follows in the parent process.
_, result["api_key"] = APIKey.objects.create_key(name=f"bench-gunicorn-{run}")
result["run"] = run
print(json.dumps(result))
"""


def run(quick: bool) -> list[Row]:
    if shutil.which("createdb"):
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", "privacylab_bench"], capture_output=True)
    child = subprocess.run(
        [sys.executable, "-c", _SCRIPT, "1" if quick else "0"],
        cwd=ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
    )
    if child.returncode != 0:
        reason = (child.stderr.strip().splitlines() or ["no output"])[-1]
        return [Row("consent benchmarks", f"not run: {reason}", passed=False)]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    served = _through_gunicorn(quick, key=result["api_key"], run=result["run"])
    return [
        Row(
            benchmark=f"consent_state(), Redis cache warm, {result['reads']:,} reads",
            ours=f"p50 {result['p50_us']:.0f} µs, p99 {result['p99_us']:.0f} µs",
            peer=f"Redis PING p50 {result['ping_p50_us']:.0f} µs, p99 {result['ping_p99_us']:.0f} µs",
            ratio=f"{result['p50_us'] / result['ping_p50_us']:.1f}× one round trip (p50)",
            target="p99 < 1 ms",
            passed=result["p99_us"] < 1000,
        ),
        Row(
            benchmark="consent_state(), local-memory cache warm (embedded mode)",
            ours=f"p50 {result['local_p50_us']:.0f} µs, p99 {result['local_p99_us']:.0f} µs",
            target="p99 < 1 ms",
            passed=result["local_p99_us"] < 1000,
        ),
        Row(
            benchmark="consent_record(), batches of 1,000 into PostgreSQL",
            ours=f"{result['service_events_per_s']:,.0f} events/s",
            target="≥ 10,000 events/s",
            passed=result["service_events_per_s"] >= 10_000,
        ),
        Row(
            benchmark="POST /api/v1/consents, batches of 1,000, in process (one request at a time)",
            ours=f"{result['api_events_per_s']:,.0f} events/s",
        ),
        served,
    ]


GUNICORN_WORKERS = 3
CLIENTS = 3


def _through_gunicorn(quick: bool, *, key: str, run: str) -> Row:
    """``POST /api/v1/consents`` under gunicorn: batches of 1,000 from concurrent clients."""
    purposes = ["personalization", "sensitive_profiling", "behavioral_tracking", "marketing"]
    batches = 12 if quick else 60
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}

    def body(i: int) -> bytes:
        events = [
            {"subject_id": f"http-{run}-{i}-{j}", "purpose": p, "action": "grant", "notice_version": "1"}
            for j in range(250)
            for p in purposes
        ]
        return request_bytes(method="POST", path="/api/v1/consents", headers=headers,
                             body=json.dumps({"events": events}).encode())

    label = f"POST /api/v1/consents, batches of 1,000, {CLIENTS} clients, gunicorn {GUNICORN_WORKERS} workers"
    with gunicorn(workers=GUNICORN_WORKERS, env=service_env()) as port:
        warm = closed_loop(port=port, requests=[body(-1 - i) for i in range(GUNICORN_WORKERS)],
                           concurrency=GUNICORN_WORKERS, expect=201)
        result = closed_loop(port=port, requests=[body(i) for i in range(batches)], concurrency=CLIENTS, expect=201)
    errors = warm.errors + result.errors
    if errors:
        return Row(label, f"failed: {len(errors)} errors, e.g. {errors[:2]}", passed=False)
    rate = len(result.latencies) * 1000 / result.elapsed
    return Row(
        benchmark=label,
        ours=f"{rate:,.0f} events/s (p50 {result.percentile_ms(0.5):.0f} ms per batch)",
        target="≥ 10,000 events/s",
        passed=rate >= 10_000,
    )
