"""The treatment compliance review: findings, severities and the articles they rest on."""

from types import SimpleNamespace

import pytest

from consent.compliance import Finding, has_errors, treatment_compliance_review
from consent.selectors import purpose_retention_limits
from experiments.models import PrivacyTreatment

LIMITS = {
    "personalization": 365,
    "sensitive_profiling": 90,
    "behavioral_tracking": 180,
    "marketing": 730,
}
COMPLIANT = dict(
    consent_prompt="modal",
    default_personalization_consent=False,
    personalization_level="full",
    sensitive_category_policy="exclude",
    retention_days=365,
)


def review(**overrides):
    return treatment_compliance_review(purpose_retention_days=LIMITS, **{**COMPLIANT, **overrides})


def codes(findings, severity=None):
    return {f.code for f in findings if severity is None or f.severity == severity}


def test_a_compliant_treatment_has_no_errors_or_warnings():
    findings = review()
    assert not has_errors(findings)
    assert codes(findings, "warning") == set()


def test_pre_ticked_personalization_consent_is_an_error():
    findings = review(default_personalization_consent=True)
    finding = next(f for f in findings if f.code == "pre_ticked_consent")
    assert finding.severity == "error" and finding.field == "default_personalization_consent"
    assert (
        "Art. 22" in finding.reference
        and "Recital 32" in finding.reference
        and "Art. 7" in finding.reference
    )
    assert has_errors(findings)


def test_pre_ticked_consent_on_a_non_personal_arm_is_a_warning():
    findings = review(default_personalization_consent=True, personalization_level="popularity")
    assert "pre_ticked_consent" in codes(findings, "warning")
    assert not has_errors(findings)


def test_consent_presumed_without_any_prompt_is_an_error():
    findings = review(default_personalization_consent=True, consent_prompt="none")
    assert "consent_presumed" in codes(findings, "error")


def test_personalizing_without_a_prompt_is_a_warning():
    assert "no_prompt" in codes(review(consent_prompt="none"), "warning")
    assert "no_prompt" not in codes(review(consent_prompt="none", personalization_level="session"))


def test_sensitive_categories_without_explicit_consent_is_an_error():
    findings = review(sensitive_category_policy="include")
    finding = next(f for f in findings if f.code == "sensitive_without_explicit_consent")
    assert finding.severity == "error"
    assert "Art. 4(2)" in finding.reference and "Art. 9" in finding.reference
    assert "sensitive_non_personal" in codes(
        review(sensitive_category_policy="include", personalization_level="popularity"), "info"
    )
    assert not has_errors(review(sensitive_category_policy="explicit_consent", retention_days=90))


@pytest.mark.parametrize(
    ("retention", "sensitive", "error"),
    [
        (365, "exclude", False),
        (366, "exclude", True),
        (90, "explicit_consent", False),
        (120, "explicit_consent", True),
        (0, "exclude", True),
    ],
)
def test_retention_longer_than_the_purpose_allows_is_an_error(retention, sensitive, error):
    findings = review(retention_days=retention, sensitive_category_policy=sensitive)
    retention_errors = {c for c in codes(findings, "error") if c.startswith("retention")}
    assert bool(retention_errors) is error, findings


def test_unknown_purpose_limit_is_a_warning():
    findings = treatment_compliance_review(purpose_retention_days={}, **COMPLIANT)
    assert "retention_limit_unknown" in codes(findings, "warning")


def test_weak_anonymisation_settings_are_warnings():
    assert "small_cohort" in codes(review(personalization_level="cohort", cohort_k=5), "warning")
    assert "small_cohort" not in codes(review(personalization_level="cohort", cohort_k=50))
    assert "weak_differential_privacy" in codes(
        review(personalization_level="dp_popularity", dp_epsilon=8.0)
    )
    assert "weak_differential_privacy" not in codes(
        review(personalization_level="dp_popularity", dp_epsilon=1.0)
    )
    assert "no_explanations" in codes(review(show_explanations=False), "info")


def test_unknown_values_are_errors_not_silence():
    assert "unknown_value" in codes(review(personalization_level="psychic"), "error")


def test_findings_are_ordered_errors_first_and_frozen():
    findings = review(
        default_personalization_consent=True,
        sensitive_category_policy="include",
        show_explanations=False,
        retention_days=1000,
    )
    severities = [f.severity for f in findings]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)
    with pytest.raises(AttributeError):
        findings[0].severity = "info"
    assert all(isinstance(f, Finding) and f.reference for f in findings)


def test_reviews_a_treatment_object_and_keyword_overrides():
    treatment = PrivacyTreatment(
        name="pre-ticked",
        consent_prompt="banner",
        default_personalization_consent=True,
        personalization_level="full",
        sensitive_category_policy="exclude",
        retention_days=365,
    )
    assert "pre_ticked_consent" in codes(
        treatment_compliance_review(treatment, purpose_retention_days=LIMITS)
    )
    fixed = treatment_compliance_review(
        treatment, purpose_retention_days=LIMITS, default_personalization_consent=False
    )
    assert not has_errors(fixed)
    duck = SimpleNamespace(**COMPLIANT)
    assert not has_errors(treatment_compliance_review(duck, purpose_retention_days=LIMITS))
    with pytest.raises(TypeError, match="unknown treatment attributes"):
        treatment_compliance_review(duck, purpose_retention_days=LIMITS, colour="red")


@pytest.mark.django_db
def test_the_seeded_purposes_supply_the_limits():
    assert purpose_retention_limits() == LIMITS


def test_dp_popularity_is_reviewed_as_the_personal_processing_it_is():
    """Serving spreads a DP list over the subject's own categories (and says ``personalized: true``)."""
    dp = {"personalization_level": "dp_popularity", "dp_epsilon": 1.0}
    pre_ticked = review(default_personalization_consent=True, **dp)
    assert "pre_ticked_consent" in codes(pre_ticked, "error") and has_errors(pre_ticked)
    sensitive = review(sensitive_category_policy="include", **dp)
    assert "sensitive_without_explicit_consent" in codes(sensitive, "error")
    assert "sensitive_non_personal" not in codes(sensitive)
    assert "no_prompt" in codes(review(consent_prompt="none", **dp), "warning")
    assert "no_explanations" in codes(review(show_explanations=False, **dp), "info")
    # Plain popularity stays non-personal.
    assert not has_errors(review(default_personalization_consent=True, personalization_level="popularity"))


def test_the_demo_arms_can_still_start():
    """No demo arm is pre-ticked or includes sensitive categories, so the review change starts them all."""
    from marketplace.experiment import DEMO_ARMS

    for _, _, _, fields in DEMO_ARMS:
        attributes = {name: value for name, value in fields.items() if name != "name"}
        assert not has_errors(treatment_compliance_review(purpose_retention_days=LIMITS, **attributes)), fields["name"]
