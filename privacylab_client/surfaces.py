"""Surfaces and their treatments, usable without Django: the one resolution the server and the client share.

A *surface* (``product-recommendations``, ``checkout-consent-prompt``) is a place
in the marketplace whose privacy treatment the platform decides. Per surface a
subject gets, in this order (docs/surfaces.md):

1. the arm's treatment of the first running experiment (by id) on the surface that
   assigned the subject an arm — ``source: "experiment"``;
2. the treatment of the surface's ramping rollout, if the subject matches its
   targeting and ``bucket("rollout:" + salt, id) < percent / 100`` — ``source:
   "rollout"`` (one salt for the whole ramp: a subject in at 10% stays in at 25%);
3. otherwise the surface's default treatment — ``source: "default"``;
4. the built-in ``FALLBACK_TREATMENT`` (non-personal) — ``source: "fallback"`` —
   when a subject restricted processing or objected and the default is personal,
   or when a client has no configuration at all.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from privacylab_client.assignment import bucket, targeting_matches

# Levels that use no personal history (consent.compliance.NON_PERSONAL_LEVELS says the same; a test
# holds them equal — this package cannot import Django code).
NON_PERSONAL_LEVELS = frozenset({"popularity", "session"})

# What a surface serves when the platform cannot decide for a subject: no personal data, no
# pre-selected consent, no sensitive categories; the shortest usual retention.
FALLBACK_TREATMENT: dict = {
    "name": "built-in fallback (non-personal)",
    "consent_prompt": "none",
    "default_personalization_consent": False,
    "personalization_level": "popularity",
    "sensitive_category_policy": "exclude",
    "cohort_k": 50,
    "dp_epsilon": None,
    "retention_days": 30,
    "show_explanations": True,
}

SOURCES = ("experiment", "rollout", "default", "fallback")


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    """A surface's ramping rollout: who gets the shipped arm's treatment at the current step."""

    surface: str
    experiment: str
    arm: str
    salt: str
    percent: float  # 0 < percent <= 100
    treatment: Mapping[str, object]
    targeting: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.salt:
            raise ValueError("rollout salt must not be empty")
        if not 0.0 < self.percent <= 100.0:
            raise ValueError("rollout percent must be in (0, 100]")

    def reaches(self, subject_id: str, attributes: Mapping[str, object]) -> bool:
        return targeting_matches(self.targeting, attributes) and bucket("rollout:" + self.salt, subject_id) < self.percent / 100.0


def rollout_from_json(raw: Mapping[str, object]) -> RolloutSpec:
    """A ``RolloutSpec`` from its entry in the configuration's ``rollouts``."""
    return RolloutSpec(
        surface=str(raw["surface"]), experiment=str(raw["experiment"]), arm=str(raw["arm"]), salt=str(raw["salt"]),
        percent=float(raw["percent"]), treatment=dict(raw["treatment"]), targeting=raw.get("targeting") or {},
    )


def treatment_is_personal(treatment: Mapping[str, object]) -> bool:
    return treatment.get("personalization_level") not in NON_PERSONAL_LEVELS


def _entry(treatment: Mapping[str, object], source: str, experiment=None, arm=None) -> dict:
    return {"treatment": dict(treatment), "source": source, "experiment": experiment, "arm": arm}


def surface_treatments(
    *,
    defaults: Mapping[str, Mapping[str, object]],
    assignments: Iterable[Mapping[str, object]],
    experiment_surfaces: Mapping[str, str | None],
    personal_allowed: bool = True,
    rollouts: Mapping[str, RolloutSpec] | None = None,
    subject_id: str = "",
    attributes: Mapping[str, object] | None = None,
) -> dict[str, dict]:
    """``{surface: {"treatment", "source", "experiment", "arm"}}`` for every surface in ``defaults``.

    ``defaults`` maps each surface key to its default treatment; ``assignments`` are
    the subject's ``{"experiment", "arm", "treatment"}`` in experiment-id order;
    ``experiment_surfaces`` maps an experiment key to its surface (or None).
    ``personal_allowed=False`` (restricted processing or an objection): the subject
    is in no experiment nor rollout, and a personal default is replaced by the fallback.
    ``rollouts`` (surface → its ramping rollout) need ``subject_id`` and ``attributes``.
    """
    result = {}
    if personal_allowed:
        for assignment in assignments:
            surface = experiment_surfaces.get(assignment["experiment"])
            if surface in defaults and surface not in result:
                result[surface] = _entry(assignment["treatment"], "experiment", assignment["experiment"], assignment["arm"])
    for surface, default in defaults.items():
        if surface in result:
            continue
        rollout = (rollouts or {}).get(surface) if personal_allowed else None
        if rollout is not None and rollout.reaches(subject_id, attributes or {}):
            result[surface] = _entry(rollout.treatment, "rollout", rollout.experiment, rollout.arm)
        elif personal_allowed or not treatment_is_personal(default):
            result[surface] = _entry(default, "default")
        else:
            result[surface] = _entry(FALLBACK_TREATMENT, "fallback")
    return result


def fallback_treatments(surfaces: Iterable[str]) -> dict[str, dict]:
    """Every surface on the built-in fallback: what a client with no configuration serves."""
    return {surface: _entry(FALLBACK_TREATMENT, "fallback") for surface in surfaces}
