"""The metric pipeline: SQL sufficient statistics equal pandas on the same rows; capping; the CUPED window."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from consent.models import ConsentEvent, Notice, Purpose, Subject
from consent.pseudonyms import subject_pseudonym
from experiments.metrics.pipeline import metric_statistics_compute
from experiments.metrics.planner import PLAN_MARKER, refresh_form_plan
from experiments.metrics.sql import ORDERS_MARKER, QUERY_MARKER, REFRESH_MARKER
from experiments.models import Exposure, OutcomeEvent
from experiments.stats import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
)
from tests.experiments.factories import ExperimentFactory, started_experiment
from tests.experiments.pipeline_kit import reference_per_subject, reference_sums, seed_experiment

pytestmark = pytest.mark.django_db


def _assert_sums_equal(actual: dict, expected: dict):
    assert set(actual) == set(expected)
    for key in expected:
        for name, value in expected[key].items():
            assert actual[key][name] == pytest.approx(value, rel=1e-9, abs=1e-6), (key, name)


@pytest.fixture(params=["automatic", "indexed", "streamed"])
def statement_shape(request, monkeypatch):
    """Run the pandas comparison with each form of the statement (PostgreSQL has two)."""
    from django.db import connection

    if request.param != "automatic" and connection.vendor != "postgresql":
        pytest.skip("SQLite has one form of the statement")
    if request.param == "indexed":
        monkeypatch.setattr("experiments.metrics.planner.STREAM_SHARE", 10.0)
    elif request.param == "streamed":
        monkeypatch.setattr("experiments.metrics.planner.STREAM_SHARE", 0.0)
    return request.param


@pytest.mark.parametrize(("cap_percentile", "pre_days"), [(0.9, 28), (None, 28), (0.99, 7), (1.0, 0)])
def test_sql_sufficient_statistics_equal_pandas(cap_percentile, pre_days, statement_shape):
    ExperimentFactory(arms=2)  # a decoy experiment sharing subjects
    experiment = started_experiment(arms=3)
    as_of = timezone.now() - timedelta(days=1)
    seeded = seed_experiment(experiment, subjects=400, as_of=as_of, seed=7)

    stats = metric_statistics_compute(
        experiment=experiment, as_of=as_of, gmv_cap_percentile=cap_percentile, pre_exposure_days=pre_days
    )

    per_subject, cap = reference_per_subject(
        seeded,
        phase=experiment.phase,
        window_start=experiment.started_at,
        window_end=as_of,
        pre_exposure_days=pre_days,
        cap_percentile=cap_percentile,
    )
    assert stats.gmv_cap == pytest.approx(cap, rel=1e-12) if cap is not None else stats.gmv_cap is None
    order_cap = per_subject.attrs["order_cap"]
    assert stats.order_cap == pytest.approx(order_cap, rel=1e-12) if order_cap is not None else stats.order_cap is None
    _assert_sums_equal(stats.sums, reference_sums(per_subject, ["arm"]))
    expected_segments = {}
    for dimension in ("age_band", "province", "platform", "customer"):
        for (value, arm), sums in reference_sums(per_subject, [dimension, "arm"]).items():
            expected_segments[(f"{dimension}={value}", arm)] = sums
    actual_segments = {}
    for label, arms in stats.segments.items():
        for arm, metrics in arms.items():
            actual_segments[(label, arm)] = {
                "n": metrics["conversion"].n,
                "converted": metrics["conversion"].successes,
                "opted_out": metrics["opt_out"].successes,
                "consented": metrics["consent_rate"].successes,
                "gmv_sum": metrics["gmv"].sum,
                "gmv_ss": metrics["gmv"].sum_squares,
                "orders_sum": metrics["orders"].sum,
                "clicks_impressions": metrics["ctr"].cross_product,
                "aov_sum": metrics["aov"].numerator_sum,
                "aov_ss": metrics["aov"].numerator_sum_squares,
                "aov_orders": metrics["aov"].cross_product,
            }
    assert set(actual_segments) == set(expected_segments)
    for key, sums in actual_segments.items():
        for name, value in sums.items():
            assert value == pytest.approx(expected_segments[key][name], rel=1e-9, abs=1e-6), (key, name)


def test_statistic_types_follow_the_metric():
    experiment = started_experiment(arms=2)
    seed_experiment(experiment, subjects=50, as_of=timezone.now(), decoys=False)
    arm = metric_statistics_compute(experiment=experiment).arms["control"]
    assert isinstance(arm["conversion"], ProportionStatistic)
    assert isinstance(arm["opt_out"], ProportionStatistic)
    assert isinstance(arm["consent_rate"], ProportionStatistic)
    assert isinstance(arm["gmv"], RegressionAdjustedStatistic)
    assert isinstance(arm["orders"], SampleMeanStatistic)
    assert isinstance(arm["aov"], RatioStatistic) and isinstance(arm["ctr"], RatioStatistic)
    no_cuped = metric_statistics_compute(experiment=experiment, pre_exposure_days=0).arms["control"]
    assert isinstance(no_cuped["gmv"], SampleMeanStatistic)


def test_one_statement_writes_the_facts_and_one_reads_every_metric():
    experiment = started_experiment(arms=3)
    seed_experiment(experiment, subjects=60, as_of=timezone.now(), decoys=False)
    for _ in range(2):  # a rebuild, then a refresh
        with CaptureQueriesContext(connection) as queries:
            metric_statistics_compute(experiment=experiment)
        statements = [
            q["sql"] for q in queries.captured_queries
            if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT"))
            and "set_config(" not in q["sql"]  # PostgreSQL: work_mem and JIT for the transaction
            and PLAN_MARKER not in q["sql"]  # PostgreSQL: the exposures count that picks the statement's form
        ]
        assert sum(QUERY_MARKER in sql for sql in statements) == 1
        assert sum(REFRESH_MARKER in sql for sql in statements) == 1
        # … and the exposures' orders: deleted (on a refresh) and inserted.
        assert sum(ORDERS_MARKER in sql for sql in statements) == (1 if _ == 0 else 2)
        # Besides them only bookkeeping: the arm keys, the facts' state, the consent rules (purposes
        # and notices), and on a rebuild the old facts deleted. No statement reads a per-subject row
        # into Python.
        for sql in statements:
            if QUERY_MARKER in sql or REFRESH_MARKER in sql or ORDERS_MARKER in sql:
                continue
            assert (
                '"experiments_arm"' in sql
                or '"experiments_metricfactsstate"' in sql
                or sql.startswith(('SELECT "consent_notice"', 'SELECT "consent_purpose"'))
                or sql.startswith('DELETE FROM "experiments_metricfacts" WHERE')
                or sql.startswith('DELETE FROM "experiments_metricorderfacts" WHERE')
                or sql == "SELECT changes()"  # SQLite: how many facts the statement wrote
            ), sql


# --- hand-checked cases ----------------------------------------------------------


@pytest.fixture
def one_arm_each():
    experiment = started_experiment(arms=2, days_ago=20)
    return experiment, {arm.key: arm for arm in experiment.arms.all()}


def _subject(name, arm, fe, **attrs):
    pseudonym = subject_pseudonym(name)
    Subject.objects.create(pseudonym=pseudonym, **attrs)
    Exposure.objects.create(experiment=arm.experiment, arm=arm, subject_id=pseudonym, first_exposed_at=fe)
    return pseudonym


def _order(pseudonym, when, amount, event_id):
    OutcomeEvent.objects.create(
        event_id=event_id, subject_id=pseudonym, type="order", occurred_at=when, received_at=when,
        amount=Decimal(amount),
    )


def test_gmv_cap_is_the_buyers_percentile_with_linear_interpolation(one_arm_each):
    experiment, arms = one_arm_each
    fe = experiment.started_at + timedelta(hours=1)
    for i, amount in enumerate(["100", "200", "300", "400", "10000"]):
        _order(_subject(f"b{i}", arms["control"], fe), fe + timedelta(minutes=5), amount, f"o{i}")
    for i in range(5):  # non-buyers do not pull the percentile to zero
        _subject(f"n{i}", arms["arm-1"], fe)

    at_75 = metric_statistics_compute(experiment=experiment, gmv_cap_percentile=0.75)
    assert at_75.gmv_cap == pytest.approx(400.0)  # h = 0.75·4 = 3 → the 4th value
    assert at_75.arms["control"]["gmv"].sum == pytest.approx(100 + 200 + 300 + 400 + 400)
    at_90 = metric_statistics_compute(experiment=experiment, gmv_cap_percentile=0.9)
    assert at_90.gmv_cap == pytest.approx(400 + 0.6 * 9600)  # h = 3.6
    assert at_90.arms["control"]["gmv"].sum_squares == pytest.approx(
        100**2 + 200**2 + 300**2 + 400**2 + 6160**2
    )
    uncapped = metric_statistics_compute(experiment=experiment, gmv_cap_percentile=None)
    assert uncapped.gmv_cap is None and uncapped.arms["control"]["gmv"].sum == pytest.approx(11000)
    at_max = metric_statistics_compute(experiment=experiment, gmv_cap_percentile=1.0)
    assert at_max.gmv_cap == pytest.approx(10000) and at_max.arms["control"]["gmv"].sum == pytest.approx(11000)
    # The experiment's own setting is the default.
    experiment.gmv_cap_percentile = 0.75
    assert metric_statistics_compute(experiment=experiment).gmv_cap == pytest.approx(400.0)


def test_no_buyers_means_no_cap_and_zero_gmv(one_arm_each):
    experiment, arms = one_arm_each
    _subject("x", arms["control"], experiment.started_at + timedelta(hours=1))
    stats = metric_statistics_compute(experiment=experiment)
    assert stats.gmv_cap is None
    assert stats.arms["control"]["gmv"].sum == 0


def test_cuped_window_and_exposure_boundaries(one_arm_each):
    experiment, arms = one_arm_each
    experiment.pre_exposure_days = 28
    fe = experiment.started_at + timedelta(days=1, microseconds=250)
    s = _subject("w", arms["control"], fe)
    window = timedelta(days=28)
    _order(s, fe - window, "10", "at-window-start")  # included in the covariate
    _order(s, fe - window - timedelta(microseconds=1), "1000", "just-before-window")  # excluded
    _order(s, fe - timedelta(microseconds=1), "20", "just-before-exposure")  # covariate
    _order(s, fe, "300", "at-exposure")  # an outcome
    as_of = fe + timedelta(days=2)
    _order(s, as_of - timedelta(microseconds=1), "4000", "just-before-analysis")  # an outcome
    _order(s, as_of, "50000", "at-analysis-time")  # excluded
    stats = metric_statistics_compute(experiment=experiment, as_of=as_of, gmv_cap_percentile=None)
    gmv = stats.arms["control"]["gmv"]
    assert gmv.covariate_sum == pytest.approx(30)
    assert gmv.sum == pytest.approx(4300)
    assert gmv.cross_product == pytest.approx(4300 * 30)
    assert stats.arms["control"]["orders"].sum == 2
    assert stats.segments["customer=returning"]["control"]["gmv"].n == 1
    # A shorter window drops the older history.
    week = metric_statistics_compute(experiment=experiment, as_of=as_of, gmv_cap_percentile=None, pre_exposure_days=7)
    assert week.arms["control"]["gmv"].covariate_sum == pytest.approx(20)


def test_a_subject_without_pre_exposure_orders_is_new(one_arm_each):
    experiment, arms = one_arm_each
    fe = experiment.started_at + timedelta(days=1)
    s = _subject("fresh", arms["control"], fe, age_band="", platform="ios")
    _order(s, fe - timedelta(days=60), "100", "too-old")
    stats = metric_statistics_compute(experiment=experiment)
    assert "customer=new" in stats.segments and "customer=returning" not in stats.segments
    assert stats.segments["age_band=unknown"]["control"]["conversion"].n == 1
    assert stats.segments["platform=ios"]["control"]["conversion"].n == 1


def test_consent_metrics_follow_their_definitions(one_arm_each):
    """Opt-out: a withdrawal after exposure that ended a valid grant. Consent rate: a valid grant at
    the analysis time, from whenever. Granted: held a grant at some time after exposure."""
    experiment, arms = one_arm_each
    fe = experiment.started_at + timedelta(days=1)
    as_of = fe + timedelta(days=3)
    notice = Notice.objects.filter(purpose_id=Purpose.PERSONALIZATION).first()
    names = (
        "standing", "standing-expired", "expires-later", "expired", "withdraw-only", "in-out", "out-in",
        "standing-out", "lapsed-out", "out-before", "none",
    )
    subjects = {name: _subject(name, arms["control"], fe) for name in names}

    def decide(name, action, delta, lasts=None):
        when = fe + delta
        ConsentEvent.objects.create(
            subject_id=subjects[name], purpose_id=Purpose.PERSONALIZATION, action=action,
            notice=notice if action == "grant" else None, recorded_at=when,
            expires_at=when + lasts if lasts is not None else None,
        )

    decide("standing", "grant", -timedelta(days=5))  # consent held since before exposure
    decide("standing-expired", "grant", -timedelta(days=5), lasts=timedelta(days=2))  # lapsed before exposure
    decide("expires-later", "grant", timedelta(hours=1), lasts=timedelta(days=30))
    decide("expired", "grant", timedelta(hours=1), lasts=timedelta(days=1))  # lapsed before the analysis
    decide("withdraw-only", "withdraw", timedelta(hours=1))  # nothing to withdraw: no opt-out
    decide("in-out", "grant", timedelta(hours=1))
    decide("in-out", "withdraw", timedelta(hours=2))
    decide("out-in", "withdraw", timedelta(hours=1))
    decide("out-in", "grant", timedelta(hours=2))
    decide("standing-out", "grant", -timedelta(days=5))
    decide("standing-out", "withdraw", timedelta(hours=3))  # ends a standing grant: an opt-out
    decide("lapsed-out", "grant", timedelta(hours=1), lasts=timedelta(hours=1))
    decide("lapsed-out", "withdraw", timedelta(hours=4))  # the grant had lapsed: no opt-out
    decide("out-before", "grant", -timedelta(days=5))
    decide("out-before", "withdraw", -timedelta(days=1))  # before exposure: not an outcome
    decide("out-before", "withdraw", timedelta(hours=1))  # and this one ends nothing
    ConsentEvent.objects.create(  # another purpose is not an opt-out of personalization
        subject_id=subjects["none"], purpose_id=Purpose.MARKETING, action="withdraw", recorded_at=fe + timedelta(hours=1)
    )
    stats = metric_statistics_compute(experiment=experiment, as_of=as_of)
    arm = stats.arms["control"]
    assert arm["opt_out"] == ProportionStatistic(n=11, successes=2)  # in-out, standing-out
    # standing, expires-later, out-in
    assert arm["consent_rate"] == ProportionStatistic(n=11, successes=3)
    # standing, expires-later, expired, in-out, out-in, standing-out, lapsed-out
    assert stats.sums["control"]["granted"] == 7
    assert stats.descriptive["withdrawals_among_granted"]["control"] == {
        "granted": 7, "withdrew": 2, "ratio": pytest.approx(2 / 7)
    }
    # Later, "expires-later" has lapsed too: the consent rate is of the analysis time.
    later = metric_statistics_compute(experiment=experiment, as_of=fe + timedelta(days=31))
    assert later.arms["control"]["consent_rate"] == ProportionStatistic(n=11, successes=2)
    assert later.arms["control"]["opt_out"] == ProportionStatistic(n=11, successes=2)


def test_a_notice_that_requires_reconsent_ends_the_consent_of_earlier_grants(one_arm_each):
    experiment, arms = one_arm_each
    fe = experiment.started_at + timedelta(days=1)
    old = Notice.objects.filter(purpose_id=Purpose.PERSONALIZATION).first()
    new = Notice.objects.create(
        purpose_id=Purpose.PERSONALIZATION, version="reconsent-2", effective_at=fe + timedelta(days=2),
        requires_reconsent=True,
    )
    early, again = _subject("early", arms["control"], fe), _subject("again", arms["control"], fe)
    for pseudonym, notice, delta in ((early, old, timedelta(hours=1)), (again, old, timedelta(hours=1)),
                                     (again, new, timedelta(days=2, hours=1))):
        ConsentEvent.objects.create(
            subject_id=pseudonym, purpose_id=Purpose.PERSONALIZATION, action="grant", notice=notice,
            recorded_at=fe + delta,
        )
    before = metric_statistics_compute(experiment=experiment, as_of=fe + timedelta(days=1))
    assert before.arms["control"]["consent_rate"].successes == 2
    after = metric_statistics_compute(experiment=experiment, as_of=fe + timedelta(days=3))
    assert after.arms["control"]["consent_rate"].successes == 1  # only the grant under the new version
    assert after.sums["control"]["granted"] == 2


def test_an_experiment_without_exposures_has_no_arms(one_arm_each):
    experiment, _ = one_arm_each
    stats = metric_statistics_compute(experiment=experiment)
    assert stats.arms == {} and stats.segments == {} and stats.gmv_cap is None


def test_window_ends_when_the_experiment_stopped(one_arm_each):
    experiment, arms = one_arm_each
    fe = experiment.started_at + timedelta(days=1)
    s = _subject("late", arms["control"], fe)
    _order(s, fe + timedelta(days=1), "100", "during")
    _order(s, fe + timedelta(days=3), "200", "after-stop")
    experiment.ended_at = fe + timedelta(days=2)
    stats = metric_statistics_compute(experiment=experiment, gmv_cap_percentile=None)
    assert stats.window_end == experiment.ended_at
    assert stats.arms["control"]["gmv"].sum == pytest.approx(100)


@pytest.mark.postgres
def test_postgresql_picks_the_form_by_the_experiments_share_of_subjects(one_arm_each):
    experiment, arms = one_arm_each
    for i in range(20):
        Subject.objects.create(pseudonym=subject_pseudonym(f"bystander-{i}"))
    _subject("only", arms["control"], experiment.started_at + timedelta(hours=1))
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE consent_subject")
    assert refresh_form_plan(experiment=experiment) == "indexed"  # 1 of 21 subjects exposed
    for i in range(20):
        Exposure.objects.create(
            experiment=experiment, arm=arms["arm-1"], subject_id=subject_pseudonym(f"bystander-{i}"),
            first_exposed_at=experiment.started_at + timedelta(hours=2),
        )
    assert refresh_form_plan(experiment=experiment) == "streamed"


def test_sqlite_always_walks_the_indexes(one_arm_each):
    from django.db import connection

    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    assert refresh_form_plan(experiment=one_arm_each[0]) == "indexed"


# --- the stored facts: refreshed incrementally, equal to a rebuild -----------------


def _store_everything_long_ago(tables=("experiments_exposure", "experiments_outcomeevent", "consent_consentevent")):
    """Pretend every row of these tables (exposures, events, decisions) was stored a day ago.

    Both tables refuse updates (on PostgreSQL by a trigger, which the test steps around).
    """
    import contextlib

    import pgtrigger

    long_ago = connection.ops.adapt_datetimefield_value(timezone.now() - timedelta(days=1))
    bypass = (
        pgtrigger.ignore("experiments.OutcomeEvent:append_only", "consent.ConsentEvent:append_only")
        if connection.vendor == "postgresql"
        else contextlib.nullcontext()
    )
    with bypass, connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"UPDATE {table} SET stored_at = %s", [long_ago])  # noqa: S608 — fixed names


def _assert_same_statistics(actual, expected):
    from dataclasses import asdict

    assert actual.gmv_cap == pytest.approx(expected.gmv_cap, rel=1e-12) if expected.gmv_cap else actual.gmv_cap is None
    assert (
        actual.order_cap == pytest.approx(expected.order_cap, rel=1e-12) if expected.order_cap else actual.order_cap is None
    )
    _assert_sums_equal(actual.sums, expected.sums)
    assert set(actual.segments) == set(expected.segments)
    for label, arms in expected.segments.items():
        assert set(actual.segments[label]) == set(arms)
        for arm, metrics in arms.items():
            for metric, statistic in metrics.items():
                got = asdict(actual.segments[label][arm][metric])
                for name, value in asdict(statistic).items():
                    assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-6), (label, arm, metric, name)


def test_a_refresh_rewrites_only_what_changed_and_equals_a_rebuild(statement_shape):
    from consent.models import ConsentEvent
    from experiments.models import MetricFacts, MetricFactsState

    ExperimentFactory(arms=2)  # a decoy experiment sharing subjects
    experiment = started_experiment(arms=3)
    as_of = timezone.now() - timedelta(days=2)
    later = as_of + timedelta(hours=3)
    seed_experiment(experiment, subjects=300, as_of=as_of, seed=11)
    _store_everything_long_ago()
    first = metric_statistics_compute(experiment=experiment, as_of=as_of)
    assert first.refresh.kind == "rebuilt"

    # What reaches the platform after that run, each kind for different subjects, so that
    # each way of finding a changed exposure is needed: subjects exposed before its cutoff
    # but recorded late, and after it (their events and decisions look old); for subjects
    # already counted, orders
    # placed before the cutoff but reported late, and back-dated withdrawals (stored
    # late). Meanwhile the window moves on over events and decisions stored long ago but
    # dated after the first cutoff.
    seed_experiment(experiment, subjects=40, as_of=as_of, seed=12, prefix="late", decoys=False)
    _store_everything_long_ago(tables=("experiments_outcomeevent", "consent_consentevent"))
    counted = list(
        Exposure.objects.filter(
            experiment=experiment, phase=experiment.phase, first_exposed_at__lt=as_of - timedelta(hours=2)
        ).order_by("id")[:8]
    )
    for n, exposure in enumerate(counted[:4]):
        OutcomeEvent.objects.create(
            event_id=f"late-order-{n}", subject_id=exposure.subject_id, type="order",
            occurred_at=exposure.first_exposed_at + timedelta(minutes=30), received_at=timezone.now(),
            amount=Decimal("123456.78"),
        )
    for exposure in counted[4:]:
        ConsentEvent.objects.create(
            subject_id=exposure.subject_id, purpose_id=Purpose.PERSONALIZATION, action="withdraw",
            recorded_at=exposure.first_exposed_at + timedelta(minutes=45),
        )

    refreshed = metric_statistics_compute(experiment=experiment, as_of=later)
    assert refreshed.refresh.kind == "updated"
    in_window = Exposure.objects.filter(
        experiment=experiment, phase=experiment.phase,
        first_exposed_at__gte=experiment.started_at, first_exposed_at__lt=later,
    ).count()
    assert 0 < refreshed.refresh.exposures < in_window  # only what changed was rewritten
    assert MetricFacts.objects.filter(experiment=experiment).count() == in_window

    MetricFactsState.objects.filter(experiment=experiment).delete()  # forget: the next run rebuilds
    rebuilt = metric_statistics_compute(experiment=experiment, as_of=later)
    assert rebuilt.refresh.kind == "rebuilt"
    _assert_same_statistics(refreshed, rebuilt)


def test_an_earlier_window_another_phase_or_pre_window_rebuild_the_facts():
    experiment = started_experiment(arms=2)
    as_of = timezone.now() - timedelta(days=1)
    seed_experiment(experiment, subjects=80, as_of=as_of, seed=5, decoys=False)

    def kind(**kwargs):
        return metric_statistics_compute(experiment=experiment, **kwargs).refresh.kind

    assert kind(as_of=as_of) == "rebuilt"
    assert kind(as_of=as_of) == "updated"  # the same window again
    assert kind(as_of=as_of + timedelta(hours=1)) == "updated"
    assert kind(as_of=as_of) == "rebuilt"  # earlier than the stored facts
    assert kind(as_of=as_of, pre_exposure_days=3) == "rebuilt"
    assert kind(as_of=as_of, gmv_cap_percentile=0.5) == "rebuilt"  # back to the experiment's window
    assert kind(as_of=as_of, gmv_cap_percentile=0.9) == "updated"  # the cap is applied when reading
    experiment.phase += 1
    experiment.save(update_fields=["phase"])
    assert kind(as_of=as_of) == "rebuilt"


def test_the_facts_leave_with_the_subject():
    from consent.registry import personal_data_sources
    from experiments.models import MetricFacts

    experiment = started_experiment(arms=2)
    seed_experiment(experiment, subjects=20, as_of=timezone.now(), decoys=False)
    metric_statistics_compute(experiment=experiment)
    facts = MetricFacts.objects.select_related("exposure").first()
    pseudonym = facts.exposure.subject_id
    source = next(s for s in personal_data_sources() if s.label == "experiments.metricfacts")
    assert [row["exposure_id"] for row in source.export(pseudonym)] == [facts.pk]
    Exposure.objects.filter(subject_id=pseudonym).delete()  # what an erasure does
    assert not MetricFacts.objects.filter(pk=facts.pk).exists()


def _quiet_counted_subjects(experiment, seeded, as_of, count):
    """Exposures counted at ``as_of`` whose subjects have no personalization decision of their own."""
    decided = set(seeded.consents[seeded.consents.purpose == Purpose.PERSONALIZATION].subject)
    exposures = Exposure.objects.filter(
        experiment=experiment, phase=experiment.phase, first_exposed_at__lt=as_of - timedelta(hours=2)
    ).order_by("id")
    quiet = [exposure for exposure in exposures if exposure.subject_id not in decided][:count]
    assert len(quiet) == count
    return quiet


def test_a_grant_that_expires_between_two_runs_is_refreshed(statement_shape):
    """No new record: the grant simply lapses between two scheduled runs. The refresh equals a rebuild."""
    from experiments.models import MetricFacts, MetricFactsState

    experiment = started_experiment(arms=3)
    as_of = timezone.now() - timedelta(days=2)
    later = as_of + timedelta(minutes=15)
    seeded = seed_experiment(experiment, subjects=200, as_of=as_of, seed=21)
    notice = Notice.objects.filter(purpose_id=Purpose.PERSONALIZATION).first()
    lapsing = _quiet_counted_subjects(experiment, seeded, as_of, 6)
    for exposure in lapsing:  # granted after exposure, lapsing between the two runs
        ConsentEvent.objects.create(
            subject_id=exposure.subject_id, purpose_id=Purpose.PERSONALIZATION, action="grant", notice=notice,
            recorded_at=exposure.first_exposed_at + timedelta(minutes=30), expires_at=as_of + timedelta(minutes=5),
        )
    _store_everything_long_ago()
    first = metric_statistics_compute(experiment=experiment, as_of=as_of)
    assert first.refresh.kind == "rebuilt"
    assert set(MetricFacts.objects.filter(exposure__in=lapsing).values_list("consented", flat=True)) == {1}

    refreshed = metric_statistics_compute(experiment=experiment, as_of=later)
    assert refreshed.refresh.kind == "updated"
    assert set(MetricFacts.objects.filter(exposure__in=lapsing).values_list("consented", flat=True)) == {0}

    MetricFactsState.objects.filter(experiment=experiment).delete()
    rebuilt = metric_statistics_compute(experiment=experiment, as_of=later)
    assert rebuilt.refresh.kind == "rebuilt"
    _assert_same_statistics(refreshed, rebuilt)


def test_a_reconsent_notice_taking_effect_between_two_runs_is_refreshed(statement_shape):
    """A notice version that requires re-consent takes effect between two runs (created long before):
    every grant under an earlier version stops counting, with no new record. Then a notice edited
    afterwards (back-dated) is followed too. Each refresh equals a rebuild."""
    from experiments.models import MetricFactsState

    experiment = started_experiment(arms=3)
    as_of = timezone.now() - timedelta(days=2)
    later = as_of + timedelta(minutes=15)
    seed_experiment(experiment, subjects=200, as_of=as_of, seed=22)
    reconsent = Notice.objects.create(
        purpose_id=Purpose.PERSONALIZATION, version="2-reconsent", effective_at=as_of + timedelta(minutes=5),
        requires_reconsent=True,
    )
    _store_everything_long_ago()
    first = metric_statistics_compute(experiment=experiment, as_of=as_of)
    assert first.refresh.kind == "rebuilt"
    assert sum(arm["consented"] for arm in first.sums.values()) > 0

    refreshed = metric_statistics_compute(experiment=experiment, as_of=later)
    assert refreshed.refresh.kind == "updated"
    assert sum(arm["consented"] for arm in refreshed.sums.values()) == 0  # every grant predates the version
    MetricFactsState.objects.filter(experiment=experiment).delete()
    _assert_same_statistics(refreshed, metric_statistics_compute(experiment=experiment, as_of=later))

    # The version is withdrawn from the rules afterwards (it no longer requires re-consent):
    # the earlier grants count again at the next run.
    Notice.objects.filter(pk=reconsent.pk).update(requires_reconsent=False)
    again = metric_statistics_compute(experiment=experiment, as_of=later + timedelta(minutes=15))
    assert again.refresh.kind == "updated"
    assert sum(arm["consented"] for arm in again.sums.values()) > 0
    MetricFactsState.objects.filter(experiment=experiment).delete()
    _assert_same_statistics(again, metric_statistics_compute(experiment=experiment, as_of=later + timedelta(minutes=15)))


def test_without_the_lapse_rules_a_refresh_would_miss_the_change(monkeypatch):
    """The expiry and notice rules of ``changed`` are what finds those subjects (no other rule does)."""
    import experiments.metrics.sql as metrics

    experiment = started_experiment(arms=2)
    as_of = timezone.now() - timedelta(days=2)
    seeded = seed_experiment(experiment, subjects=80, as_of=as_of, seed=23, decoys=False)
    notice = Notice.objects.filter(purpose_id=Purpose.PERSONALIZATION).first()
    for exposure in _quiet_counted_subjects(experiment, seeded, as_of, 3):
        ConsentEvent.objects.create(
            subject_id=exposure.subject_id, purpose_id=Purpose.PERSONALIZATION, action="grant", notice=notice,
            recorded_at=exposure.first_exposed_at + timedelta(minutes=30), expires_at=as_of + timedelta(minutes=5),
        )
    _store_everything_long_ago()
    metric_statistics_compute(experiment=experiment, as_of=as_of)
    monkeypatch.setattr(
        metrics, "_CHANGED",
        metrics._CHANGED.replace("AND c.expires_at > %(previous_cutoff)s AND c.expires_at <= %(window_end)s", "AND false"),
    )
    blind = metric_statistics_compute(experiment=experiment, as_of=as_of + timedelta(minutes=15))
    from experiments.models import MetricFactsState

    MetricFactsState.objects.filter(experiment=experiment).delete()
    rebuilt = metric_statistics_compute(experiment=experiment, as_of=as_of + timedelta(minutes=15))
    assert blind.sums["control"]["consented"] + blind.sums["arm-1"]["consented"] == (
        rebuilt.sums["control"]["consented"] + rebuilt.sums["arm-1"]["consented"] + 3
    )


def test_the_order_facts_leave_with_the_subject_and_with_a_restriction():
    from consent.registry import personal_data_sources
    from experiments.models import MetricOrderFacts

    experiment = started_experiment(arms=2)
    seed_experiment(experiment, subjects=40, as_of=timezone.now(), decoys=False)
    metric_statistics_compute(experiment=experiment)
    orders = MetricOrderFacts.objects.filter(experiment=experiment).select_related("exposure")
    assert orders.exists()
    first = orders.order_by("pk").first()
    pseudonym = first.exposure.subject_id
    other = orders.exclude(exposure__subject_id=pseudonym).order_by("pk").first()
    source = next(s for s in personal_data_sources() if s.label == "experiments.metricorderfacts")
    mine = MetricOrderFacts.objects.filter(exposure__subject_id=pseudonym)
    assert [row["id"] for row in source.export(pseudonym)] == sorted(mine.values_list("pk", flat=True))
    Exposure.objects.filter(subject_id=pseudonym).delete()  # what an erasure does
    assert not mine.exists()
    # A subject who restricts processing leaves the measurement: their orders too, at the next run.
    restricted = other.exposure.subject_id
    Subject.objects.filter(pk=restricted).update(restricted_at=timezone.now())
    metric_statistics_compute(experiment=experiment)
    assert not MetricOrderFacts.objects.filter(exposure__subject_id=restricted).exists()
