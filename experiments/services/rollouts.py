"""Shipping an arm as a rollout: validation, the ramp's steps, promotion to the surface's default, rollback.

docs/surfaces.md, "Shipping". Every change of a surface's default is written to
the admin's history (``LogEntry``: who, when, why).
"""

import logging
import math
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from config.task_registry import registered_task
from experiments.metrics.definitions import METRICS
from experiments.models import Experiment, ExperimentAlert, ExperimentDecision, Rollout, Surface
from experiments.selectors import rollout_step_statistics
from experiments.services.lifecycle import experiment_config_changed
from experiments.stats.decide import DEFAULT_TUNING_SAMPLE_SIZE
from experiments.stats.rollout import RolloutVerdict, WatchedMetric, rollout_check
from experiments.targeting import targeting_problems

logger = logging.getLogger(__name__)
ROLLOUT_STEP_TASK = "experiments.tasks.rollout_step"


def rollout_validate_steps(*, steps: object) -> list[int]:
    """The ramp as whole percentages, strictly increasing, each in 1..100, the last 100; else a ValidationError."""
    message = None
    if not isinstance(steps, list | tuple) or not steps:
        message = "Give the ramp as increasing percentages ending at 100, e.g. 10, 25, 50, 100."
    elif not all(isinstance(step, int) and not isinstance(step, bool) for step in steps):
        message = "Each step is a whole percentage, e.g. 10, 25, 50, 100."
    elif any(step < 1 or step > 100 for step in steps):
        message = "Each step is a percentage from 1 to 100: a rollout cannot reach more than 100% of the traffic."
    elif any(later <= earlier for earlier, later in zip(steps, steps[1:], strict=False)):
        message = f"The steps must increase ({', '.join(map(str, steps))} does not)."
    elif steps[-1] != 100:
        message = "The last step is 100: the treatment becomes the surface's default only after reaching everyone."
    if message:
        raise ValidationError({"steps": message})
    return list(steps)


def _ship_verdict(experiment: Experiment) -> ExperimentDecision | None:
    return experiment.decisions.filter(phase=experiment.phase).first()


def experiment_ship(
    *,
    experiment: Experiment,
    arm_key: str,
    reason: str = "",
    surface_key: str | None = None,
    steps: Sequence[int] | None = None,
    hold_hours: float | None = None,
    targeting: dict | None = None,
    final_holdback: int | None = None,
    actor=None,
    now: datetime | None = None,
) -> Rollout:
    """Start the rollout of an arm's treatment on the experiment's surface (or ``surface_key``).

    Allowed from the phase's final "ship" verdict for this arm; otherwise only with a
    ``reason``, recorded on the rollout (a PM's decision). ``final_holdback``
    (default ``ROLLOUT_FINAL_HOLDBACK_PERCENT``): the percent of the traffic kept on
    the previous default at the 100% step, so its hold is still a comparison. Bad
    input is a ValidationError naming the field, and nothing is written.
    """
    now = now or timezone.now()
    reason = (reason or "").strip()
    errors = {}
    arm = experiment.arms.select_related("treatment").filter(key=arm_key).first()
    if arm is None:
        errors["arm"] = (f"Experiment {experiment.key!r} has no arm {arm_key!r}; its arms are "
                         f"{', '.join(experiment.arms.order_by('id').values_list('key', flat=True))}.")
    if surface_key is not None:
        surface = Surface.objects.filter(key=surface_key).first()
        if surface is None:
            known = ", ".join(Surface.objects.values_list("key", flat=True)) or "none yet"
            errors["surface"] = f"Unknown surface {surface_key!r}; the surfaces are: {known}."
    else:
        surface = experiment.surface
        if surface is None:
            errors["surface"] = f"Experiment {experiment.key!r} runs on no surface: choose the surface to ship to."
    verdict = _ship_verdict(experiment)
    shipped_by_verdict = (
        verdict is not None and verdict.outcome == ExperimentDecision.Outcome.SHIP and verdict.arm == arm_key
    )
    if not shipped_by_verdict and not reason:
        said = ("has no final verdict yet" if verdict is None else
                "'s final verdict is to keep the control" if verdict.outcome != ExperimentDecision.Outcome.SHIP else
                f"'s final verdict ships {verdict.arm!r}")
        errors["reason"] = (f"Experiment {experiment.key!r} {said}: shipping {arm_key!r} needs a recorded reason "
                            "(a product manager's decision).")
    try:
        steps = rollout_validate_steps(steps=list(settings.ROLLOUT_STEPS) if steps is None else list(steps))
    except ValidationError as exc:
        errors.update(exc.message_dict)
    hold_hours = settings.ROLLOUT_HOLD_HOURS if hold_hours is None else hold_hours
    if not (isinstance(hold_hours, int | float) and math.isfinite(hold_hours) and hold_hours * 3600 >= 1):
        errors["hold_hours"] = "Hold each step for a positive number of hours, e.g. 24."
    final_holdback = settings.ROLLOUT_FINAL_HOLDBACK_PERCENT if final_holdback is None else final_holdback
    if not (isinstance(final_holdback, int) and not isinstance(final_holdback, bool) and 0 <= final_holdback < 50):
        errors["final_holdback"] = ("The final holdback is a whole percent from 0 to 49 of the traffic kept on the "
                                    "previous default at 100%, e.g. 5.")
    if problems := targeting_problems(targeting=targeting or {}):
        errors["targeting"] = " ".join(problems)
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        surface = Surface.objects.select_for_update().get(pk=surface.pk)
        ramping = surface.rollouts.filter(status=Rollout.Status.RAMPING).first()
        if ramping is not None:
            raise ValidationError({"surface": f"Surface {surface.key!r} already has a rollout ramping ({ramping}): "
                                   "let it finish or roll it back first."})
        rollout = Rollout.objects.create(
            experiment=experiment, arm=arm, surface=surface, treatment=arm.treatment,
            previous_default=surface.default_treatment, steps=steps, step_index=0, step_started_at=now,
            hold_seconds=max(1, round(hold_hours * 3600)), final_holdback=final_holdback, targeting=targeting or {},
            reason=reason if reason else f"Final ship verdict of phase {verdict.phase}.",
            created_by=actor or experiment.owner, created_at=now,
        )
        experiment_config_changed()
    logger.info("rollout %s started: %s/%s on %s at %d%%", rollout.pk, experiment.key, arm_key, surface.key, steps[0])
    return rollout


