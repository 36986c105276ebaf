"""Local evaluation: the client's in-process assignment, the configuration endpoint, exposure ingest.

1. ``privacylab_client.Client.assign`` (the published document parsed, first
   exposures queued) over 100,000 subjects against GrowthBook's Python SDK on
   the same 3-arm experiment — ``bench_assignment``'s comparison, reused
   (target: ≥ 5× faster).
2. ``GET /api/v1/config`` answered from cache under gunicorn with PostgreSQL
   and Redis (target: p99 ≤ 5 ms).
3. ``POST /api/v1/exposures`` in batches of 1,000 new subjects, into
   PostgreSQL (target: ≥ 20,000 exposures/s).

The machine is shared: figures are medians of alternated runs.
"""

import json
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime

from benchmarks.bench_assignment import _SETUP, _in_process, _load_average
from benchmarks.load import closed_loop, request_bytes
from benchmarks.services import ROOT, gunicorn, service_env
from benchmarks.table import Row

WORKERS = 3
CONCURRENCY = 4


def _client_evaluator(spec):
    from privacylab_client import Client, config_parse

    document = {
        "format": 1, "version": "bench", "holdout": None,
        "experiments": [{
            "key": spec.key, "salt": spec.salt, "phase": 1, "coverage": spec.coverage, "layer_salt": spec.layer_salt,
            "layer_range": list(spec.layer_range), "targeting": {},
            "arms": [{"key": arm.key, "weight": arm.weight, "treatment": {"name": arm.key}} for arm in spec.arms],
        }],
    }
    client = Client("http://127.0.0.1:9", "bench", start=False, max_buffer=1_000_000)
    client.config = config_parse(document)
    return lambda subject_id: client.assign(subject_id, {})


def _endpoints(quick: bool) -> list[Row]:
    env = service_env()
    if shutil.which("createdb"):
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", env["DATABASE_URL"].rsplit("/", 1)[1]],
                       capture_output=True)
    setup = subprocess.run([sys.executable, "-c", _SETUP], cwd=ROOT, env=env, capture_output=True, text=True)
    if setup.returncode != 0:
        return [Row("local evaluation endpoints", f"not run: {setup.stderr.strip().splitlines()[-1]}")]
    key = json.loads(setup.stdout.strip().splitlines()[-1])["key"]
    headers = {"Authorization": f"Api-Key {key}"}
    config_requests = [request_bytes(method="GET", path="/api/v1/config", headers=headers)] * (2_000 if quick else 20_000)
    batches = 10 if quick else 60
    config_runs, exposure_runs = [], []
    for _ in range(2):
        with gunicorn(workers=WORKERS, env=env) as port:
            closed_loop(port=port, requests=config_requests[:200], concurrency=CONCURRENCY)  # warm every worker
            config_runs.append(closed_loop(port=port, requests=config_requests, concurrency=CONCURRENCY))
            exposure_runs.append(closed_loop(
                port=port, requests=_exposure_batches(port, headers, prefix=f"{time.time_ns()}-", batches=batches),
                concurrency=CONCURRENCY, expect=201,
            ))
    failed = [error for result in (*config_runs, *exposure_runs) for error in result.errors]
    if failed:
        return [Row("local evaluation endpoints", f"failed: {len(failed)} errors, e.g. {failed[:2]}", passed=False)]
    p50 = statistics.median(result.percentile_ms(0.50) for result in config_runs)
    p99 = statistics.median(result.percentile_ms(0.99) for result in config_runs)
    rps = statistics.median(result.requests_per_second for result in config_runs)
    per_second = statistics.median(result.requests_per_second * 1000 for result in exposure_runs)
    batch_p50 = statistics.median(result.percentile_ms(0.50) for result in exposure_runs)
    load = _load_average()
    return [
        Row(
            benchmark=f"GET /api/v1/config from cache, {len(config_requests):,} requests × 2 runs, concurrency "
            f"{CONCURRENCY}, gunicorn {WORKERS} workers, load {load}",
            ours=f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, {rps:,.0f} req/s",
            target="p99 ≤ 5 ms",
            passed=p99 <= 5,
        ),
        Row(
            benchmark=f"POST /api/v1/exposures into PostgreSQL, {batches} batches of 1,000 new subjects × 2 runs, "
            f"concurrency {CONCURRENCY}, load {load}",
            ours=f"{per_second:,.0f} exposures/s (batch p50 {batch_p50:.0f} ms)",
            target="≥ 20,000 exposures/s",
            passed=per_second >= 20_000,
        ),
    ]


def _exposure_batches(port: int, headers: dict, *, prefix: str, batches: int) -> list[bytes]:
    """Batches of first exposures with the arms the published configuration assigns."""
    import urllib.request

    from privacylab_client import assign, config_parse

    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/config", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 — our own local server
        experiment = config_parse(json.loads(response.read())).experiments[0]
    now = datetime.now(UTC).isoformat()
    out = []
    for b in range(batches):
        exposures = [
            {"subject_id": subject_id, "experiment": experiment.key, "arm": assign(experiment.spec, subject_id),
             "timestamp": now}
            for subject_id in (f"{prefix}{b}-{i}" for i in range(1000))
        ]
        out.append(request_bytes(method="POST", path="/api/v1/exposures",
                                 headers={**headers, "Content-Type": "application/json"},
                                 body=json.dumps({"exposures": exposures}).encode()))
    return out


def run(quick: bool) -> list[Row]:
    return [
        _in_process(quick, label="Client.assign() (local, exposures queued)", evaluator=_client_evaluator),
        *_endpoints(quick),
    ]
