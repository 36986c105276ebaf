"""Seeded comparison cases for the Bayesian engine against gbstats, and their engine values.

``gbstats_cases(seed)`` builds sufficient statistics of every kind gbstats
0.8.0 models (proportions, means, ratios, CUPED), absolute and relative,
with the flat and a proper prior, higher and lower is better. The recorded
reference file ``data/gbstats_0_8_0_reference.json`` holds gbstats' answers
for ``gbstats_cases(20261201)``; regenerate it with::

    python -m venv /tmp/gbstats && /tmp/gbstats/bin/pip install gbstats==0.8.0
    .venv/bin/python -m tests.experiments.stats.gbstats_cases /tmp/gbstats/bin/python
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np

REFERENCE = Path(__file__).with_name("data") / "gbstats_0_8_0_reference.json"
REFERENCE_SEED = 20261201


def _arm(rng: np.random.Generator, kind: str, n: int, shift: float) -> dict:
    if kind == "proportion":
        return {"n": n, "successes": int(rng.binomial(n, 0.08 * (1 + shift)))}
    covariate = rng.gamma(1.5, 40.0, n)
    metric = np.maximum(0.0, 0.6 * covariate + rng.gamma(1.2, 50.0, n) * (1 + shift))
    if kind == "mean":
        return {"n": n, "sum": float(metric.sum()), "sum_squares": float((metric**2).sum())}
    if kind == "cuped":
        return {
            "n": n,
            "sum": float(metric.sum()),
            "sum_squares": float((metric**2).sum()),
            "covariate_sum": float(covariate.sum()),
            "covariate_sum_squares": float((covariate**2).sum()),
            "cross_product": float((metric * covariate).sum()),
        }
    orders = rng.poisson(1.3, n).astype(float)
    gmv = np.where(orders > 0, rng.gamma(2.0 * np.maximum(orders, 1), 60.0 * (1 + shift)), 0.0)
    return {
        "n": n,
        "numerator_sum": float(gmv.sum()),
        "numerator_sum_squares": float((gmv**2).sum()),
        "denominator_sum": float(orders.sum()),
        "denominator_sum_squares": float((orders**2).sum()),
        "cross_product": float((gmv * orders).sum()),
    }


def gbstats_cases(seed: int, per_kind: int = 6) -> list[dict]:
    rng = np.random.default_rng(seed)
    cases = []
    for kind in ("proportion", "mean", "ratio", "cuped"):
        for index in range(per_kind):
            n_control, n_treatment = int(rng.integers(200, 5000)), int(rng.integers(200, 5000))
            shift = float(rng.choice([-0.05, 0.0, 0.02, 0.1]))
            prior = (
                None
                if index % 2 == 0
                else {
                    "mean": float(rng.normal(0, 0.02)),
                    "variance": float(rng.choice([0.0004, 0.01, 0.3])),
                }
            )
            for difference_type in ("relative", "absolute"):
                cases.append(
                    {
                        "kind": kind,
                        "control": _arm(rng, kind, n_control, 0.0),
                        "treatment": _arm(rng, kind, n_treatment, shift),
                        "difference_type": difference_type,
                        "prior": prior,
                        "inverse": index % 3 == 2,
                        "alpha": 0.05 if index % 4 else 0.1,
                    }
                )
    return cases


def _record(gbstats_python: str) -> None:
    cases = gbstats_cases(REFERENCE_SEED)
    runner = Path(__file__).resolve().parents[3] / "benchmarks" / "gbstats_runner.py"
    completed = subprocess.run(
        [gbstats_python, str(runner)],
        input=json.dumps({"cases": cases}),
        capture_output=True,
        text=True,
        check=True,
    )
    answer = json.loads(completed.stdout)
    REFERENCE.write_text(
        json.dumps(
            {
                "provenance": {
                    "what": "gbstats EffectBayesianABTest(...).compute_result() for "
                    f"tests.experiments.stats.gbstats_cases.gbstats_cases({REFERENCE_SEED})",
                    "generated": date.today().isoformat(),
                    "command": "python -m tests.experiments.stats.gbstats_cases "
                    "<python of a venv with `pip install gbstats==0.8.0`>",
                    "versions": answer["versions"],
                },
                "cases": cases,
                "results": answer["results"],
            },
            indent=1,
        )
        + "\n"
    )


if __name__ == "__main__":
    _record(sys.argv[1])
