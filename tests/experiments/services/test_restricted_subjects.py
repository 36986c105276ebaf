"""What is collected about subjects who restricted processing or objected to profiling (docs/privacy.md).

Restriction (UU PDP Art. 11, GDPR Art. 18): nothing new is collected — no new
exposure, no event of any kind — and the subject is left out of the metric
facts. Objection to profiling (UU PDP Art. 10, GDPR Art. 21): no new exposure
and no behavioural events (impressions, clicks); orders still count as outcomes.
"""

from datetime import timedelta

import pytest
from django.utils import timezone

from consent import services as consent_services
from consent.pseudonyms import subject_pseudonym
from experiments.metrics.pipeline import metric_statistics_compute
from experiments.models import Exposure, MetricFacts, OutcomeEvent
from experiments.services.assignment import assignments_for_subject
from experiments.services.events import events_record
from tests.consent.factories import grant, raw_id
from tests.experiments.factories import running_experiment

pytestmark = pytest.mark.django_db


@pytest.fixture
def experiment():
    experiment = running_experiment(arms=2)
    experiment.started_at = timezone.now() - timedelta(days=5)
    experiment.save(update_fields=["started_at"])
    return experiment


def _events(subject, prefix):
    now = timezone.now() - timedelta(hours=1)
    return [
        {"event_id": f"{prefix}-o", "subject_id": subject, "type": "order", "timestamp": now, "amount": "1000",
         "lines": [{"product_id": "p1", "category": "fashion", "quantity": 1, "price": "1000"}]},
        {"event_id": f"{prefix}-i", "subject_id": subject, "type": "rec_impression", "timestamp": now,
         "product_id": "p1", "category": "fashion", "position": 0},
        {"event_id": f"{prefix}-c", "subject_id": subject, "type": "rec_click", "timestamp": now,
         "product_id": "p1", "category": "fashion", "position": 0},
    ]


@pytest.mark.parametrize("request_type", ["restriction", "objection", "erasure"])
def test_no_new_exposure_and_no_assignment(experiment, request_type):
    subject = raw_id()
    grant(subject)
    consent_services.dsr_file(type=request_type, subject_id=subject)
    assert assignments_for_subject(subject_id=subject, attributes={}) == []
    assert not Exposure.objects.filter(subject_id=subject_pseudonym(subject)).exists()


@pytest.mark.parametrize("request_type", ["restriction", "objection"])
def test_an_exposed_subject_leaves_the_experiment(experiment, request_type):
    subject = raw_id()
    assert len(assignments_for_subject(subject_id=subject, attributes={})) == 1
    consent_services.dsr_file(type=request_type, subject_id=subject)
    assert assignments_for_subject(subject_id=subject, attributes={}) == []  # the surface's default
    assert Exposure.objects.filter(subject_id=subject_pseudonym(subject)).count() == 1  # the record stays


def test_others_are_assigned_as_before(experiment):
    subject = raw_id()
    first = assignments_for_subject(subject_id=subject, attributes={})
    assert first and assignments_for_subject(subject_id=subject, attributes={}) == first


def test_a_restricted_subjects_events_are_withheld_all(experiment, api):
    subject = raw_id()
    assignments_for_subject(subject_id=subject, attributes={})
    consent_services.dsr_file(type="restriction", subject_id=subject)
    response = api.post("/api/v1/events", {"events": _events(subject, "r")}, format="json")
    assert response.status_code == 201
    assert response.json() == {"received": 3, "recorded": 0, "duplicates": [], "withheld": ["r-o", "r-i", "r-c"]}
    assert not OutcomeEvent.objects.filter(subject_id=subject_pseudonym(subject)).exists()


def test_an_objecting_subjects_behaviour_is_withheld_their_orders_count(experiment):
    subject = raw_id()
    assignments_for_subject(subject_id=subject, attributes={})
    consent_services.dsr_file(type="objection", subject_id=subject)
    result = events_record(events=_events(subject, "b"))
    assert (result.recorded, result.withheld) == (1, ["b-i", "b-c"])
    assert list(OutcomeEvent.objects.filter(subject_id=subject_pseudonym(subject)).values_list("type", flat=True)) == [
        "order"
    ]


def test_other_subjects_in_the_same_batch_are_recorded(experiment):
    blocked, free = raw_id(), raw_id()
    for subject in (blocked, free):
        assignments_for_subject(subject_id=subject, attributes={})
    consent_services.dsr_file(type="restriction", subject_id=blocked)
    result = events_record(events=[*_events(blocked, "x"), *_events(free, "y")])
    assert result.recorded == 3 and result.withheld == ["x-o", "x-i", "x-c"]


def test_recommendation_impressions_are_not_recorded_for_a_restricted_subject(experiment):
    from recommender.services import impressions_record

    subject = raw_id()
    assignments_for_subject(subject_id=subject, attributes={})
    consent_services.dsr_file(type="restriction", subject_id=subject)
    recorded = impressions_record(
        pseudonym=subject_pseudonym(subject), request_id="req-1", shown_at=timezone.now().isoformat(),
        items=[["p1", "fashion"], ["p2", "fashion"]],
    )
    assert recorded == 0
    assert not OutcomeEvent.objects.filter(subject_id=subject_pseudonym(subject)).exists()


def _exposed_with_an_order(experiment, prefix):
    subject = raw_id()
    assignments_for_subject(subject_id=subject, attributes={}, now=timezone.now() - timedelta(days=2))
    events_record(events=_events(subject, prefix)[:1])
    return subject


def test_restricted_subjects_are_left_out_of_the_metric_facts(experiment):
    kept, restricted = _exposed_with_an_order(experiment, "k"), _exposed_with_an_order(experiment, "r")
    consent_services.dsr_file(type="restriction", subject_id=restricted)
    stats = metric_statistics_compute(experiment=experiment)
    assert stats.refresh.kind == "rebuilt"
    facts = set(MetricFacts.objects.values_list("exposure__subject_id", flat=True))
    assert facts == {subject_pseudonym(kept)}
    assert sum(stats.subjects.values()) == 1


def test_a_restriction_after_the_facts_were_written_removes_them_on_the_next_refresh(experiment):
    kept, later = _exposed_with_an_order(experiment, "k"), _exposed_with_an_order(experiment, "l")
    first = metric_statistics_compute(experiment=experiment)
    assert sum(first.subjects.values()) == 2
    consent_services.dsr_file(type="restriction", subject_id=later)
    second = metric_statistics_compute(experiment=experiment)
    assert second.refresh.kind == "updated"  # an incremental refresh, not a rebuild
    assert set(MetricFacts.objects.values_list("exposure__subject_id", flat=True)) == {subject_pseudonym(kept)}
    assert sum(second.subjects.values()) == 1


def test_an_objecting_subject_stays_in_the_metric_facts(experiment):
    subject = _exposed_with_an_order(experiment, "o")
    consent_services.dsr_file(type="objection", subject_id=subject)
    assert sum(metric_statistics_compute(experiment=experiment).subjects.values()) == 1
