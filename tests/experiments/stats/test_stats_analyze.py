"""``analyze``: per-subject rows → sufficient statistics → the report (public contract)."""

import json

import numpy as np
import pandas as pd
import pytest

from experiments.stats import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    analyze,
    analyze_statistics,
    statistics_from_frame,
)

from .stats_testkit import cuped_statistic, mean_statistic, proportion_statistic, ratio_statistic


def marketplace_rows(seed=1, n=3000, arms=("control", "b")):
    rng = np.random.default_rng(seed)
    arm = rng.choice(list(arms), n)
    pre_gmv = rng.gamma(1.5, 80_000.0, n)
    gmv = np.where(rng.random(n) < 0.3, 0.5 * pre_gmv + rng.gamma(1.5, 60_000.0, n), 0.0)
    gmv = gmv * np.where(arm == "b", 1.05, 1.0)
    orders = np.where(gmv > 0, rng.poisson(1.0, n) + 1, 0)
    return pd.DataFrame(
        {
            "arm": arm,
            "converted": gmv > 0,
            "opted_out": (rng.random(n) < np.where(arm == "b", 0.04, 0.03)).astype(int),
            "gmv": gmv,
            "pre_gmv": pre_gmv,
            "orders": orders,
            "platform": rng.choice(["android", "ios", "web"], n),
        }
    )


def test_the_documented_example_call():
    df = marketplace_rows()
    report = analyze(
        df,
        control="control",
        weights={"control": 1, "b": 1},
        metrics={"converted": "proportion", "gmv": "mean"},
        covariates={"gmv": "pre_gmv"},
    )
    json.dumps(report, allow_nan=False)
    assert report["arms"] == df["arm"].value_counts().to_dict()
    assert [(c["arm"], c["metric"], c["cuped"]) for c in report["comparisons"]] == [
        ("b", "converted", False),
        ("b", "gmv", True),
    ]
    assert (
        report["comparisons"][1]["p_value_adjusted"]
        >= report["comparisons"][1]["absolute"]["p_value"]
    )


def test_analyze_equals_the_core_on_hand_built_statistics():
    df = marketplace_rows(seed=2)
    report = analyze(
        df,
        control="control",
        weights={"control": 1, "b": 1},
        metrics={
            "converted": "proportion",
            "opted_out": "proportion",
            "gmv": "mean",
            "gmv/orders": "ratio",
            "orders": "mean",
        },
        covariates={"gmv": "pre_gmv"},
        alpha=0.1,
    )
    statistics = {}
    for arm, rows in df.groupby("arm"):
        statistics[arm] = {
            "converted": proportion_statistic(rows["converted"]),
            "opted_out": proportion_statistic(rows["opted_out"]),
            "gmv": cuped_statistic(rows["gmv"], rows["pre_gmv"]),
            "gmv/orders": ratio_statistic(rows["gmv"], rows["orders"]),
            "orders": mean_statistic(rows["orders"]),
        }
    expected = analyze_statistics(
        statistics, control="control", weights={"control": 1, "b": 1}, alpha=0.1
    ).to_dict()
    assert report["arms"] == expected["arms"]
    for ours, theirs in zip(report["comparisons"], expected["comparisons"], strict=True):
        assert ours["metric"] == theirs["metric"]
        assert ours["absolute"]["estimate"] == pytest.approx(
            theirs["absolute"]["estimate"], rel=1e-9
        )
        assert ours["absolute"]["ci"] == pytest.approx(theirs["absolute"]["ci"], rel=1e-9)
        assert ours["p_value_adjusted"] == pytest.approx(theirs["p_value_adjusted"], rel=1e-9)


def test_statistics_from_frame_builds_the_right_types_and_segments():
    df = marketplace_rows(seed=3)
    statistics, segments = statistics_from_frame(
        df,
        metrics={"converted": "proportion", "gmv": "mean", "orders": "mean", "gmv/orders": "ratio"},
        covariates={"gmv": "pre_gmv"},
        segment_by="platform",
    )
    control = statistics["control"]
    assert isinstance(control["converted"], ProportionStatistic)
    assert isinstance(control["gmv"], RegressionAdjustedStatistic)
    assert isinstance(control["orders"], SampleMeanStatistic)
    assert isinstance(control["gmv/orders"], RatioStatistic)
    rows = df[df["arm"] == "control"]
    assert control["gmv"].cross_product == pytest.approx(
        float((rows["gmv"] * rows["pre_gmv"]).sum()), rel=1e-12
    )
    assert sorted(segments) == ["android", "ios", "web"]
    ios = df[(df["platform"] == "ios") & (df["arm"] == "b")]
    assert segments["ios"]["b"]["converted"] == ProportionStatistic(
        n=len(ios), successes=int(ios["converted"].sum())
    )


def test_segments_appear_in_the_report():
    df = marketplace_rows(seed=4)
    report = analyze(
        df,
        control="control",
        weights={"control": 1, "b": 1},
        metrics={"converted": "proportion"},
        segment_by="platform",
    )
    assert [s["segment"] for s in report["segments"]] == ["android", "ios", "web"]
    assert sum(s["arms"]["b"] for s in report["segments"]) == report["arms"]["b"]


