"""Experiment lifecycle writes: save and validate, start to conclude, phases, coverage, holdout, schedule."""

import logging
import uuid
from collections.abc import Iterable, Mapping

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from experiments.models import (
    Arm,
    Experiment,
    Guardrail,
    Holdout,
)
from experiments.selectors import CONFIG_VERSION_KEY, experiment_scheduled_later
from experiments.services.compliance import experiment_validate_compliance
from experiments.validation import experiment_decision_problems

logger = logging.getLogger(__name__)

Status = Experiment.Status



# Fields that define who is in which arm: frozen once an experiment has run.
# The surface too: moving it would change the treatment its subjects get.
FROZEN_FIELDS = frozenset({"key", "salt", "layer", "layer_start", "layer_end", "targeting", "surface"})

# The analysis, fixed before the data comes in (a test chosen after seeing the data is not a
# test): frozen once an experiment has started; changing them starts a new phase
# (``experiment_new_phase``). The guardrails, rows of their own, freeze with them.
ANALYSIS_FIELDS = frozenset({
    "primary_metric", "alpha", "decision_rule", "decision_margin", "testing_mode", "minimum_runtime_days",
    "privacy_order", "planned_subjects_per_arm", "gmv_cap_percentile", "pre_exposure_days",
    "plan_daily_subjects", "plan_baseline", "plan_standard_deviation", "plan_minimum_effect", "plan_power",
    "analysis_engine", "prior_mean", "prior_variance",
})
ANALYSIS_FROZEN = (
    "Fixed when the experiment started, so that the analysis cannot follow the data; pause it and start a "
    "new phase to change it."
)

_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "start": (frozenset({Status.DRAFT}), Status.RUNNING),
    "pause": (frozenset({Status.RUNNING}), Status.PAUSED),
    "resume": (frozenset({Status.PAUSED}), Status.RUNNING),
    "stop": (frozenset({Status.RUNNING, Status.PAUSED}), Status.STOPPED),
    "conclude": (frozenset({Status.STOPPED}), Status.CONCLUDED),
}

# Subject attributes the assignment request may carry and the Subject row keeps.


def experiment_config_changed() -> None:
    """Tell every process that the running experiments' configuration changed.

    Runs after the transaction commits, so no process can reload the old rows.
    """
    transaction.on_commit(lambda: cache.set(CONFIG_VERSION_KEY, uuid.uuid4().hex, timeout=None))


# --- validation ------------------------------------------------------------------


def experiment_validate_arms(*, experiment: Experiment, arms: Iterable[Arm] | None = None) -> None:
    arms = list(experiment.arms.all() if arms is None else arms)
    errors = []
    if len(arms) < 2:
        errors.append("An experiment needs at least two arms.")
    controls = sum(1 for arm in arms if arm.is_control)
    if controls != 1:
        errors.append(f"An experiment needs exactly one control arm (it has {controls}).")
    if any(not arm.weight or arm.weight <= 0 for arm in arms):
        errors.append("Every arm's weight must be positive.")
    if len({arm.key for arm in arms}) != len(arms):
        errors.append("Arm keys must be unique within the experiment.")
    if errors:
        raise ValidationError({"arms": errors})


def experiment_validate_change(*, experiment: Experiment, changed: Iterable[str]) -> None:
    """Refuse changes to a non-draft experiment that would move subjects between arms."""
    if experiment.pk is None:
        return
    changed = set(changed)
    previous = Experiment.objects.get(pk=experiment.pk)
    if previous.status != Status.DRAFT:
        frozen = {name: "Frozen once the experiment has started; start a new phase or a new experiment."
                  for name in sorted(changed & FROZEN_FIELDS)}
        frozen.update({name: ANALYSIS_FROZEN for name in sorted(changed & ANALYSIS_FIELDS)})
        if frozen:
            raise ValidationError(frozen)
        if "coverage" in changed and experiment.coverage < previous.coverage:
            raise ValidationError(
                {"coverage": f"Coverage may only grow while the experiment runs (it is {previous.coverage:g})."}
            )


