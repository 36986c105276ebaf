"""The notebook path reproduces the dashboard: the same facts through ``analyze`` give the pipeline's numbers."""

from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.metrics.frame import FRAME_COLUMNS, metric_facts_frame
from experiments.metrics.pipeline import metric_statistics_compute
from experiments.stats import analyze, analyze_statistics
from tests.experiments.factories import running_experiment
from tests.experiments.pipeline_kit import seed_experiment

pytestmark = pytest.mark.django_db

# The pipeline's metric → the frame's column (or numerator/denominator) for analyze.
NOTEBOOK_METRICS = {
    "conversion": ("converted", "proportion"),
    "opt_out": ("opted_out", "proportion"),
    "consent_rate": ("consented", "proportion"),
    "gmv": ("gmv", "mean"),
    "orders": ("orders", "mean"),
    "aov": ("order_gmv/orders", "ratio"),
    "ctr": ("clicks/impressions", "ratio"),
}


@pytest.mark.parametrize("cap_percentile", [0.95, None])
def test_the_same_data_through_the_pipeline_and_analyze_gives_the_same_numbers(cap_percentile):
    experiment = running_experiment(arms=3)
    experiment.started_at = timezone.now() - timedelta(days=10)
    experiment.gmv_cap_percentile = cap_percentile
    experiment.save(update_fields=["started_at", "gmv_cap_percentile"])
    as_of = timezone.now() - timedelta(days=1)
    seed_experiment(experiment, subjects=500, as_of=as_of, seed=31)
    weights = dict(experiment.arms.values_list("key", "weight"))

    stats = metric_statistics_compute(experiment=experiment, as_of=as_of)
    dashboard = analyze_statistics(
        stats.arms, control="control", weights=weights, alpha=experiment.alpha, primary="gmv"
    ).to_dict()

    frame = metric_facts_frame(experiment=experiment, as_of=as_of)
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert len(frame) == sum(stats.subjects.values())
    notebook = analyze(
        frame,
        control="control",
        weights=weights,
        alpha=experiment.alpha,
        metrics={column: kind for column, kind in NOTEBOOK_METRICS.values()},
        covariates={"gmv": "pre_gmv"},
        caps=None if cap_percentile is None else {"gmv": 100 * cap_percentile},
        primary="gmv",
    )
    notebook_by = {(c["arm"], c["metric"]): c for c in notebook["comparisons"]}
    assert len(dashboard["comparisons"]) == len(notebook_by) == 2 * len(NOTEBOOK_METRICS)
    for comparison in dashboard["comparisons"]:
        other = notebook_by[(comparison["arm"], NOTEBOOK_METRICS[comparison["metric"]][0])]
        for field in ("control_mean", "treatment_mean", "p_value_adjusted", "significant", "family", "cap"):
            assert other[field] == pytest.approx(comparison[field], rel=1e-9, abs=1e-12), (comparison["metric"], field)
        for scale in ("absolute", "relative"):
            for field in ("estimate", "ci", "p_value", "standard_error"):
                assert other[scale][field] == pytest.approx(comparison[scale][field], rel=1e-9, abs=1e-12), (
                    comparison["metric"], scale, field,
                )
    if cap_percentile is not None:
        gmv = next(c for c in dashboard["comparisons"] if c["metric"] == "gmv")
        assert gmv["cap"] == pytest.approx(stats.gmv_cap) and stats.order_cap is not None


# CUPED++ on the frame: every metric on the capped pre-exposure GMV and the pre-exposure orders.
CUPED_STRATA = ["age_band", "province", "platform"]


def notebook_cuped_plus_plus(frame, *, gmv_cap):
    """The frame with the pipeline's covariate (pre-exposure GMV at the run's subject cap), and the
    ``covariates`` argument of ``analyze`` that adjusts every metric as the pipeline's CUPED++ does."""
    import numpy as np

    pre = frame["pre_gmv"].to_numpy(float)
    frame = frame.assign(pre_gmv_capped=pre if gmv_cap is None else np.minimum(pre, gmv_cap))
    return frame, {column: ["pre_gmv_capped", "pre_orders"] for column, _ in NOTEBOOK_METRICS.values()}


def _assert_same_comparisons(dashboard: list, notebook: list):
    notebook_by = {(c["arm"], c["metric"]): c for c in notebook}
    assert len(dashboard) == len(notebook_by) > 0
    for comparison in dashboard:
        other = notebook_by[(comparison["arm"], NOTEBOOK_METRICS[comparison["metric"]][0])]
        assert other["method"] == comparison["method"]
        assert other["variance_reduction"] == pytest.approx(comparison["variance_reduction"], rel=1e-9, abs=1e-12)
        for field in ("control_mean", "treatment_mean", "p_value_adjusted", "cap"):
            assert other[field] == pytest.approx(comparison[field], rel=1e-9, abs=1e-12), (comparison["metric"], field)
        for scale in ("absolute", "relative"):
            for field in ("estimate", "ci", "p_value", "standard_error"):
                assert other[scale][field] == pytest.approx(comparison[scale][field], rel=1e-9, abs=1e-12), (
                    comparison["metric"], scale, field,
                )


@pytest.mark.parametrize("cap_percentile", [0.95, None])
def test_cuped_plus_plus_from_the_aggregate_equals_analyze_on_the_per_subject_frame(cap_percentile):
    from experiments.metrics.sql import LIN_COVARIATES
    from experiments.stats.frequentist import METHOD_LIN, METHOD_LIN_RATIO

    experiment = running_experiment(arms=2)
    experiment.started_at = timezone.now() - timedelta(days=10)
    experiment.gmv_cap_percentile = cap_percentile
    experiment.save(update_fields=["started_at", "gmv_cap_percentile"])
    as_of = timezone.now() - timedelta(days=1)
    seed_experiment(experiment, subjects=400, as_of=as_of, seed=5)
    weights = dict(experiment.arms.values_list("key", "weight"))

    stats = metric_statistics_compute(experiment=experiment, as_of=as_of)
    lin = stats.lin_statistics(covariates=LIN_COVARIATES, strata=tuple(CUPED_STRATA))
    by_platform = {
        label: stats.lin_statistics(covariates=LIN_COVARIATES, strata=tuple(CUPED_STRATA), segment=label)
        for label in stats.segments
        if label.startswith("platform=")
    }
    dashboard = analyze_statistics(
        lin, control="control", weights=weights, alpha=experiment.alpha, segments=by_platform
    ).to_dict()

    frame, covariates = notebook_cuped_plus_plus(metric_facts_frame(experiment=experiment, as_of=as_of),
                                                 gmv_cap=stats.gmv_cap)
    notebook = analyze(
        frame,
        control="control",
        weights=weights,
        alpha=experiment.alpha,
        metrics={column: kind for column, kind in NOTEBOOK_METRICS.values()},
        covariates=covariates,
        strata=CUPED_STRATA,
        caps=None if cap_percentile is None else {"gmv": 100 * cap_percentile},
        segment_by="platform",
    )
    assert {c["method"] for c in dashboard["comparisons"]} == {METHOD_LIN, METHOD_LIN_RATIO}
    _assert_same_comparisons(dashboard["comparisons"], notebook["comparisons"])
    notebook_segments = {f"platform={s['segment']}": s for s in notebook["segments"]}
    assert len(dashboard["segments"]) == len(notebook_segments) == 3
    for segment in dashboard["segments"]:
        _assert_same_comparisons(segment["comparisons"], notebook_segments[segment["segment"]]["comparisons"])
