"""The decision through ``compute_results``: 20 scheduled runs over real pipeline data, against the engine.

Each run's stored decision must be what ``decide_statistics`` says on the statistics
that run stored, given the previous run's running minima (a chain kept here,
independently of the job's); a final verdict is recorded once (``ExperimentDecision``),
and every later run carries it unchanged, flagged ``frozen`` with ``final_since``, even
when new data would now say otherwise; in fixed-horizon mode nothing is final before the
planned size and the minimum runtime.

The runs here are kept on the single-covariate statistics they store (CUPED++ needs more
subjects per regressor than any arm gets), so that the engine can be fed what was stored;
tests/experiments/results/test_adjustment.py checks the decision on CUPED++ statistics.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.metrics.definitions import METRICS
from experiments.models import Experiment, ExperimentDecision, Guardrail, Metric
from experiments.results.analysis import UNITS
from experiments.results.snapshots import compute_results
from experiments.stats import (
    Decision,
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    decide_statistics,
)
from tests.experiments.factories import running_experiment
from tests.experiments.pipeline_kit import populate, seed_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _single_covariate_statistics(monkeypatch):
    monkeypatch.setattr("experiments.results.adjustment.SUBJECTS_PER_REGRESSOR", 10**9)

LOOKS = 20
DAYS = 14
STATISTIC_TYPES = {cls.__name__: cls for cls in (ProportionStatistic, SampleMeanStatistic,
                                                  RegressionAdjustedStatistic, RatioStatistic)}
ORDER = ["arm-2", "arm-1", "control"]  # most private first


def _experiment(**settings) -> Experiment:
    experiment = running_experiment(arms=3, primary_metric="conversion", decision_rule="privacy_first",
                                    privacy_order=ORDER, **settings)
    experiment.started_at = timezone.now() - timedelta(days=DAYS)
    experiment.save(update_fields=["started_at"])
    Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=0.25)
    return experiment


def _statistic(stored: dict):
    cls = STATISTIC_TYPES[stored["type"]]
    return cls(**{name: stored[name] for name, spec in cls.__dataclass_fields__.items() if spec.init})


def _engine_decision(experiment: Experiment, snapshot, previous: dict) -> Decision | None:
    """``decide_statistics`` on what the run stored, with the experiment's settings (None: primary not readable)."""
    data = snapshot.data
    comparisons = (data["report"] or {}).get("comparisons", [])  # no report: no metric comparable yet
    included = list(dict.fromkeys(c["metric"] for c in comparisons))
    if experiment.primary_metric not in included:
        return None
    statistics = {
        arm: {metric: _statistic(stored[metric]) for metric in included} for arm, stored in data["statistics"].items()
    }
    guardrails = {
        g.metric: {"margin": g.margin, "higher_is_better": METRICS[g.metric][1], "relative": g.relative}
        for g in experiment.guardrails.all() if g.metric in included
    }
    decision = decide_statistics(
        statistics,
        control="control",
        weights={arm["key"]: arm["weight"] for arm in data["arms"]},
        primary=experiment.primary_metric,
        primary_higher_is_better=METRICS[experiment.primary_metric][1],
        guardrails=guardrails,
        rule=experiment.decision_rule,
        margin=experiment.decision_margin,
        privacy_order=experiment.privacy_order,
        planned_subjects_per_arm=experiment.planned_subjects_per_arm,
        sequential=experiment.testing_mode == "sequential",
        alpha=experiment.alpha,
        runtime_days=(snapshot.window_end - snapshot.window_start).total_seconds() / 86_400,
        minimum_runtime_days=experiment.minimum_runtime_days,
        previous=previous,
        labels={metric: Metric(metric).label for metric in METRICS},
        kinds={metric: kind for metric, (kind, _) in METRICS.items()},
        units=UNITS,
    )
    return decision


def _run_looks(experiment: Experiment, *, after_look=None) -> list[dict]:
    """20 scheduled runs over the 14 days; each run's decision document, the engine's, and the look."""
    start = experiment.started_at
    looks, previous = [], {}
    for look in range(1, LOOKS + 1):
        as_of = start + timedelta(days=DAYS) * look / LOOKS
        snapshot = compute_results(experiment=experiment, as_of=as_of, monitor=False)
        stored = snapshot.data["decision"]
        if stored is None:  # an arm has no subject yet: no analysis, no decision, no minima
            assert snapshot.status != "ok" and snapshot.data["report"] is None
            previous = {}
            continue
        current = stored["latest"] if stored.get("frozen") else stored
        engine = _engine_decision(experiment, snapshot, previous)
        if engine is None:  # the primary metric could not be compared yet: the job says so, and keeps no minima
            assert (current["outcome"], current["final"], current["tests"]) == ("continue", False, [])
            previous = {}
        else:
            expected = engine.to_dict()
            assert {key: value for key, value in current.items() if key in expected} == expected, look
            previous = engine.running_minima()
        looks.append({"look": look, "as_of": as_of, "stored": stored, "current": current, "snapshot": snapshot})
        if after_look is not None:
            after_look(look, stored)
    return looks


