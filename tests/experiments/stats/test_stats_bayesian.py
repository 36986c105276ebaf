"""The Bayesian engine: equal to gbstats 0.8.0, calibrated, and safe on bad input."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from scipy import integrate, stats

from benchmarks.gbstats_peer import GbstatsUnavailable, run_gbstats
from experiments.stats import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    analyze,
    bayesian_compare,
    bayesian_report,
    compare,
)
from experiments.stats.bayesian import expected_gain_and_loss, gaussian_moments, gbstats_theta

from .gbstats_cases import REFERENCE, REFERENCE_SEED, gbstats_cases
from .stats_testkit import cuped_statistic, normal_sample_statistics

RELATIVE_TOLERANCE = 1e-6


def _statistic(kind: str, s: dict):
    if kind == "proportion":
        return ProportionStatistic(**s)
    if kind == "mean":
        return SampleMeanStatistic(**s)
    if kind == "ratio":
        return RatioStatistic(**s)
    return RegressionAdjustedStatistic(**s)


def _ours(case: dict):
    comparison = bayesian_compare(
        _statistic(case["kind"], case["control"]),
        _statistic(case["kind"], case["treatment"]),
        prior=case["prior"],
        alpha=case["alpha"],
        higher_is_better=not case["inverse"],
    )
    return comparison.relative if case["difference_type"] == "relative" else comparison.absolute


def _assert_equal_to_gbstats(case: dict, theirs: dict) -> None:
    assert theirs["error_message"] is None
    ours = _ours(case)
    scale = theirs["uplift_stddev"]

    def close(a: float, b: float) -> bool:
        return math.isclose(a, b, rel_tol=RELATIVE_TOLERANCE, abs_tol=RELATIVE_TOLERANCE * scale)

    assert close(ours.estimate, theirs["expected"]), (case, ours, theirs)
    assert close(ours.standard_error, theirs["uplift_stddev"])
    assert close(ours.ci[0], theirs["ci"][0]) and close(ours.ci[1], theirs["ci"][1])
    assert math.isclose(ours.chance_to_win, theirs["chance_to_win"], abs_tol=1e-9)
    assert close(ours.risk[0], theirs["risk"][0]) and close(ours.risk[1], theirs["risk"][1])


def _comparable(case: dict) -> bool:
    # The relative CUPED lift is the engine's own estimator (tested below).
    return not (case["kind"] == "cuped" and case["difference_type"] == "relative")


RECORDED = json.loads(REFERENCE.read_text())


def test_the_recorded_reference_was_made_by_gbstats_0_8_0_on_these_cases():
    assert RECORDED["provenance"]["versions"]["gbstats"] == "0.8.0"
    assert RECORDED["cases"] == gbstats_cases(REFERENCE_SEED)


@pytest.mark.parametrize(
    "index", [i for i, case in enumerate(RECORDED["cases"]) if _comparable(case)]
)
def test_equal_to_recorded_gbstats_values(index):
    _assert_equal_to_gbstats(RECORDED["cases"][index], RECORDED["results"][index])


def test_equal_to_gbstats_run_live_in_a_throwaway_environment():
    """gbstats 0.8.0 installed with pip into a cache folder (not a project
    dependency) and run in a subprocess on fresh cases."""
    cases = [case for case in gbstats_cases(seed=7, per_kind=4) if _comparable(case)]
    try:
        answer = run_gbstats({"cases": cases})
    except GbstatsUnavailable as error:
        if os.environ.get("REQUIRE_SERVICES") == "1":
            pytest.fail(f"REQUIRE_SERVICES=1 but gbstats could not be installed: {error}")
        pytest.skip(str(error))
    assert answer["versions"]["gbstats"] == "0.8.0"
    for case, theirs in zip(cases, answer["results"], strict=True):
        _assert_equal_to_gbstats(case, theirs)


def test_cuped_uses_gbstats_slope_over_both_arms_pooled():
    rng = np.random.default_rng(3)
    x_c, x_t = rng.gamma(2, 10, 400), rng.gamma(2, 10, 500)
    y_c, y_t = 0.7 * x_c + rng.normal(0, 5, 400), 0.7 * x_t + 3 + rng.normal(0, 5, 500)
    control, treatment = cuped_statistic(y_c, x_c), cuped_statistic(y_t, x_t)
    x, y = np.concatenate([x_c, x_t]), np.concatenate([y_c, y_t])
    assert gbstats_theta(control, treatment) == pytest.approx(
        np.cov(y, x)[0, 1] / np.var(x, ddof=1)
    )


def test_relative_cuped_credible_interval_is_the_frequentist_normal_interval_under_a_flat_prior():
    rng = np.random.default_rng(4)
    x_c, x_t = rng.gamma(2, 10, 3000), rng.gamma(2, 10, 3000)
    control = cuped_statistic(0.6 * x_c + rng.gamma(2, 5, 3000), x_c)
    treatment = cuped_statistic(0.6 * x_t + 1.05 * rng.gamma(2, 5, 3000), x_t)
    bayesian = bayesian_compare(control, treatment, alpha=0.1)
    frequentist = compare(control, treatment, alpha=0.1)
    z = stats.norm.isf(0.05)
    se = frequentist.relative.standard_error
    assert bayesian.relative.estimate == pytest.approx(frequentist.relative.estimate, rel=1e-12)
    assert bayesian.relative.standard_error == pytest.approx(se, rel=1e-12)
    assert bayesian.relative.ci[0] == pytest.approx(
        frequentist.relative.estimate - z * se, rel=1e-12
    )
    assert bayesian.relative.ci[1] == pytest.approx(
        frequentist.relative.estimate + z * se, rel=1e-12
    )


def test_chance_to_win_is_one_sided_so_significance_needs_more_than_97_5_percent():
    # z = 1.8: chance to win Φ(1.8) = 96.4 %, above 95 % but the two-sided
    # 95 % interval still contains 0, so it is not significant (PostHog #72503).
    control = SampleMeanStatistic(n=10_000, sum=10_000.0, sum_squares=2 * 10_000.0)
    se_each = math.sqrt(1.0 / 10_000)
    shift = 1.8 * math.sqrt(2) * se_each
    treatment = SampleMeanStatistic(
        n=10_000, sum=10_000.0 * (1 + shift), sum_squares=10_000 * (1 + (1 + shift) ** 2)
    )
    result = bayesian_compare(control, treatment)
    assert 0.95 < result.absolute.chance_to_win < 0.975
    assert result.absolute.ci[0] < 0 < result.absolute.ci[1]
    assert result.to_dict()["chance_to_win_threshold"] == 0.975
    assert not result.significant


@pytest.mark.parametrize("z", [-40.0, -12.0, -3.0, -0.5, 0.0, 0.7, 5.0, 30.0])
def test_risk_is_the_expected_loss_without_cancellation(z):
    sd = 0.37
    mean = z * sd

    def integral(sign: float) -> float:
        # E[max(sign·X, 0)] by quadrature over the normal density, around the mode.
        def density(x):
            return max(sign * x, 0.0) * stats.norm.pdf(x, mean, sd)

        lower, upper = (0.0, mean + 50 * sd) if sign > 0 else (mean - 50 * sd, 0.0)
        if upper <= lower:
            return 0.0
        return integrate.quad(
            density, lower, upper, points=[mean], epsabs=0, epsrel=1e-12, limit=500
        )[0]

    gain, loss = (float(v[0]) for v in expected_gain_and_loss(np.array([mean]), np.array([sd])))
    assert gain == pytest.approx(integral(1.0), rel=1e-7, abs=1e-300)
    assert loss == pytest.approx(integral(-1.0), rel=1e-7, abs=1e-300)


def test_a_proper_prior_shrinks_towards_its_mean_and_a_vague_one_is_the_flat_prior():
    control = ProportionStatistic(n=2000, successes=160)
    treatment = ProportionStatistic(n=2000, successes=200)
    flat = bayesian_compare(control, treatment)
    tight = bayesian_compare(control, treatment, prior={"mean": 0.0, "variance": 0.0001})
    vague = bayesian_compare(control, treatment, prior={"mean": 0.0, "variance": 1e12})
    assert 0 < tight.relative.estimate < flat.relative.estimate
    assert tight.relative.standard_error < flat.relative.standard_error
    assert vague.relative.estimate == pytest.approx(flat.relative.estimate, rel=1e-9)
    assert vague.chance_to_win == pytest.approx(flat.chance_to_win, rel=1e-9)


def test_lower_is_better_swaps_chance_to_win_and_risk():
    control = ProportionStatistic(n=5000, successes=150)
    treatment = ProportionStatistic(n=5000, successes=120)
    higher = bayesian_compare(control, treatment)
    lower = bayesian_compare(control, treatment, higher_is_better=False)
    assert lower.chance_to_win == pytest.approx(1 - higher.chance_to_win, abs=1e-12)
    assert lower.risk == pytest.approx(higher.risk[::-1])


@pytest.mark.parametrize(
    ("prior", "message"),
    [
        ({"mean": 0.0, "variance": 0.0}, "prior variance must be positive"),
        ({"mean": 0.0, "variance": -1.0}, "prior variance must be positive"),
        ({"mean": float("nan"), "variance": 1.0}, "prior mean must be finite"),
        ({"mean": 0.0}, "prior must have exactly the keys"),
        ({"mean": 0.0, "variance": "x"}, "prior variance must be a number"),
        (0.1, "prior must be None or"),
    ],
)
def test_bad_prior_is_a_value_error_naming_the_prior(prior, message):
    control = ProportionStatistic(n=100, successes=10)
    with pytest.raises(ValueError, match=message):
        bayesian_compare(control, control, prior=prior)


def _frame(seed: int = 1, n: int = 4000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "arm": rng.choice(["control", "b", "c"], n),
            "platform": rng.choice(["android", "ios", "web"], n),
            "pre_gmv": rng.gamma(1.5, 80.0, n),
        }
    )
    df["gmv"] = 0.5 * df["pre_gmv"] + rng.gamma(1.2, 60.0, n)
    df["orders"] = rng.poisson(1.1, n)
    df["converted"] = (rng.random(n) < 0.1).astype(int)
    df["opted_out"] = (rng.random(n) < 0.04).astype(int)
    return df


def test_analyze_with_the_bayesian_engine_is_strict_json_with_segments():
    report = analyze(
        _frame(),
        control="control",
        weights={"control": 1, "b": 1, "c": 1},
        metrics={
            "converted": "proportion",
            "gmv": "mean",
            "gmv/orders": "ratio",
            "opted_out": "proportion",
        },
        covariates={"gmv": "pre_gmv"},
        segment_by="platform",
        engine="bayesian",
        prior={"mean": 0.0, "variance": 0.05},
        lower_is_better=["opted_out"],
    )
    json.dumps(report, allow_nan=False)
    assert report["engine"] == "bayesian" and report["prior"] == {"mean": 0.0, "variance": 0.05}
    assert len(report["comparisons"]) == 8
    first = report["comparisons"][0]
    assert set(first["risk"]) == {"control", "treatment"} and 0 <= first["chance_to_win"] <= 1
    opted = [c for c in report["comparisons"] if c["metric"] == "opted_out"]
    assert all(not c["higher_is_better"] for c in opted)
    assert len(report["segments"]) == 3 and report["segments"][0]["comparisons"]
    assert report["heterogeneity"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"engine": "bayes"}, "engine must be one of"),
        ({"engine": "bayesian", "prior": {"mean": 0, "variance": 0}}, "prior variance"),
        ({"prior": {"mean": 0, "variance": 1}}, "prior: a prior is only used"),
        ({"engine": "bayesian", "lower_is_better": ["nope"]}, "lower_is_better"),
    ],
)
def test_analyze_rejects_bad_engine_arguments_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        analyze(
            _frame(),
            control="control",
            weights={"control": 1, "b": 1, "c": 1},
            metrics={"converted": "proportion"},
            **kwargs,
        )


def test_bayesian_report_equals_the_pairwise_comparisons():
    df = _frame(seed=5)
    statistics = {
        arm: {"gmv": SampleMeanStatistic(n=len(g), sum=g.gmv.sum(), sum_squares=(g.gmv**2).sum())}
        for arm, g in df.groupby("arm")
    }
    report = bayesian_report(statistics, control="control", weights={"control": 1, "b": 1, "c": 1})
    for comparison in report.comparisons:
        alone = bayesian_compare(statistics["control"]["gmv"], statistics[comparison.arm]["gmv"])
        assert comparison.relative.ci == pytest.approx(alone.relative.ci, rel=1e-12)


def _coverage(pairs, true_absolute, true_relative, alpha=0.05):
    hits_absolute = hits_relative = 0
    for control, treatment in pairs:
        moments = gaussian_moments(control, treatment)
        z = stats.norm.isf(alpha / 2)
        se, rse = math.sqrt(moments.variance), math.sqrt(moments.relative_variance)
        hits_absolute += abs(moments.estimate - true_absolute) <= z * se
        hits_relative += abs(moments.relative_estimate - true_relative) <= z * rse
    return hits_absolute / len(pairs), hits_relative / len(pairs)


def test_flat_prior_credible_intervals_cover_95_percent():
    """Seeded: 20,000 simulated experiments per metric type; 95 % ± 1 %
    (the long run is in benchmarks/bench_stats.py)."""
    rng = np.random.default_rng(2026)
    size = 20_000
    c_sum, c_sq = normal_sample_statistics(rng, size=size, n=400, mean=10.0, sd=3.0)
    t_sum, t_sq = normal_sample_statistics(rng, size=size, n=400, mean=10.5, sd=3.0)
    means = [
        (
            SampleMeanStatistic(n=400, sum=a, sum_squares=b),
            SampleMeanStatistic(n=400, sum=c, sum_squares=d),
        )
        for a, b, c, d in zip(c_sum, c_sq, t_sum, t_sq, strict=True)
    ]
    c_hits, t_hits = rng.binomial(3000, 0.10, size), rng.binomial(3000, 0.12, size)
    proportions = [
        (
            ProportionStatistic(n=3000, successes=int(a)),
            ProportionStatistic(n=3000, successes=int(b)),
        )
        for a, b in zip(c_hits, t_hits, strict=True)
    ]
    for pairs, absolute, relative in ((means, 0.5, 0.05), (proportions, 0.02, 0.2)):
        covered_absolute, covered_relative = _coverage(pairs, absolute, relative)
        assert abs(covered_absolute - 0.95) < 0.01
        assert abs(covered_relative - 0.95) < 0.01


def test_aa_false_positive_rate_of_the_bayesian_significance_is_alpha():
    rng = np.random.default_rng(77)
    size = 20_000
    c_sum, c_sq = normal_sample_statistics(rng, size=size, n=300, mean=5.0, sd=2.0)
    t_sum, t_sq = normal_sample_statistics(rng, size=size, n=300, mean=5.0, sd=2.0)
    pairs = [
        gaussian_moments(
            SampleMeanStatistic(n=300, sum=a, sum_squares=b),
            SampleMeanStatistic(n=300, sum=c, sum_squares=d),
        )
        for a, b, c, d in zip(c_sum, c_sq, t_sum, t_sq, strict=True)
    ]
    from experiments.stats.bayesian import bayesian_compare_moments

    significant = np.mean([c.significant for c in bayesian_compare_moments(pairs)])
    assert abs(significant - 0.05) < 3 * math.sqrt(0.05 * 0.95 / size)


def test_a_segment_whose_relative_lift_is_undefined_is_skipped_under_a_proper_prior():
    # In the "tiny" segment the treatment has no conversions at all: its
    # relative lift has no variance, so a prior on it cannot apply there.
    overall = {
        "control": {"converted": ProportionStatistic(n=1000, successes=100)},
        "b": {"converted": ProportionStatistic(n=1000, successes=90)},
    }
    segments = {
        "tiny": {
            "control": {"converted": ProportionStatistic(n=50, successes=5)},
            "b": {"converted": ProportionStatistic(n=50, successes=0)},
        },
        "big": overall,
    }
    report = bayesian_report(
        overall,
        control="control",
        weights={"control": 1, "b": 1},
        prior={"mean": 0.0, "variance": 0.01},
        segments=segments,
    )
    tiny, big = report.segments
    assert tiny.comparisons == () and "prior on the relative effect" in tiny.skipped[0].reason
    assert len(big.comparisons) == 1
