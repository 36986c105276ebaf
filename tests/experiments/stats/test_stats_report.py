"""The report from sufficient statistics: families, segments, failure policy."""

import json

import numpy as np
import pytest

from experiments.stats import (
    ProportionStatistic,
    SampleMeanStatistic,
    analyze_statistics,
    compare,
)

from .stats_testkit import (
    cuped_statistic,
    mean_statistic,
    multipletests_adjusted,
    proportion_statistic,
    ratio_statistic,
)

WEIGHTS = {"control": 1, "b": 1, "c": 1}


def arm_statistics(rng, n, *, conversion, gmv_shift):
    converted = rng.random(n) < conversion
    pre = rng.gamma(2.0, 50.0, n)
    gmv = 0.6 * pre + rng.gamma(2.0, 40.0, n) + gmv_shift
    orders = rng.poisson(1.3, n).astype(float)
    return {
        "converted": proportion_statistic(converted),
        "gmv": cuped_statistic(gmv, pre),
        "orders": mean_statistic(orders),
        "gmv/orders": ratio_statistic(gmv * (orders > 0), orders),
    }


@pytest.fixture
def statistics():
    rng = np.random.default_rng(2024)
    return {
        "control": arm_statistics(rng, 3000, conversion=0.10, gmv_shift=0.0),
        "b": arm_statistics(rng, 3050, conversion=0.12, gmv_shift=4.0),
        "c": arm_statistics(rng, 2980, conversion=0.10, gmv_shift=0.0),
    }


def test_report_has_the_contract_shape_and_is_strict_json(statistics):
    report = analyze_statistics(statistics, control="control", weights=WEIGHTS).to_dict()
    text = json.dumps(report, allow_nan=False)  # no NaN or inf anywhere
    assert json.loads(text) == report
    assert set(report["srm"]) >= {"chi2", "p_value", "flag"}
    assert report["arms"] == {"control": 3000, "b": 3050, "c": 2980}
    assert len(report["comparisons"]) == 2 * 4
    for comparison in report["comparisons"]:
        assert set(comparison) >= {
            "arm",
            "metric",
            "cuped",
            "control_mean",
            "treatment_mean",
            "absolute",
            "relative",
            "p_value_adjusted",
        }
        for effect in ("absolute", "relative"):
            assert set(comparison[effect]) >= {"estimate", "ci", "p_value"}
            low, high = comparison[effect]["ci"]
            assert low <= comparison[effect]["estimate"] <= high
    assert [(c["arm"], c["metric"]) for c in report["comparisons"]] == [
        (arm, metric)
        for arm in ("b", "c")
        for metric in ("converted", "gmv", "orders", "gmv/orders")
    ]
    assert [c["cuped"] for c in report["comparisons"]][:4] == [False, True, False, False]


def test_each_comparison_equals_the_stand_alone_compare(statistics):
    report = analyze_statistics(statistics, control="control", weights=WEIGHTS, alpha=0.1)
    for comparison in report.comparisons:
        alone = compare(
            statistics["control"][comparison.metric],
            statistics[comparison.arm][comparison.metric],
            alpha=0.1,
        )
        assert comparison.absolute == alone.absolute
        assert comparison.relative == alone.relative


def test_holm_runs_across_every_arm_and_metric(statistics):
    report = analyze_statistics(statistics, control="control", weights=WEIGHTS)
    raw = [c.absolute.p_value for c in report.comparisons]
    expected = multipletests_adjusted(raw, "holm")
    assert [c.p_value_adjusted for c in report.comparisons] == pytest.approx(
        list(expected), rel=1e-12
    )
    assert [c.significant for c in report.comparisons] == [bool(p < 0.05) for p in expected]


def test_segments_get_benjamini_hochberg_across_all_segment_comparisons(statistics):
    rng = np.random.default_rng(7)
    segments = {
        f"platform={name}": {
            arm: arm_statistics(rng, 600, conversion=0.1, gmv_shift=shift)
            for arm, shift in (("control", 0), ("b", 6), ("c", 0))
        }
        for name in ("android", "ios", "web")
    }
    report = analyze_statistics(
        statistics, control="control", weights=WEIGHTS, segments=segments
    ).to_dict()
    assert report["adjustment"] == {"comparisons": "holm", "segments": "benjamini-hochberg"}
    assert [s["segment"] for s in report["segments"]] == list(segments)
    flat = [c for s in report["segments"] for c in s["comparisons"]]
    assert len(flat) == 3 * 2 * 4
    expected = multipletests_adjusted([c["absolute"]["p_value"] for c in flat], "fdr_bh")
    assert [c["p_value_adjusted"] for c in flat] == pytest.approx(list(expected), rel=1e-12)
    for segment in report["segments"]:
        assert segment["srm"]["p_value"] > 0 and segment["skipped"] == []
        assert segment["arms"] == {"control": 600, "b": 600, "c": 600}