def _check_frozen_once(experiment: Experiment, looks: list[dict]) -> dict:
    """One final verdict, recorded by the first run that made it; later runs carry it unchanged."""
    first = next(entry for entry in looks if entry["stored"]["final"])
    assert not first["stored"].get("frozen") and first["stored"]["outcome"] in ("ship", "keep_control")
    record = ExperimentDecision.objects.get(experiment=experiment, phase=experiment.phase)
    assert (record.outcome, record.arm or None) == (first["stored"]["outcome"], first["stored"]["arm"])
    assert record.window_end == first["as_of"] and record.snapshot_id == first["snapshot"].pk
    assert record.document == first["stored"]
    for entry in looks[first["look"]:]:
        stored = entry["stored"]
        assert stored["frozen"] is True and stored["final"] is True
        assert stored["final_since"] == first["as_of"].isoformat()
        assert (stored["outcome"], stored["arm"]) == (record.outcome, record.arm or None)
    assert ExperimentDecision.objects.count() == 1
    return first


def test_fixed_horizon_runs_decide_as_the_engine_and_the_final_verdict_never_flips_back():
    # 600 subjects over 14 days (about 200 per arm by the end); 130 planned per arm and a
    # minimum runtime of 7 days: the verdict may first be read around run 13.
    experiment = _experiment(decision_margin=0.3, testing_mode="fixed", planned_subjects_per_arm=130)
    seed_experiment(experiment, subjects=600, as_of=experiment.started_at + timedelta(days=DAYS), seed=31,
                    decoys=False)

    def change_the_picture(look: int, stored: dict) -> None:
        # Once the verdict is final, a wave of converting subjects in the most private arm
        # (and, to keep the sample ratio, in the others) would change a fresh verdict.
        if stored["final"] and not stored.get("frozen"):
            populate(experiment, {"control": {"n": 150, "conversion": 0.2}, "arm-1": {"n": 150, "conversion": 0.2},
                                  "arm-2": {"n": 150, "conversion": 0.95}}, seed=look, prefix=f"wave{look}")

    looks = _run_looks(experiment, after_look=change_the_picture)
    before_plan = [e for e in looks if not e["current"]["progress"] or not e["current"]["progress"]["ready"]]
    assert len(before_plan) >= 5, "the data must give runs before the planned size"
    for entry in before_plan:
        assert (entry["stored"]["outcome"], entry["stored"]["final"]) == ("continue", False), entry["look"]
    first = _check_frozen_once(experiment, looks)
    assert first["current"]["progress"]["ready"] and first["look"] == len(before_plan) + 1
    progress = first["current"]["progress"]
    assert min(progress["subjects"][arm] / progress["targets"][arm] for arm in progress["targets"]) >= 1
    later = [e["current"] for e in looks[first["look"]:]]
    assert later, "the verdict must be final before the last run"
    # The fresh verdict of a later run differs (arm-2 now qualifies), and is not what the runs show.
    assert any((c["outcome"], c["arm"]) != (first["stored"]["outcome"], first["stored"]["arm"]) for c in later)


def test_sequential_runs_decide_as_the_engine_with_running_minima_and_freeze_the_first_final_verdict():
    # Conversion is about 50 % in every arm here; with 600 subjects the most private arm's
    # non-inferiority within −50 % is shown part-way through (the always-valid boundary is
    # tuned for the 2 × 400 planned), but never before the 7-day minimum runtime.
    experiment = _experiment(decision_margin=0.5, testing_mode="sequential", planned_subjects_per_arm=400)
    seed_experiment(experiment, subjects=600, as_of=experiment.started_at + timedelta(days=DAYS), seed=32,
                    decoys=False)
    looks = _run_looks(experiment)
    early = [e for e in looks if e["as_of"] - experiment.started_at < timedelta(days=7)]
    assert early and all(e["stored"]["final"] is False for e in early)
    first = _check_frozen_once(experiment, looks)
    assert first["stored"]["mode"] == "sequential" and first["look"] < LOOKS
    assert not first["current"]["progress"]["ready"]  # final before the planned size: always-valid tests
    # The running minima reached the stored tests: a later run's p-values never rise.
    by_key = {}
    for entry in looks:
        for test in entry["current"]["tests"]:
            key = (test["kind"], test["arm"], test["metric"])
            if test["p_value"] is not None:
                assert test["p_value"] <= by_key.get(key, 1.0)
                by_key[key] = test["p_value"]
