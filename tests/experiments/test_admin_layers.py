"""Layers explained where they bite: what a layer is, which ranges are free, the next free range, the clash on save."""

import pytest
from django.core.exceptions import ValidationError

from experiments import selectors, services
from experiments.models import Experiment, Layer
from tests.experiments.factories import ExperimentFactory, TreatmentFactory, running_experiment
from tests.experiments.test_admin_forms import experiment_form_data

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/experiments/experiment/"


def test_free_ranges_are_the_gaps_between_claims():
    claim = selectors.LayerClaim
    assert selectors.layer_free_ranges([]) == [(0.0, 1.0)]
    assert selectors.layer_free_ranges([claim("b", "running", 0.5, 0.7), claim("a", "paused", 0.0, 0.2)]) == [
        (0.2, 0.5), (0.7, 1.0)]
    assert selectors.layer_free_ranges([claim("a", "running", 0.0, 1.0)]) == []


def test_the_form_explains_layers_and_offers_the_next_free_range(staff_client):
    running_experiment(key="banner-test", layer_start=0.0, layer_end=0.4)
    response = staff_client.get(f"{CHANGELIST}add/")
    page = response.content.decode()
    assert "a subject is in at most one of them" in page
    assert "taken [0, 0.4) by banner-test (running); free [0.4, 1)" in page
    assert "Add a new layer" in page
    form = response.context["adminform"].form
    assert (form.initial["layer_start"], form.initial["layer_end"]) == (0.4, 1.0)


def test_a_clash_is_refused_on_save_with_the_free_ranges(staff_client):
    running_experiment(key="banner-test", layer_start=0.0, layer_end=0.4)
    data = experiment_form_data([TreatmentFactory(), TreatmentFactory()], layer_start=0.2, layer_end=0.6)
    response = staff_client.post(f"{CHANGELIST}add/", data)
    assert response.status_code == 200
    message = response.context["adminform"].form.errors["layer_start"][0]
    assert "overlaps experiment 'banner-test' [0, 0.4) (running)" in message and "Free in this layer: [0.4, 1)" in message
    assert not Experiment.objects.filter(key="admin-made").exists()
    # The offered range saves; so does the clashing range in another layer.
    assert staff_client.post(f"{CHANGELIST}add/", {**data, "layer_start": 0.4, "layer_end": 1}).status_code == 302
    other = Layer.objects.create(key="recs", name="Recommendations")
    data.update(key="other-layer", layer=other.pk)
    assert staff_client.post(f"{CHANGELIST}add/", data).status_code == 302


def test_the_service_checks_the_clash_on_save_of_a_draft():
    running_experiment(layer_start=0.0, layer_end=0.5)
    draft = ExperimentFactory(layer_start=0.6, layer_end=1.0)
    draft.layer_start = 0.3
    with pytest.raises(ValidationError, match="Free in this layer: \\[0.5, 1\\)"):
        services.experiment_save(experiment=draft, changed=["layer_start"])
    assert Experiment.objects.get(pk=draft.pk).layer_start == 0.6
