"""Writes of the experiments app: lifecycle, configuration and first exposures."""

import logging
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from config.text import text_problem
from consent.models import Subject
from consent.pseudonyms import subject_id_problem, subject_pseudonym
from experiments.assignment import assign, in_holdout, targeting_matches
from experiments.models import (
    Arm,
    Experiment,
    Exposure,
    Guardrail,
    Holdout,
    MetricFacts,
    MetricFactsState,
    MetricOrderFacts,
    OrderLine,
    OutcomeEvent,
    PrivacyTreatment,
)
from experiments.selectors import (
    CONFIG_VERSION_KEY,
    experiment_compliance_findings,
    running_experiment_configs,
)
from experiments.validation import experiment_decision_problems

logger = logging.getLogger(__name__)

Status = Experiment.Status

# Fields that define who is in which arm: frozen once an experiment has run.
FROZEN_FIELDS = frozenset({"key", "salt", "layer", "layer_start", "layer_end", "targeting"})

# The analysis, fixed before the data comes in (a test chosen after seeing the data is not a
# test): frozen once an experiment has started; changing them starts a new phase
# (``experiment_new_phase``). The guardrails, rows of their own, freeze with them.
ANALYSIS_FIELDS = frozenset({
    "primary_metric", "alpha", "decision_rule", "decision_margin", "testing_mode", "minimum_runtime_days",
    "privacy_order", "planned_subjects_per_arm", "gmv_cap_percentile", "pre_exposure_days",
    "plan_daily_subjects", "plan_baseline", "plan_standard_deviation", "plan_minimum_effect", "plan_power",
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
    for check in (experiment_validate_arms, experiment_validate_layer_range, _validate_compliance):
        try:
            check(experiment=experiment)
        except ValidationError as exc:
            problems.extend(exc.messages)
    return problems


def experiment_scheduled_later(*, experiment: Experiment, now: datetime | None = None) -> bool:
    """A draft whose scheduled start is still to come: Start leaves it to the scheduler."""
    now = now or timezone.now()
    return experiment.status == Status.DRAFT and experiment.scheduled_start is not None and (
        experiment.scheduled_start > now
    )


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
            _validate_compliance(experiment=experiment)
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


APPROVE_OVERRIDE = "experiments.approve_compliance_override"


def _compliance_errors(experiment: Experiment) -> dict[str, list[str]]:
    """Arm key → the codes of its treatment's compliance errors (arms without errors left out)."""
    return {
        arm_key: sorted({finding.code for finding in findings if finding.is_error})
        for arm_key, findings in experiment_compliance_findings(experiment=experiment).items()
        if any(finding.is_error for finding in findings)
    }


def _validate_compliance(*, experiment: Experiment) -> None:
    """An arm whose treatment has a compliance error runs only with an override a DPO approved.

    The approval covers the errors it was given for: an error that appeared
    since (a changed treatment, a new arm) needs a new approval.
    """
    findings = experiment_compliance_findings(experiment=experiment)
    errors = [
        f"{arm_key}: {finding.message} ({finding.reference})"
        for arm_key, arm_findings in findings.items()
        for finding in arm_findings
        if finding.is_error
    ]
    if not errors:
        return
    if not experiment.compliance_override_reason.strip():
        problem = "fix them, or record an override reason and have a data protection officer approve it"
    elif experiment.compliance_override_approved_at is None:
        problem = "the override reason awaits a data protection officer's approval"
    else:
        approved = experiment.compliance_override_approved_findings or {}
        uncovered = {
            arm: sorted(set(codes) - set(approved.get(arm, [])))
            for arm, codes in _compliance_errors(experiment).items()
            if set(codes) - set(approved.get(arm, []))
        }
        if not uncovered:
            return
        problem = "the approved override does not cover " + "; ".join(
            f"{arm}: {', '.join(codes)}" for arm, codes in uncovered.items()
        ) + " (approve it again)"
    raise ValidationError(
        {"compliance_override_reason": [f"The treatments have compliance errors; {problem}: " + " ".join(errors)]}
    )


def experiment_override_approve(*, experiment: Experiment, approver, now: datetime | None = None) -> Experiment:
    """A data protection officer approves the experiment's compliance override, for its current errors.

    Needs the ``approve_compliance_override`` permission, which PMs do not
    have, and an approver other than the experiment's owner (four eyes).
    """
    if not approver.has_perm(APPROVE_OVERRIDE):
        raise PermissionDenied("Approving a compliance override is for data protection officers.")
    with transaction.atomic():
        experiment = Experiment.objects.select_for_update().get(pk=experiment.pk)
        if experiment.owner_id == approver.pk:
            raise ValidationError("The experiment's owner cannot approve its own compliance override.")
        if experiment.status != Status.DRAFT:
            raise ValidationError("Only a draft experiment's override can be approved.")
        if not experiment.compliance_override_reason.strip():
            raise ValidationError({"compliance_override_reason": "There is no override reason to approve."})
        errors = _compliance_errors(experiment)
        if not errors:
            raise ValidationError("The treatments have no compliance errors: there is nothing to override.")
        experiment.compliance_override_approved_by = approver
        experiment.compliance_override_approved_at = now or timezone.now()
        experiment.compliance_override_approved_findings = errors
        experiment.save(
            update_fields=[
                "compliance_override_approved_by",
                "compliance_override_approved_at",
                "compliance_override_approved_findings",
                "updated_at",
            ]
        )
    logger.info("experiment %s: compliance override approved for %s", experiment.key, errors)
    return experiment


def _override_approval_clear(experiment: Experiment) -> None:
    experiment.compliance_override_approved_by = None
    experiment.compliance_override_approved_at = None
    experiment.compliance_override_approved_findings = {}


# --- privacy treatments ----------------------------------------------------------


def treatment_frozen_by(*, treatment: PrivacyTreatment) -> list[str]:
    """Keys of the running or paused experiments whose arms apply this treatment."""
    if treatment.pk is None:
        return []
    return sorted(
        Experiment.objects.filter(
            arms__treatment_id=treatment.pk, status__in=[Status.RUNNING, Status.PAUSED]
        ).distinct().values_list("key", flat=True)
    )


def treatment_validate_change(*, treatment: PrivacyTreatment) -> None:
    """Refuse a change to a treatment applied by a running or paused experiment (saving it unchanged is fine)."""
    if treatment.pk is None:
        return
    stored = PrivacyTreatment.objects.filter(pk=treatment.pk).first()
    if stored is None:
        return
    changed = [
        field.name
        for field in PrivacyTreatment._meta.concrete_fields
        if field.editable and getattr(stored, field.attname) != getattr(treatment, field.attname)
    ]
    frozen_by = treatment_frozen_by(treatment=treatment) if changed else []
    if frozen_by:
        raise ValidationError(
            {
                name: f"Frozen: applied by running or paused experiment(s) {', '.join(frozen_by)}; "
                "create a new treatment (Duplicate) instead."
                for name in changed
            }
        )


def treatment_save(*, treatment: PrivacyTreatment) -> tuple:
    """Create or change a privacy treatment; returns its compliance review.

    A treatment applied by a running or paused experiment is frozen: its
    subjects were promised that contract (and serving processes hold it), so a
    change is refused — create a new treatment (``treatment_copy``) instead.
    The review runs on every change; its errors stop any experiment using the
    treatment from starting without an approved override.
    """
    from experiments.selectors import treatment_compliance_findings

    treatment.full_clean()
    with transaction.atomic():
        if treatment.pk is not None:
            PrivacyTreatment.objects.select_for_update().filter(pk=treatment.pk).exists()
        treatment_validate_change(treatment=treatment)
        treatment.save()
    findings = treatment_compliance_findings(treatment=treatment)
    logger.info(
        "privacy treatment %s saved: %d compliance error(s), %d warning(s)",
        treatment.pk,
        sum(f.severity == "error" for f in findings),
        sum(f.severity == "warning" for f in findings),
    )
    return findings


def treatment_copy(*, treatment: PrivacyTreatment) -> PrivacyTreatment:
    """A new treatment with the same settings, named "<name> (copy N)", to edit instead of a frozen one."""
    base = f"{treatment.name} (copy"
    number = 1
    while PrivacyTreatment.objects.filter(name=f"{base} {number})").exists():
        number += 1
    fields = {
        field.name: getattr(treatment, field.name)
        for field in PrivacyTreatment._meta.concrete_fields
        if field.name not in ("id", "name", "created_at")
    }
    copy = PrivacyTreatment(name=f"{base} {number})"[: PrivacyTreatment._meta.get_field("name").max_length], **fields)
    treatment_save(treatment=copy)
    return copy


# --- assignment ------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    experiment: str
    arm: str
    treatment: dict


def assignments_for_subject(
    *, subject_id: str, attributes: Mapping[str, object], now: datetime | None = None
) -> list[Assignment]:
    """Every running experiment the subject falls into, with its arm; records first exposures.

    The arm comes from the deterministic hash of the id the client sent; the
    first exposure is inserted ignoring conflicts and read back, so concurrent
    first requests all answer with the one stored arm. ``now`` (default: the
    clock) is the first exposure's time; the simulator replays a past fortnight.
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
    blocked, stored = _subject_arms(pseudonym, list(matched))
    if blocked:
        # Restricted processing or an objection: the subject is in no experiment and gets the
        # surface's default (docs/privacy.md, "Legal basis of experiment measurement").
        return []
    missing = [experiment_id for experiment_id in matched if experiment_id not in stored]
    if missing:
        stored.update(_record_first_exposures(pseudonym, attributes, missing, matched, now))
    result = []
    for experiment_id, (config, _) in matched.items():
        arm = config.arms_by_id.get(stored[experiment_id])
        if arm is None:  # an arm removed since: cannot happen while running, but never 500
            continue
        result.append(Assignment(experiment=config.key, arm=arm.key, treatment=arm.treatment))
    return result


def _subject_arms(pseudonym: str, experiment_ids: list[int]) -> tuple[bool, dict[int, int]]:
    """Whether the subject restricted processing or objected, and their recorded arms.

    One statement, the subject's row joined with their exposures among these
    experiments: every request asks it, so the check costs no round trip.
    """
    subject = connection.ops.quote_name(Subject._meta.db_table)
    exposure = connection.ops.quote_name(Exposure._meta.db_table)
    placeholders = ", ".join(["%s"] * len(experiment_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT s.restricted_at IS NOT NULL OR s.objected_at IS NOT NULL, e.experiment_id, e.arm_id "  # noqa: S608 — our tables, placeholders only
            f"FROM {subject} s LEFT JOIN {exposure} e "
            f"ON e.subject_id = s.pseudonym AND e.experiment_id IN ({placeholders}) "
            "WHERE s.pseudonym = %s",
            [*experiment_ids, pseudonym],
        )
        rows = cursor.fetchall()
    blocked = any(row[0] for row in rows)
    return blocked, {row[1]: row[2] for row in rows if row[1] is not None}


def _stored_arms(pseudonym: str, experiment_ids: list[int]) -> dict[int, int]:
    """``{experiment_id: arm_id}`` of the subject's recorded exposures among these experiments.

    Plain SQL: this is every returning subject's request, and building the
    ORM query cost more than running it.
    """
    table = connection.ops.quote_name(Exposure._meta.db_table)
    placeholders = ", ".join(["%s"] * len(experiment_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT experiment_id, arm_id FROM {table} "  # noqa: S608 — our table, placeholders only
            f"WHERE subject_id = %s AND experiment_id IN ({placeholders})",
            [pseudonym, *experiment_ids],
        )
        return dict(cursor.fetchall())


def _record_first_exposures(pseudonym, attributes, experiment_ids, matched, now=None) -> dict[int, int]:
    now = now or timezone.now()
    # The API refuses longer values (400 naming the attribute); other callers are cut to the column.
    subject_fields = {
        name: str(attributes[name])[: Subject._meta.get_field(name).max_length]
        for name in SUBJECT_ATTRIBUTES
        if attributes.get(name) is not None
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
    return _stored_arms(pseudonym, experiment_ids)


# --- outcome events --------------------------------------------------------------

MAX_EVENTS_PER_BATCH = 1000
MAX_LINES_PER_ORDER = 200
MAX_AMOUNT = Decimal("1e13")  # IDR; above any single order the marketplace can take
MAX_QUANTITY = 1_000_000
MAX_EVENT_ID_LENGTH = 128
# An amount or price sent as text: up to 13 digits (less than MAX_AMOUNT) and at most 2 decimals.
MONEY_PATTERN = re.compile("^[0-9]{1,13}(?:[.][0-9]{1,2})?$")
# An RFC 3339 date-time (the schema's format), without the leap second (":60") Python cannot hold.
RFC3339_PATTERN = re.compile(
    "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-5][0-9](?:[.][0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
MAX_LABEL_LENGTH = 64  # product ids and categories
FUTURE_TOLERANCE = timedelta(minutes=5)  # client clocks run a little ahead; more is a bug
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)

_COMMON_FIELDS = frozenset({"event_id", "subject_id", "type", "timestamp"})
_FIELDS_BY_TYPE = {
    OutcomeEvent.Type.ORDER: _COMMON_FIELDS | {"amount", "lines"},
    OutcomeEvent.Type.REC_IMPRESSION: _COMMON_FIELDS | {"product_id", "category", "position"},
    OutcomeEvent.Type.REC_CLICK: _COMMON_FIELDS | {"product_id", "category", "position"},
}
_LINE_FIELDS = frozenset({"product_id", "category", "quantity", "price"})


@dataclass(frozen=True)
class EventsRecorded:
    """What ``events_record`` did: how many events it stored, which ids it had already, and
    which it did not store because the subject restricted processing or objected."""

    received: int
    recorded: int
    duplicates: list[str]
    withheld: list[str] = field(default_factory=list)


# What is not collected about a subject who restricted processing (nothing at all) or
# objected to profiling (their behaviour: impressions and clicks). docs/privacy.md.
WITHHELD_TYPES = {
    "restricted": frozenset(OutcomeEvent.Type.values),
    "objected": frozenset({OutcomeEvent.Type.REC_IMPRESSION, OutcomeEvent.Type.REC_CLICK}),
}


class _Problems:
    """Field errors of a batch, keyed ``events[i].field`` (``events[i].lines[j].field`` for lines)."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ValidationError(self.errors)


def _money(value: object, name: str, problems: _Problems, *, maximum: Decimal = MAX_AMOUNT) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        problems.add(name, "Must be a number (IDR).")
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        problems.add(name, "Must be a number (IDR).")
        return None
    if not amount.is_finite():
        problems.add(name, "Must be a finite number.")
    elif amount < 0:
        problems.add(name, "Must not be negative.")
    elif amount >= maximum:
        problems.add(name, f"Must be less than {maximum:,.0f} IDR.")
    elif amount.as_tuple().exponent < -2:
        problems.add(name, "At most 2 decimal places.")
    elif isinstance(value, str) and not MONEY_PATTERN.fullmatch(value):
        # Only plain decimals as text (what the schema publishes): no exponent, sign, spaces or separators.
        problems.add(name, "Must be written as digits with at most 2 decimal places, e.g. 150000.00.")
    else:
        return amount.quantize(Decimal("0.01"))
    return None


def _timestamp(value: object, name: str, problems: _Problems, now: datetime) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        rfc3339 = RFC3339_PATTERN.fullmatch(value) is not None
        try:
            # RFC 3339 lets "T" and "Z" be written in lower case; Python's parser wants them upper.
            moment = datetime.fromisoformat(value.upper() if rfc3339 else value)
        except ValueError:
            problems.add(name, "Must be an ISO 8601 date-time, e.g. 2025-01-31T12:00:00+07:00.")
            return None
    else:
        problems.add(name, "Must be an ISO 8601 date-time string.")
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        problems.add(name, "Must include a time zone offset (e.g. +07:00 or Z).")
        return None
    if isinstance(value, str) and not rfc3339:
        # The schema's format (date-time) is RFC 3339's: other ISO 8601 spellings are refused, as it says.
        problems.add(name, "Must be an RFC 3339 date-time with seconds, e.g. 2025-01-31T12:00:00+07:00.")
        return None
    if moment > now + FUTURE_TOLERANCE:
        problems.add(name, "Is in the future (more than 5 minutes ahead of the server clock).")
        return None
    if moment < EARLIEST_EVENT:
        problems.add(name, "Is before 2000-01-01: not a plausible event time.")
        return None
    return moment


def _order_lines(value: object, prefix: str, problems: _Problems) -> list[dict] | None:
    if not isinstance(value, list) or not value:
        problems.add(f"{prefix}.lines", "An order needs a non-empty list of line items.")
        return None
    if len(value) > MAX_LINES_PER_ORDER:
        problems.add(f"{prefix}.lines", f"At most {MAX_LINES_PER_ORDER} line items per order.")
        return None
    lines = []
    for j, line in enumerate(value):
        name = f"{prefix}.lines[{j}]"
        if not isinstance(line, dict):
            problems.add(name, "Must be an object with product_id, category, quantity and price.")
            continue
        for unknown in sorted(set(line) - _LINE_FIELDS, key=str):
            problems.add(f"{name}.{unknown}", "Unknown field.")
        for required in sorted(_LINE_FIELDS - set(line)):
            problems.add(f"{name}.{required}", "This field is required.")
        clean = {}
        for label in ("product_id", "category"):
            if label in line and (issue := text_problem(line[label], max_length=MAX_LABEL_LENGTH, label=True)) is not None:
                problems.add(f"{name}.{label}", issue)
            clean[label] = line.get(label)
        quantity = line.get("quantity")
        if "quantity" in line and (
            isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_QUANTITY
        ):
            problems.add(f"{name}.quantity", f"Must be a whole number from 1 to {MAX_QUANTITY:,}.")
        clean["quantity"] = quantity
        clean["price"] = _money(line["price"], f"{name}.price", problems) if "price" in line else None
        lines.append(clean)
    return lines


def _event_clean(index: int, event: object, problems: _Problems, now: datetime) -> dict | None:
    """One event, checked field by field: a dict of clean values, or None (problems recorded)."""
    prefix = f"events[{index}]"
    if not isinstance(event, dict):
        problems.add(prefix, "Must be an object.")
        return None
    before = len(problems.errors)
    kind = event.get("type")
    if not isinstance(kind, str):  # a list or an object is not a type (and cannot be looked up)
        kind = repr(kind)
    if kind not in _FIELDS_BY_TYPE:
        problems.add(f"{prefix}.type", f"{kind!r} is not one of order, rec_impression, rec_click.")
        allowed = _COMMON_FIELDS | _FIELDS_BY_TYPE[OutcomeEvent.Type.ORDER] | _FIELDS_BY_TYPE[OutcomeEvent.Type.REC_CLICK]
    else:
        allowed = _FIELDS_BY_TYPE[kind]
    for unknown in sorted(set(event) - allowed, key=str):
        problems.add(f"{prefix}.{unknown}", "Unknown field.")
    for required in ("event_id", "subject_id", "timestamp"):
        if required not in event:
            problems.add(f"{prefix}.{required}", "This field is required.")
    if "event_id" in event and (issue := text_problem(event["event_id"], max_length=MAX_EVENT_ID_LENGTH)) is not None:
        problems.add(f"{prefix}.event_id", issue)
    if "subject_id" in event and (issue := subject_id_problem(event["subject_id"])) is not None:
        problems.add(f"{prefix}.subject_id", issue)
    occurred_at = _timestamp(event["timestamp"], f"{prefix}.timestamp", problems, now) if "timestamp" in event else None
    clean = {
        "event_id": event.get("event_id"),
        "subject_id": event.get("subject_id"),
        "type": kind,
        "occurred_at": occurred_at,
        "amount": None,
        "product_id": "",
        "category": "",
        "position": None,
        "lines": (),
    }
    if kind == OutcomeEvent.Type.ORDER:
        if "amount" not in event:
            problems.add(f"{prefix}.amount", "An order needs its amount (IDR).")
        else:
            clean["amount"] = _money(event["amount"], f"{prefix}.amount", problems)
        clean["lines"] = _order_lines(event.get("lines"), prefix, problems)
    elif kind in _FIELDS_BY_TYPE:
        if "product_id" not in event:
            problems.add(f"{prefix}.product_id", "This field is required.")
        elif (issue := text_problem(event["product_id"], max_length=MAX_LABEL_LENGTH, label=True)) is not None:
            problems.add(f"{prefix}.product_id", issue)
        else:
            clean["product_id"] = event["product_id"]
        category = event.get("category", "")
        if category != "" and (issue := text_problem(category, max_length=MAX_LABEL_LENGTH, label=True)) is not None:
            problems.add(f"{prefix}.category", issue)
        else:
            clean["category"] = category
        position = event.get("position")
        if position is not None and (
            isinstance(position, bool) or not isinstance(position, int) or not 0 <= position <= 32767
        ):
            problems.add(f"{prefix}.position", "Must be a whole number from 0 to 32767.")
        else:
            clean["position"] = position
    return clean if len(problems.errors) == before else None


def events_check(*, events: object, now: datetime | None = None) -> list[dict]:
    """Validate a batch without writing: the clean events, or a ValidationError naming each bad field.

    Errors are keyed ``events[i].field`` (``events[i].lines[j].field`` for order
    lines). Checks everything that can be known before touching the database,
    including an event id repeated within the batch.
    """
    now = now or timezone.now()
    if not isinstance(events, list):
        raise ValidationError({"events": ["Must be a list of events."]})
    if not events:
        raise ValidationError({"events": ["Send at least one event."]})
    if len(events) > MAX_EVENTS_PER_BATCH:
        raise ValidationError(
            {"events": [f"At most {MAX_EVENTS_PER_BATCH} events per batch (got {len(events)}); split it."]}
        )
    problems = _Problems()
    cleaned = [_event_clean(index, event, problems, now) for index, event in enumerate(events)]
    first_index: dict[str, int] = {}
    for index, clean in enumerate(cleaned):
        if clean is None:
            continue
        event_id = clean["event_id"]
        if event_id in first_index:
            problems.add(f"events[{index}].event_id", f"Duplicate of events[{first_index[event_id]}].")
        first_index.setdefault(event_id, index)
    problems.raise_if_any()
    return cleaned


def _same_event(row: dict, clean: dict, pseudonym: str) -> bool:
    return (
        row["subject_id"] == pseudonym
        and row["type"] == clean["type"]
        and row["occurred_at"] == clean["occurred_at"]
        and row["amount"] == clean["amount"]
        and row["product_id"] == clean["product_id"]
    )


def events_record(*, events: list[dict], now: datetime | None = None, pseudonymous: bool = False) -> EventsRecorded:
    """Record a batch of outcome events: all or nothing, idempotent by ``event_id``.

    ``events`` is a list (at most ``MAX_EVENTS_PER_BATCH``) of dicts as the API
    receives them::

        {"event_id": "o-123", "subject_id": "<marketplace id>", "type": "order",
         "timestamp": "2025-03-01T10:00:00+07:00" (or an aware datetime),
         "amount": "150000.00",
         "lines": [{"product_id": "p1", "category": "fashion", "quantity": 1, "price": 150000}]}
        {"event_id": "imp-9-0", "subject_id": "...", "type": "rec_impression" | "rec_click",
         "timestamp": ..., "product_id": "p1", "category": "fashion", "position": 0}

    The subject must already be known (an assignment or consent created it).
    Nothing is stored for a subject who restricted processing, and no
    impression or click for one who objected to profiling: those events are
    accepted and listed in ``withheld``. An event whose id is already stored is
    a duplicate: not written again, and reported in ``duplicates``; the same id with a different subject, type,
    time, amount or product is an error. Any error anywhere raises a
    ``ValidationError`` keyed ``events[i].field`` and writes nothing. Events
    and order lines go in with one bulk insert each, in one transaction.

    ``pseudonymous``: the ``subject_id`` values are already pseudonyms. For
    the platform's own callers (the recommender's impression task), so that
    no raw id has to travel through the broker to get here.
    """
    now = now or timezone.now()
    cleaned = events_check(events=events, now=now)
    try:
        return _events_insert(cleaned, now, pseudonymous=pseudonymous)
    except IntegrityError:
        # A concurrent request stored one of these ids first: the second pass
        # sees it as a duplicate (or a conflict) instead of inserting it.
        return _events_insert(cleaned, now, pseudonymous=pseudonymous)


def _existing(pseudonyms: list[str], event_ids: list[str]) -> tuple[dict[str, str], dict[str, dict]]:
    """Which subjects exist (pseudonym → "restricted", "objected" or ""), and the stored events
    with these ids (the fields a replay must match)."""
    fields = ("event_id", "subject_id", "type", "occurred_at", "amount", "product_id")
    flag = (
        "CASE WHEN restricted_at IS NOT NULL THEN 'restricted' "
        "WHEN objected_at IS NOT NULL THEN 'objected' ELSE '' END"
    )
    if connection.vendor == "postgresql":
        # = ANY(array): one parameter, where IN would need a thousand for the driver to parse.
        # Binary parameters, bound server-side (see _insert_returning_ids).
        import psycopg

        quote = connection.ops.quote_name
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(
                f"SELECT {quote(Subject._meta.pk.column)}, {flag} FROM {quote(Subject._meta.db_table)} "  # noqa: S608
                f"WHERE {quote(Subject._meta.pk.column)} = ANY(%b::varchar[])",
                [pseudonyms],
            )
            known = dict(cursor.fetchall())
            cursor.execute(
                f"SELECT {', '.join(fields)} FROM {quote(OutcomeEvent._meta.db_table)} "  # noqa: S608
                "WHERE event_id = ANY(%b::varchar[])",
                [event_ids],
            )
            rows = [dict(zip(fields, row, strict=True)) for row in cursor.fetchall()]
        return known, {row["event_id"]: row for row in rows}
    known = {
        pseudonym: "restricted" if restricted else "objected" if objected else ""
        for pseudonym, restricted, objected in Subject.objects.filter(pk__in=pseudonyms).values_list(
            "pk", "restricted_at", "objected_at"
        )
    }
    rows = OutcomeEvent.objects.filter(event_id__in=event_ids).values(*fields)
    return known, {row["event_id"]: row for row in rows}


def _events_insert(cleaned: list[dict], now: datetime, *, pseudonymous: bool) -> EventsRecorded:
    pseudonyms = [
        clean["subject_id"] if pseudonymous else subject_pseudonym(clean["subject_id"]) for clean in cleaned
    ]
    problems = _Problems()
    with transaction.atomic():
        known, existing = _existing(sorted(set(pseudonyms)), [clean["event_id"] for clean in cleaned])
        duplicates: list[str] = []
        withheld: list[str] = []
        fresh: list[tuple[dict, str]] = []
        for index, (clean, pseudonym) in enumerate(zip(cleaned, pseudonyms, strict=True)):
            if pseudonym not in known:
                problems.add(
                    f"events[{index}].subject_id",
                    "Unknown subject: it has no assignment or consent on record.",
                )
                continue
            if known[pseudonym] and clean["type"] in WITHHELD_TYPES[known[pseudonym]]:
                withheld.append(clean["event_id"])
                continue
            row = existing.get(clean["event_id"])
            if row is not None:
                if _same_event(row, clean, pseudonym):
                    duplicates.append(clean["event_id"])
                else:
                    problems.add(f"events[{index}].event_id", "Already recorded for a different event.")
                continue
            fresh.append((clean, pseudonym))
        problems.raise_if_any()
        adapt = connection.ops.adapt_datetimefield_value
        received = adapt(now)
        ids = _insert_returning_ids(
            OutcomeEvent,
            ["event_id", "subject_id", "type", "occurred_at", "received_at", "amount", "product_id", "category", "position"],
            [
                (
                    clean["event_id"], pseudonym, clean["type"], adapt(clean["occurred_at"]), received,
                    clean["amount"], clean["product_id"], clean["category"], clean["position"],
                )
                for clean, pseudonym in fresh
            ],
        )
        _insert_returning_ids(
            OrderLine,
            ["event_id", "subject_id", "occurred_at", "product_id", "category", "quantity", "price"],
            [
                (
                    ids[clean["event_id"]], pseudonym, adapt(clean["occurred_at"]), line["product_id"],
                    line["category"], line["quantity"], line["price"],
                )
                for clean, pseudonym in fresh
                for line in clean["lines"]
            ],
            returning=False,
        )
    return EventsRecorded(received=len(cleaned), recorded=len(ids), duplicates=duplicates, withheld=withheld)


# Rows per INSERT statement: within SQLite's 32,766 and PostgreSQL's 65,535 parameters.
_INSERT_PARAMETERS = 30_000


def _insert_returning_ids(model, columns: list[str], rows: list[tuple], *, returning: bool = True) -> dict:
    """Insert plain, already-validated values; ``{event_id: id}`` of the new rows when ``returning``.

    The ingestion hot path. The ORM's bulk_create prepares every value through
    its field and PostgreSQL's driver parses a statement with one placeholder
    per value; both cost more than the insert itself. On PostgreSQL the rows go
    as one array per column (``INSERT … SELECT FROM unnest(…)``: a fixed,
    small statement); on SQLite as multi-row VALUES. Datetimes must already be
    adapted by the caller.
    """
    if not rows:
        return {}
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    fields = [model._meta.get_field(name) for name in columns]
    column_list = ", ".join(quote(field.column) for field in fields)
    suffix = " RETURNING id, event_id" if returning else ""
    ids: dict = {}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            import psycopg

            # Server-side binding with binary arrays (%b): Django's client-side
            # cursor would quote every value into the statement's text.
            arrays = ", ".join(f"%b::{field.db_type(connection).split('(')[0]}[]" for field in fields)
            connection.ensure_connection()
            with psycopg.Cursor(connection.connection) as raw:
                raw.execute(
                    f"INSERT INTO {table} ({column_list}) SELECT * FROM unnest({arrays}){suffix}",  # noqa: S608 — our identifiers
                    [list(column) for column in zip(*rows, strict=True)],
                )
                if returning:
                    ids.update((event_id, pk) for pk, event_id in raw.fetchall())
            return ids
        per_statement = max(1, _INSERT_PARAMETERS // len(columns))
        placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            cursor.execute(
                f"INSERT INTO {table} ({column_list}) VALUES {', '.join([placeholder] * len(chunk))}{suffix}",  # noqa: S608
                [value for row in chunk for value in row],
            )
            if returning:
                ids.update((event_id, pk) for pk, event_id in cursor.fetchall())
    return ids


# --- retention of measurement data ---------------------------------------------------


def _ended_before(days: int, now: datetime):
    """Experiments that ended (stopped or concluded) more than ``days`` days before ``now``."""
    return Experiment.objects.filter(
        status__in=[Status.STOPPED, Status.CONCLUDED], ended_at__lt=now - timedelta(days=days)
    ).values("pk")


def exposures_retention_purge(*, now: datetime, batch_size: int) -> int:
    """Delete one batch of exposures of experiments ended ``EXPOSURE_RETENTION_DAYS`` ago (their
    metric facts go with them); the results, which are aggregates, stay. Returns rows deleted."""
    days = getattr(settings, "EXPOSURE_RETENTION_DAYS", 365)
    pks = list(
        Exposure.objects.filter(experiment__in=_ended_before(days, now)).order_by("pk").values_list("pk", flat=True)[
            :batch_size
        ]
    )
    if not pks:
        return 0
    deleted, _ = Exposure.objects.filter(pk__in=pks).delete()
    return deleted


def metric_facts_retention_purge(*, now: datetime, batch_size: int) -> int:
    """Delete one batch of per-exposure metric facts of experiments ended ``METRIC_FACTS_RETENTION_DAYS``
    ago. The facts only serve the results runs of a live experiment; a later run rebuilds them
    from the raw data while that is kept (the facts' state is reset)."""
    days = getattr(settings, "METRIC_FACTS_RETENTION_DAYS", 30)
    ended = _ended_before(days, now)
    pks = list(
        MetricFacts.objects.filter(experiment__in=ended).order_by("pk").values_list("pk", flat=True)[:batch_size]
    )
    if not pks:
        MetricFactsState.objects.filter(experiment__in=ended, cutoff__isnull=False).update(
            phase=None, window_start=None, cutoff=None, pre_exposure_days=None, refreshed_at=None
        )
        return 0
    deleted, _ = MetricFacts.objects.filter(pk__in=pks).delete()
    return deleted


def metric_order_facts_retention_purge(*, now: datetime, batch_size: int) -> int:
    """Delete one batch of the per-order metric facts of the same experiments as
    ``metric_facts_retention_purge`` (their state is reset there: the next run rebuilds both)."""
    days = getattr(settings, "METRIC_FACTS_RETENTION_DAYS", 30)
    pks = list(
        MetricOrderFacts.objects.filter(experiment__in=_ended_before(days, now))
        .order_by("pk")
        .values_list("pk", flat=True)[:batch_size]
    )
    if not pks:
        return 0
    deleted, _ = MetricOrderFacts.objects.filter(pk__in=pks).delete()
    return deleted
