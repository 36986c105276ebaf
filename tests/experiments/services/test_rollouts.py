"""Shipping an arm as a rollout: validation, the ramp under a frozen clock, promotion, rollback, history."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.contrib.admin.models import LogEntry
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import TestCase

from config.schedule import BEAT_SCHEDULE
from consent import services as consent_services
from consent.pseudonyms import subject_pseudonym
from experiments import services
from experiments.models import (
    ExperimentAlert,
    ExperimentDecision,
    Guardrail,
    OutcomeEvent,
    Rollout,
    RolloutExposure,
)
from experiments.selectors import surface_defaults
from experiments.services.assignment import subject_assign
from privacylab_client import config_parse, local_assignments, local_treatments
from tests.consent.factories import grant, raw_id, withdraw
from tests.experiments.factories import ExperimentFactory, TreatmentFactory

pytestmark = pytest.mark.django_db
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SURFACE = "product-recommendations"


@pytest.fixture
def surface():
    default = TreatmentFactory(name="popularity default", personalization_level="popularity")
    with TestCase.captureOnCommitCallbacks(execute=True):
        return services.surface_create(key=SURFACE, name="Product recommendations", default_treatment=default)


@pytest.fixture
def experiment(surface):
    return ExperimentFactory(surface=surface, status="stopped")


def verdict(experiment, arm="arm-1", outcome="ship"):
    return ExperimentDecision.objects.create(
        experiment=experiment, phase=experiment.phase, outcome=outcome, arm=arm if outcome == "ship" else "",
        window_end=START, document={}, decided_at=START,
    )


def ship(experiment, **kwargs):
    with TestCase.captureOnCommitCallbacks(execute=True):
        return services.experiment_ship(experiment=experiment, **{"arm_key": "arm-1", "now": START, **kwargs})


def step(rollout, at):
    with TestCase.captureOnCommitCallbacks(execute=True), time_machine.travel(at, tick=False):
        return services.rollout_step(rollout_id=rollout.pk)


def sources(n=2000, attributes=None):
    counts = {}
    for i in range(n):
        entry = subject_assign(subject_id=f"s-{i}", attributes=attributes or {}).treatments[SURFACE]
        counts[entry["source"]] = counts.get(entry["source"], 0) + 1
    return counts


# --- bad input: a clear error naming the field, nothing written ---------------------------------


def test_shipping_without_a_final_verdict_needs_a_reason(experiment):
    with pytest.raises(ValidationError) as error:
        ship(experiment)
    assert "reason" in error.value.message_dict and "no final verdict" in error.value.message_dict["reason"][0]
    verdict(experiment, outcome="keep_control")
    with pytest.raises(ValidationError) as error:
        ship(experiment)
    assert "keep the control" in error.value.message_dict["reason"][0]
    assert not Rollout.objects.exists()
    rollout = ship(experiment, reason="The PM accepts the cost: the DPO asked for it.")
    assert rollout.reason == "The PM accepts the cost: the DPO asked for it."


def test_a_final_ship_verdict_for_the_arm_needs_no_reason(experiment):
    verdict(experiment, arm="arm-1")
    rollout = ship(experiment)
    assert rollout.steps == [10, 25, 50, 100] and rollout.percent == 10 and "verdict" in rollout.reason
    assert rollout.previous_default.name == "popularity default"
    assert rollout.created_by == experiment.owner


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"surface_key": "nowhere"}, "surface"),
    ({"arm_key": "no-such-arm"}, "arm"),
    ({"steps": [10, 10, 100]}, "steps"),
    ({"steps": [50, 25, 100]}, "steps"),
    ({"steps": [10, 50, 120]}, "steps"),
    ({"steps": [10, 50]}, "steps"),
    ({"steps": []}, "steps"),
    ({"steps": [0, 100]}, "steps"),
    ({"hold_hours": 0}, "hold_hours"),
    ({"targeting": {"age_band": ["17-99"]}}, "targeting"),
])
def test_bad_input_names_the_field_and_writes_nothing(experiment, kwargs, field):
    with pytest.raises(ValidationError) as error:
        ship(experiment, reason="PM decision", **kwargs)
    assert field in error.value.message_dict
    assert not Rollout.objects.exists()


def test_an_experiment_on_no_surface_cannot_ship_without_one():
    experiment = ExperimentFactory()
    with pytest.raises(ValidationError) as error:
        ship(experiment, reason="PM decision")
    assert "surface" in error.value.message_dict


def test_one_ramping_rollout_per_surface(experiment):
    ship(experiment, reason="first")
    with pytest.raises(ValidationError) as error:
        ship(experiment, reason="second")
    assert "already has a rollout" in error.value.message_dict["surface"][0]
    assert Rollout.objects.count() == 1


def test_the_command_ships_and_refuses_bad_input(experiment, capsys):
    with pytest.raises(CommandError, match="reason"):
        call_command("experiment_ship", experiment.key, "arm-1")
    with pytest.raises(CommandError, match="steps"):
        call_command("experiment_ship", experiment.key, "arm-1", "--reason", "PM", "--steps", "10,5,100")
    with pytest.raises(CommandError, match="Unknown surface"):
        call_command("experiment_ship", experiment.key, "arm-1", "--reason", "PM", "--surface", "nope")
    with pytest.raises(CommandError, match="No experiment"):
        call_command("experiment_ship", "missing", "arm-1", "--reason", "PM")
    assert not Rollout.objects.exists()
    call_command("experiment_ship", experiment.key, "arm-1", "--reason", "PM decision", "--steps", "20,100",
                 "--hold-hours", "2")
    rollout = Rollout.objects.get()
    assert rollout.steps == [20, 100] and rollout.hold_seconds == 7200 and "Rollout" in capsys.readouterr().out


def test_the_admin_ship_action_refuses_a_non_final_experiment_without_reason(experiment, staff_client):
    url = f"/admin/experiments/experiment/{experiment.pk}/ship/"
    response = staff_client.post(url, {"arm": "arm-1", "reason": "", "steps": "10, 25, 50, 100", "hold_hours": 24})
    assert response.status_code == 200 and "needs a recorded reason" in response.content.decode()
    assert not Rollout.objects.exists()
    response = staff_client.post(url, {"arm": "arm-1", "reason": "PM", "steps": "10, 50, 200", "hold_hours": 24})
    assert "more than 100%" in response.content.decode() and not Rollout.objects.exists()
    response = staff_client.post(url, {"arm": "arm-1", "reason": "PM decision", "steps": "10, 50, 100",
                                       "hold_hours": 1})
    assert response.status_code == 302
    assert Rollout.objects.get().created_by.username == "pm"
    assert LogEntry.objects.filter(object_id=str(experiment.pk), change_message__contains="Shipped arm-1").exists()


# --- the ramp under a frozen clock ------------------------------------------------------------


def test_the_ramp_holds_each_step_then_promotes_to_the_default(experiment):
    verdict(experiment)
    rollout = ship(experiment, hold_hours=24)
    hold = timedelta(hours=24)
    assert step(rollout, START + hold - timedelta(seconds=1)) == "held"
    assert step(rollout, START + hold) == "advanced"
    assert step(rollout, START + hold + timedelta(minutes=5)) == "held"  # idempotent within the new step's hold
    rollout.refresh_from_db()
    assert rollout.percent == 25 and rollout.step_started_at == START + hold
    assert step(rollout, START + 2 * hold) == "advanced"
    assert step(rollout, START + 3 * hold) == "advanced"
    rollout.refresh_from_db()
    assert rollout.percent == 100 and rollout.status == Rollout.Status.RAMPING
    assert step(rollout, START + 4 * hold) == "promoted"
    assert step(rollout, START + 5 * hold) == "finished"
    rollout.refresh_from_db()
    surface = rollout.surface
    surface.refresh_from_db()
    assert rollout.status == Rollout.Status.COMPLETED and surface.default_treatment == rollout.treatment
    entry = LogEntry.objects.get(object_id=str(surface.pk), content_type__model="surface")
    assert entry.user == experiment.owner and "held at 100% without a breach" in entry.change_message
    assert "popularity default" in entry.change_message
    assert surface_defaults().rollouts == {}
    assert set(sources(50)) == {"default"}


def test_the_share_of_subjects_follows_the_step_and_nobody_leaves(experiment):
    rollout = ship(experiment, reason="PM", hold_hours=1)
    at_10 = {f"s-{i}" for i in range(2000)
             if subject_assign(subject_id=f"s-{i}", attributes={}).treatments[SURFACE]["source"] == "rollout"}
    assert 140 < len(at_10) < 260
    step(rollout, START + timedelta(hours=1))
    at_25 = {f"s-{i}" for i in range(2000)
             if subject_assign(subject_id=f"s-{i}", attributes={}).treatments[SURFACE]["source"] == "rollout"}
    assert 400 < len(at_25) < 600 and at_10 <= at_25
    entry = subject_assign(subject_id=next(iter(at_10)), attributes={}).treatments[SURFACE]
    assert entry == {"treatment": rollout.treatment.as_contract().to_dict(), "source": "rollout",
                     "experiment": experiment.key, "arm": "arm-1"}


def test_a_targeted_rollout_reaches_only_its_segment(experiment):
    ship(experiment, reason="18-34 first", steps=[100], final_holdback=0, targeting={"age_band": ["18-24", "25-34"]})
    assert sources(200, {"age_band": "25-34"}) == {"rollout": 200}
    assert sources(200, {"age_band": "45-54"}) == {"default": 200}
    assert sources(50) == {"default": 50}  # a subject that reports no age band is not targeted


def test_a_restricted_subject_is_in_no_rollout(experiment):
    ship(experiment, reason="PM", steps=[100], final_holdback=0)
    subject = raw_id()
    grant(subject)
    consent_services.dsr_file(type="restriction", subject_id=subject)
    assert subject_assign(subject_id=subject, attributes={}).treatments[SURFACE]["source"] == "default"
    assert subject_assign(subject_id=raw_id(), attributes={}).treatments[SURFACE]["source"] == "rollout"


def test_the_client_resolves_the_rollout_as_the_server_does(experiment, api):
    experiment.arms.filter(key="arm-1").update(treatment=TreatmentFactory(personalization_level="session"))
    ship(experiment, reason="PM", steps=[50, 100], targeting={"platform": ["android", "ios"]})
    published = api.get("/api/v1/config").json()
    (entry,) = published["rollouts"]
    assert entry["percent"] == 50 and entry["surface"] == SURFACE and entry["targeting"] == {"platform": ["android", "ios"]}
    local = config_parse(published)
    seen = set()
    for i in range(400):
        attributes = {"platform": ["android", "ios", "web"][i % 3]}
        served = api.post("/api/v1/assignments", {"subject_id": f"c-{i}", "attributes": attributes},
                          format="json").json()
        assert local_treatments(local, local_assignments(local, f"c-{i}", attributes), f"c-{i}", attributes) == \
            served["treatments"]
        seen.add(served["treatments"][SURFACE]["source"])
    assert seen == {"rollout", "default"}


# --- rollback ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [ExperimentAlert.Kind.GUARDRAIL, ExperimentAlert.Kind.SRM])
def test_a_rollback_alerts_and_serves_the_default_again(experiment, kind):
    rollout = ship(experiment, reason="PM", steps=[100], final_holdback=0)
    assert sources(20) == {"rollout": 20}
    with TestCase.captureOnCommitCallbacks(execute=True):
        services.rollout_roll_back(rollout=rollout, reason="conversion breached its margin", kind=kind,
                                   details={"metric": "conversion" if kind == "guardrail" else ""})
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.ROLLED_BACK and "breached" in rollout.finish_reason
    alert = ExperimentAlert.objects.get(experiment=experiment, kind=kind)
    assert "rolled back" in alert.message and alert.details["rollout"] == rollout.pk
    assert sources(20) == {"default": 20}
    assert rollout.surface.default_treatment.name == "popularity default"  # the default never changed
    assert step(rollout, START + timedelta(days=30)) == "finished"


def test_a_rollback_needs_a_reason_and_a_ramping_rollout(experiment):
    rollout = ship(experiment, reason="PM")
    with pytest.raises(ValidationError):
        services.rollout_roll_back(rollout=rollout, reason=" ")
    services.rollout_roll_back(rollout=rollout, reason="changed our mind")
    with pytest.raises(ValidationError):
        services.rollout_roll_back(rollout=rollout, reason="again")


# --- beat -----------------------------------------------------------------------------------------


def test_beat_steps_the_due_rollouts(experiment):
    assert BEAT_SCHEDULE["experiments-rollouts-step"]["task"] == "experiments.tasks.rollouts_step_due"
    rollout = ship(experiment, reason="PM", hold_hours=1)
    with TestCase.captureOnCommitCallbacks(execute=True):
        assert services.rollouts.rollouts_enqueue_due() == [rollout.pk]
    rollout.refresh_from_db()
    assert rollout.percent == 25  # the task ran (eager Celery) and advanced one step (START + 1 h is long past)
    rollout.status = Rollout.Status.COMPLETED
    rollout.save(update_fields=["status"])
    assert services.rollouts.rollouts_enqueue_due() == []




# --- the health check: the shipped treatment against the previous default -----------------------


def _exposed(rollout, at, n=400):
    """Subjects seen on the surface at the current step, as the marketplace would send them; by group."""
    groups = {"rollout": [], "default": []}
    with time_machine.travel(at, tick=False):
        for i in range(n):
            subject_id = f"h-{rollout.step_index}-{i}"
            source = subject_assign(subject_id=subject_id, attributes={}).treatments[SURFACE]["source"]
            groups[source].append(subject_id)
    return groups


def _orders(subject_ids, at, prefix):
    for i, subject_id in enumerate(subject_ids):
        OutcomeEvent.objects.create(
            event_id=f"{prefix}-{i}", subject_id=subject_pseudonym(subject_id), type="order", occurred_at=at,
            received_at=at, amount=100000,
        )


def test_the_exposures_of_each_step_record_the_side_of_the_ramp(experiment):
    rollout = ship(experiment, reason="PM", steps=[50, 100], hold_hours=1)
    groups = _exposed(rollout, START + timedelta(minutes=1), n=200)
    _exposed(rollout, START + timedelta(minutes=2), n=200)  # returning subjects: recorded once
    recorded = dict(RolloutExposure.objects.filter(rollout=rollout).values_list("subject_id", "group"))
    assert len(recorded) == 200
    assert {recorded[subject_pseudonym(s)] for s in groups["rollout"]} == {"rollout"}
    assert {recorded[subject_pseudonym(s)] for s in groups["default"]} == {"default"}


def test_a_breached_guardrail_rolls_back_automatically_with_an_alert(experiment):
    Guardrail.objects.create(experiment=experiment, metric="conversion", margin=0.02)
    rollout = ship(experiment, reason="PM", steps=[50, 100], hold_hours=24)
    groups = _exposed(rollout, START + timedelta(minutes=1), n=1200)
    # One in three on the default buys, one in twenty on the shipped treatment: far beyond the 2-point margin.
    _orders(groups["default"][::3], START + timedelta(hours=1), "d")
    _orders(groups["rollout"][::20], START + timedelta(hours=1), "r")
    assert step(rollout, START + timedelta(hours=2)) == "rolled_back"  # before the hold is over
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.ROLLED_BACK and "conversion breached" in rollout.finish_reason
    alert = ExperimentAlert.objects.get(experiment=experiment)
    assert alert.kind == "guardrail" and alert.metric == "conversion" and alert.details["rollout"] == rollout.pk
    assert sources(30) == {"default": 30}


def test_a_sample_ratio_mismatch_rolls_back_automatically(experiment):
    rollout = ship(experiment, reason="PM", steps=[50, 100], hold_hours=24)
    groups = _exposed(rollout, START + timedelta(minutes=1), n=600)
    # A marketplace that drops the default side's traffic (a broken cache, a crashing page):
    RolloutExposure.objects.filter(subject_id__in=[subject_pseudonym(s) for s in groups["default"][50:]]).delete()
    assert step(rollout, START + timedelta(hours=1)) == "rolled_back"
    assert ExperimentAlert.objects.get(experiment=experiment).kind == "srm"


def test_a_healthy_step_is_held_then_advanced(experiment):
    Guardrail.objects.create(experiment=experiment, metric="conversion", margin=0.02)
    rollout = ship(experiment, reason="PM", steps=[50, 100], hold_hours=24)
    groups = _exposed(rollout, START + timedelta(minutes=1), n=1200)
    _orders(groups["default"][::5], START + timedelta(hours=1), "d")
    _orders(groups["rollout"][::5], START + timedelta(hours=1), "r")
    assert step(rollout, START + timedelta(hours=2)) == "held"
    assert step(rollout, START + timedelta(hours=24)) == "advanced"
    assert not ExperimentAlert.objects.exists()


def _events(subject_ids, at, prefix, type):
    OutcomeEvent.objects.bulk_create([
        OutcomeEvent(event_id=f"{prefix}-{i}", subject_id=subject_pseudonym(subject_id), type=type, occurred_at=at,
                     received_at=at, product_id="p-1", category="books")
        for i, subject_id in enumerate(subject_ids)
    ])


def test_a_breached_privacy_guardrail_on_opt_outs_rolls_back_naming_the_metric(experiment):
    Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=0.01)
    rollout = ship(experiment, reason="PM", steps=[50, 100], hold_hours=24)
    subjects = [f"h-0-{i}" for i in range(400)]
    with time_machine.travel(START, tick=False):
        for subject in subjects:
            grant(subject)  # each holds a grant before being exposed
    groups = _exposed(rollout, START + timedelta(minutes=1), n=400)
    with time_machine.travel(START + timedelta(hours=1), tick=False):
        for subject in groups["rollout"][::3]:  # one in three on the shipped treatment withdraws; nobody else
            withdraw(subject)
    assert step(rollout, START + timedelta(hours=2)) == "rolled_back"
    rollout.refresh_from_db()
    assert "opt_out breached its margin at 50%" in rollout.finish_reason
    alert = ExperimentAlert.objects.get(experiment=experiment)
    assert alert.kind == "guardrail" and alert.metric == "opt_out" and "opt_out breached" in alert.message
    assert alert.details["breaches"][0]["metric"] == "opt_out"


def test_a_ratio_guardrail_is_watched_by_the_delta_method(experiment):
    """CTR, clicks over impressions per subject: a relative margin of 10% of the default's CTR."""
    Guardrail.objects.create(experiment=experiment, metric="ctr", margin=0.1, relative=True)
    rollout = ship(experiment, reason="PM", steps=[50, 100], hold_hours=24)
    groups = _exposed(rollout, START + timedelta(minutes=1), n=600)
    later = START + timedelta(hours=1)
    for side, clicking in (("default", 2), ("rollout", 10)):  # CTR 50% against 10%
        _events(groups[side], later, f"{side}-i1", "rec_impression")
        _events(groups[side], later, f"{side}-i2", "rec_impression")
        _events(groups[side][::clicking], later, f"{side}-c", "rec_click")
    from experiments.selectors import rollout_step_statistics

    _, statistics = rollout_step_statistics(rollout=rollout, until=START + timedelta(hours=2))
    default, shipped = statistics["ctr"]
    assert type(default).__name__ == "RatioStatistic"
    assert default.denominator_sum == 2 * len(groups["default"])
    assert shipped.numerator_sum == len(groups["rollout"][::10])
    assert set(statistics) == {"conversion", "opt_out", "consent_rate", "gmv", "orders", "aov", "ctr"}
    assert step(rollout, START + timedelta(hours=2)) == "rolled_back"
    assert ExperimentAlert.objects.get(experiment=experiment).metric == "ctr"


