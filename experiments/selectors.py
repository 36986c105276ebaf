"""Reads of experiment configuration: running configs, compliance, plans, layer claims.

The assignment endpoint is the hottest path of the platform, so the running
experiments' configuration is held in-process and rebuilt only when a service
announces a change (``experiment_config_changed``) by moving a version token in
the shared cache. In the steady state a request reads that token and no
configuration rows.
"""

import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from django.core.cache import cache
from django.db.models import Prefetch
from django.utils import timezone

from config.memo import VersionedMemo
from consent.compliance import Finding, treatment_compliance_review
from consent.selectors import purpose_retention_limits
from experiments.assignment import (
    ArmSpec,
    ExperimentSpec,
    HoldoutSpec,
    assign,
    in_holdout,
    targeting_matches,
)
from experiments.contracts import TreatmentContract
from experiments.models import (
    Arm,
    Experiment,
    Holdout,
    PrivacyTreatment,
    Rollout,
    RolloutExposure,
    Surface,
)
from privacylab_client.surfaces import FALLBACK_TREATMENT, RolloutSpec, treatment_is_personal

CONFIG_VERSION_KEY = "experiments:config-version"


@dataclass(frozen=True, slots=True)
class ArmConfig:
    id: int
    key: str
    contract: TreatmentContract

    @property
    def treatment(self) -> dict:
        """The treatment contract's JSON form, as the API serves it."""
        return self.contract.to_dict()


@dataclass(frozen=True, slots=True)
class ExperimentConfig:
    id: int
    key: str
    phase: int
    targeting: dict
    spec: ExperimentSpec
    arms_by_key: dict[str, ArmConfig]
    arms_by_id: dict[int, ArmConfig]
    surface: str | None = None


def holdout_get() -> Holdout:
    holdout, _ = Holdout.objects.get_or_create(id=1)
    return holdout


def _current_version() -> str:
    version = cache.get(CONFIG_VERSION_KEY)
    if version is None:
        cache.add(CONFIG_VERSION_KEY, uuid.uuid4().hex, timeout=None)
        # If the cache is unreachable this is a fresh token, and the caller
        # reloads from the database: slower, never stale.
        version = cache.get(CONFIG_VERSION_KEY) or uuid.uuid4().hex
    return version


def _holdout_spec() -> HoldoutSpec | None:
    holdout = holdout_get()
    return HoldoutSpec(salt=holdout.salt, share=holdout.share) if holdout.share > 0 else None


def _spec(experiment: Experiment, arms: list[Arm], holdout: HoldoutSpec | None) -> ExperimentSpec:
    # Arm order is part of the algorithm (cumulative weights): always by id.
    return ExperimentSpec(
        key=experiment.key,
        salt=experiment.salt,
        coverage=experiment.coverage,
        arms=tuple(ArmSpec(key=arm.key, weight=arm.weight) for arm in arms),
        layer_range=(experiment.layer_start, experiment.layer_end),
        layer_salt=experiment.layer.salt,
        holdout=holdout,
    )


def _load_running_configs() -> tuple[ExperimentConfig, ...]:
    holdout = _holdout_spec()
    experiments = (
        Experiment.objects.filter(status=Experiment.Status.RUNNING)
        .select_related("layer", "surface")
        .prefetch_related(
            Prefetch("arms", queryset=Arm.objects.select_related("treatment").order_by("id"))
        )
        .order_by("id")
    )
    configs = []
    for experiment in experiments:
        arms = list(experiment.arms.all())
        arm_configs = [
            ArmConfig(id=arm.id, key=arm.key, contract=arm.treatment.as_contract()) for arm in arms
        ]
        configs.append(
            ExperimentConfig(
                id=experiment.id,
                key=experiment.key,
                phase=experiment.phase,
                targeting=experiment.targeting or {},
                spec=_spec(experiment, arms, holdout),
                arms_by_key={arm.key: arm for arm in arm_configs},
                arms_by_id={arm.id: arm for arm in arm_configs},
                surface=experiment.surface.key if experiment.surface_id else None,
            )
        )
    return tuple(configs)


# Held under the version token they were loaded under.
_configs_memo: VersionedMemo[tuple[ExperimentConfig, ...]] = VersionedMemo()


def running_experiment_configs() -> tuple[ExperimentConfig, ...]:
    return _configs_memo.get(_current_version(), _load_running_configs)


