"""The experiment's engine: chosen in its analysis settings, frozen once started, used by the results job."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from experiments.metrics.definitions import METRICS
from experiments.metrics.frame import metric_facts_frame
from experiments.models import Experiment
from experiments.results.analysis import experiment_prior
from experiments.results.snapshots import compute_results
from experiments.services import ANALYSIS_FIELDS
from experiments.services.lifecycle import ANALYSIS_FROZEN
from experiments.stats import analyze
from tests.experiments.factories import running_experiment
from tests.experiments.metrics.test_frame import NOTEBOOK_METRICS, notebook_cuped_plus_plus
from tests.experiments.pipeline_kit import seed_experiment

pytestmark = pytest.mark.django_db


def _bayesian(**kwargs) -> Experiment:
    experiment = running_experiment(arms=3)
    experiment.started_at = timezone.now() - timedelta(days=10)
    experiment.analysis_engine = Experiment.AnalysisEngine.BAYESIAN
    for name, value in kwargs.items():
        setattr(experiment, name, value)
    experiment.save()
    return experiment


@pytest.mark.parametrize("prior", [None, {"mean": 0.0, "variance": 0.01}])
def test_a_bayesian_experiment_stores_the_posteriors_that_analyze_gives_on_the_same_facts(prior):
    experiment = _bayesian(
        prior_mean=None if prior is None else prior["mean"],
        prior_variance=None if prior is None else prior["variance"],
    )
    as_of = timezone.now() - timedelta(days=1)
    seed_experiment(experiment, subjects=400, as_of=as_of, seed=7)
    snapshot = compute_results(experiment=experiment, as_of=as_of, monitor=False)
    data = snapshot.data
    assert data["engine"] == "bayesian" and data["decision"]["engine"] == "bayesian"
    assert data["bayesian_report"]["prior"] == prior
    assert data["report"]["comparisons"]  # the frequentist report the pages read stays

    # ~130 subjects per arm: CUPED++ on the two covariates, too few for the strata's regressors.
    assert {(a["method"], tuple(a["covariates"]), tuple(a["strata"])) for a in data["adjustment"].values()} == {
        ("cuped++", ("pre_gmv", "pre_orders"), ())
    }
    frame, covariates = notebook_cuped_plus_plus(
        metric_facts_frame(experiment=experiment, as_of=as_of), gmv_cap=data["settings"]["gmv_cap"]
    )
    notebook = analyze(
        frame,
        control="control",
        weights=dict(experiment.arms.values_list("key", "weight")),
        alpha=experiment.alpha,
        metrics={column: kind for column, kind in NOTEBOOK_METRICS.values()},
        covariates=covariates,
        caps={"gmv": 100 * experiment.gmv_cap_percentile},
        engine="bayesian",
        prior=prior,
        lower_is_better=[NOTEBOOK_METRICS[m][0] for m in NOTEBOOK_METRICS if not METRICS[m][1]],
    )
    by = {(c["arm"], c["metric"]): c for c in notebook["comparisons"]}
    stored = data["bayesian_report"]["comparisons"]
    assert len(stored) == len(by) == 2 * len(NOTEBOOK_METRICS)
    for comparison in stored:
        other = by[(comparison["arm"], NOTEBOOK_METRICS[comparison["metric"]][0])]
        assert other["higher_is_better"] == comparison["higher_is_better"]
        for scale in ("absolute", "relative"):
            for field in ("estimate", "standard_error", "chance_to_win"):
                assert other[scale][field] == pytest.approx(comparison[scale][field], rel=1e-9, abs=1e-12), (
                    comparison["metric"], scale, field,
                )
            assert other[scale]["ci"] == pytest.approx(comparison[scale]["ci"], rel=1e-9, abs=1e-12)


def test_a_frequentist_experiment_has_no_bayesian_report():
    experiment = running_experiment(arms=2)
    experiment.started_at = timezone.now() - timedelta(days=10)
    experiment.save(update_fields=["started_at"])
    as_of = timezone.now() - timedelta(days=1)
    seed_experiment(experiment, subjects=200, as_of=as_of, seed=3)
    data = compute_results(experiment=experiment, as_of=as_of, monitor=False).data
    assert data["engine"] == "frequentist" and "bayesian_report" not in data
    assert data["decision"]["engine"] == "frequentist"
    assert experiment_prior(experiment=experiment) is None


@pytest.mark.parametrize(
    ("settings", "field", "words"),
    [
        ({"analysis_engine": "magic"}, "analysis_engine", "not a valid choice"),
        ({"analysis_engine": "bayesian", "testing_mode": "sequential"}, "analysis_engine", "fixed horizon"),
        ({"analysis_engine": "bayesian", "prior_mean": 0.0}, "prior_variance", "both a mean and a variance"),
        ({"analysis_engine": "bayesian", "prior_mean": 0.0, "prior_variance": 0.0}, "prior_variance", "above 0"),
        ({"prior_mean": 0.0, "prior_variance": 0.1}, "prior_mean", "Only the Bayesian engine"),
    ],
)
def test_bad_engine_settings_are_refused_in_words_on_the_field_and_by_the_database(settings, field, words):
    experiment = running_experiment(arms=2)
    for name, value in settings.items():
        setattr(experiment, name, value)
    with pytest.raises(ValidationError) as error:
        experiment.full_clean()
    assert any(words in message for message in error.value.message_dict[field])
    with pytest.raises(IntegrityError), transaction.atomic():
        Experiment.objects.filter(pk=experiment.pk).update(**settings)


def test_the_engine_and_prior_are_frozen_with_the_rest_of_the_analysis():
    assert {"analysis_engine", "prior_mean", "prior_variance"} <= ANALYSIS_FIELDS
    assert "analysis" in ANALYSIS_FROZEN