# --- rollout exposures from clients that assign locally -----------------------------------------


def _rollout_exposure(rollout, subject_id, *, group=None, at=None, **overrides):
    spec = surface_defaults().rollouts[SURFACE]
    side = group or ("rollout" if spec.reaches(subject_id, {}) else "default")
    return {"subject_id": subject_id, "timestamp": (at or START + timedelta(minutes=1)).isoformat(),
            "rollout": {"surface": SURFACE, "salt": rollout.salt, "percent": spec.percent, "group": side, **overrides}}


def _post_exposures(api, exposures, at=START + timedelta(minutes=5)):
    with time_machine.travel(at, tick=False):
        return api.post("/api/v1/exposures", {"exposures": exposures}, format="json")


def test_rollout_exposures_are_recorded_once_with_the_earliest_time_and_counted(experiment, api):
    rollout = ship(experiment, reason="PM", steps=[50, 100], hold_hours=24)
    batch = [_rollout_exposure(rollout, f"l-{i}", at=START + timedelta(minutes=3)) for i in range(200)]
    response = _post_exposures(api, batch)
    assert response.status_code == 201, response.json()
    assert response.json() == {"received": 200, "recorded": 200, "duplicates": 0, "withheld": 0}
    earlier = [_rollout_exposure(rollout, f"l-{i}", at=START + timedelta(minutes=2)) for i in range(10)]
    assert _post_exposures(api, earlier + batch[:5]).json()["duplicates"] == 10  # the same subject twice is one
    stored = RolloutExposure.objects.filter(rollout=rollout, step_index=0)
    assert stored.count() == 200
    assert stored.get(subject_id=subject_pseudonym("l-0")).first_exposed_at == START + timedelta(minutes=2)
    assert stored.get(subject_id=subject_pseudonym("l-199")).first_exposed_at == START + timedelta(minutes=3)
    sides = {"rollout": 0, "default": 0}
    for exposure in batch:
        sides[exposure["rollout"]["group"]] += 1
    counts, statistics = services.rollouts.rollout_step_statistics(rollout=rollout, until=START + timedelta(hours=1))
    assert counts == sides and min(sides.values()) > 50 and statistics["conversion"][0].n == sides["default"]
    # The server's own assignment of the same subjects adds nothing.
    with time_machine.travel(START + timedelta(minutes=10), tick=False):
        subject_assign(subject_id="l-3", attributes={})
    assert stored.count() == 200


