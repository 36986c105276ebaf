"""Consent first: what a build may learn from, and what serving may show, per current consent."""

import numpy as np
import pytest
from django.db import transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent.pseudonyms import subject_pseudonym
from recommender.models import ModelBuild, RecommendationList
from recommender.selectors import recommendations_for_subject, training_load
from recommender.services.builds import InsufficientTrainingData
from tests.recommender.factories import (
    FASHION_AND_HEALTH,
    bought,
    build,
    catalog,
    catalog_with_health,
    experiment_with,
    grant,
    subject,
    treatment,
    withdraw,
)

pytestmark = pytest.mark.django_db

SKUS = [sku for skus in FASHION_AND_HEALTH.values() for sku in skus]


class _Rollback(Exception):
    pass


# A subject: personalization consent state, sensitive consent, and the skus they bought.
subject_states = st.tuples(
    st.sampled_from(["none", "granted", "withdrawn"]),
    st.booleans(),
    st.lists(st.sampled_from(SKUS), min_size=1, max_size=4, unique=True),
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(states=st.lists(subject_states, min_size=2, max_size=7), policy=st.sampled_from(["exclude", "explicit_consent", "include"]))
def test_no_non_consenting_subjects_data_reaches_any_model(states, policy):
    try:
        with transaction.atomic():
            catalog_with_health()
            arms = experiment_with(treatment("full", sensitive_category_policy=policy), treatment("cohort", cohort_k=2))
            consenting, sensitive_ok, history = set(), set(), {}
            for personalization, sensitive, skus in states:
                raw = subject(arm=arms[0], consent=personalization != "none", sensitive=sensitive)
                if personalization == "withdrawn":
                    withdraw(raw)
                bought(raw, *skus)
                pseudonym = subject_pseudonym(raw)
                history[pseudonym] = set(skus)
                if personalization == "granted":
                    consenting.add(pseudonym)
                    if sensitive:
                        sensitive_ok.add(pseudonym)

            training = training_load(policy=policy)
            # Exactly the consenting subjects' allowed interactions, and nobody else's.
            used = {
                training.pseudonyms[row]: {training.catalog.skus[i] for i in training.data.interactions[row].indices}
                for row in range(training.data.n_subjects)
            }
            expected = {}
            for pseudonym in consenting:
                allowed = {
                    sku for sku in history[pseudonym]
                    if not sku.startswith("H") or (policy != "exclude" and pseudonym in sensitive_ok)
                }
                if allowed:
                    expected[pseudonym] = allowed
            assert used == expected

            for arm in arms[:2]:
                try:
                    build(arm, "property")
                except InsufficientTrainingData:
                    # Refused only when nobody's data may be used under this arm's own policy
                    # (the cohort arm excludes sensitive categories whatever the full arm allows).
                    arm_policy = arm.treatment.sensitive_category_policy
                    assert not any(
                        not sku.startswith("H") or (arm_policy != "exclude" and pseudonym in sensitive_ok)
                        for pseudonym in consenting
                        for sku in history[pseudonym]
                    )

            listed = set(RecommendationList.objects.filter(subject__isnull=False).values_list("subject_id", flat=True))
            assert listed <= consenting
            # No sensitive item is in the list of a subject without the sensitive consent.
            for pseudonym, items in RecommendationList.objects.filter(kind="subject").values_list("subject_id", "items"):
                if pseudonym not in sensitive_ok or policy == "exclude":
                    assert not any(entry[3] for entry in items)
            raise _Rollback
    except _Rollback:
        pass


def _full_arm(policy="explicit_consent"):
    catalog_with_health()
    arm = experiment_with(treatment("full", sensitive_category_policy=policy))[0]
    others = [subject(arm=arm, sensitive=True) for _ in range(3)]
    for raw in others:
        bought(raw, "F1", "F2", "H1", "H2")
    return arm, others


def test_a_build_in_the_past_trains_on_the_consents_of_its_moment():
    """A subject who consents at t2 is not in a build at t1 < t2; one who withdraws at t1 is in none after t1."""
    from datetime import timedelta

    from django.utils import timezone

    from consent import services as consent_services

    catalog_with_health()
    now = timezone.now()
    t1, t2 = now - timedelta(days=2), now - timedelta(days=1)
    late, leaving, steady = (subject(consent=False) for _ in range(3))
    for raw in (late, leaving, steady):
        bought(raw, "F1", "F2", days_ago=5)
    consent_services.consent_grant(subject_id=steady, purpose="personalization", notice_version="1", now=t1 - timedelta(days=1))
    consent_services.consent_grant(subject_id=leaving, purpose="personalization", notice_version="1", now=t1 - timedelta(days=1))
    consent_services.consent_withdraw(subject_id=leaving, purpose="personalization", now=t1)
    consent_services.consent_grant(subject_id=late, purpose="personalization", notice_version="1", now=t2)

    def trained(moment):
        return set(training_load(policy="exclude", now=moment).pseudonyms)

    pseudonym = {raw: subject_pseudonym(raw) for raw in (late, leaving, steady)}
    assert trained(t1 - timedelta(hours=1)) == {pseudonym[leaving], pseudonym[steady]}
    assert trained(t1 + timedelta(hours=1)) == {pseudonym[steady]}
    assert trained(t2) == trained(now) == trained(None) == {pseudonym[late], pseudonym[steady]}


@pytest.mark.parametrize("policy", ["exclude", "explicit_consent", "include"])
def test_sensitive_items_need_the_explicit_consent_and_a_policy_that_allows_them(policy):
    arm, _ = _full_arm(policy)
    with_consent = subject(arm=arm, sensitive=True)
    without = subject(arm=arm, sensitive=False)
    for raw in (with_consent, without):
        bought(raw, "F1", "H1")
    build(arm, "k")
    personal = dict(RecommendationList.objects.filter(kind="subject").values_list("subject_id", "items"))

    def health(raw, items):
        return [entry[0] for entry in items if entry[1] == "health"]

    served_with = recommendations_for_subject(subject_id=with_consent, limit=10)
    served_without = recommendations_for_subject(subject_id=without, limit=10)
    assert served_with.personalized and served_without.personalized
    assert health(without, personal[subject_pseudonym(without)]) == []
    if policy == "exclude":
        assert health(with_consent, personal[subject_pseudonym(with_consent)]) == []
    else:
        # Learned from the others' health purchases, for the subject with the sensitive consent.
        assert health(with_consent, personal[subject_pseudonym(with_consent)]) == ["H2"]
    served_health = {i["product"]: i["reason"] for i in served_without.items if i["category"] == "health"}
    if policy == "include":
        # Only the non-personal best sellers may show them, to everyone alike.
        assert served_health and set(served_health.values()) == {"Best seller"}
    else:
        assert served_health == {}
        assert all(i["category"] != "health" for i in served_with.items if i["reason"] == "Best seller")
    # The subject without sensitive consent: their own health purchase was not used at all.
    training = training_load(policy=policy)
    row = training.row_of[subject_pseudonym(without)]
    assert {training.catalog.skus[i] for i in training.data.interactions[row].indices} == {"F1"}


def test_sensitive_consent_withdrawn_after_the_build_removes_sensitive_items_at_once():
    arm, _ = _full_arm()
    raw = subject(arm=arm, sensitive=True)
    bought(raw, "F1", "H1")
    build(arm, "k")
    assert "H2" in [i["product"] for i in recommendations_for_subject(subject_id=raw).items]
    withdraw(raw, "sensitive_profiling")
    served = recommendations_for_subject(subject_id=raw)
    assert served.personalized and all(i["category"] != "health" for i in served.items)


@pytest.mark.parametrize("level", ["full", "cohort", "session", "dp_popularity"])
def test_withdrawal_switches_serving_to_non_personal_on_the_next_request(level):
    catalog_with_health()
    arm = experiment_with(treatment(level, cohort_k=2))[0]
    raws = [subject(arm=arm) for _ in range(4)]
    for raw, skus in zip(raws, [("F1", "F2"), ("F1", "F2", "F3"), ("F2", "F3"), ("F1", "F4")], strict=True):
        bought(raw, *skus)
    build(arm, "k", seed=1)
    raw = raws[0]
    before = recommendations_for_subject(subject_id=raw, session=("F1",))
    assert before.personalized and before.strategy == level
    withdraw(raw)
    after = recommendations_for_subject(subject_id=raw, session=("F1",))
    assert not after.personalized
    assert after.strategy == ("dp_popularity" if level == "dp_popularity" else "popularity")
    # … and the next build leaves the subject out entirely.
    build(arm, "k2", seed=1)
    latest = ModelBuild.objects.get(arm=arm, build_key="k2")
    assert not RecommendationList.objects.filter(build=latest, subject_id=subject_pseudonym(raw)).exists()
    grant(raw)  # consenting again: personal from the next build on, non-personal until then
    assert recommendations_for_subject(subject_id=raw, session=("F1",)).personalized == (level == "session")


def test_every_cohort_is_k_anonymous():
    catalog({"fashion": [f"F{i}" for i in range(8)], "home": [f"M{i}" for i in range(8)]})
    k = 5
    arm = experiment_with(treatment("cohort", cohort_k=k))[0]
    rng = np.random.default_rng(0)
    for i in range(37):
        raw = subject(arm=arm, age_band=["18-24", "25-34", "35-44"][i % 3], province=["Bali", "Banten"][i % 2],
                      platform=["ios", "web"][(i // 3) % 2])
        family = "F" if rng.random() < 0.6 else "M"
        bought(raw, *{f"{family}{j}" for j in rng.integers(0, 8, 3)})
    build(arm, "k")
    record = ModelBuild.objects.get(arm=arm)
    cohorts = dict(RecommendationList.objects.filter(build=record, kind="cohort").values_list("key", "size"))
    members = list(RecommendationList.objects.filter(build=record, kind="subject").values_list("key", flat=True))
    assert cohorts and all(size >= k for size in cohorts.values())
    assert len(members) == 37 and set(members) <= set(cohorts)
    counted = {key: members.count(key) for key in cohorts}
    assert all(count >= k for count in counted.values())
    # No subject row carries an individual list: members point at their cohort's.
    assert not RecommendationList.objects.filter(build=record, kind="subject").exclude(items=[]).exists()


def test_the_dp_build_interval_is_the_pace_the_budget_sustains(settings):
    from datetime import timedelta

    from recommender.selectors import dp_build_interval

    # Defaults: 10 ε per 30 days, so one ε = 1 build every 3 days; δ of 1e-6 of 1e-5 asks no more.
    assert dp_build_interval(epsilon=1.0, delta=1e-6) == timedelta(days=3)
    assert dp_build_interval(epsilon=0.5, delta=0.0) == timedelta(days=1.5)
    settings.RECOMMENDER_DP_BUDGET_DELTA = 2e-6  # now δ is what limits
    assert dp_build_interval(epsilon=1.0, delta=1e-6) == timedelta(days=15)


def test_consent_is_judged_at_the_moment_served():
    """``now``: serving in the past (the simulator's sessions) counts a grant that the wall clock finds expired."""
    from datetime import timedelta

    from django.utils import timezone

    catalog_with_health()
    arm = experiment_with(treatment("full"))[0]
    raws = [subject(arm=arm) for _ in range(4)]
    for raw, skus in zip(raws, [("F1", "F2"), ("F1", "F2", "F3"), ("F2", "F3"), ("F1", "F4")], strict=True):
        bought(raw, *skus)
    build(arm, "k", seed=1)
    now = timezone.now()
    assert recommendations_for_subject(subject_id=raws[0]).personalized
    assert recommendations_for_subject(subject_id=raws[0], now=now + timedelta(days=1)).personalized
    # Personalization consent is valid 365 days: a year and a day on, it has lapsed.
    assert not recommendations_for_subject(subject_id=raws[0], now=now + timedelta(days=366)).personalized
