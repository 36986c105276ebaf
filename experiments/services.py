"""Writes of the experiments app: lifecycle, configuration and first exposures."""

import logging
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from consent.models import Subject
from consent.pseudonyms import subject_pseudonym
from experiments.assignment import assign, in_holdout, targeting_matches
from experiments.models import Arm, Experiment, Exposure, Holdout
from experiments.selectors import CONFIG_VERSION_KEY, running_experiment_configs

logger = logging.getLogger(__name__)

Status = Experiment.Status

# Fields that define who is in which arm: frozen once an experiment has run.
FROZEN_FIELDS = frozenset({"key", "salt", "layer", "layer_start", "layer_end", "targeting"})

_TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "start": (frozenset({Status.DRAFT}), Status.RUNNING),
    "pause": (frozenset({Status.RUNNING}), Status.PAUSED),
    "resume": (frozenset({Status.PAUSED}), Status.RUNNING),
    "stop": (frozenset({Status.RUNNING, Status.PAUSED}), Status.STOPPED),
    "conclude": (frozenset({Status.STOPPED}), Status.CONCLUDED),
}

# Subject attributes the assignment request may carry and the Subject row keeps.
SUBJECT_ATTRIBUTES = ("age_band", "province", "platform")


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
        frozen = sorted(changed & FROZEN_FIELDS)
        if frozen:
            raise ValidationError(
                {name: "Frozen once the experiment has started; start a new phase or a new experiment." for name in frozen}
            )
        if "coverage" in changed and experiment.coverage < previous.coverage:
            raise ValidationError(
                {"coverage": f"Coverage may only grow while the experiment runs (it is {previous.coverage:g})."}
            )


def _validate_layer_range_free(experiment: Experiment) -> None:
    overlapping = (
        Experiment.objects.filter(
            layer_id=experiment.layer_id, status__in=[Status.RUNNING, Status.PAUSED]
        )
        .exclude(pk=experiment.pk)
        .filter(Q(layer_start__lt=experiment.layer_end) & Q(layer_end__gt=experiment.layer_start))
    )
    clash = overlapping.first()
    if clash is not None:
        raise ValidationError(
            {
                "layer_start": f"The range [{experiment.layer_start:g}, {experiment.layer_end:g}) overlaps "
                f"experiment {clash.key!r} [{clash.layer_start:g}, {clash.layer_end:g}) in layer "
                f"{experiment.layer.key!r}."
            }
        )


# --- writes ----------------------------------------------------------------------


def experiment_save(*, experiment: Experiment, changed: Iterable[str] = ()) -> Experiment:
    """Create or update an experiment's own fields (arms are saved separately)."""
    experiment.full_clean(exclude=["owner"] if experiment.owner_id is None else None)
    with transaction.atomic():
        experiment_validate_change(experiment=experiment, changed=changed)
        experiment.save()
        if experiment.status != Status.DRAFT:
            experiment_config_changed()
    return experiment


def experiment_transition(*, experiment: Experiment, action: str, now=None) -> Experiment:
    """Move an experiment along draft → running ⇄ paused → stopped → concluded."""
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
        if target == Status.RUNNING:
            experiment_validate_arms(experiment=experiment)
            _validate_layer_range_free(experiment)
            _validate_compliance(experiment)
        if action == "start":
            experiment.started_at = now
        if target in (Status.STOPPED,):
            experiment.ended_at = now
        experiment.status = target
        experiment.save(update_fields=["status", "started_at", "ended_at", "updated_at"])
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


def experiment_new_phase(*, experiment: Experiment, weights: Mapping[str, float]) -> Experiment:
    """Start a new phase of a paused experiment: new weights, a new salt.

    Subjects already exposed keep their arm (their exposure is the record);
    subjects arriving from now on are assigned with the new salt and weights.
    """
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if experiment.status != Status.PAUSED:
            raise ValidationError("A new phase can start only while the experiment is paused.")
        arms = list(experiment.arms.select_for_update().order_by("id"))
        unknown = sorted(set(weights) - {arm.key for arm in arms})
        if unknown:
            raise ValidationError({"weights": f"Unknown arms: {', '.join(unknown)}."})
        for arm in arms:
            arm.weight = float(weights.get(arm.key, arm.weight))
        experiment_validate_arms(experiment=experiment, arms=arms)
        Arm.objects.bulk_update(arms, ["weight"])
        experiment.salt = uuid.uuid4().hex[:16]
        experiment.phase += 1
        experiment.save(update_fields=["salt", "phase", "updated_at"])
        experiment_config_changed()
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
            experiment_start(experiment=experiment)
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


def _validate_compliance(experiment: Experiment) -> None:
    """Hook for the treatment compliance review (consent app, issue 3)."""
    # Filled in when the compliance check lands; until then there is nothing to refuse.
    return


# --- assignment ------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    experiment: str
    arm: str
    treatment: dict


def assignments_for_subject(*, subject_id: str, attributes: Mapping[str, object]) -> list[Assignment]:
    """Every running experiment the subject falls into, with its arm; records first exposures.

    The arm comes from the deterministic hash of the id the client sent; the
    first exposure is inserted ignoring conflicts and read back, so concurrent
    first requests all answer with the one stored arm.
    """
    configs = running_experiment_configs()
    if not configs:
        return []
    holdout = configs[0].spec.holdout
    if in_holdout(holdout, subject_id):
        return []
    matched = {
        config.id: (config, arm_key)
        for config in configs
        if targeting_matches(config.targeting, attributes)
        and (arm_key := assign(config.spec, subject_id)) is not None
    }
    if not matched:
        return []
    pseudonym = subject_pseudonym(subject_id)
    stored = dict(
        Exposure.objects.filter(subject_id=pseudonym, experiment_id__in=matched).values_list(
            "experiment_id", "arm_id"
        )
    )
    missing = [experiment_id for experiment_id in matched if experiment_id not in stored]
    if missing:
        stored.update(_record_first_exposures(pseudonym, attributes, missing, matched))
    result = []
    for experiment_id, (config, _) in matched.items():
        arm = config.arms_by_id.get(stored[experiment_id])
        if arm is None:  # an arm removed since: cannot happen while running, but never 500
            continue
        result.append(Assignment(experiment=config.key, arm=arm.key, treatment=arm.treatment))
    return result


def _record_first_exposures(pseudonym, attributes, experiment_ids, matched) -> dict[int, int]:
    now = timezone.now()
    subject_fields = {
        name: str(attributes[name])[:64] for name in SUBJECT_ATTRIBUTES if attributes.get(name) is not None
    }
    with transaction.atomic():
        Subject.objects.bulk_create([Subject(pseudonym=pseudonym, **subject_fields)], ignore_conflicts=True)
        Exposure.objects.bulk_create(
            [
                Exposure(
                    experiment_id=experiment_id,
                    arm_id=matched[experiment_id][0].arms_by_key[matched[experiment_id][1]].id,
                    subject_id=pseudonym,
                    phase=matched[experiment_id][0].phase,
                    first_exposed_at=now,
                )
                for experiment_id in experiment_ids
            ],
            ignore_conflicts=True,
        )
    return dict(
        Exposure.objects.filter(subject_id=pseudonym, experiment_id__in=experiment_ids).values_list(
            "experiment_id", "arm_id"
        )
    )
