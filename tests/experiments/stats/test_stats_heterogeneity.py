"""Treatment × segment interaction tests and the effect by days since first exposure."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from experiments.stats import (
    SampleMeanStatistic,
    analyze,
    analyze_statistics,
    effect_by_exposure_day,
    heterogeneity_tests,
    interaction_test,
)
from experiments.stats.frame import statistics_from_frame

from .stats_testkit import binomial_error, normal_sample_statistics


def _rows(seed: int, n: int = 6000, interaction: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "arm": rng.choice(["control", "b"], n),
            "platform": rng.choice(["android", "ios", "web"], n, p=[0.5, 0.3, 0.2]),
        }
    )
    treated = (df.arm == "b").to_numpy()
    ios = (df.platform == "ios").to_numpy()
    noise = rng.normal(0, 1 + 0.5 * ios, n)
    df["gmv"] = 10 + 2 * ios + treated * (0.2 + interaction * ios) + noise
    return df


def test_interaction_test_equals_the_hc2_wald_test_of_the_interacted_ols():
    df = _rows(1, interaction=0.3)
    statistics, segments = statistics_from_frame(df, metrics={"gmv": "mean"}, segment_by="platform")
    report = analyze_statistics(
        statistics, control="control", weights={"control": 1, "b": 1}, segments=segments
    )
    (result,) = heterogeneity_tests(report)
    fit = smf.ols("gmv ~ C(platform) * C(arm, Treatment('control'))", data=df).fit(cov_type="HC2")
    names = [name for name in fit.params.index if ":" in name]
    wald = fit.wald_test(", ".join(f"{name} = 0" for name in names), use_f=False, scalar=True)
    assert result.q == pytest.approx(float(wald.statistic), rel=1e-9)
    assert result.p_value == pytest.approx(float(wald.pvalue), rel=1e-9)
    assert result.degrees_of_freedom == 2 and result.dimension is None


def test_segments_are_grouped_by_dimension_and_adjusted_with_bh():
    df = _rows(2, interaction=0.0)
    statistics, segments = statistics_from_frame(df, metrics={"gmv": "mean"}, segment_by="platform")
    labelled = {f"platform={k}": v for k, v in segments.items()}
    halves = statistics_from_frame(
        df.assign(half=np.where(np.arange(len(df)) % 2 == 0, "even", "odd")),
        metrics={"gmv": "mean"},
        segment_by="half",
    )[1]
    labelled.update({f"half={k}": v for k, v in halves.items()})
    report = analyze_statistics(
        statistics, control="control", weights={"control": 1, "b": 1}, segments=labelled
    )
    results = heterogeneity_tests(report)
    assert {r.dimension for r in results} == {"platform", "half"}
    assert all(r.p_value_adjusted >= r.p_value for r in results)


def test_interaction_test_false_positive_rate_is_alpha_and_it_detects_a_real_interaction():
    rng = np.random.default_rng(3)
    size = 4000
    rejections = 0
    for _ in range(size):
        effects = [(float(rng.normal(0.2, math.sqrt(v))), v) for v in (0.01, 0.02, 0.04)]
        rejections += interaction_test(effects).p_value < 0.05
    assert abs(rejections / size - 0.05) < 3 * binomial_error(0.05, size)
    assert interaction_test([(0.0, 0.01), (0.5, 0.01)]).p_value < 1e-3


def test_interaction_test_rejects_bad_effects():
    with pytest.raises(ValueError, match="at least two"):
        interaction_test([(0.1, 0.01)])
    with pytest.raises(ValueError, match="positive variance"):
        interaction_test([(0.1, 0.01), (0.2, 0.0)])


def test_analyze_reports_heterogeneity_with_segments():
    report = analyze(
        _rows(4, interaction=0.5),
        control="control",
        weights={"control": 1, "b": 1},
        metrics={"gmv": "mean"},
        segment_by="platform",
    )
    (test,) = report["heterogeneity"]
    assert test["metric"] == "gmv" and test["p_value"] < 0.01


def _daily(rng, days, effects, n=500):
    daily = {}
    for day, effect in zip(days, effects, strict=True):
        arms = {}
        for arm, shift in (("control", 0.0), ("b", effect)):
            s, q = normal_sample_statistics(rng, size=1, n=n, mean=5.0 + shift, sd=2.0)
            arms[arm] = {"gmv": SampleMeanStatistic(n=n, sum=float(s[0]), sum_squares=float(q[0]))}
        daily[day] = arms
    return daily


def test_effect_by_exposure_day_reports_each_day_and_finds_a_novelty_effect():
    rng = np.random.default_rng(5)
    days = list(range(14))
    fading = _daily(rng, days, [1.0 - 0.07 * d for d in days], n=3000)
    result = effect_by_exposure_day(fading, control="control", weights={"control": 1, "b": 1})
    assert result.days == tuple(days)
    assert result.comparisons[0][0].absolute.estimate > result.comparisons[13][0].absolute.estimate
    (trend,) = result.trends
    assert trend.slope < 0 and trend.significant
    assert result.to_dict()["trends"][0]["method"].startswith("weighted least squares")


def test_the_trend_test_is_conservative_when_days_are_correlated():
    """The same subjects on every day: day effects share one subject-level
    effect, the worst case for an independence-assuming test. The bound keeps
    the false-positive rate at most alpha."""
    rng = np.random.default_rng(6)
    size, days, n = 1500, 7, 300
    rejections = 0
    for _ in range(size):
        subject_c, subject_t = rng.normal(0, 2.0, n), rng.normal(0, 2.0, n)
        daily = {}
        for day in range(days):
            arms = {}
            for arm, base in (("control", subject_c), ("b", subject_t)):
                values = 5 + base + rng.normal(0, 0.5, n)
                arms[arm] = {
                    "gmv": SampleMeanStatistic(n=n, sum=values.sum(), sum_squares=(values**2).sum())
                }
            daily[day] = arms
        result = effect_by_exposure_day(daily, control="control", weights={"control": 1, "b": 1})
        rejections += result.trends[0].significant
    assert rejections / size <= 0.05 + 3 * binomial_error(0.05, size)


def test_effect_by_exposure_day_rejects_bad_days():
    rng = np.random.default_rng(7)
    daily = _daily(rng, [0, 1], [0.0, 0.0])
    with pytest.raises(ValueError, match="whole numbers"):
        effect_by_exposure_day(
            {-1: daily[0], 1: daily[1]}, control="control", weights={"control": 1, "b": 1}
        )
    with pytest.raises(ValueError, match="daily is empty"):
        effect_by_exposure_day({}, control="control", weights={"control": 1, "b": 1})
