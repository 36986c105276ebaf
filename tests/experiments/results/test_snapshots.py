"""compute_results: snapshots, idempotency, empty experiments, the decision rule, tasks, the admin."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.models import Experiment, ExperimentAlert, Guardrail, ResultSnapshot
from experiments.results.monitor import experiment_monitor
from experiments.results.snapshots import compute_results
from experiments.tasks import results_compute, results_refresh_running
from tests.experiments.factories import started_experiment
from tests.experiments.pipeline_kit import populate, seed_experiment

pytestmark = pytest.mark.django_db


def test_a_snapshot_holds_the_whole_analysis():
    experiment = started_experiment(arms=3)
    seed_experiment(experiment, subjects=300, as_of=timezone.now(), seed=11, decoys=False)
    as_of = timezone.now()
    snapshot = compute_results(experiment=experiment, as_of=as_of, monitor=False)
    assert snapshot.status == ResultSnapshot.Status.OK
    assert snapshot.schema_version == ResultSnapshot.SCHEMA_VERSION == snapshot.data["schema_version"]
    assert snapshot.window_start == experiment.started_at and snapshot.window_end == as_of
    data = snapshot.data
    assert [arm["key"] for arm in data["arms"]] == ["control", "arm-1", "arm-2"]
    assert sum(arm["subjects"] for arm in data["arms"]) == snapshot.subjects > 250
    metrics = {c["metric"] for c in data["report"]["comparisons"]}
    assert metrics == {"conversion", "opt_out", "consent_rate", "gmv", "orders", "aov", "ctr"}
    assert {c["arm"] for c in data["report"]["comparisons"]} == {"arm-1", "arm-2"}
    gmv = next(c for c in data["report"]["comparisons"] if c["metric"] == "gmv")
    assert gmv["cuped"] is True and gmv["cap"] == data["settings"]["gmv_cap"]
    segments = {s["segment"].split("=")[0] for s in data["report"]["segments"]}
    assert segments == {"age_band", "province", "platform", "customer"}
    assert data["srm"]["observed"] == {arm["key"]: arm["subjects"] for arm in data["arms"]}
    assert data["statistics"]["control"]["gmv"]["type"] == "RegressionAdjustedStatistic"
    assert data["decision"]["outcome"] in {"ship", "keep_control", "continue", "invalid"}
    json.dumps(data, allow_nan=False)  # strict JSON: what PostgreSQL's jsonb accepts
    # Schema 3: each order's cap, and the descriptive ratio (outside every test and the decision).
    assert data["settings"]["order_cap"] is not None
    withdrawals = data["descriptive"]["withdrawals_among_granted"]
    assert "post-treatment" in withdrawals["caveat"]
    for arm in data["arms"]:
        counts = withdrawals["arms"][arm["key"]]
        assert counts["withdrew"] == data["statistics"][arm["key"]]["opt_out"]["successes"] <= counts["granted"]
    assert "withdrawals_among_granted" not in {c["metric"] for c in data["report"]["comparisons"]}
    assert all(t.get("metric") != "withdrawals_among_granted" for t in data["decision"]["tests"])


def test_compute_results_is_idempotent_per_window():
    experiment = started_experiment(arms=2)
    # Seeded events reach two days past the seeding time: all of them lie before ``as_of``.
    seed_experiment(experiment, subjects=200, as_of=timezone.now() - timedelta(days=3), seed=5, decoys=False)
    as_of = timezone.now()
    first = compute_results(experiment=experiment, as_of=as_of, monitor=False)
    second = compute_results(experiment=experiment, as_of=as_of, monitor=False)
    assert first.pk == second.pk and ResultSnapshot.objects.count() == 1
    # Equal to float precision, not bit for bit: PostgreSQL may sum floats in another order on a rerun.
    assert_same_numbers(ResultSnapshot.objects.get().data, first.data)
    later = compute_results(experiment=experiment, as_of=as_of + timedelta(minutes=15), monitor=False)
    assert later.pk != first.pk and ResultSnapshot.objects.count() == 2
    # Nothing arrived in between: the same numbers, only the window differs.
    assert_same_numbers(later.data["report"], first.data["report"])


def assert_same_numbers(actual, expected, path="data"):
    """``actual`` has ``expected``'s structure and values, floats equal to 1e-12 relative."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), path
        for key, value in expected.items():
            assert_same_numbers(actual[key], value, f"{path}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for index, (left, right) in enumerate(zip(actual, expected, strict=True)):
            assert_same_numbers(left, right, f"{path}[{index}]")
    elif isinstance(expected, float) and not isinstance(actual, bool):
        assert actual == pytest.approx(expected, rel=1e-12, abs=1e-15), path
    else:
        assert actual == expected, path


def test_an_experiment_without_exposures_says_so():
    experiment = started_experiment(arms=2)
    snapshot = compute_results(experiment=experiment, monitor=False)
    assert snapshot.status == ResultSnapshot.Status.NO_EXPOSURES
    assert snapshot.subjects == 0 and snapshot.srm_flag is None
    assert "No subject has been exposed" in snapshot.data["message"]
    assert snapshot.data["report"] is None


def test_an_arm_without_exposures_says_so():
    experiment = started_experiment(arms=3)
    populate(experiment, {"control": {"n": 30, "conversion": 0.2}, "arm-1": {"n": 30, "conversion": 0.3}})
    snapshot = compute_results(experiment=experiment, monitor=False)
    assert snapshot.status == ResultSnapshot.Status.ARM_WITHOUT_EXPOSURES
    assert "arm-2" in snapshot.data["message"] and snapshot.data["report"] is None
    assert snapshot.srm_flag is True  # an empty arm is the clearest mismatch


def test_metrics_that_cannot_be_compared_are_listed_not_fatal():
    experiment = started_experiment(arms=2)
    populate(experiment, {"control": {"n": 50, "conversion": 0.2}, "arm-1": {"n": 50, "conversion": 0.4}})
    snapshot = compute_results(experiment=experiment, monitor=False)
    assert snapshot.status == ResultSnapshot.Status.OK
    skipped = {s["metric"]: s["reason"] for s in snapshot.data["skipped_metrics"]}
    assert "ctr" in skipped and "denominator" in skipped["ctr"]  # no impressions yet
    assert "opt_out" in skipped  # nobody opted out anywhere: no variance
    assert {c["metric"] for c in snapshot.data["report"]["comparisons"]} >= {"conversion", "gmv", "orders"}


def test_the_decision_rule_ships_the_best_arm_that_passes_its_guardrails():
    experiment = started_experiment(arms=3, primary_metric="conversion", planned_subjects_per_arm=600)
    Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=0.04)
    populate(
        experiment,
        {
            "control": {"n": 600, "conversion": 0.10, "opt_out": 0.05},
            "arm-1": {"n": 600, "conversion": 0.30, "opt_out": 0.05},  # better, guardrail fine
            "arm-2": {"n": 600, "conversion": 0.40, "opt_out": 0.30},  # best, but opt-outs explode
        },
    )
    snapshot = compute_results(experiment=experiment, monitor=False)
    decision = snapshot.data["decision"]
    assert decision["outcome"] == "ship" and decision["arm"] == "arm-1", decision
    guardrails = {(g["arm"], g["metric"]): g for g in snapshot.data["guardrails"]}
    assert guardrails[("arm-1", "opt_out")]["noninferiority"]["noninferior"] is True
    assert guardrails[("arm-2", "opt_out")]["breached"] is True
    assert snapshot.guardrail_breached is True


