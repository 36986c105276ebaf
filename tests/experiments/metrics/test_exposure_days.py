"""The per-day statistics since first exposure equal a per-subject count in Python over the same rows."""

from collections import defaultdict
from datetime import timedelta

import pytest
from django.utils import timezone

from experiments.metrics.exposure_days import exposure_day_statistics
from experiments.metrics.pipeline import metric_statistics_compute
from experiments.models import Exposure, MetricFacts, OutcomeEvent
from tests.experiments.factories import running_experiment
from tests.experiments.pipeline_kit import seed_experiment

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


def _reference(experiment, as_of, cap, days):
    """{day: {arm: (n, Σorders, Σorders², Σgmv, Σgmv², buyers)}} from the ORM, subject by subject."""
    counted = set(MetricFacts.objects.filter(experiment=experiment).values_list("exposure_id", flat=True))
    exposures = [e for e in Exposure.objects.filter(experiment=experiment).select_related("arm") if e.id in counted]
    result = {}
    for day in range(days):
        by_arm = defaultdict(lambda: [0, 0.0, 0.0, 0.0, 0.0, 0])
        for exposure in exposures:
            start = exposure.first_exposed_at + day * DAY
            if start >= as_of:  # the subject has not reached this day
                continue
            orders = list(
                OutcomeEvent.objects.filter(
                    subject_id=exposure.subject_id, type="order", occurred_at__gte=start,
                    occurred_at__lt=min(start + DAY, as_of),
                ).values_list("amount", flat=True)
            )
            gmv = float(sum(orders)) if orders else 0.0
            gmv = gmv if cap is None else min(gmv, cap)
            sums = by_arm[exposure.arm.key]
            sums[0] += 1
            sums[1] += len(orders)
            sums[2] += len(orders) ** 2
            sums[3] += gmv
            sums[4] += gmv * gmv
            sums[5] += 1 if orders else 0
        result[day] = dict(by_arm)
    return result


def test_each_days_sums_are_those_of_the_subjects_who_reached_it():
    experiment = running_experiment(arms=2)
    experiment.started_at = timezone.now() - timedelta(days=6)
    experiment.save(update_fields=["started_at"])
    as_of = timezone.now() - timedelta(hours=3)
    seed_experiment(experiment, subjects=60, as_of=as_of, seed=11)
    stats = metric_statistics_compute(experiment=experiment, as_of=as_of)  # the facts, refreshed
    days = 5
    daily = exposure_day_statistics(experiment=experiment, window_end=stats.window_end, gmv_cap=stats.gmv_cap, days=days)
    expected = _reference(experiment, stats.window_end, stats.gmv_cap, days)
    assert daily, "some day has subjects in every arm"
    for day, by_arm in daily.items():
        for arm, metrics in by_arm.items():
            n, orders, orders_ss, gmv, gmv_ss, buyers = expected[day][arm]
            assert metrics["orders"].n == n
            assert (metrics["orders"].sum, metrics["orders"].sum_squares) == (orders, orders_ss)
            assert metrics["gmv"].sum == pytest.approx(gmv, rel=1e-12, abs=1e-9)
            assert metrics["gmv"].sum_squares == pytest.approx(gmv_ss, rel=1e-12, abs=1e-6)
            assert metrics["conversion"].successes == buyers
    # Days left out are those where an arm has fewer than two subjects.
    for day in set(range(days)) - set(daily):
        assert min((expected[day].get(arm, [0])[0] for arm in ("control", "arm-1")), default=0) < 2


def test_days_must_be_a_positive_whole_number():
    experiment = running_experiment(arms=2)
    with pytest.raises(ValueError, match="days"):
        exposure_day_statistics(experiment=experiment, window_end=timezone.now(), gmv_cap=None, days=0)
