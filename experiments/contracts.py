"""Typed contracts at the experiments app's boundaries: the treatment contract an arm applies.

The levels and policies are defined here (the model's choices are these enums) so that the
recommender, the simulator and the API read one vocabulary; ``to_dict`` is the JSON the API
returns to the marketplace, ``from_dict`` reads it back.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from django.db import models


class ConsentPrompt(models.TextChoices):
    NONE = "none", "No prompt"
    BANNER = "banner", "Banner"
    MODAL = "modal", "Modal"
    JUST_IN_TIME = "just_in_time", "Just-in-time"


class PersonalizationLevel(models.TextChoices):
    FULL = "full", "Full history"
    COHORT = "cohort", "k-anonymous cohort"
    DP_POPULARITY = "dp_popularity", "Differentially private popularity"
    DP_ITEM_ITEM = "dp_item_item", "Differentially private item-item (own history)"
    POPULARITY = "popularity", "Popularity (non-personal)"
    SESSION = "session", "Session only"


class SensitivePolicy(models.TextChoices):
    EXCLUDE = "exclude", "Exclude sensitive categories"
    EXPLICIT_CONSENT = "explicit_consent", "Only with explicit consent"
    INCLUDE = "include", "Include"


# The model's defaults: a contract read from a partial mapping (the simulator's arm fields) gets them.
DEFAULT_COHORT_K = 50
DEFAULT_RETENTION_DAYS = 365


@dataclass(frozen=True, slots=True, kw_only=True)
class TreatmentContract:
    """A privacy treatment as the API returns it to the marketplace (field order is the JSON's)."""

    name: str
    consent_prompt: ConsentPrompt
    default_personalization_consent: bool = False
    personalization_level: PersonalizationLevel
    sensitive_category_policy: SensitivePolicy = SensitivePolicy.EXCLUDE
    cohort_k: int = DEFAULT_COHORT_K
    dp_epsilon: float | None = None
    retention_days: int = DEFAULT_RETENTION_DAYS
    show_explanations: bool = True

    @property
    def prompted(self) -> bool:
        return self.consent_prompt != ConsentPrompt.NONE

    @property
    def includes_sensitive(self) -> bool:
        """Whether sensitive categories may be used at all (with consent where the policy asks for it)."""
        return self.sensitive_category_policy != SensitivePolicy.EXCLUDE

    def to_dict(self) -> dict:
        """The JSON form (plain strings, not enum members)."""
        return {
            "name": self.name,
            "consent_prompt": str(self.consent_prompt),
            "default_personalization_consent": self.default_personalization_consent,
            "personalization_level": str(self.personalization_level),
            "sensitive_category_policy": str(self.sensitive_category_policy),
            "cohort_k": self.cohort_k,
            "dp_epsilon": self.dp_epsilon,
            "retention_days": self.retention_days,
            "show_explanations": self.show_explanations,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> TreatmentContract:
        """Read the JSON form; absent optional fields take the model's defaults, unknown keys are ignored."""
        optional = ("default_personalization_consent", "sensitive_category_policy", "cohort_k", "dp_epsilon",
                    "retention_days", "show_explanations")
        given = {field: data[field] for field in optional if field in data}
        if "sensitive_category_policy" in given:
            given["sensitive_category_policy"] = SensitivePolicy(given["sensitive_category_policy"])
        return cls(
            name=str(data["name"]),
            consent_prompt=ConsentPrompt(data["consent_prompt"]),
            personalization_level=PersonalizationLevel(data["personalization_level"]),
            **given,
        )