@dataclass(frozen=True, slots=True)
class SurfaceDefaults:
    """Each surface's default treatment (the built-in fallback where none is set) and its ramping rollout."""

    defaults: dict[str, dict]
    # Whether a subject's restriction can change their treatments (a personal default, or a rollout,
    # which a restricted subject is not in): only then is it looked up.
    any_personal: bool
    rollouts: dict[str, RolloutSpec] = field(default_factory=dict)
    rollout_steps: dict[str, tuple[int, int]] = field(default_factory=dict)  # surface → (rollout id, step index)


def _load_surface_defaults() -> SurfaceDefaults:
    defaults = {
        surface.key: surface.default_treatment.as_contract().to_dict() if surface.default_treatment_id else dict(FALLBACK_TREATMENT)
        for surface in Surface.objects.select_related("default_treatment").order_by("key")
    }
    ramping = list(
        Rollout.objects.filter(status=Rollout.Status.RAMPING).select_related("surface", "experiment", "arm", "treatment")
    )
    rollouts = {
        rollout.surface.key: RolloutSpec(
            surface=rollout.surface.key, experiment=rollout.experiment.key, arm=rollout.arm.key, salt=rollout.salt,
            percent=float(rollout.serving_percent()), treatment=rollout.treatment.as_contract().to_dict(), targeting=rollout.targeting or {},
        )
        for rollout in ramping
    }
    return SurfaceDefaults(
        defaults=defaults,
        any_personal=bool(rollouts) or any(map(treatment_is_personal, defaults.values())),
        rollouts=rollouts,
        rollout_steps={rollout.surface.key: (rollout.pk, rollout.step_index) for rollout in ramping},
    )


_surfaces_memo: VersionedMemo[SurfaceDefaults] = VersionedMemo()


def surface_defaults() -> SurfaceDefaults:
    """The surfaces' defaults, held in-process under the same version token as the running configs."""
    return _surfaces_memo.get(_current_version(), _load_surface_defaults)


def running_experiment_configs_forget() -> None:
    """Drop this process's configs and rendered document (as a fresh process has none)."""
    _configs_memo.forget()
    _surfaces_memo.forget()
    _document_memo.forget()


@dataclass(frozen=True, slots=True)
class ConfigDocument:
    """``GET /api/v1/config``'s answer, rendered once per configuration version."""

    document: dict
    body: bytes
    etag: str


CONFIG_FORMAT = 1
# Held under the version token of the configs it was rendered from.
_document_memo: VersionedMemo[ConfigDocument] = VersionedMemo()


def _config_document_build(configs: tuple[ExperimentConfig, ...], surfaces: SurfaceDefaults) -> ConfigDocument:
    # Every running experiment carries the one global holdout; with none running, none applies.
    holdout = configs[0].spec.holdout if configs else None
    experiments = []
    for config in configs:
        spec = config.spec
        experiments.append({
            "key": config.key,
            "salt": spec.salt,
            "phase": config.phase,
            "coverage": spec.coverage,
            "layer_salt": spec.layer_salt,
            "layer_range": list(spec.layer_range),
            "targeting": config.targeting,
            "surface": config.surface,
            "arms": [
                {"key": arm.key, "weight": arm.weight, "treatment": config.arms_by_key[arm.key].treatment}
                for arm in spec.arms
            ],
            "thresholds": list(spec.thresholds),
        })
    content = {
        "holdout": None if holdout is None else {"salt": holdout.salt, "share": holdout.share},
        "experiments": experiments,
        "surfaces": [{"key": key, "default": default} for key, default in surfaces.defaults.items()],
        "rollouts": [
            {"surface": r.surface, "experiment": r.experiment, "arm": r.arm, "salt": r.salt, "percent": r.percent,
             "targeting": dict(r.targeting), "treatment": dict(r.treatment)}
            for r in surfaces.rollouts.values()
        ],
    }
    # The version is the content's own hash: every process (and a restart) gives the same ETag
    # for the same configuration, so a client polling several servers never refetches for nothing.
    version = hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]
    document = {"format": CONFIG_FORMAT, "version": version, "algorithm": "docs/assignment.md", **content}
    body = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    return ConfigDocument(document=document, body=body, etag=f'"{version}"')


def assignment_config_document() -> ConfigDocument:
    """What a client needs to assign locally: the running experiments' configuration, rendered and versioned.

    Built from ``running_experiment_configs()`` (the configuration the server's own
    assignment reads) and rendered again only when that changes, i.e. when
    ``experiment_config_changed`` moved the version token: in the steady state a
    request costs one cache read.
    """
    version = _current_version()
    configs = _configs_memo.get(version, _load_running_configs)  # reloads if the version token moved
    surfaces = _surfaces_memo.get(version, _load_surface_defaults)
    return _document_memo.get(version, lambda: _config_document_build(configs, surfaces))


