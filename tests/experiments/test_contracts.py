"""The treatment contract: the model gives it typed, ``to_dict`` is the API's JSON and ``from_dict`` reads it back."""

import pytest

from experiments.contracts import PersonalizationLevel, SensitivePolicy, TreatmentContract
from tests.experiments.factories import TreatmentFactory


@pytest.mark.django_db
def test_the_contract_round_trips_through_its_json_form():
    contract = TreatmentFactory(personalization_level="dp_popularity", dp_epsilon=1.0).as_contract()
    assert contract.personalization_level is PersonalizationLevel.DP_POPULARITY
    data = contract.to_dict()
    assert list(data) == [
        "name", "consent_prompt", "default_personalization_consent", "personalization_level",
        "sensitive_category_policy", "cohort_k", "dp_epsilon", "retention_days", "show_explanations",
    ]
    assert all(type(data[key]) is str for key in ("consent_prompt", "personalization_level", "sensitive_category_policy"))
    assert TreatmentContract.from_dict(data) == contract


def test_a_partial_mapping_takes_the_model_defaults():
    contract = TreatmentContract.from_dict({"name": "t", "consent_prompt": "none", "personalization_level": "session"})
    assert contract.sensitive_category_policy is SensitivePolicy.EXCLUDE
    assert (contract.cohort_k, contract.retention_days, contract.show_explanations) == (50, 365, True)
    with pytest.raises(ValueError):
        TreatmentContract.from_dict({"name": "t", "consent_prompt": "none", "personalization_level": "everything"})
