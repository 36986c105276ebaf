"""Writes of an experiment's design: privacy treatments, arms and guardrails."""

import logging

from django.core.exceptions import ValidationError
from django.db import transaction

from experiments.models import Arm, Experiment, Guardrail, PrivacyTreatment
from experiments.selectors import treatment_frozen_by
from experiments.services.lifecycle import experiment_config_changed

logger = logging.getLogger(__name__)

Status = Experiment.Status


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
        if treatment.default_for_surfaces.exists():
            # A surface's default is served from every process's copy: tell them to reload.
            experiment_config_changed()
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


def treatment_create(
    *,
    name: str,
    consent_prompt: str,
    personalization_level: str,
    description: str = "",
    default_personalization_consent: bool = False,
    sensitive_category_policy: str = PrivacyTreatment.SensitivePolicy.EXCLUDE,
    cohort_k: int = 50,
    dp_epsilon: float | None = None,
    retention_days: int = 365,
    show_explanations: bool = True,
) -> PrivacyTreatment:
    """Create a privacy treatment (validated, compliance-reviewed as ``treatment_save`` does)."""
    treatment = PrivacyTreatment(
        name=name,
        description=description,
        consent_prompt=consent_prompt,
        default_personalization_consent=default_personalization_consent,
        personalization_level=personalization_level,
        sensitive_category_policy=sensitive_category_policy,
        cohort_k=cohort_k,
        dp_epsilon=dp_epsilon,
        retention_days=retention_days,
        show_explanations=show_explanations,
    )
    treatment_save(treatment=treatment)
    return treatment


def _draft_only(experiment: Experiment, what: str, *, done: str = "added") -> None:
    # Arms and guardrails decide who is compared with whom and how: fixed once the experiment started.
    if Experiment.objects.filter(pk=experiment.pk).exclude(status=Status.DRAFT).exists():
        raise ValidationError(f"{what} can be {done} only while experiment {experiment.key!r} is a draft.")


def arm_create(
    *,
    experiment: Experiment,
    key: str,
    treatment: PrivacyTreatment,
    weight: float = 1.0,
    is_control: bool = False,
) -> Arm:
    """Add an arm applying ``treatment`` to a draft experiment."""
    arm = Arm(experiment=experiment, key=key, treatment=treatment, weight=weight, is_control=is_control)
    arm.full_clean()
    with transaction.atomic():
        _draft_only(experiment, "An arm")
        arm.save()
    return arm


def guardrail_create(
    *,
    experiment: Experiment,
    metric: str,
    margin: float,
    relative: bool = False,
    plan_baseline: float | None = None,
    plan_standard_deviation: float | None = None,
) -> Guardrail:
    """Add a guardrail (a non-inferiority margin on ``metric``) to a draft experiment."""
    guardrail = Guardrail(
        experiment=experiment,
        metric=metric,
        margin=margin,
        relative=relative,
        plan_baseline=plan_baseline,
        plan_standard_deviation=plan_standard_deviation,
    )
    guardrail.full_clean()
    with transaction.atomic():
        _draft_only(experiment, "A guardrail")
        guardrail.save()
    return guardrail


def arm_update(*, arm: Arm, key: str, treatment: PrivacyTreatment, weight: float, is_control: bool) -> Arm:
    """Change an arm of a draft experiment.

    The database holds one control per experiment at a time (a partial unique
    index, not deferrable), so making this arm the control first unticks the
    arm that was the control.
    """
    arm.key, arm.treatment, arm.weight, arm.is_control = key, treatment, weight, is_control
    with transaction.atomic():
        _draft_only(arm.experiment, "An arm", done="changed")
        if is_control:
            Arm.objects.filter(experiment_id=arm.experiment_id, is_control=True).exclude(pk=arm.pk).update(
                is_control=False
            )
        arm.full_clean()
        arm.save()
    return arm


def _draft_row_delete(row: Arm | Guardrail, what: str) -> None:
    with transaction.atomic():
        _draft_only(row.experiment, what, done="removed")
        row.delete()


def arm_delete(*, arm: Arm) -> None:
    """Remove an arm from a draft experiment."""
    _draft_row_delete(arm, "An arm")


def guardrail_update(
    *,
    guardrail: Guardrail,
    metric: str,
    margin: float,
    relative: bool = False,
    plan_baseline: float | None = None,
    plan_standard_deviation: float | None = None,
) -> Guardrail:
    """Change a guardrail of a draft experiment (a new phase changes margins: ``experiment_new_phase``)."""
    guardrail.metric, guardrail.margin, guardrail.relative = metric, margin, relative
    guardrail.plan_baseline, guardrail.plan_standard_deviation = plan_baseline, plan_standard_deviation
    guardrail.full_clean()
    with transaction.atomic():
        _draft_only(guardrail.experiment, "A guardrail", done="changed")
        guardrail.save()
    return guardrail


def guardrail_delete(*, guardrail: Guardrail) -> None:
    """Remove a guardrail from a draft experiment."""
    _draft_row_delete(guardrail, "A guardrail")