def experiment_validate_layer_range(*, experiment: Experiment) -> None:
    """The experiment's range of its layer overlaps no running or paused experiment's (checked on save and at start)."""
    from experiments.selectors import format_range, layer_claims, layer_free_ranges

    claims = layer_claims(layer_id=experiment.layer_id, exclude_experiment_id=experiment.pk)
    clashes = [c for c in claims if c.start < experiment.layer_end and c.end > experiment.layer_start]
    if not clashes:
        return
    free = layer_free_ranges(claims)
    taken = ", ".join(f"{c.experiment!r} {format_range(c.start, c.end)} ({c.status})" for c in clashes)
    offer = (f"Free in this layer: {', '.join(format_range(*r) for r in free)}; choose a range inside one of them"
             if free else "Nothing is free in this layer; choose another layer or create a new one")
    raise ValidationError(
        {
            "layer_start": f"The range {format_range(experiment.layer_start, experiment.layer_end)} of layer "
            f"{experiment.layer.name!r} overlaps experiment {taken}: a subject can be in only one experiment of a "
            f"layer. {offer}, or pick another layer."
        }
    )


# --- writes ----------------------------------------------------------------------


def experiment_save(*, experiment: Experiment, changed: Iterable[str] = ()) -> Experiment:
    """Create or update an experiment's own fields (arms are saved separately).

    A changed override reason voids an approval given for the old one.
    """
    changed = set(changed)
    if "compliance_override_reason" in changed and experiment.compliance_override_approved_at is not None:
        _override_approval_clear(experiment)
    experiment.full_clean(exclude=["owner"] if experiment.owner_id is None else None)
    with transaction.atomic():
        experiment_validate_change(experiment=experiment, changed=changed)
        if experiment.status == Status.DRAFT and (experiment.pk is None or changed & {"layer", "layer_start", "layer_end"}):
            # Known now rather than at Start: the range is held by a running experiment.
            experiment_validate_layer_range(experiment=experiment)
        experiment.save()
        if experiment.status != Status.DRAFT:
            experiment_config_changed()
    return experiment


def experiment_plan_apply(*, experiment: Experiment, arms=None, guardrails=None):
    """Size the experiment with the planner and store its planned subjects per arm and days.

    Returns the ``DecisionPlan``; raises ``selectors.PlanIncomplete`` (a
    ``ValueError``) with what is missing, changing nothing.
    """
    from experiments.selectors import experiment_decision_plan

    if experiment.pk is not None and Experiment.objects.filter(pk=experiment.pk).exclude(status=Status.DRAFT).exists():
        raise ValidationError({"planned_subjects_per_arm": ANALYSIS_FROZEN})
    plan = experiment_decision_plan(experiment=experiment, arms=arms, guardrails=guardrails)
    experiment.planned_subjects_per_arm = plan.planned_subjects_per_arm
    experiment.planned_days = plan.days
    if experiment.pk is not None:
        Experiment.objects.filter(pk=experiment.pk).update(
            planned_subjects_per_arm=plan.planned_subjects_per_arm, planned_days=plan.days, updated_at=timezone.now()
        )
    return plan


def experiment_start_problems(*, experiment: Experiment) -> list[str]:
    """Why the experiment could not start now (its arms, a layer clash, compliance); writes nothing.

    The admin's Start confirmation shows these before the PM confirms.
    """
    problems = []
    for check in (experiment_validate_arms, experiment_validate_layer_range, experiment_validate_compliance):
        try:
            check(experiment=experiment)
        except ValidationError as exc:
            problems.extend(exc.messages)
    return problems


