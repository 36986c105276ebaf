"""Assignment: in-process against GrowthBook's SDK, and the endpoint under gunicorn.

1. ``assign`` over 100,000 subjects against GrowthBook's Python SDK running the
   same 3-arm experiment, alternated in the same run (target: ≥ 5× faster).
2. ``POST /api/v1/assignments`` for returning subjects under gunicorn with
   PostgreSQL and Redis on this machine, loaded at a fixed concurrency by the
   lean generator in ``benchmarks/load.py`` (target: ≥ 1,000 requests/s,
   p99 ≤ 20 ms), side by side with the same gunicorn with throttling off
   (``benchmarks/unthrottled_settings.py``): the serving throttle's default must
   not cut a key's throughput (no 429, throughput within noise).
"""

import json
import shutil
import statistics
import subprocess
import sys

from benchmarks.load import closed_loop, request_bytes
from benchmarks.services import ROOT, gunicorn, service_env
from benchmarks.table import Row, median_seconds

SUBJECTS = 100_000
CONCURRENCY = 8
WORKERS = 3


def _in_process(quick: bool, *, label: str = "assign()", evaluator=None) -> Row:
    """Ours against GrowthBook's SDK on the same 3-arm experiment; ``evaluator(spec)`` gives our
    ``evaluate(subject_id)`` (default: the bare ``assign``; bench_local_evaluation passes the client)."""
    from growthbook import Experiment as GBExperiment
    from growthbook import GrowthBook

    from experiments.assignment import ArmSpec, ExperimentSpec, assign

    n = 20_000 if quick else SUBJECTS
    ids = [f"user-{i}" for i in range(n)]
    spec = ExperimentSpec("reco", "reco-salt", 1.0, (ArmSpec("control", 1), ArmSpec("b", 1), ArmSpec("c", 1)))
    gb_experiment = GBExperiment(key="reco", variations=["control", "b", "c"], weights=[1 / 3] * 3, coverage=1.0)
    gb = GrowthBook(attributes={})

    evaluate = evaluator(spec) if evaluator is not None else (lambda subject_id: assign(spec, subject_id))

    def ours():
        for subject_id in ids:
            evaluate(subject_id)

    def growthbook():
        for subject_id in ids:
            gb.set_attributes({"id": subject_id})
            gb.run(gb_experiment)

    # Alternate the two so that machine noise hits both alike.
    ours_s, peer_s = [], []
    for _ in range(3):
        ours_s.append(median_seconds(ours, repeats=1, warmup=0))
        peer_s.append(median_seconds(growthbook, repeats=1, warmup=0))
    ours_us = statistics.median(ours_s) / n * 1e6
    peer_us = statistics.median(peer_s) / n * 1e6
    ratio = peer_us / ours_us
    return Row(
        benchmark=f"{label}, {n:,} subjects, 3 arms",
        ours=f"{ours_us:.2f} µs/eval",
        peer=f"growthbook {peer_us:.2f} µs/eval",
        ratio=f"{ratio:.1f}× faster",
        target="≥ 5× faster",
        passed=ratio >= 5,
    )


# --- the endpoint ------------------------------------------------------------------------


_SETUP = """
import django, json, sys
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from django.contrib.auth import get_user_model
from rest_framework_api_key.models import APIKey
from experiments.models import Arm, Experiment, PrivacyTreatment
from experiments import services
Experiment.objects.filter(key="bench").delete()
owner, _ = get_user_model().objects.get_or_create(username="bench")
experiment = Experiment.objects.create(key="bench", name="Bench", owner=owner)
for i, key in enumerate(["control", "b", "c"]):
    treatment, _ = PrivacyTreatment.objects.get_or_create(
        name=f"bench {key}", defaults={"consent_prompt": "banner", "personalization_level": "full"})
    Arm.objects.create(experiment=experiment, key=key, treatment=treatment, is_control=(i == 0))
for other in Experiment.objects.filter(status="running").exclude(pk=experiment.pk):
    services.experiment_stop(experiment=other)
services.experiment_start(experiment=experiment)
_, key = APIKey.objects.create_key(name="bench")
print(json.dumps({"key": key}))
"""


def _endpoint(quick: bool) -> list[Row]:
    env = service_env()
    if shutil.which("createdb"):
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", "privacylab_bench"], capture_output=True)
    setup = subprocess.run([sys.executable, "-c", _SETUP], cwd=ROOT, env=env, capture_output=True, text=True)
    if setup.returncode != 0:
        return [Row("assignment endpoint", f"not run: {setup.stderr.strip().splitlines()[-1]}")]
    key = json.loads(setup.stdout.strip().splitlines()[-1])["key"]
    subjects = [f"bench-{i}" for i in range(2000)]
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}

    def requests(ids: list[str]) -> list[bytes]:
        return [
            request_bytes(method="POST", path="/api/v1/assignments", headers=headers,
                          body=json.dumps({"subject_id": subject_id}).encode())
            for subject_id in ids
        ]

    total = 2_000 if quick else 20_000
    measured = requests([subjects[i % len(subjects)] for i in range(total)])
    # The production settings (throttled per key at the serving default) and the same
    # with throttling off, alternated so that the shared machine's noise hits both alike;
    # one key sends everything, so a throttle that limited a key would show as 429s.
    unthrottled = {**env, "DJANGO_SETTINGS_MODULE": "benchmarks.unthrottled_settings"}
    results: dict[str, list] = {"on": [], "off": []}
    for _ in range(2):
        for name, settings_env in (("on", env), ("off", unthrottled)):
            with gunicorn(workers=WORKERS, env=settings_env) as port:
                # First exposures for every subject (not measured), then returning subjects.
                closed_loop(port=port, requests=requests(subjects), concurrency=CONCURRENCY)
                results[name].append(closed_loop(port=port, requests=measured, concurrency=CONCURRENCY))
    failed = [result for runs in results.values() for result in runs if result.errors or not result.latencies]
    if failed:
        errors = [error for result in failed for error in result.errors]
        return [Row("assignment endpoint", f"failed: {len(errors)} errors, e.g. {errors[:3]}", passed=False)]

    def figures(name: str) -> tuple[float, float, float]:
        runs = results[name]
        return (
            statistics.median(result.requests_per_second for result in runs),
            statistics.median(result.percentile_ms(0.50) for result in runs),
            statistics.median(result.percentile_ms(0.99) for result in runs),
        )

    rps, p50, p99 = figures("on")
    off_rps, off_p50, off_p99 = figures("off")
    runs = len(results["on"])
    return [
        Row(
            benchmark=f"POST /api/v1/assignments, returning subjects, {total:,} requests × {runs} runs, one key, "
            f"concurrency {CONCURRENCY}, gunicorn {WORKERS} sync workers, load {_load_average()}; "
            "peer: throttling off",
            ours=f"{rps:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms, no 429",
            peer=f"{off_rps:,.0f} req/s, p50 {off_p50:.1f} ms, p99 {off_p99:.1f} ms",
            ratio=f"{rps / off_rps:.2f}× the throughput",
            target="≥ 1,000 req/s, p99 ≤ 20 ms",
            passed=rps >= 1000 and p99 <= 20,
        )
    ]


def _load_average() -> str:
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def run(quick: bool) -> list[Row]:
    return [_in_process(quick), *_endpoint(quick)]
