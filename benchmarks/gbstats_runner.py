"""Runs GrowthBook's gbstats 0.8.0 on cases read as JSON from stdin (the peer of the Bayesian engine).

This script runs *inside* a throwaway environment that has gbstats (see
``benchmarks/gbstats_peer.py``); it imports nothing from PrivacyLab. Input:
``{"cases": [case, ...], "repeats": R}``; each case is::

    {"kind": "proportion" | "mean" | "ratio" | "cuped",
     "control": {...}, "treatment": {...},          # sufficient statistics
     "difference_type": "relative" | "absolute",
     "prior": null | {"mean": m, "variance": v},    # on the relative effect
     "inverse": false, "alpha": 0.05}

Output: ``{"results": [...], "seconds": [...], "versions": {...}}``, one
result per case (gbstats' ``BayesianTestResult`` fields) and, with
``repeats`` > 0, the wall time of computing every case that many times.
"""

import json
import sys
import time
from importlib import metadata


def _statistic(kind, s):
    from gbstats.models.statistics import (
        ProportionStatistic,
        RatioStatistic,
        RegressionAdjustedStatistic,
        SampleMeanStatistic,
    )

    if kind == "proportion":
        return ProportionStatistic(n=s["n"], sum=s["successes"])
    if kind == "mean":
        return SampleMeanStatistic(n=s["n"], sum=s["sum"], sum_squares=s["sum_squares"])
    if kind == "ratio":
        return RatioStatistic(
            n=s["n"],
            m_statistic=SampleMeanStatistic(
                n=s["n"], sum=s["numerator_sum"], sum_squares=s["numerator_sum_squares"]
            ),
            d_statistic=SampleMeanStatistic(
                n=s["n"], sum=s["denominator_sum"], sum_squares=s["denominator_sum_squares"]
            ),
            m_d_sum_of_products=s["cross_product"],
        )
    return RegressionAdjustedStatistic(
        n=s["n"],
        post_statistic=SampleMeanStatistic(n=s["n"], sum=s["sum"], sum_squares=s["sum_squares"]),
        pre_statistic=SampleMeanStatistic(
            n=s["n"], sum=s["covariate_sum"], sum_squares=s["covariate_sum_squares"]
        ),
        post_pre_sum_of_products=s["cross_product"],
        theta=0,
    )


def _run(case):
    from gbstats.bayesian.tests import EffectBayesianABTest, EffectBayesianConfig, GaussianPrior

    prior = case.get("prior")
    config = EffectBayesianConfig(
        difference_type=case.get("difference_type", "relative"),
        inverse=case.get("inverse", False),
        alpha=case.get("alpha", 0.05),
        prior_effect=GaussianPrior()
        if prior is None
        else GaussianPrior(mean=prior["mean"], variance=prior["variance"], proper=True),
    )
    result = EffectBayesianABTest(
        _statistic(case["kind"], case["control"]),
        _statistic(case["kind"], case["treatment"]),
        config,
    ).compute_result()
    return {
        "expected": float(result.expected),
        "ci": [float(v) for v in result.ci],
        "uplift_mean": float(result.uplift.mean),
        "uplift_stddev": float(result.uplift.stddev),
        "chance_to_win": float(result.chance_to_win),
        "risk": [float(v) for v in result.risk],
        "risk_type": result.risk_type,
        "error_message": result.error_message,
    }


def main():
    request = json.load(sys.stdin)
    cases = request["cases"]
    results = [_run(case) for case in cases]
    seconds = []
    for _ in range(int(request.get("repeats", 0))):
        started = time.perf_counter()
        for case in cases:
            _run(case)
        seconds.append(time.perf_counter() - started)
    versions = {name: metadata.version(name) for name in ("gbstats", "numpy", "scipy", "pydantic")}
    json.dump({"results": results, "seconds": seconds, "versions": versions}, sys.stdout)


if __name__ == "__main__":
    main()