def experiment_spec(*, experiment: Experiment) -> ExperimentSpec:
    """The pure assignment spec of one experiment, whatever its status."""
    return _spec(experiment, list(experiment.arms.order_by("id")), _holdout_spec())


def treatment_compliance_findings(*, treatment: PrivacyTreatment) -> tuple[Finding, ...]:
    return treatment_compliance_review(treatment, purpose_retention_days=purpose_retention_limits())


def experiment_compliance_findings(*, experiment: Experiment) -> dict[str, tuple[Finding, ...]]:
    """The compliance review of each arm's treatment, by arm key."""
    limits = purpose_retention_limits()
    return {
        arm.key: treatment_compliance_review(arm.treatment, purpose_retention_days=limits)
        for arm in experiment.arms.select_related("treatment").order_by("id")
    }


def experiment_compliance_errors(*, experiment: Experiment) -> dict[str, list[str]]:
    """Arm key → the codes of its treatment's compliance errors (arms without errors left out)."""
    return {
        arm_key: sorted({finding.code for finding in findings if finding.is_error})
        for arm_key, findings in experiment_compliance_findings(experiment=experiment).items()
        if any(finding.is_error for finding in findings)
    }


def treatment_frozen_by(*, treatment: PrivacyTreatment) -> list[str]:
    """Keys of the running or paused experiments whose arms apply this treatment."""
    if treatment.pk is None:
        return []
    return sorted(
        Experiment.objects.filter(
            arms__treatment_id=treatment.pk, status__in=[Experiment.Status.RUNNING, Experiment.Status.PAUSED]
        ).distinct().values_list("key", flat=True)
    )


def experiment_scheduled_later(*, experiment: Experiment, now: datetime | None = None) -> bool:
    """A draft whose scheduled start is still to come: Start leaves it to the scheduler."""
    now = now or timezone.now()
    return experiment.status == Experiment.Status.DRAFT and experiment.scheduled_start is not None and (
        experiment.scheduled_start > now
    )


# --- the plan --------------------------------------------------------------------


class PlanIncomplete(ValueError):
    """The plan's inputs are missing or cannot be planned; the message says which."""


def experiment_decision_plan(*, experiment: Experiment, arms=None, guardrails=None):
    """The sample size and duration the experiment's rule needs, from its plan inputs.

    ``arms`` and ``guardrails`` default to the saved ones (an admin form passes
    its unsaved rows). Raises ``PlanIncomplete`` naming what is missing.
    """
    from experiments.metrics.definitions import METRICS
    from experiments.stats import decision_plan

    arms = list(experiment.arms.all() if arms is None else arms)
    guardrails = list(experiment.guardrails.all() if guardrails is None else guardrails)
    missing = [
        label
        for field, label in (("plan_daily_subjects", "daily subjects"), ("plan_baseline", "baseline"))
        if getattr(experiment, field) is None
    ]
    kind = METRICS[experiment.primary_metric][0]
    if kind == "mean" and experiment.plan_standard_deviation is None:
        missing.append("standard deviation (a mean metric)")
    if experiment.decision_rule == Experiment.DecisionRule.SUPERIORITY and experiment.plan_minimum_effect is None:
        missing.append("minimum effect (the superiority rule)")
    if missing:
        raise PlanIncomplete("To plan, fill in the plan's " + ", ".join(missing) + ".")
    if kind == "ratio":
        raise PlanIncomplete(
            f"The planner sizes proportions and means; {experiment.get_primary_metric_display()} is a ratio "
            "metric: set the planned subjects per arm yourself."
        )
    controls = [arm.key for arm in arms if arm.is_control]
    if len(controls) != 1 or len(arms) < 2:
        raise PlanIncomplete("To plan, give the experiment a control arm and at least one treatment arm.")
    guardrail_specs = []
    for guardrail in guardrails:
        guardrail_kind, higher = METRICS[guardrail.metric]
        if guardrail.plan_baseline is None:
            raise PlanIncomplete(
                f"To plan, give the {guardrail.get_metric_display()} guardrail its baseline (the control's expected "
                "value)."
            )
        if guardrail_kind == "ratio":
            raise PlanIncomplete(
                f"The planner cannot size the {guardrail.get_metric_display()} guardrail (a ratio metric); remove "
                "its baseline from the plan or set the planned subjects per arm yourself."
            )
        if guardrail_kind == "mean" and guardrail.plan_standard_deviation is None:
            raise PlanIncomplete(f"To plan, give the {guardrail.get_metric_display()} guardrail its standard deviation.")
        guardrail_specs.append({
            "metric": guardrail.metric, "metric_type": guardrail_kind, "baseline_mean": guardrail.plan_baseline,
            "standard_deviation": guardrail.plan_standard_deviation if guardrail_kind == "mean" else None,
            "margin": guardrail.margin, "relative": guardrail.relative,
        })
    try:
        return decision_plan(
            rule=experiment.decision_rule,
            metric_type=kind,
            baseline_mean=experiment.plan_baseline,
            standard_deviation=experiment.plan_standard_deviation if kind == "mean" else None,
            minimum_detectable_effect=experiment.plan_minimum_effect
            if experiment.decision_rule == Experiment.DecisionRule.SUPERIORITY else None,
            margin=experiment.decision_margin
            if experiment.decision_rule != Experiment.DecisionRule.SUPERIORITY else None,
            guardrails=guardrail_specs,
            weights={arm.key: arm.weight for arm in arms},
            control=controls[0],
            daily_subjects=experiment.plan_daily_subjects,
            alpha=experiment.alpha,
            power=experiment.plan_power,
            sequential=experiment.testing_mode == Experiment.TestingMode.SEQUENTIAL,
            minimum_runtime_days=experiment.minimum_runtime_days,
        )
    except ValueError as error:
        raise PlanIncomplete(f"The plan cannot be computed: {error}.") from error