def _default_change_log(*, surface: Surface, user, message: str) -> None:
    LogEntry.objects.log_actions(
        user_id=user.pk, queryset=Surface.objects.filter(pk=surface.pk), action_flag=CHANGE,
        change_message=message, single_object=True,
    )


def rollout_step(*, rollout_id: int, now: datetime | None = None) -> str:
    """Check one rollout's health, then advance it if its step has been held long enough; idempotent.

    Returns what happened: ``"rolled_back"`` (a sample-ratio mismatch or a breached
    guardrail: an alert is raised), ``"held"``, ``"advanced"``, ``"promoted"`` or
    ``"finished"`` (not ramping any more). At the last step (100%), held without a
    breach, the treatment becomes the surface's default.
    """
    now = now or timezone.now()
    with transaction.atomic():
        rollout = Rollout.objects.select_for_update(of=("self",)).select_related(
            "surface", "treatment", "created_by", "experiment", "arm").filter(pk=rollout_id).first()
        if rollout is None or rollout.status != Rollout.Status.RAMPING:
            return "finished"
        verdict = rollout_health(rollout=rollout, now=now)
        if verdict.srm:
            rollout_roll_back(rollout=rollout, kind=ExperimentAlert.Kind.SRM, now=now,
                              reason=f"sample-ratio mismatch at {rollout.percent}% (p = {verdict.srm_p_value:.2g})",
                              details={"srm_p_value": verdict.srm_p_value})
            return "rolled_back"
        if verdict.breaches:
            breach = verdict.breaches[0]
            rollout_roll_back(rollout=rollout, kind=ExperimentAlert.Kind.GUARDRAIL, now=now,
                              reason=f"{breach['metric']} breached its margin at {rollout.percent}% (estimate "
                              f"{breach['estimate']:+.4g}, tolerated {breach['tolerated']:+.4g})",
                              details={"metric": breach["metric"], "breaches": list(verdict.breaches)})
            return "rolled_back"
        if now < rollout.step_started_at + timedelta(seconds=rollout.hold_seconds):
            return "held"
        if rollout.step_index + 1 < len(rollout.steps):
            rollout.step_index += 1
            rollout.step_started_at = now
            rollout.save(update_fields=["step_index", "step_started_at"])
            experiment_config_changed()
            logger.info("rollout %s: step %d, %d%%", rollout.pk, rollout.step_index, rollout.percent)
            return "advanced"
        surface = Surface.objects.select_for_update().get(pk=rollout.surface_id)
        surface.default_treatment = rollout.treatment
        surface.save(update_fields=["default_treatment"])
        rollout.status = Rollout.Status.COMPLETED
        rollout.finished_at = now
        rollout.finish_reason = "Held at 100% without a breach: now the surface's default."
        rollout.save(update_fields=["status", "finished_at", "finish_reason"])
        _default_change_log(
            surface=surface, user=rollout.created_by,
            message=f"Default treatment → {rollout.treatment.name!r} (was "
            f"{rollout.previous_default.name if rollout.previous_default else 'the built-in fallback'!r}): rollout "
            f"{rollout.pk} of {rollout.experiment.key}/{rollout.arm.key} held at 100% without a breach. "
            f"Why shipped: {rollout.reason}",
        )
        experiment_config_changed()
    logger.info("rollout %s promoted: %s is the default of %s", rollout.pk, rollout.treatment.name, surface.key)
    return "promoted"