@pytest.mark.parametrize(("change", "field"), [
    ({"surface": "checkout"}, "rollout.surface"),
    ({"salt": "another"}, "rollout.salt"),
    ({"percent": 25}, "rollout.percent"),
    ({"percent": 0}, "rollout.percent"),
    ({"group": "both"}, "rollout.group"),
    ({"flavour": "x"}, "rollout.flavour"),
])
def test_bad_rollout_exposures_write_nothing_and_name_the_field(experiment, api, change, field):
    rollout = ship(experiment, reason="PM", steps=[50, 100], hold_hours=24)
    good = _rollout_exposure(rollout, "g-1")
    bad = _rollout_exposure(rollout, "g-2", **change)
    response = _post_exposures(api, [good, bad])
    assert response.status_code == 400 and f"exposures[1].{field}" in response.json(), response.json()
    assert not RolloutExposure.objects.exists()


def test_a_rollout_exposure_on_the_wrong_side_or_before_the_rollout_is_refused(experiment, api):
    rollout = ship(experiment, reason="PM", steps=[50, 100], hold_hours=24)
    right = _rollout_exposure(rollout, "w-1")
    wrong = {**right, "rollout": {**right["rollout"], "group": "default" if right["rollout"]["group"] == "rollout"
                                  else "rollout"}}
    response = _post_exposures(api, [wrong])
    assert response.status_code == 400 and "Not the subject's side" in response.json()["exposures[0].rollout.group"][0]
    early = _rollout_exposure(rollout, "w-1", at=START - timedelta(minutes=1))
    assert "exposures[0].timestamp" in _post_exposures(api, [early]).json()
    both = {**right, "experiment": experiment.key}
    assert "exposures[0].experiment" in _post_exposures(api, [both]).json()
    assert not RolloutExposure.objects.exists()