def test_capping_uses_the_buyers_pooled_percentile_and_caps_the_covariate_alike():
    """The pipeline's basis (docs/metrics.md): the positive values, all arms pooled; the covariate
    at the same value."""
    df = marketplace_rows(seed=5)
    assert (df["gmv"] == 0).mean() > 0.2  # non-buyers, who would pull a percentile over everyone down
    cap = float(np.percentile(df.loc[df["gmv"] > 0, "gmv"], 95))
    covariate_cap = cap
    report = analyze(
        df,
        control="control",
        weights={"control": 1, "b": 1},
        metrics={"gmv": "mean"},
        covariates={"gmv": "pre_gmv"},
        caps={"gmv": 95},
    )
    comparison = report["comparisons"][0]
    assert comparison["cap"] == pytest.approx(cap)
    capped = df.assign(
        gmv=np.minimum(df["gmv"], cap), pre_gmv=np.minimum(df["pre_gmv"], covariate_cap)
    )
    uncapped = analyze(
        capped,
        control="control",
        weights={"control": 1, "b": 1},
        metrics={"gmv": "mean"},
        covariates={"gmv": "pre_gmv"},
    )
    assert comparison["absolute"] == pytest.approx(uncapped["comparisons"][0]["absolute"])
    assert comparison["treatment_mean"] <= df.loc[df["arm"] == "b", "gmv"].mean()


def test_a_capped_metric_without_positive_values_is_not_capped():
    df = marketplace_rows(seed=5)
    df["spend"] = np.where(df.index % 3 == 0, 0.0, -1.0)  # no positive value at all
    report = analyze(
        df, control="control", weights={"control": 1, "b": 1}, metrics={"spend": "mean"}, caps={"spend": 99}
    )
    assert report["comparisons"][0]["cap"] is None


def bad(df, **changes):
    arguments = {
        "control": "control",
        "weights": {"control": 1, "b": 1},
        "metrics": {"gmv": "mean"},
    } | changes
    return analyze(df, **arguments)


@pytest.mark.parametrize(
    ("edit", "changes", "message"),
    [
        (lambda d: d.assign(gmv=d["gmv"].where(d.index != 7, np.nan)), {}, "1 missing or infinite"),
        (lambda d: d.assign(gmv=d["gmv"].where(d.index > 2, np.inf)), {}, "3 missing or infinite"),
        (lambda d: d.assign(gmv=d["gmv"].astype(str)), {}, "not numeric"),
        (lambda d: d.drop(columns="arm"), {}, "no 'arm' column"),
        (lambda d: d.iloc[0:0], {}, "no rows"),
        (lambda d: d, {"metrics": {"revenue": "mean"}}, "column 'revenue' is not in the data"),
        (lambda d: d, {"metrics": {"gmv": "median"}}, "type must be one of"),
        (lambda d: d, {"metrics": {}}, "no metrics"),
        (lambda d: d, {"metrics": {"gmv": "proportion"}}, "must be 0/1"),
        (lambda d: d, {"metrics": {"gmv": "ratio"}}, "numerator/denominator"),
        (
            lambda d: d,
            {"metrics": {"gmv/orders": "ratio"}, "covariates": {"gmv/orders": "pre_gmv"}},
            "CUPED",
        ),
        (lambda d: d, {"covariates": {"orders": "pre_gmv"}}, "not in metrics"),
        (lambda d: d, {"caps": {"gmv": 0}}, "percentile"),
        (lambda d: d, {"caps": {"gmv": 101}}, "percentile"),
        (
            lambda d: d,
            {"metrics": {"converted": "proportion"}, "caps": {"converted": 99}},
            "only mean metrics",
        ),
        (lambda d: d, {"control": "a"}, "'a' is not among the weighted arms"),
        (
            lambda d: d,
            {"weights": {"control": 1}},
            r"arms \['b'\] have statistics but no configured weight",
        ),
        (lambda d: d, {"weights": {"control": 0, "b": 0}}, "sum to a positive"),
        (lambda d: d, {"weights": {"control": 1, "b": -1}}, "negative"),
        (lambda d: d[d["arm"] == "b"], {}, "control arm 'control' is missing"),
        (
            lambda d: d[(d["arm"] == "b") | (d.index == d.index[d["arm"] == "control"][0])],
            {},
            "1 subject",
        ),
        (lambda d: d.assign(gmv=1.0), {}, "zero variance"),
        (lambda d: d.assign(arm=d["arm"].where(d.index != 3, None)), {}, "'arm' has 1 missing"),
        (lambda d: d, {"segment_by": "nope"}, "segment column 'nope'"),
        (lambda d: d, {"alpha": 1.0}, "alpha"),
    ],
)
def test_bad_input_is_a_clear_value_error(edit, changes, message):
    with pytest.raises(ValueError, match=message):
        bad(edit(marketplace_rows(seed=6, n=400)), **changes)


def test_an_arm_with_weight_but_no_rows_is_an_error_with_the_sample_ratio():
    df = marketplace_rows(seed=7, n=400)
    with pytest.raises(ValueError, match=r"arms \['c'\] have no subjects \(sample-ratio mismatch"):
        bad(df, weights={"control": 1, "b": 1, "c": 1})


def test_boolean_and_integer_arm_labels_work():
    df = marketplace_rows(seed=8, n=500)
    df["arm"] = np.where(df["arm"] == "control", 0, 1)
    report = analyze(df, control="0", weights={"0": 1, "1": 1}, metrics={"converted": "proportion"})
    assert set(report["arms"]) == {"0", "1"}
