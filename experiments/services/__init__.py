"""Writes of the experiments app, one module per sub-domain; this package re-exports them all.

Import from the submodule in new code (``experiments.services.lifecycle`` …); the names here keep
``from experiments.services import X`` working.
"""

# Reads that lived here before they moved to the selectors (the admin calls them as services.X).
from experiments.selectors import experiment_scheduled_later, treatment_frozen_by
from experiments.services.assignment import (
    SUBJECT_ATTRIBUTES,
    Assignment,
    assignments_for_subject,
)
from experiments.services.compliance import (
    APPROVE_OVERRIDE,
    experiment_override_approve,
    experiment_validate_compliance,
)
from experiments.services.design import (
    arm_create,
    guardrail_create,
    treatment_copy,
    treatment_create,
    treatment_save,
    treatment_validate_change,
)
from experiments.services.event_validation import (
    EARLIEST_EVENT,
    FUTURE_TOLERANCE,
    MAX_AMOUNT,
    MAX_EVENT_ID_LENGTH,
    MAX_EVENTS_PER_BATCH,
    MAX_LABEL_LENGTH,
    MAX_LINES_PER_ORDER,
    MAX_QUANTITY,
    MONEY_PATTERN,
    RFC3339_PATTERN,
    BatchProblems,
    events_check,
)
from experiments.services.events import (
    WITHHELD_TYPES,
    EventsRecorded,
    events_record,
)
from experiments.services.lifecycle import (
    ANALYSIS_FIELDS,
    ANALYSIS_FROZEN,
    FROZEN_FIELDS,
    experiment_conclude,
    experiment_config_changed,
    experiment_new_phase,
    experiment_pause,
    experiment_plan_apply,
    experiment_resume,
    experiment_save,
    experiment_set_coverage,
    experiment_start,
    experiment_start_problems,
    experiment_stop,
    experiment_transition,
    experiment_validate_arms,
    experiment_validate_change,
    experiment_validate_layer_range,
    experiments_apply_schedule,
    holdout_set_share,
    holdout_validate_share,
)
from experiments.services.retention import (
    exposures_retention_purge,
    metric_facts_retention_purge,
    metric_order_facts_retention_purge,
)

__all__ = [
    "ANALYSIS_FIELDS",
    "ANALYSIS_FROZEN",
    "APPROVE_OVERRIDE",
    "Assignment",
    "BatchProblems",
    "EARLIEST_EVENT",
    "EventsRecorded",
    "FROZEN_FIELDS",
    "FUTURE_TOLERANCE",
    "MAX_AMOUNT",
    "MAX_EVENTS_PER_BATCH",
    "MAX_EVENT_ID_LENGTH",
    "MAX_LABEL_LENGTH",
    "MAX_LINES_PER_ORDER",
    "MAX_QUANTITY",
    "MONEY_PATTERN",
    "RFC3339_PATTERN",
    "SUBJECT_ATTRIBUTES",
    "WITHHELD_TYPES",
    "arm_create",
    "assignments_for_subject",
    "events_check",
    "events_record",
    "experiment_conclude",
    "experiment_config_changed",
    "experiment_new_phase",
    "experiment_override_approve",
    "experiment_pause",
    "experiment_plan_apply",
    "experiment_resume",
    "experiment_save",
    "experiment_scheduled_later",
    "experiment_set_coverage",
    "experiment_start",
    "experiment_start_problems",
    "experiment_stop",
    "experiment_transition",
    "experiment_validate_arms",
    "experiment_validate_change",
    "experiment_validate_compliance",
    "experiment_validate_layer_range",
    "experiments_apply_schedule",
    "exposures_retention_purge",
    "guardrail_create",
    "holdout_set_share",
    "holdout_validate_share",
    "metric_facts_retention_purge",
    "metric_order_facts_retention_purge",
    "treatment_copy",
    "treatment_create",
    "treatment_frozen_by",
    "treatment_save",
    "treatment_validate_change",
]