def test_a_client_a_step_behind_reports_the_step_it_saw(experiment, api):
    rollout = ship(experiment, reason="PM", steps=[50, 100], hold_hours=1)
    seen_at_50 = _rollout_exposure(rollout, "b-1")
    step(rollout, START + timedelta(hours=1))
    assert _post_exposures(api, [seen_at_50], at=START + timedelta(hours=1, minutes=1)).status_code == 201
    assert RolloutExposure.objects.get().step_index == 0


class _ViaTestClient:
    """The client's HTTP, through Django's test client (no live server: fast)."""

    def __init__(self, api):
        self.api = api

    def __call__(self, method, path, *, headers, body=None):
        if method == "GET":
            response = self.api.get(path)
        else:
            response = self.api.post(path, body, content_type="application/json")
        return response.status_code, response.content, {"etag": response.get("ETag")}


def test_the_client_sends_rollout_exposures_and_the_health_check_counts_them(experiment, api):
    from privacylab_client import Client

    rollout = ship(experiment, reason="PM", steps=[50, 100], hold_hours=24)
    client = Client("http://testserver", "unused", start=False)
    client._request = _ViaTestClient(api)
    with time_machine.travel(START + timedelta(minutes=1), tick=False):
        client.refresh()
        served = {}
        for _ in range(2):  # returning subjects queue nothing new
            for i in range(300):
                served[f"k-{i}"] = client.assign(f"k-{i}", {})["treatments"][SURFACE]["source"]
        assert client.exposures_pending == 300
        client.flush()
    assert client.exposures_sent == 300 and client.exposures_rejected == 0
    recorded = dict(RolloutExposure.objects.filter(rollout=rollout).values_list("subject_id", "group"))
    assert recorded == {subject_pseudonym(s): source for s, source in served.items()}
    counts, _ = services.rollouts.rollout_step_statistics(rollout=rollout, until=START + timedelta(hours=1))
    assert sum(counts.values()) == 300 and set(served.values()) == {"rollout", "default"}


