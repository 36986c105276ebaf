"""Reads of experiment configuration.

The assignment endpoint is the hottest path of the platform, so the running
experiments' configuration is held in-process and rebuilt only when a service
announces a change (``experiment_config_changed``) by moving a version token in
the shared cache. In the steady state a request reads that token and no
configuration rows.
"""

import threading
import uuid
from dataclasses import dataclass

from django.core.cache import cache
from django.db.models import Prefetch

from consent.compliance import Finding, treatment_compliance_review
from consent.selectors import purpose_retention_limits
from experiments.assignment import ArmSpec, ExperimentSpec, HoldoutSpec
from experiments.models import Arm, Experiment, Holdout, PrivacyTreatment

CONFIG_VERSION_KEY = "experiments:config-version"


@dataclass(frozen=True, slots=True)
class ArmConfig:
    id: int
    key: str
    treatment: dict


@dataclass(frozen=True, slots=True)
class ExperimentConfig:
    id: int
    key: str
    phase: int
    targeting: dict
    spec: ExperimentSpec
    arms_by_key: dict[str, ArmConfig]
    arms_by_id: dict[int, ArmConfig]


_lock = threading.Lock()
_cached: tuple[str | None, tuple[ExperimentConfig, ...]] = (None, ())


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
        .select_related("layer")
        .prefetch_related(
            Prefetch("arms", queryset=Arm.objects.select_related("treatment").order_by("id"))
        )
        .order_by("id")
    )
    configs = []
    for experiment in experiments:
        arms = list(experiment.arms.all())
        arm_configs = [
            ArmConfig(id=arm.id, key=arm.key, treatment=arm.treatment.as_contract()) for arm in arms
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
            )
        )
    return tuple(configs)


def running_experiment_configs() -> tuple[ExperimentConfig, ...]:
    global _cached
    version = _current_version()
    cached_version, configs = _cached
    if version == cached_version:
        return configs
    with _lock:
        configs = _load_running_configs()
        _cached = (version, configs)
    return configs


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
