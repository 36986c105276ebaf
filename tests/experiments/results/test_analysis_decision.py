"""The decision in the results job: the rule's verdict stored, a final verdict recorded once and never flipped."""

from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.models import Experiment, ExperimentDecision, Guardrail, PrivacyTreatment
from experiments.results.snapshots import compute_results
from experiments.services.lifecycle import experiment_new_phase, experiment_pause
from tests.experiments.factories import running_experiment
from tests.experiments.pipeline_kit import populate

pytestmark = pytest.mark.django_db


def _experiment(**kwargs) -> Experiment:
    experiment = running_experiment(**kwargs)
    experiment.started_at = timezone.now() - timedelta(days=10)
    experiment.save(update_fields=["started_at"])
    return experiment


def test_a_final_verdict_is_recorded_once_and_later_runs_carry_it_unchanged():
    experiment = _experiment(arms=2, primary_metric="conversion", planned_subjects_per_arm=300)
    populate(experiment, {"control": {"n": 300, "conversion": 0.10}, "arm-1": {"n": 300, "conversion": 0.30}})
    now = timezone.now()
    first = compute_results(experiment=experiment, as_of=now, monitor=False)
    decision = first.data["decision"]
    assert (decision["outcome"], decision["arm"], decision["final"]) == ("ship", "arm-1", True)
    record = ExperimentDecision.objects.get(experiment=experiment)
    assert (record.outcome, record.arm, record.phase, record.window_end) == ("ship", "arm-1", 1, first.window_end)
    assert record.snapshot == first and record.document == decision

    # Later data that would reverse the verdict: the numbers change, the verdict does not.
    populate(experiment, {"control": {"n": 900, "conversion": 0.40}, "arm-1": {"n": 900, "conversion": 0.0}},
             prefix="late")
    later = compute_results(experiment=experiment, as_of=now + timedelta(hours=1), monitor=False)
    frozen = later.data["decision"]
    assert frozen["frozen"] is True and frozen["final_since"] == first.window_end.isoformat()
    assert (frozen["outcome"], frozen["arm"], frozen["final"], frozen["summary"]) == (
        "ship", "arm-1", True, decision["summary"]
    )
    assert frozen["latest"]["outcome"] == "keep_control"  # what this run alone would say
    gmv_before = {c["arm"]: c for c in first.data["report"]["comparisons"] if c["metric"] == "conversion"}
    gmv_after = {c["arm"]: c for c in later.data["report"]["comparisons"] if c["metric"] == "conversion"}
    assert gmv_after["arm-1"]["absolute"]["estimate"] < 0 < gmv_before["arm-1"]["absolute"]["estimate"]
    assert ExperimentDecision.objects.filter(experiment=experiment).count() == 1

    # Replaying the first window computes the same document: the run that made the verdict is not "frozen".
    replay = compute_results(experiment=experiment, as_of=now, monitor=False)
    assert replay.pk == first.pk and "frozen" not in replay.data["decision"]


def test_a_new_phase_starts_a_new_verdict():
    experiment = _experiment(arms=2, primary_metric="conversion", planned_subjects_per_arm=300)
    populate(experiment, {"control": {"n": 300, "conversion": 0.10}, "arm-1": {"n": 300, "conversion": 0.30}})
    compute_results(experiment=experiment, monitor=False)
    experiment_pause(experiment=experiment)
    experiment = experiment_new_phase(experiment=experiment, weights={"control": 1, "arm-1": 1})
    populate(experiment, {"control": {"n": 300, "conversion": 0.30}, "arm-1": {"n": 300, "conversion": 0.10}},
             prefix="phase2")
    second = compute_results(experiment=experiment, as_of=timezone.now() + timedelta(minutes=5), monitor=False)
    assert second.phase == 2 and "frozen" not in second.data["decision"]
    assert second.data["decision"]["outcome"] == "keep_control"
    assert set(ExperimentDecision.objects.values_list("phase", "outcome")) == {(1, "ship"), (2, "keep_control")}


