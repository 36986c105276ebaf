"""The results job's variance adjustment (CUPED++ where identified), health flags and heterogeneity."""

from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.metrics.pipeline import metric_statistics_compute
from experiments.results.adjustment import SUBJECTS_PER_REGRESSOR, adjusted_statistics
from experiments.results.document import SnapshotDocument
from experiments.results.snapshots import compute_results
from experiments.stats import LinAdjustedStatistic, RegressionAdjustedStatistic, analyze_statistics
from tests.experiments.factories import started_experiment
from tests.experiments.pipeline_kit import seed_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture(scope="module")
def as_of():
    return timezone.now() - timedelta(hours=6)


def _run(subjects: int, as_of, **settings):
    experiment = started_experiment(arms=2, days_ago=8, primary_metric="gmv", **settings)
    seed_experiment(experiment, subjects=subjects, as_of=as_of, seed=23)
    return experiment, compute_results(experiment=experiment, as_of=as_of, monitor=False).data


def test_enough_subjects_per_regressor_get_covariates_and_strata_and_the_page_numbers_follow(as_of):
    experiment, data = _run(600, as_of)
    assert data["schema_version"] == 5
    adjustment = data["adjustment"]
    assert set(adjustment) == set(data["metrics"])
    gmv = adjustment["gmv"]
    assert gmv["method"] == "cuped++" and gmv["covariates"] == ["pre_gmv", "pre_orders"]
    assert gmv["strata"] == ["age_band", "province", "platform"] and gmv["fallback_reason"] is None
    by = {(c["arm"], c["metric"]): c for c in data["report"]["comparisons"]}
    for metric, entry in adjustment.items():
        # What the page says was removed is the engine's own variance reduction of that comparison.
        assert entry["variance_reduction"]["arm-1"] == pytest.approx(by[("arm-1", metric)]["variance_reduction"])
        assert by[("arm-1", metric)]["adjusted_for"]["strata"] == entry["strata"]
    # The decision tests the same adjusted estimate the report shows.
    test = next(t for t in data["decision"]["tests"] if t["metric"] == "gmv")
    assert test["estimate"] == pytest.approx(by[("arm-1", "gmv")]["absolute"]["estimate"], rel=1e-12)
    # The stored statistics stay the single-covariate ones (re-analysable as before schema 5).
    assert data["statistics"]["control"]["gmv"]["type"] == "RegressionAdjustedStatistic"
    assert data["settings"]["covariates"] == ["pre_gmv", "pre_orders"]

    # Segments keep the overall's statistic types (as a report requires), each taking what it can.
    statistics = metric_statistics_compute(experiment=experiment, as_of=as_of)
    overall, _ = adjusted_statistics(statistics=statistics, control="control")
    assert isinstance(overall["control"]["gmv"], LinAdjustedStatistic)
    like = {metric: type(statistic) for metric, statistic in overall["control"].items()}
    segments = {
        label: adjusted_statistics(statistics=statistics, control="control", segment=label, like=like)[0]
        for label in statistics.segments
    }
    for by_arm in segments.values():
        for metrics in by_arm.values():
            assert {metric: type(statistic) for metric, statistic in metrics.items()} == like
    report = analyze_statistics(overall, control="control", weights={"control": 1, "arm-1": 1}, segments=segments)
    assert report.segments  # the report accepts them
    for comparison in report.comparisons:  # the same statistics the run analysed
        stored = by[(comparison.arm, comparison.metric)]
        assert comparison.absolute.estimate == pytest.approx(stored["absolute"]["estimate"], rel=1e-12)
        assert comparison.absolute.standard_error == pytest.approx(stored["absolute"]["standard_error"], rel=1e-12)


def test_too_few_subjects_for_the_strata_fall_back_to_the_covariates_with_the_reason(as_of):
    experiment, data = _run(200, as_of)
    gmv = data["adjustment"]["gmv"]
    assert (gmv["method"], gmv["strata"]) == ("cuped++", [])
    assert f"{SUBJECTS_PER_REGRESSOR} per regressor" in gmv["fallback_reason"]


def test_without_a_pre_exposure_window_the_strata_alone_adjust(as_of):
    experiment, data = _run(600, as_of, pre_exposure_days=0)
    for entry in data["adjustment"].values():
        assert (entry["method"], entry["covariates"]) == ("stratification", [])
        assert entry["strata"]


def test_a_warehouse_like_run_without_cells_keeps_the_single_covariate_statistics(as_of):
    experiment, _ = _run(200, as_of)
    statistics = metric_statistics_compute(experiment=experiment, as_of=as_of)
    from dataclasses import replace

    overall, adjustments = adjusted_statistics(statistics=replace(statistics, cells={}), control="control")
    assert isinstance(overall["control"]["gmv"], RegressionAdjustedStatistic)
    assert (adjustments["gmv"].method, adjustments["gmv"].covariates) == ("cuped", ("pre_gmv",))
    assert adjustments["orders"].method == "none" and adjustments["orders"].fallback_reason is None


def test_health_flags_carry_their_reason_and_the_uplift_bound_is_the_experiments(as_of):
    experiment, data = _run(200, as_of, suspicious_uplift=1e-6)
    health = data["health"]
    assert health["multiple_exposures"] == 0  # one exposure per subject and experiment, by constraint
    assert health["suspicious_uplift"]["bound"] == 1e-6
    flags = [flag for flag in health["flags"] if flag["check"] == "suspicious_uplift"]
    assert flags and not health["healthy"]
    assert all("beyond ±" in flag["reason"] and flag["arm"] == "arm-1" for flag in flags)
    assert health["pre_exposure_bias"]["tests"]  # the covariates were tested for balance
    assert data["settings"]["suspicious_uplift"] == 1e-6


def test_heterogeneity_has_an_interaction_test_per_dimension_and_the_effect_by_exposure_day(as_of):
    experiment, data = _run(200, as_of)
    heterogeneity = data["heterogeneity"]
    dimensions = {test["dimension"] for test in heterogeneity["interaction_tests"]}
    assert dimensions == {"age_band", "province", "platform", "customer"}
    for test in heterogeneity["interaction_tests"]:
        assert 0 <= test["p_value"] <= 1 and test["degrees_of_freedom"] == len(test["segments"]) - 1
    days = heterogeneity["exposure_days"]
    assert days is not None, heterogeneity["exposure_days_reason"]
    assert [entry["day"] for entry in days["days"]] == sorted(entry["day"] for entry in days["days"])
    assert {trend["metric"] for trend in days["trends"]} <= {"conversion", "orders", "gmv"}
    # The document round-trips through the typed snapshot document.
    assert SnapshotDocument.from_dict(data).to_dict() == data
