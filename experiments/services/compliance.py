"""The compliance gate of an experiment's start and the data protection officer's override approval."""

import logging
from datetime import datetime

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from experiments.models import Experiment
from experiments.selectors import experiment_compliance_errors, experiment_compliance_findings

logger = logging.getLogger(__name__)

Status = Experiment.Status


APPROVE_OVERRIDE = "experiments.approve_compliance_override"


def experiment_validate_compliance(*, experiment: Experiment) -> None:
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
            for arm, codes in experiment_compliance_errors(experiment=experiment).items()
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
        errors = experiment_compliance_errors(experiment=experiment)
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