def test_the_schema_documents_the_rollout_exposure(client):
    from tests.openapi_schema import schema_components

    schemas = schema_components(client)
    assert "rollout" in schemas["ExposureIn"]["properties"]
    assert not {"experiment", "arm", "rollout"} & set(schemas["ExposureIn"].get("required", []))
    rollout = schemas["RolloutExposureIn"]
    assert set(rollout["required"]) == {"surface", "salt", "percent", "group"}
    group = rollout["properties"]["group"]
    reference = group.get("$ref") or group.get("allOf", [{}])[0].get("$ref")
    group = schemas[reference.rsplit("/", 1)[1]] if reference else group
    assert group["enum"] == ["rollout", "default"]


# --- at 100%: the final holdback keeps a comparison until the promotion --------------------------


def test_at_100_percent_a_final_holdback_stays_on_the_previous_default(experiment, api):
    rollout = ship(experiment, reason="PM", steps=[50, 100], hold_hours=1, final_holdback=20)
    step(rollout, START + timedelta(hours=1))
    rollout.refresh_from_db()
    assert rollout.percent == 100 and rollout.serving_percent() == 80
    assert api.get("/api/v1/config").json()["rollouts"][0]["percent"] == 80.0
    counts = sources(1000)
    assert 740 < counts["rollout"] < 860 and counts["rollout"] + counts["default"] == 1000