def rollout_health(*, rollout: Rollout, now: datetime) -> RolloutVerdict:
    """The current step's verdict: the shipped treatment against the previous default, on every guardrail of
    the experiment and its primary metric's margin, measured as the metric pipeline measures them."""
    experiment = rollout.experiment
    watched = [
        WatchedMetric(metric=g.metric, margin=g.margin, relative=g.relative, higher_is_better=METRICS[g.metric][1])
        for g in experiment.guardrails.all()
    ]
    if experiment.decision_margin and experiment.primary_metric not in {w.metric for w in watched}:
        watched.append(WatchedMetric(metric=experiment.primary_metric, margin=experiment.decision_margin,
                                     relative=True, higher_is_better=METRICS[experiment.primary_metric][1]))
    counts, statistics = rollout_step_statistics(rollout=rollout, until=now)
    planned = experiment.planned_subjects_per_arm
    return rollout_check(
        counts=counts, percent=rollout.serving_percent(), statistics=statistics, watched=watched, alpha=experiment.alpha,
        tuning_sample_size=2 * planned if planned else DEFAULT_TUNING_SAMPLE_SIZE,
    )


def rollout_roll_back(
    *, rollout: Rollout, reason: str, kind: str | None = None, details: dict | None = None, actor=None,
    now: datetime | None = None,
) -> Rollout:
    """Stop a ramping rollout: every subject gets the surface's default again; ``kind`` (srm, guardrail) raises an alert."""
    now = now or timezone.now()
    if not reason.strip():
        raise ValidationError({"reason": "Say why the rollout is rolled back."})
    with transaction.atomic():
        rollout = Rollout.objects.select_for_update(of=("self",)).select_related("experiment", "arm").get(pk=rollout.pk)
        if rollout.status != Rollout.Status.RAMPING:
            raise ValidationError({"status": f"Rollout {rollout.pk} is {rollout.get_status_display().lower()}, not ramping."})
        rollout.status = Rollout.Status.ROLLED_BACK
        rollout.finished_at = now
        rollout.finish_reason = reason.strip() + (f" (by {actor})" if actor else "")
        rollout.save(update_fields=["status", "finished_at", "finish_reason"])
        if kind is not None:
            ExperimentAlert.objects.get_or_create(
                experiment=rollout.experiment, kind=kind, arm=rollout.arm.key, metric=(details or {}).get("metric", ""),
                acknowledged_at=None,
                defaults={"message": f"Rollout of {rollout.arm.key} on {rollout.surface.key} rolled back: {reason}",
                          "details": {"rollout": rollout.pk, **(details or {})}, "created_at": now,
                          "action": ExperimentAlert.Action.ROLLED_BACK},
            )
        experiment_config_changed()
    logger.warning("rollout %s rolled back: %s", rollout.pk, reason)
    return rollout


def rollouts_enqueue_due() -> list[int]:
    """Enqueue ``rollout_step`` (on commit) for every ramping rollout; returns their ids.

    Every one, not only those whose hold is over: the always-valid test may be
    looked at on every beat, so a breach rolls back without waiting for the hold.
    """
    due = list(Rollout.objects.filter(status=Rollout.Status.RAMPING).order_by("pk").values_list("pk", flat=True))
    for rollout_id in due:
        transaction.on_commit(lambda rollout_id=rollout_id: registered_task(ROLLOUT_STEP_TASK).delay(rollout_id))
    return due
