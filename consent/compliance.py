"""The treatment compliance review: does a privacy treatment respect UU PDP and GDPR?

A pure function over a treatment's attributes (any object with them, such as
``experiments.PrivacyTreatment``, or keyword arguments) and the purposes'
retention limits. It returns findings, most severe first; an ``error`` means
the treatment must not run without a recorded override reason. Nothing here
touches the database: fetch the limits with
``consent.selectors.purpose_retention_limits()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ERROR, WARNING, INFO = "error", "warning", "info"
_SEVERITY_ORDER = {ERROR: 0, WARNING: 1, INFO: 2}

# Personalization levels that use the subject's own data. Differentially private
# popularity is one: the counts are noisy, but at serving time the list is spread
# over the subject's own categories (and answered ``personalized: true``), which is
# profiling of that subject (UU PDP Art. 10, GDPR Art. 4(4)). ``dp_item_item`` is
# one too: its model is differentially private, but each subject's list is scored
# from their own history. Session-only uses nothing kept about the subject beyond
# the current visit.
PERSONAL_LEVELS = frozenset({"full", "cohort", "dp_popularity", "dp_item_item"})
NON_PERSONAL_LEVELS = frozenset({"popularity", "session"})
KNOWN_LEVELS = PERSONAL_LEVELS | NON_PERSONAL_LEVELS
KNOWN_PROMPTS = frozenset({"none", "banner", "modal", "just_in_time"})
KNOWN_SENSITIVE_POLICIES = frozenset({"exclude", "explicit_consent", "include"})

MIN_COHORT_K = 10  # below this a "cohort" may single people out
MAX_DP_EPSILON = 5.0  # above this the differential-privacy guarantee is weak
DP_LEVELS = frozenset({"dp_popularity", "dp_item_item"})

_FIELDS = (
    "consent_prompt",
    "default_personalization_consent",
    "personalization_level",
    "sensitive_category_policy",
    "retention_days",
    "cohort_k",
    "dp_epsilon",
    "show_explanations",
)


@dataclass(frozen=True)
class Finding:
    severity: str  # "error" | "warning" | "info"
    code: str
    message: str
    reference: str  # the articles the finding rests on
    field: str = ""  # the treatment attribute it is about

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR


def treatment_compliance_review(
    treatment: object | None = None,
    *,
    purpose_retention_days: Mapping[str, int],
    **attributes: object,
) -> tuple[Finding, ...]:
    """Review a privacy treatment; returns its findings, errors first.

    ``treatment`` is any object with the attributes ``consent_prompt``,
    ``default_personalization_consent``, ``personalization_level``,
    ``sensitive_category_policy`` and ``retention_days`` (optionally
    ``cohort_k``, ``dp_epsilon``, ``show_explanations``); keyword arguments
    give or override them. ``purpose_retention_days`` maps purpose keys to
    their retention periods (``purpose_retention_limits()``).
    """
    unknown = sorted(set(attributes) - set(_FIELDS))
    if unknown:
        raise TypeError(f"unknown treatment attributes: {', '.join(unknown)}")
    values = {name: getattr(treatment, name, None) for name in _FIELDS}
    values.update(attributes)
    prompt = values["consent_prompt"]
    pre_ticked = bool(values["default_personalization_consent"])
    level = values["personalization_level"]
    sensitive = values["sensitive_category_policy"]
    retention = values["retention_days"]
    personal = level in PERSONAL_LEVELS
    findings: list[Finding] = []
    add = findings.append

    for name, value, known in (
        ("consent_prompt", prompt, KNOWN_PROMPTS),
        ("personalization_level", level, KNOWN_LEVELS),
        ("sensitive_category_policy", sensitive, KNOWN_SENSITIVE_POLICIES),
    ):
        if value not in known:
            add(
                Finding(
                    ERROR,
                    "unknown_value",
                    f"{name} {value!r} is not one of {', '.join(sorted(known))}; "
                    "the review cannot vouch for it.",
                    "UU PDP Art. 16(2); GDPR Art. 5(2)",
                    name,
                )
            )

    if pre_ticked:
        if prompt == "none":
            add(
                Finding(
                    ERROR,
                    "consent_presumed",
                    "Personalization consent is on by default and the subject is never asked: silence or "
                    "inactivity is not consent.",
                    "UU PDP Art. 20(2)(a), Art. 22; GDPR Art. 4(11), Art. 7, Recital 32",
                    "default_personalization_consent",
                )
            )
        else:
            add(
                Finding(
                    ERROR if personal else WARNING,
                    "pre_ticked_consent",
                    "Personalization consent is pre-selected. A pre-ticked box is not valid consent"
                    + (
                        "; this arm would personalize on it."
                        if personal
                        else "; this arm does not personalize, but the recorded consents would be invalid."
                    ),
                    "UU PDP Art. 22; GDPR Art. 4(11), Art. 7, Recital 32",
                    "default_personalization_consent",
                )
            )
    elif personal and prompt == "none":
        add(
            Finding(
                WARNING,
                "no_prompt",
                "The arm personalizes but never asks for consent: only subjects who consented elsewhere get "
                "personalized results, so the arm's population differs from the others'.",
                "UU PDP Art. 20(2)(a); GDPR Art. 6(1)(a)",
                "consent_prompt",
            )
        )

    if sensitive == "include":
        if personal:
            add(
                Finding(
                    ERROR,
                    "sensitive_without_explicit_consent",
                    "Sensitive categories (health, financial products) are personalized without their own "
                    "explicit consent; they are specific personal data.",
                    "UU PDP Art. 4(2), Art. 20(2)(a), Art. 34; GDPR Art. 9(1), Art. 9(2)(a)",
                    "sensitive_category_policy",
                )
            )
        else:
            add(
                Finding(
                    INFO,
                    "sensitive_non_personal",
                    "Sensitive categories appear, but only in non-personal recommendations: no profiling of "
                    "the subject's sensitive interests.",
                    "UU PDP Art. 4(2); GDPR Art. 9",
                    "sensitive_category_policy",
                )
            )
    elif sensitive == "explicit_consent" and personal:
        add(
            Finding(
                INFO,
                "sensitive_explicit_consent",
                "Sensitive categories are personalized only for subjects with the separate "
                "sensitive_profiling consent; a data protection impact assessment should cover this.",
                "UU PDP Art. 4(2), Art. 34; GDPR Art. 9(2)(a), Art. 35",
                "sensitive_category_policy",
            )
        )

    if retention is None or not isinstance(retention, int) or retention < 1:
        add(
            Finding(
                ERROR,
                "retention_missing",
                "The treatment states no positive retention period.",
                "UU PDP Art. 16(2); GDPR Art. 5(1)(e)",
                "retention_days",
            )
        )
    else:
        purposes = ["personalization"]
        if personal and sensitive in ("explicit_consent", "include"):
            purposes.append("sensitive_profiling")
        for purpose in purposes:
            limit = purpose_retention_days.get(purpose)
            if limit is None:
                add(
                    Finding(
                        WARNING,
                        "retention_limit_unknown",
                        f"No retention period is defined for the purpose {purpose!r}.",
                        "UU PDP Art. 16(2); GDPR Art. 5(1)(e)",
                        "retention_days",
                    )
                )
            elif retention > limit:
                add(
                    Finding(
                        ERROR,
                        "retention_exceeds_purpose",
                        f"Keeps data {retention} days, longer than the {limit} days the {purpose} purpose "
                        "allows.",
                        "UU PDP Art. 16(2), Art. 43; GDPR Art. 5(1)(e)",
                        "retention_days",
                    )
                )

    cohort_k = values["cohort_k"]
    if level == "cohort" and isinstance(cohort_k, int) and cohort_k < MIN_COHORT_K:
        add(
            Finding(
                WARNING,
                "small_cohort",
                f"Cohorts of {cohort_k} may single subjects out; use at least {MIN_COHORT_K}.",
                "UU PDP Art. 16(2), Art. 35; GDPR Art. 25(1), Recital 26",
                "cohort_k",
            )
        )
    epsilon = values["dp_epsilon"]
    if level in DP_LEVELS and isinstance(epsilon, int | float) and epsilon > MAX_DP_EPSILON:
        add(
            Finding(
                WARNING,
                "weak_differential_privacy",
                f"ε = {epsilon:g} gives a weak guarantee; keep ε ≤ {MAX_DP_EPSILON:g} per build.",
                "UU PDP Art. 35; GDPR Art. 25(1), Art. 32(1)(a)",
                "dp_epsilon",
            )
        )
    if personal and values["show_explanations"] is False:
        add(
            Finding(
                INFO,
                "no_explanations",
                "Personalized results are shown without saying why; subjects have a right to meaningful "
                "information about profiling.",
                "UU PDP Art. 5, Art. 10; GDPR Art. 13(2)(f), Art. 22",
                "show_explanations",
            )
        )
    return tuple(sorted(findings, key=lambda f: _SEVERITY_ORDER[f.severity]))


def has_errors(findings: tuple[Finding, ...]) -> bool:
    return any(finding.is_error for finding in findings)