def test_the_sequential_p_value_is_a_running_minimum_across_runs():
    experiment = started_experiment(arms=2)
    Guardrail.objects.create(experiment=experiment, metric="conversion", margin=0.5)
    populate(experiment, {"control": {"n": 100, "conversion": 0.2}, "arm-1": {"n": 100, "conversion": 0.2}})
    now = timezone.now()
    first = compute_results(experiment=experiment, as_of=now, monitor=False)
    p_first = first.data["guardrails"][0]["sequential"]["p_value"]
    # A later run whose own p-value would be larger keeps the earlier minimum.
    populate(experiment, {"control": {"n": 10, "conversion": 0.0}, "arm-1": {"n": 10, "conversion": 1.0}}, prefix="q")
    second = compute_results(experiment=experiment, as_of=now + timedelta(minutes=15), monitor=False)
    assert second.data["guardrails"][0]["sequential"]["p_value"] <= p_first


def test_the_results_task_stores_a_snapshot_and_chains_the_monitor(django_capture_on_commit_callbacks):
    experiment = started_experiment(arms=2)
    Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=0.01)
    populate(experiment, {"control": {"n": 300, "opt_out": 0.02}, "arm-1": {"n": 300, "opt_out": 0.3}})
    as_of = timezone.now().replace(microsecond=0)
    with django_capture_on_commit_callbacks(execute=True):
        snapshot_id = results_compute.delay(experiment.pk, as_of.isoformat()).get()
    snapshot = ResultSnapshot.objects.get(pk=snapshot_id)
    assert snapshot.window_end == as_of and snapshot.monitored_at is not None
    experiment.refresh_from_db()
    assert experiment.status == Experiment.Status.PAUSED