def experiment_transition(*, experiment: Experiment, action: str, now=None, ignore_schedule: bool = False) -> Experiment:
    """Move an experiment along draft → running ⇄ paused → stopped → concluded.

    A draft scheduled to start later is started by the scheduler
    (``experiments_apply_schedule``) at its time: starting it earlier needs
    ``ignore_schedule``, which clears the scheduled start.
    """
    if action not in _TRANSITIONS:
        raise ValueError(f"unknown lifecycle action {action!r}")
    allowed_from, target = _TRANSITIONS[action]
    now = now or timezone.now()
    with transaction.atomic():
        # Lock the layer, so two experiments cannot claim overlapping ranges at once.
        experiment = Experiment.objects.select_for_update().select_related("layer").get(pk=experiment.pk)
        type(experiment.layer).objects.select_for_update().filter(pk=experiment.layer_id).exists()
        if experiment.status not in allowed_from:
            raise ValidationError(
                f"Cannot {action} experiment {experiment.key!r}: it is {experiment.status}, "
                f"and {action} needs {' or '.join(sorted(allowed_from))}."
            )
        if action == "start" and experiment_scheduled_later(experiment=experiment, now=now):
            if not ignore_schedule:
                raise ValidationError({"scheduled_start": (
                    f"Experiment {experiment.key!r} is scheduled to start at "
                    f"{timezone.localtime(experiment.scheduled_start):%Y-%m-%d %H:%M %Z}: the scheduler starts it "
                    "then. To start it now instead, clear the schedule (or confirm Start now)."
                )})
            experiment.scheduled_start = None
        if target == Status.RUNNING:
            experiment_validate_arms(experiment=experiment)
            experiment_validate_layer_range(experiment=experiment)
            experiment_validate_compliance(experiment=experiment)
        if action == "start":
            experiment.started_at = now
        if target in (Status.STOPPED,):
            experiment.ended_at = now
        experiment.status = target
        experiment.save(update_fields=["status", "started_at", "ended_at", "scheduled_start", "updated_at"])
        experiment_config_changed()
    logger.info("experiment %s: %s → %s", experiment.key, action, target)
    return experiment


def experiment_start(*, experiment: Experiment) -> Experiment:
    return experiment_transition(experiment=experiment, action="start")


def experiment_pause(*, experiment: Experiment) -> Experiment:
    return experiment_transition(experiment=experiment, action="pause")


def experiment_resume(*, experiment: Experiment) -> Experiment:
    return experiment_transition(experiment=experiment, action="resume")


def experiment_stop(*, experiment: Experiment) -> Experiment:
    return experiment_transition(experiment=experiment, action="stop")


def experiment_conclude(*, experiment: Experiment) -> Experiment:
    return experiment_transition(experiment=experiment, action="conclude")


