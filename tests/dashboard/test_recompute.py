"""The dashboard's "recompute now" (``experiments.dashboard.recompute``): the request, its progress, its refusals."""

from __future__ import annotations

from unittest import mock

import pytest
from django.utils.html import escape

from experiments.models import ResultSnapshot
from tests.dashboard.conftest import login, make_experiment
from tests.dashboard.conftest import page_url as _url
from tests.experiments.factories import ExperimentFactory
from tests.experiments.pipeline_kit import populate

pytestmark = pytest.mark.django_db


# --- recompute progress -----------------------------------------------------------------


def test_recompute_status_goes_from_idle_to_queued_to_done(
    client, analysed, people, django_capture_on_commit_callbacks
):
    login(client, people["owner"])
    status_url = _url("recompute-status", analysed)
    assert client.get(status_url).json()["state"] == "idle"
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = client.post(_url("recompute", analysed), HTTP_ACCEPT="application/json")
    assert response.status_code == 202 and response.json()["state"] == "queued"
    queued = client.get(status_url).json()
    assert queued["state"] == "queued" and queued["task_id"]
    page = client.get(_url("experiment-detail", analysed)).content.decode()
    assert 'data-poll="1"' in page and "Queued" in page
    # A second click while queued joins the same request.
    with django_capture_on_commit_callbacks(execute=False) as again:
        client.post(_url("recompute", analysed))
    assert again == [] and client.get(status_url).json()["task_id"] == queued["task_id"]
    for callback in callbacks:  # the commit: the (eager) task runs
        callback()
    done = client.get(status_url).json()
    assert done["state"] == "done"
    latest = ResultSnapshot.objects.filter(experiment=analysed).order_by("-computed_at").first()
    assert done["snapshot"]["id"] == latest.pk
    assert "Recomputed at" in client.get(_url("experiment-detail", analysed)).content.decode()


def test_a_recompute_that_cannot_run_shows_as_failed(client, analysed, people, django_capture_on_commit_callbacks):
    login(client, people["owner"])
    with mock.patch("experiments.tasks.results_compute.apply_async",
                    side_effect=ConnectionError("broker down")), \
            django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url("recompute", analysed))
    assert response.status_code == 302
    status = client.get(_url("recompute-status", analysed)).json()
    assert status["state"] == "failed" and "could not be started" in status["message"]
    page = client.get(_url("experiment-detail", analysed))
    assert page.status_code == 200 and "could not be started" in page.content.decode()
    # A new click tries again.
    with django_capture_on_commit_callbacks(execute=True):
        client.post(_url("recompute", analysed))
    assert client.get(_url("recompute-status", analysed)).json()["state"] == "done"


def _recompute_message(client, experiment, django_capture_on_commit_callbacks) -> str:
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(_url("recompute", experiment))
    assert response.status_code == 302
    status = client.get(_url("recompute-status", experiment)).json()
    assert status["state"] == "failed"
    page = client.get(_url("experiment-detail", experiment)).content.decode()
    assert escape(status["message"]) in page and "server log" not in page
    return status["message"]


def test_recompute_says_why_an_experiment_cannot_be_computed(client, people, django_capture_on_commit_callbacks):
    login(client, people["owner"])
    nobody = make_experiment(people["owner"], key="nobody-exposed")
    message = _recompute_message(client, nobody, django_capture_on_commit_callbacks)
    assert message.startswith("Not computed: Nobody has been exposed to this experiment yet")
    assert not ResultSnapshot.objects.filter(experiment=nobody).exists()

    no_control = make_experiment(people["owner"], key="no-control")
    populate(no_control, {"control": {"n": 5}, "arm-1": {"n": 5}, "arm-2": {"n": 5}})
    no_control.arms.update(is_control=False)
    assert "has no control arm" in _recompute_message(client, no_control, django_capture_on_commit_callbacks)

    draft = ExperimentFactory(owner=people["owner"], key="still-a-draft")
    assert "has not started" in _recompute_message(client, draft, django_capture_on_commit_callbacks)

    armless = ExperimentFactory(owner=people["owner"], key="no-arms", arms=0)
    assert "has no arms yet" in _recompute_message(client, armless, django_capture_on_commit_callbacks)


def test_a_refusal_in_words_from_the_run_itself_reaches_the_page(
    client, people, django_capture_on_commit_callbacks
):
    # Passes the checks, then the pipeline refuses (the control arm was removed in between).
    experiment = make_experiment(people["owner"], key="refused-in-run")
    populate(experiment, {"control": {"n": 5}, "arm-1": {"n": 5}, "arm-2": {"n": 5}})
    login(client, people["owner"])
    with mock.patch("experiments.dashboard.recompute.recompute_refusal", return_value=""):
        experiment.arms.update(is_control=False)
        message = _recompute_message(client, experiment, django_capture_on_commit_callbacks)
    assert message == "Not computed: Experiment 'refused-in-run' has no control arm."