def test_the_periodic_fan_out_computes_every_running_experiment(django_capture_on_commit_callbacks):
    running = [started_experiment(arms=2), started_experiment(arms=2, layer=_other_layer())]
    with django_capture_on_commit_callbacks(execute=True):
        ids = results_refresh_running.delay().get()
    assert sorted(ids) == sorted(e.pk for e in running)
    assert sorted(ResultSnapshot.objects.values_list("experiment_id", flat=True)) == sorted(ids)
    assert all(s.window_end.second == 0 for s in ResultSnapshot.objects.all())


def test_a_deleted_experiment_is_not_an_error():
    assert results_compute.delay(987654, None).get() is None


def _other_layer():
    from experiments.models import Layer

    return Layer.objects.create(key="other", name="Other")


# --- the admin -------------------------------------------------------------------


@pytest.fixture
def staff_client(client):
    from tests.experiments.factories import UserFactory

    user = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(user)
    return client


def test_admin_lists_snapshots_alerts_and_events(staff_client):
    experiment = started_experiment(arms=2)
    populate(experiment, {"control": {"n": 500, "conversion": 0.1}, "arm-1": {"n": 380, "conversion": 0.1}})
    snapshot = compute_results(experiment=experiment, monitor=False)
    experiment_monitor(snapshot=snapshot)
    for path in ("resultsnapshot", "experimentalert", "outcomeevent"):
        assert staff_client.get(f"/admin/experiments/{path}/").status_code == 200
    page = staff_client.get(f"/admin/experiments/resultsnapshot/{snapshot.pk}/change/")
    assert page.status_code == 200 and b"schema_version" in page.content


def test_admin_acknowledges_alerts_and_computes_on_demand(staff_client, django_capture_on_commit_callbacks):
    experiment = started_experiment(arms=2)
    populate(experiment, {"control": {"n": 500, "conversion": 0.1}, "arm-1": {"n": 380, "conversion": 0.1}})
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(
            "/admin/experiments/experiment/", {"action": "compute_results_now", "_selected_action": [experiment.pk]}
        )
    assert response.status_code == 302
    snapshot = ResultSnapshot.objects.get(experiment=experiment)
    alert = ExperimentAlert.objects.get(kind="srm")  # the chained monitor ran
    assert snapshot.monitored_at is not None
    staff_client.post("/admin/experiments/experimentalert/", {"action": "acknowledge", "_selected_action": [alert.pk]})
    alert.refresh_from_db()
    assert alert.acknowledged_at is not None
    # A later run with the same mismatch raises a new alert.
    later = compute_results(experiment=experiment, as_of=timezone.now() + timedelta(minutes=15), monitor=False)
    experiment_monitor(snapshot=later)
    assert ExperimentAlert.objects.filter(kind="srm", acknowledged_at__isnull=True).count() == 1