def experiment_new_phase(
    *,
    experiment: Experiment,
    weights: Mapping[str, float],
    analysis: Mapping[str, object] | None = None,
    guardrail_margins: Mapping[str, float] | None = None,
) -> Experiment:
    """Start a new phase of a paused experiment: new weights, a new salt, optionally a new analysis.

    Subjects already exposed keep their arm (their exposure is the record);
    subjects arriving from now on are assigned with the new salt and weights.
    ``analysis`` changes settings of ``ANALYSIS_FIELDS`` and ``guardrail_margins``
    the margins of guardrails by metric (both frozen within a phase): the new
    phase is analysed with them from its own start. Resume the experiment to
    run the new phase.
    """
    analysis = dict(analysis or {})
    guardrail_margins = dict(guardrail_margins or {})
    unknown_settings = sorted(set(analysis) - ANALYSIS_FIELDS)
    if unknown_settings:
        raise ValidationError({"analysis": f"Not analysis settings: {', '.join(unknown_settings)}."})
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if experiment.status != Status.PAUSED:
            raise ValidationError("A new phase can start only while the experiment is paused: pause it first.")
        arms = list(experiment.arms.select_for_update().order_by("id"))
        unknown = sorted(set(weights) - {arm.key for arm in arms})
        if unknown:
            raise ValidationError({"weights": f"Unknown arms: {', '.join(unknown)}."})
        for arm in arms:
            arm.weight = float(weights.get(arm.key, arm.weight))
        experiment_validate_arms(experiment=experiment, arms=arms)
        guardrails = list(experiment.guardrails.select_for_update().order_by("id"))
        unknown = sorted(set(guardrail_margins) - {guardrail.metric for guardrail in guardrails})
        if unknown:
            raise ValidationError({"guardrail_margins": f"No guardrail on: {', '.join(unknown)}."})
        margin_errors = {}
        for guardrail in guardrails:
            if guardrail.metric in guardrail_margins:
                guardrail.margin = float(guardrail_margins[guardrail.metric])
                try:
                    guardrail.full_clean()
                except ValidationError as exc:
                    margin_errors[f"guardrail_margin__{guardrail.metric}"] = exc.messages
        if margin_errors:
            raise ValidationError(margin_errors)
        for name, value in analysis.items():
            setattr(experiment, name, value)
        experiment.full_clean()
        problems = experiment_decision_problems(experiment=experiment, arm_keys=[arm.key for arm in arms])
        if problems:
            raise ValidationError(problems)
        Arm.objects.bulk_update(arms, ["weight"])
        Guardrail.objects.bulk_update(guardrails, ["margin"])
        experiment.salt = uuid.uuid4().hex[:16]
        experiment.phase += 1
        experiment.save(update_fields=["salt", "phase", "updated_at", *sorted(analysis)])
        experiment_config_changed()
    logger.info("experiment %s: phase %d", experiment.key, experiment.phase)
    return experiment


def experiment_set_coverage(*, experiment: Experiment, coverage: float) -> Experiment:
    """Ramp traffic up; coverage never shrinks while an experiment has run."""
    experiment.coverage = coverage
    return experiment_save(experiment=experiment, changed=["coverage"])


def holdout_validate_share(*, share: float) -> None:
    if not 0.0 <= share <= 0.5:
        raise ValidationError({"share": "The holdout share must be between 0 and 0.5."})
    current = Holdout.objects.filter(id=1).values_list("share", flat=True).first() or 0.0
    if share != current and Experiment.objects.filter(status__in=[Status.RUNNING, Status.PAUSED]).exists():
        raise ValidationError(
            {"share": "The holdout can change only while no experiment is running or paused."}
        )


def holdout_set_share(*, share: float) -> Holdout:
    with transaction.atomic():
        holdout, _ = Holdout.objects.select_for_update().get_or_create(id=1)
        holdout_validate_share(share=share)
        holdout.share = share
        holdout.save()
        experiment_config_changed()
    return holdout


def experiments_apply_schedule(*, now=None) -> dict[str, list[str]]:
    """Start drafts whose scheduled start has come and stop experiments whose end has.

    Idempotent: an experiment already moved is not selected again. An experiment
    that cannot start (invalid arms, a layer clash) is left in draft and logged.
    """
    now = now or timezone.now()
    started, stopped, failed = [], [], []
    for experiment in Experiment.objects.filter(status=Status.DRAFT, scheduled_start__lte=now).exclude(
        scheduled_end__lte=now
    ):
        try:
            experiment_transition(experiment=experiment, action="start", now=now)
            started.append(experiment.key)
        except ValidationError as exc:
            failed.append(experiment.key)
            logger.warning("scheduled start of %s refused: %s", experiment.key, "; ".join(exc.messages))
    for experiment in Experiment.objects.filter(
        status__in=[Status.RUNNING, Status.PAUSED], scheduled_end__lte=now
    ):
        experiment_stop(experiment=experiment)
        stopped.append(experiment.key)
    return {"started": started, "stopped": stopped, "failed": failed}


def _override_approval_clear(experiment: Experiment) -> None:
    experiment.compliance_override_approved_by = None
    experiment.compliance_override_approved_at = None
    experiment.compliance_override_approved_findings = {}