# --- layers ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LayerClaim:
    """A bucket range of a layer held by an experiment."""

    experiment: str
    status: str
    start: float
    end: float


def layer_claims(*, layer_id: int, exclude_experiment_id: int | None = None) -> list[LayerClaim]:
    """The ranges of the layer that running or paused experiments hold (a start would clash with them)."""
    rows = (
        Experiment.objects.filter(layer_id=layer_id, status__in=[Experiment.Status.RUNNING, Experiment.Status.PAUSED])
        .exclude(pk=exclude_experiment_id)
        .order_by("layer_start", "key")
        .values_list("key", "status", "layer_start", "layer_end")
    )
    return [LayerClaim(key, status, start, end) for key, status, start, end in rows]


def layer_free_ranges(claims: list[LayerClaim]) -> list[tuple[float, float]]:
    """The parts of [0, 1) that no claim holds, in order."""
    free, cursor = [], 0.0
    for claim in sorted(claims, key=lambda c: c.start):
        if claim.start > cursor:
            free.append((cursor, claim.start))
        cursor = max(cursor, claim.end)
    if cursor < 1.0:
        free.append((cursor, 1.0))
    return free


def format_range(start: float, end: float) -> str:
    return f"[{start:g}, {end:g})"


def arms_matched(
    *, configs: Sequence[ExperimentConfig], subject_id: str, attributes: Mapping[str, object]
) -> dict[int, tuple[ExperimentConfig, str]]:
    """``{experiment_id: (config, arm key)}``: the experiments a subject with no earlier exposure falls into.

    The algorithm alone (docs/assignment.md): the global holdout, then each running
    experiment whose targeting matches and whose spec assigns an arm. The server's
    assignment adds what only the database knows (earlier exposures, restrictions).
    """
    if not configs or in_holdout(configs[0].spec.holdout, subject_id):
        return {}
    return {
        config.id: (config, arm_key)
        for config in configs
        if targeting_matches(config.targeting, attributes) and (arm_key := assign(config.spec, subject_id)) is not None
    }


# Metrics a ramp step measures from order events (docs/surfaces.md, "Shipping"); the others a
# guardrail may name (opt-out, consent rate, CTR, AOV) are not measured during a rollout.
def rollout_step_statistics(*, rollout: Rollout, until) -> tuple[dict[str, int], dict[str, tuple]]:
    """Subjects per group in the rollout's current step, and per metric ``(default, rollout)`` sufficient statistics.

    Every metric of the pipeline (``experiments.metrics``: proportions, means with
    CUPED, ratios by the delta method), each subject counted from their first
    exposure in this step until ``until``; no statistics until both groups have subjects.
    """
    from experiments.metrics.rollout import rollout_metric_statistics

    measured = rollout_metric_statistics(rollout=rollout, until=until)
    counts = {group: measured.subjects.get(group, 0) for group in RolloutExposure.Group.values}
    if not all(counts.values()):
        return counts, {}
    default, shipped = measured.arms["default"], measured.arms["rollout"]
    return counts, {metric: (default[metric], shipped[metric]) for metric in default}
