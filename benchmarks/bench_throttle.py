"""The per-key throttle's cost on the serving path, against DRF's own throttle at the same rate.

``config.throttling.KeyRateThrottle`` counts a fixed window with one Redis
``INCR``; the peer, DRF's ``SimpleRateThrottle``, keeps every request's time in
one cache entry and reads and rewrites it on each request, so its cost grows
with the requests already in the window. Both are measured in the same child
process (production settings, the benchmark Redis DB), per call, after the
window already holds 5,000 requests of the key, at the serving rate. The
``cache.get`` of one small key is printed beside them as the floor: one round trip.
"""

import json
import os
import subprocess
import sys

from benchmarks.services import ROOT, service_env
from benchmarks.table import Row

CHILD = r"""
import json, statistics, time
import django
django.setup()
from types import SimpleNamespace
from django.core.cache import cache
from rest_framework.throttling import SimpleRateThrottle
from config.throttling import KeyRateThrottle

RATE, FILL, CALLS = "1200000/min", {fill}, {calls}

class DrfThrottle(SimpleRateThrottle):
    rate = RATE
    scope = "serving"
    def get_cache_key(self, request, view):
        return f"bench-drf-throttle:{{request.user.prefix}}"

view = SimpleNamespace(throttle_scope="serving")
ours_request = SimpleNamespace(user=SimpleNamespace(prefix="bench-ours"))
peer_request = SimpleNamespace(user=SimpleNamespace(prefix="bench-peer"))
cache.delete("bench-drf-throttle:bench-peer")
ours, peer = KeyRateThrottle(), DrfThrottle()
for _ in range(FILL):  # the window already holds this many requests of the key
    ours.allow_request(ours_request, view)
    DrfThrottle().allow_request(peer_request, view)

def per_call(fn):
    samples = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(CALLS):
            fn()
        samples.append((time.perf_counter() - started) / CALLS)
    return statistics.median(samples)

result = {{
    "ours": per_call(lambda: ours.allow_request(ours_request, view)),
    "peer": per_call(lambda: DrfThrottle().allow_request(peer_request, view)),
    "floor": per_call(lambda: cache.get("bench-throttle-floor")),
}}
cache.delete("bench-drf-throttle:bench-peer")
print(json.dumps(result))
"""


def run(quick: bool) -> list[Row]:
    fill, calls = (500, 100) if quick else (5000, 400)
    child = subprocess.run(
        [sys.executable, "-c", CHILD.format(fill=fill, calls=calls)],
        cwd=ROOT,
        env=service_env(),
        capture_output=True,
        text=True,
        timeout=1200,
    )
    if child.returncode != 0:
        raise RuntimeError(child.stderr[-2000:])
    result = json.loads(child.stdout.strip().splitlines()[-1])
    ours, peer, floor = (result[name] * 1e6 for name in ("ours", "peer", "floor"))
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return [
        Row(
            benchmark=f"throttle per request, {fill:,} requests in the window (load {load})",
            ours=f"{ours:,.0f} µs (cache.get: {floor:,.0f} µs)",
            peer=f"{peer:,.0f} µs (DRF SimpleRateThrottle)",
            ratio=f"{peer / ours:,.1f}× faster",
        )
    ]
