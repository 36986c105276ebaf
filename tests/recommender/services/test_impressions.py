"""Impressions: what an answer showed, recorded off the request path, by pseudonym, once."""

import json
from unittest import mock

import pytest

from consent.pseudonyms import subject_pseudonym
from experiments.models import OutcomeEvent

pytestmark = pytest.mark.django_db

URL = "/api/v1/recommendations/{}"


def test_impressions_are_recorded_once_even_if_the_task_runs_twice(world):
    from django.utils import timezone

    from recommender.tasks import recommendations_impressions_record

    _, raws = world
    message = (subject_pseudonym(raws[0]), "req-1", timezone.now().isoformat(), [["F3", "fashion"]])
    assert recommendations_impressions_record.delay(*message).get() == 1
    assert recommendations_impressions_record.delay(*message).get() == 0  # a redelivery records nothing twice
    assert OutcomeEvent.objects.filter(type="rec_impression").count() == 1


def test_the_impression_message_carries_the_pseudonym_never_the_raw_id(api, world):
    """The broker stores the message: the raw id must not be in it (DESIGN: pseudonymised before storage)."""
    _, raws = world
    with mock.patch("recommender.tasks.recommendations_impressions_record.apply_async") as enqueue:
        assert api.get(URL.format(raws[0])).status_code == 200
    (call,) = enqueue.call_args_list
    message = json.dumps(call.kwargs)
    assert raws[0] not in message
    assert call.kwargs["args"][0] == subject_pseudonym(raws[0])
    assert raws[0] not in call.kwargs["argsrepr"]


def test_a_broker_outage_does_not_fail_the_answer(api, world):
    _, raws = world
    with mock.patch("recommender.tasks.recommendations_impressions_record.apply_async", side_effect=OSError("no broker")):
        response = api.get(URL.format(raws[0]))
    assert response.status_code == 200 and response.json()["personalized"] is True


def test_the_impression_task_is_sent_without_a_result_to_wait_for(api, world):
    """Nobody reads an impression task's count: the result backend is not subscribed to per request."""
    _, raws = world
    with mock.patch("recommender.tasks.recommendations_impressions_record.apply_async") as enqueue:
        assert api.get(URL.format(raws[0])).status_code == 200
    (call,) = enqueue.call_args_list
    assert call.kwargs["ignore_result"] is True
