"""Targeting is a validated structure: known attributes, lists of (known) values, edited with a widget."""

import pytest
from django.core.exceptions import ValidationError

from experiments import services
from experiments.assignment import targeting_matches
from experiments.models import Experiment
from experiments.targeting import TARGETING_ATTRIBUTES, targeting_problems
from tests.experiments.factories import ExperimentFactory, TreatmentFactory
from tests.experiments.test_admin_forms import experiment_form_data

CHANGELIST = "/admin/experiments/experiment/"


@pytest.mark.parametrize(
    "targeting",
    [{}, None, {"age_band": ["18-24", "25-34"]}, {"platform": ["android"], "province": ["Bali", "Papua Barat"]}],
)
def test_valid_targeting(targeting):
    assert targeting_problems(targeting=targeting) == []


@pytest.mark.parametrize(
    ("targeting", "words"),
    [
        ({"age": ["18-24"]}, "Unknown attribute 'age': the marketplace reports age_band, platform, province"),
        ({"provinsi": ["Bali"]}, "Unknown attribute 'provinsi'"),
        ({"platform": "android"}, 'Platform: give a list of values, e.g. ["android"], not "android".'),
        ({"age_band": []}, "Age band: choose at least one value"),
        ({"platform": ["windows"]}, "Platform: unknown value(s) 'windows'; the values are android, ios, web."),
        ({"province": [""]}, "Province: each value is a non-empty text."),
        (["platform", "android"], "Targeting maps an attribute to a list of values"),
    ],
)
def test_bad_targeting_is_refused_in_words(targeting, words):
    assert any(words in problem for problem in targeting_problems(targeting=targeting))


def test_a_plain_string_never_matches_by_substring():
    assert not targeting_matches({"platform": "android-tv"}, {"platform": "android"})
    assert targeting_matches({"platform": "android"}, {"platform": "android"})


@pytest.mark.django_db
def test_bad_targeting_shows_on_its_field_and_the_service_saves_nothing():
    experiment = ExperimentFactory()
    experiment.targeting = {"age": ["18-24"], "platform": "ios"}
    with pytest.raises(ValidationError) as caught:
        services.experiment_save(experiment=experiment, changed=["targeting"])
    messages = caught.value.message_dict["targeting"]
    assert len(messages) == 2 and "Unknown attribute 'age'" in messages[0] and "give a list" in messages[1]
    assert Experiment.objects.get(pk=experiment.pk).targeting == {}


@pytest.mark.django_db
def test_the_admin_edits_targeting_with_a_widget(staff_client):
    page = staff_client.get(f"{CHANGELIST}add/").content.decode()
    for spec in TARGETING_ATTRIBUTES.values():
        assert spec.label in page
    assert '<legend>Age band' in page and 'name="targeting_age_band"' in page and 'value="55+"' in page
    assert 'list="targeting-province-values"' in page and '<datalist id="targeting-province-values">' in page
    data = experiment_form_data([TreatmentFactory(), TreatmentFactory()],
                                targeting_age_band=["18-24", "25-34"], targeting_province="Bali, DKI Jakarta ,")
    response = staff_client.post(f"{CHANGELIST}add/", data)
    assert response.status_code == 302, response.content.decode()[:3000]
    experiment = Experiment.objects.get(key="admin-made")
    assert experiment.targeting == {"age_band": ["18-24", "25-34"], "province": ["Bali", "DKI Jakarta"]}
    page = staff_client.get(f"{CHANGELIST}{experiment.pk}/change/").content.decode()
    assert 'value="18-24"' in page and 'checked' in page and 'value="Bali, DKI Jakarta"' in page


@pytest.mark.django_db
def test_an_unknown_value_in_the_admin_is_refused_on_the_field(staff_client):
    data = experiment_form_data([TreatmentFactory(), TreatmentFactory()], targeting_platform=["windows"])
    response = staff_client.post(f"{CHANGELIST}add/", data)
    assert response.status_code == 200
    assert "windows" in " ".join(response.context["adminform"].form.errors["targeting"])
    assert not Experiment.objects.exists()


@pytest.mark.django_db
def test_saving_a_draft_with_old_unknown_targeting_says_what_was_removed(staff_client):
    from tests.experiments.test_admin_forms import _change_data

    experiment = ExperimentFactory()
    Experiment.objects.filter(pk=experiment.pk).update(targeting={"provinsi": ["Bali"]})  # saved before the checks
    data = _change_data(staff_client, experiment, targeting_platform=["ios"])
    response = staff_client.post(f"{CHANGELIST}{experiment.pk}/change/", data, follow=True)
    assert "removed provinsi" in response.content.decode()
    assert Experiment.objects.get(pk=experiment.pk).targeting == {"platform": ["ios"]}