def test_a_breach_during_the_final_hold_rolls_back_instead_of_promoting(experiment):
    Guardrail.objects.create(experiment=experiment, metric="conversion", margin=0.02)
    rollout = ship(experiment, reason="PM", steps=[50, 100], hold_hours=24, final_holdback=20)
    step(rollout, START + timedelta(hours=24))
    groups = _exposed(rollout, START + timedelta(hours=24, minutes=1), n=1200)
    assert len(groups["default"]) > 180  # the holdback: compared at 100% too
    _orders(groups["default"][::3], START + timedelta(hours=25), "d")
    _orders(groups["rollout"][::20], START + timedelta(hours=25), "r")
    assert step(rollout, START + timedelta(hours=48)) == "rolled_back"  # the hold is over: it would have promoted
    rollout.refresh_from_db()
    assert rollout.status == Rollout.Status.ROLLED_BACK and "at 100%" in rollout.finish_reason
    assert rollout.surface.default_treatment.name == "popularity default"


def test_a_healthy_final_hold_promotes_and_the_holdback_ends(experiment):
    rollout = ship(experiment, reason="PM", steps=[50, 100], hold_hours=24, final_holdback=20)
    step(rollout, START + timedelta(hours=24))
    _exposed(rollout, START + timedelta(hours=24, minutes=1), n=600)  # in the 80/20 ratio: no mismatch
    assert step(rollout, START + timedelta(hours=48)) == "promoted"
    assert sources(50) == {"default": 50}  # everyone: the shipped treatment is the default now
    assert Rollout.objects.get().surface.default_treatment == rollout.treatment


@pytest.mark.parametrize("holdback", [-1, 50, 2.5, True])
def test_a_bad_final_holdback_is_refused(experiment, holdback):
    with pytest.raises(ValidationError) as error:
        ship(experiment, reason="PM", final_holdback=holdback)
    assert "final_holdback" in error.value.message_dict and not Rollout.objects.exists()


def test_the_final_holdback_defaults_to_the_tunable(experiment, settings):
    settings.ROLLOUT_FINAL_HOLDBACK_PERCENT = 7
    assert ship(experiment, reason="PM").final_holdback == 7