def test_thin_segments_are_skipped_with_a_reason_not_fatal(statistics):
    segments = {
        # One control subject, no arm c, and only one metric aggregated.
        "province=papua": {
            "control": {"converted": ProportionStatistic(n=1, successes=0)},
            "b": {"converted": ProportionStatistic(n=2, successes=1)},
        },
        # Nobody converted in control or b: no variance in either arm.
        "province=bali": {
            "control": {"converted": ProportionStatistic(n=40, successes=0)},
            "b": {"converted": ProportionStatistic(n=38, successes=0)},
            "c": {"converted": ProportionStatistic(n=41, successes=2)},
        },
    }
    report = analyze_statistics(
        statistics, control="control", weights=WEIGHTS, segments=segments
    ).to_dict()
    papua, bali = report["segments"]
    reasons = {(s["arm"], s["metric"]): s["reason"] for s in papua["skipped"]}
    assert "control arm has 1 subject" in reasons[("b", "converted")]
    assert reasons[("c", "converted")] == "no data for arm 'c'"
    assert reasons[("b", "gmv")] == "no data for arm 'control'"
    assert len(reasons) == 2 * 4 and papua["comparisons"] == []
    assert papua["arms"] == {"control": 1, "b": 2, "c": 0}
    bali_reasons = {(s["arm"], s["metric"]): s["reason"] for s in bali["skipped"]}
    assert "zero variance in both arms" in bali_reasons[("b", "converted")]
    assert [c["arm"] for c in bali["comparisons"]] == ["c"]
    # Only the comparison that could be made joins the BH family (of size 1).
    assert (
        bali["comparisons"][0]["p_value_adjusted"] == bali["comparisons"][0]["absolute"]["p_value"]
    )
    json.dumps(report, allow_nan=False)


def test_a_segment_with_no_subjects_has_no_srm_and_says_why(statistics):
    report = analyze_statistics(
        statistics, control="control", weights=WEIGHTS, segments={"empty": {}}
    ).to_dict()
    segment = report["segments"][0]
    assert segment["srm"] is None
    assert any("sample-ratio" in s["reason"] for s in segment["skipped"])


def test_srm_is_computed_from_the_subjects_per_arm(statistics):
    report = analyze_statistics(
        statistics, control="control", weights={"control": 2, "b": 1, "c": 1}
    )
    assert report.srm.flag  # 3000 : 3050 : 2980 is far from 2 : 1 : 1
    assert report.srm.expected["control"] == pytest.approx(9030 / 2)


def test_an_empty_arm_is_an_error_that_reports_the_sample_ratio(statistics):
    del statistics["c"]
    with pytest.raises(
        ValueError, match=r"arms \['c'\] have no subjects \(sample-ratio mismatch: chi2="
    ):
        analyze_statistics(statistics, control="control", weights=WEIGHTS)


@pytest.mark.parametrize(
    ("mutate", "kwargs", "message"),
    [
        (lambda s: s.pop("control"), {}, "control arm 'control' is missing"),
        (lambda s: None, {"control": "nope"}, "not among the weighted arms"),
        (
            lambda s: s.update(x=s["b"]),
            {},
            r"arms \['x'\] have statistics but no configured weight",
        ),
        (lambda s: s["b"].pop("orders"), {}, "has metrics"),
        (
            lambda s: s["b"].update(orders=SampleMeanStatistic(n=17, sum=17.0, sum_squares=30.0)),
            {},
            "count different numbers of subjects",
        ),
        (
            lambda s: s["b"].update(converted=mean_statistic(np.zeros(3050))),
            {},
            "has a SampleMeanStatistic but the control has a ProportionStatistic",
        ),
        (lambda s: None, {"weights": {"control": 0, "b": 0, "c": 0}}, "sum to a positive"),
        (lambda s: None, {"weights": {"control": 1, "b": 1, "c": 0}}, "weight 0"),
        (lambda s: None, {"alpha": 0}, "alpha"),
    ],
)
def test_bad_report_input_is_a_clear_value_error(statistics, mutate, kwargs, message):
    mutate(statistics)
    arguments = {"control": "control", "weights": WEIGHTS} | kwargs
    with pytest.raises(ValueError, match=message):
        analyze_statistics(statistics, **arguments)


def test_an_overall_comparison_without_variance_fails_naming_arm_and_metric():
    statistics = {
        "control": {"opted_out": ProportionStatistic(n=500, successes=0)},
        "b": {"opted_out": ProportionStatistic(n=510, successes=0)},
    }
    with pytest.raises(ValueError, match="arm 'b', metric 'opted_out': zero variance in both arms"):
        analyze_statistics(statistics, control="control", weights={"control": 1, "b": 1})


def test_caps_are_reported_and_must_agree_across_arms():
    def capped(values, cap):
        statistic = mean_statistic(np.minimum(values, cap))
        return SampleMeanStatistic(
            n=statistic.n, sum=statistic.sum, sum_squares=statistic.sum_squares, cap=cap
        )

    rng = np.random.default_rng(3)
    control, treatment = rng.pareto(1.5, 400) * 100, rng.pareto(1.5, 400) * 100
    report = analyze_statistics(
        {"control": {"gmv": capped(control, 900.0)}, "b": {"gmv": capped(treatment, 900.0)}},
        control="control",
        weights={"control": 1, "b": 1},
    )
    assert report.comparisons[0].cap == 900.0
    with pytest.raises(ValueError, match="capped at different values"):
        analyze_statistics(
            {"control": {"gmv": capped(control, 900.0)}, "b": {"gmv": capped(treatment, 950.0)}},
            control="control",
            weights={"control": 1, "b": 1},
        )