def test_privacy_first_uses_the_ladder_when_the_experiment_gives_no_order():
    experiment = _experiment(arms=3, primary_metric="conversion", planned_subjects_per_arm=1500,
                             decision_rule="privacy_first", decision_margin=0.2)
    levels = {"control": "full", "arm-1": "cohort", "arm-2": "popularity"}
    for arm in experiment.arms.all():
        PrivacyTreatment.objects.filter(pk=arm.treatment_id).update(personalization_level=levels[arm.key])
    Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=0.03)
    same = {"n": 1500, "conversion": 0.5, "opt_out": 0.02}
    populate(experiment, {"control": same, "arm-1": same, "arm-2": same})
    decision = compute_results(experiment=experiment, monitor=False).data["decision"]
    assert decision["privacy_order"] == ["arm-2", "arm-1", "control"]
    assert (decision["outcome"], decision["arm"], decision["final"]) == ("ship", "arm-2", True)
    assert decision["summary"].startswith("Ship arm-2: the most private design whose Conversion stays within −20.0%")
    kinds = {(t["kind"], t["arm"]) for t in decision["tests"]}
    assert kinds == {("noninferiority", "arm-1"), ("noninferiority", "arm-2"), ("guardrail", "arm-1"),
                     ("guardrail", "arm-2")}


def test_before_the_minimum_runtime_even_a_clear_result_keeps_running():
    experiment = _experiment(arms=2, primary_metric="conversion", planned_subjects_per_arm=300,
                             minimum_runtime_days=14)
    populate(experiment, {"control": {"n": 300, "conversion": 0.10}, "arm-1": {"n": 300, "conversion": 0.30}})
    snapshot = compute_results(experiment=experiment, monitor=False)
    decision = snapshot.data["decision"]
    assert (decision["outcome"], decision["final"]) == ("continue", False)
    assert "of the minimum 14 days have passed" in decision["summary"]
    earliest = decision["earliest_decision_date"]
    assert earliest[:10] == (experiment.started_at + timedelta(days=14)).date().isoformat()
    assert not ExperimentDecision.objects.exists()


def test_a_relative_guardrail_is_tested_on_the_relative_lift_and_watched_in_the_metrics_unit():
    experiment = _experiment(arms=2, primary_metric="conversion", planned_subjects_per_arm=800)
    Guardrail.objects.create(experiment=experiment, metric="gmv", margin=0.5, relative=True)
    populate(experiment, {
        "control": {"n": 800, "conversion": 0.5, "gmv": 100_000},
        "arm-1": {"n": 800, "conversion": 0.5, "gmv": 100_000},
    })
    snapshot = compute_results(experiment=experiment, monitor=False)
    entry = snapshot.data["guardrails"][0]
    control_mean = snapshot.data["statistics"]["control"]["gmv"]["sum"] / 800
    assert entry["relative"] is True and entry["relative_margin"] == 0.5
    assert entry["margin"] == pytest.approx(0.5 * control_mean)  # the monitor's margin, in IDR
    assert entry["noninferiority"]["relative"] is True and entry["noninferiority"]["noninferior"] is True
    test = next(t for t in snapshot.data["decision"]["tests"] if t["kind"] == "guardrail")
    assert test["relative"] is True and test["margin"] == 0.5 and test["passed"] is True


def test_a_run_that_cannot_test_carries_the_running_minima_to_the_next():
    from experiments.models import ResultSnapshot
    from experiments.results.analysis import _previous_minima

    experiment = _experiment(arms=2, testing_mode="sequential")
    now = timezone.now()
    minima = {"superiority:arm-1:gmv": {"p_value": 0.01, "ruled_out_p_value": 0.9, "bound": 12.0}}
    # A run whose decision could not test (say a sample-ratio mismatch) still stores the minima it was given.
    ResultSnapshot.objects.create(
        experiment=experiment, status="ok", phase=1, window_start=experiment.started_at, window_end=now,
        computed_at=now, subjects=10,
        data={"schema_version": 2, "guardrails": [], "decision": {"version": 1, "outcome": "invalid", "tests": [],
                                                                  "running_minima": minima}},
    )
    _, carried = _previous_minima(experiment, 1, now + timedelta(minutes=15))
    assert carried == minima
