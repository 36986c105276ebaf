"""Builds and serving under the privacy rules added for issues 12 and 15: lists shaped by sensitive
evidence, erasure while a build publishes, the DP budget per arm and period, dp_item_item, buy again."""

from datetime import timedelta
from io import StringIO
from unittest import mock

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.test import TestCase
from django.utils import timezone

from consent.compliance import treatment_compliance_review
from consent.models import Purpose
from consent.pseudonyms import subject_pseudonym
from consent.services import subject_erase
from recommender import services
from recommender.models import Category, ModelBuild, Product, RecommendationList
from recommender.selectors import privacy_budget, recommendations_for_subject
from tests.recommender.factories import (
    bought,
    build,
    catalog,
    experiment_with,
    grant,
    subject,
    treatment,
    withdraw,
)

pytestmark = pytest.mark.django_db

PRODUCTS = {"fashion": ["F1", "F2", "F3", "F4"], "health": ["H1", "H2"]}


def _reasons(served) -> list[str]:
    return [item.get("reason", "") for item in served.items]


# --- (issue 12) sensitive-category withdrawal and precomputed lists ----------------------------------


def _arm_where_health_shapes_fashion(level="full"):
    """Others co-buy H1 with F3 and F1 with F2: a subject holding H1 gets F3 *because of* H1."""
    catalog(PRODUCTS, sensitive=("health",))
    arm = experiment_with(treatment(level, sensitive_category_policy="explicit_consent", cohort_k=2))[0]
    for _ in range(3):
        bought(subject(arm=arm, sensitive=True), "H1", "F3")
        bought(subject(arm=arm, sensitive=True), "F1", "F2")
    raw = subject(arm=arm, sensitive=True)
    bought(raw, "H1", "F1")
    return arm, raw


def test_a_list_shaped_by_sensitive_evidence_is_not_served_once_that_consent_is_withdrawn():
    arm, raw = _arm_where_health_shapes_fashion()
    build(arm, "k")
    row = RecommendationList.objects.get(kind="subject", subject_id=subject_pseudonym(raw))
    flagged = {entry[0]: entry[5] for entry in row.items}
    assert flagged["F3"] is True and flagged["F2"] is False  # F3 is there because of H1
    assert row.without_sensitive is not None
    assert "F3" not in [entry[0] for entry in row.without_sensitive["items"]]
    before = recommendations_for_subject(subject_id=raw, limit=10)
    assert "Because you showed interest in Product H1" in _reasons(before)

    withdraw(raw, Purpose.SENSITIVE_PROFILING)
    after = recommendations_for_subject(subject_id=raw, limit=10)
    assert after.personalized
    products = [item["product"] for item in after.items]
    assert products[0] == "F2"  # the twin built without H1 leads
    assert all("H1" not in reason for reason in _reasons(after))
    # F3 may come back only as a best seller of the arm's non-personal list, not as H1's neighbour.
    assert all(item["reason"] == "Best seller" for item in after.items if item["product"] == "F3")
    grant(raw, Purpose.SENSITIVE_PROFILING)
    assert "Because you showed interest in Product H1" in _reasons(recommendations_for_subject(subject_id=raw, limit=10))


def test_the_same_holds_when_the_cache_is_cold_and_the_record_serves():
    arm, raw = _arm_where_health_shapes_fashion()
    build(arm, "k")
    withdraw(raw, Purpose.SENSITIVE_PROFILING)
    cache.clear()
    after = recommendations_for_subject(subject_id=raw, limit=10)
    assert after.personalized and all("H1" not in reason for reason in _reasons(after))


def test_an_entry_of_unknown_provenance_is_not_served_without_the_sensitive_consent():
    # A list written before entries recorded their evidence (five fields): treated as shaped by it.
    arm, raw = _arm_where_health_shapes_fashion()
    summary = build(arm, "k")
    pseudonym = subject_pseudonym(raw)
    old = [["F2", "fashion", 0.9, False, "Because you showed interest in Product H1"]]
    RecommendationList.objects.filter(subject_id=pseudonym).update(items=old, without_sensitive=None)
    cache.set(services.subject_key(summary.build_id, pseudonym), {"items": old})
    withdraw(raw, Purpose.SENSITIVE_PROFILING)
    served = recommendations_for_subject(subject_id=raw, limit=5)
    assert all("H1" not in reason for reason in _reasons(served))


def test_a_cohort_chosen_by_sensitive_interests_is_left_when_that_consent_goes():
    catalog(PRODUCTS, sensitive=("health",))
    arm = experiment_with(treatment("cohort", sensitive_category_policy="explicit_consent", cohort_k=2))[0]
    for _ in range(3):
        bought(subject(arm=arm, sensitive=True), "H1", "H2")
        bought(subject(arm=arm), "F1", "F2")
    raw = subject(arm=arm, sensitive=True)
    bought(raw, "H1", "H2", "F3")  # F3: what the health cohort's list holds beside health items
    build(arm, "k")
    row = RecommendationList.objects.get(kind="subject", subject_id=subject_pseudonym(raw))
    assert row.key.startswith("category=health")
    assert row.without_sensitive["cohort"].startswith("category=fashion")
    withdraw(raw, Purpose.SENSITIVE_PROFILING)
    served = recommendations_for_subject(subject_id=raw, limit=4)
    # The fashion cohort's list (F1 and F2), not what is left of the health cohort's.
    assert served.personalized and [item["product"] for item in served.items[:2]] == ["F1", "F2"]
    assert [item["reason"] for item in served.items[:2]] == ["Popular with shoppers like you"] * 2
    assert all(item["category"] != "health" for item in served.items)


# --- (issue 12) erasure during a build ------------------------------------------------------------


def _full_arm():
    catalog({"fashion": ["F1", "F2", "F3", "F4"]})
    arm = experiment_with(treatment("full"))[0]
    raws = [subject(arm=arm) for _ in range(3)]
    for raw, skus in zip(raws, [("F1", "F2"), ("F1", "F3"), ("F2", "F3", "F4")], strict=True):
        bought(raw, *skus)
    return arm, raws


def test_an_erasure_while_a_build_publishes_leaves_nothing_of_the_subject_behind():
    arm, raws = _full_arm()
    pseudonym = subject_pseudonym(raws[0])
    real_set_many = cache.set_many
    erased = []

    def erase_then_write(entries, timeout=None):
        # The erasure commits — after-commit step included — after the build wrote the database and
        # before it writes the cache. (The test's own transaction would defer that step to the end
        # of the build; it runs here, where a real commit would run it, and only here.)
        if not erased:
            # Marked first: the erasure writes its consent tombstones with set_many too.
            erased.append(pseudonym)
            with TestCase.captureOnCommitCallbacks(execute=False) as callbacks, transaction.atomic():
                subject_erase(pseudonym=pseudonym)
            for callback in callbacks:
                callback()
            connection.run_on_commit = [entry for entry in connection.run_on_commit if entry[1] not in callbacks]
        return real_set_many(entries, timeout=timeout)

    with mock.patch.object(cache, "set_many", side_effect=erase_then_write):
        summary = build(arm, "k")
    assert erased and summary.outcome == "built"
    assert cache.get(services.subject_key(summary.build_id, pseudonym)) is None
    assert not RecommendationList.objects.filter(subject_id=pseudonym).exists()
    # The others' lists were published as usual.
    assert cache.get(services.subject_key(summary.build_id, subject_pseudonym(raws[1]))) is not None


def test_a_subject_erased_before_the_build_writes_is_left_out_of_it():
    arm, raws = _full_arm()
    pseudonym = subject_pseudonym(raws[0])
    real_load = services.training_load

    def load_then_erase(**kwargs):
        training = real_load(**kwargs)
        with transaction.atomic():
            subject_erase(pseudonym=pseudonym)
        return training

    with mock.patch.object(services, "training_load", side_effect=load_then_erase):
        summary = build(arm, "k")
    assert summary.outcome == "built"
    assert not RecommendationList.objects.filter(subject_id=pseudonym).exists()
    assert cache.get(services.subject_key(summary.build_id, pseudonym)) is None


@pytest.mark.parametrize("status", ["running", "failed", "succeeded"])
def test_erasure_covers_running_and_recent_failed_builds(status):
    arm, raws = _full_arm()
    pseudonym = subject_pseudonym(raws[0])
    record = ModelBuild.objects.create(arm=arm, build_key=status, strategy="full", status=status,
                                       started_at=timezone.now(), attempts=1,
                                       published_at=timezone.now() if status == "succeeded" else None)
    key = services.subject_key(record.pk, pseudonym)
    cache.set(key, {"items": [["F1", "fashion", 1.0, False, None, False]]})  # as a build would have written
    assert key in services.subject_cache_keys(pseudonym)
    with TestCase.captureOnCommitCallbacks(execute=True), transaction.atomic():
        subject_erase(pseudonym=pseudonym)
    assert cache.get(key) is None


def test_the_erasure_lists_the_keys_again_after_it_commits():
    arm, raws = _full_arm()
    pseudonym = subject_pseudonym(raws[0])
    with TestCase.captureOnCommitCallbacks(execute=False) as callbacks, transaction.atomic():
        subject_erase(pseudonym=pseudonym)
    # A build that started meanwhile wrote a key; the erasure's after-commit step still finds it.
    late = ModelBuild.objects.create(arm=arm, build_key="late", strategy="full", started_at=timezone.now())
    cache.set(services.subject_key(late.pk, pseudonym), {"items": []})
    for callback in callbacks:
        callback()
    assert cache.get(services.subject_key(late.pk, pseudonym)) is None


# --- (issue 12) the differential-privacy budget ------------------------------------------------------


def _dp_arm(level="dp_popularity", epsilon=1.0, **fields):
    catalog({"fashion": ["F1", "F2", "F3", "F4"]})
    arm = experiment_with(treatment(level, dp_epsilon=epsilon, **fields))[0]
    for _ in range(4):
        bought(subject(arm=arm), "F1", "F2", "F3")
    return arm


@pytest.mark.parametrize("level", ["dp_popularity", "dp_item_item"])
def test_a_build_that_would_exceed_the_arms_budget_for_the_period_is_refused(level, settings):
    settings.RECOMMENDER_DP_BUDGET_EPSILON = 2.5
    settings.RECOMMENDER_DP_BUDGET_DAYS = 7
    arm = _dp_arm(level)
    now = timezone.now()
    assert build(arm, "k1", now=now).outcome == "built"
    assert build(arm, "k2", now=now + timedelta(hours=1)).outcome == "built"
    refused = build(arm, "k3", now=now + timedelta(hours=2))
    assert refused.outcome == "refused" and "over its budget of 2.5" in refused.reason
    record = ModelBuild.objects.get(pk=refused.build_id)
    assert record.status == "failed" and record.epsilon_spent is None and record.error == "PrivacyBudgetExhausted"
    # The previous build keeps serving.
    assert recommendations_for_subject(subject_id=subject(arm=arm)).strategy == "dp_popularity"
    assert privacy_budget(arm_id=arm.pk, now=now + timedelta(hours=2)).epsilon_spent == pytest.approx(2.0)
    # Once the first build leaves the period, one more fits.
    assert build(arm, "k4", now=now + timedelta(days=7, minutes=1)).outcome == "built"


def test_epsilon_is_charged_before_the_noise_and_stays_charged_when_the_build_fails(settings):
    settings.RECOMMENDER_DP_BUDGET_EPSILON = 10
    arm = _dp_arm(epsilon=2.0)
    with mock.patch.object(RecommendationList.objects, "bulk_create", side_effect=RuntimeError("disk full")), \
            pytest.raises(RuntimeError):
        build(arm, "k")
    failed = ModelBuild.objects.get(arm=arm, build_key="k")
    assert failed.status == "failed" and failed.epsilon_spent == 2.0
    build(arm, "k")  # the retry draws fresh noise: charged again
    assert ModelBuild.objects.get(arm=arm, build_key="k").epsilon_spent == 4.0
    assert privacy_budget(arm_id=arm.pk).epsilon_spent == 4.0


def test_delta_is_budgeted_too_for_the_gaussian_mechanism(settings, monkeypatch):
    monkeypatch.setattr(services, "DP_MECHANISM", "gaussian")
    monkeypatch.setattr(services, "DP_DELTA", 1e-6)
    settings.RECOMMENDER_DP_BUDGET_DELTA = 1.5e-6
    arm = _dp_arm()
    assert build(arm, "k1").outcome == "built"
    refused = build(arm, "k2")
    assert refused.outcome == "refused" and refused.reason.startswith("δ")


def test_the_admin_shows_each_arms_spend_in_the_period(admin_client, settings):
    settings.RECOMMENDER_DP_BUDGET_EPSILON = 10
    arm = _dp_arm(epsilon=1.5)
    build(arm, "k1")
    build(arm, "k2")
    page = admin_client.get("/admin/recommender/armrecommendations/").content.decode()
    assert "3 of 10 (last 30 days)" in page
    assert "PrivacyBudgetExhausted" not in admin_client.get("/admin/recommender/modelbuild/").content.decode()


# --- (issue 15) the dp_item_item level ----------------------------------------------------------------


def test_dp_item_item_needs_epsilon_with_a_message():
    from experiments.models import PrivacyTreatment

    draft = PrivacyTreatment(name="dp ii", consent_prompt="banner", personalization_level="dp_item_item")
    with pytest.raises(Exception, match="privacy budget per build"):
        draft.validate_constraints()
    with pytest.raises(IntegrityError), transaction.atomic():
        draft.save()


def test_the_compliance_review_treats_dp_item_item_as_personal_processing():
    findings = treatment_compliance_review(
        purpose_retention_days={"personalization": 365}, consent_prompt="banner",
        default_personalization_consent=True, personalization_level="dp_item_item",
        sensitive_category_policy="include", retention_days=90, dp_epsilon=8.0,
    )
    codes = {f.code: f.severity for f in findings}
    assert codes["pre_ticked_consent"] == "error"
    assert codes["sensitive_without_explicit_consent"] == "error"
    assert codes["weak_differential_privacy"] == "warning"


def test_a_dp_item_item_arm_serves_lists_scored_from_the_subjects_own_history(settings):
    settings.RECOMMENDER_DP_BUDGET_EPSILON = 1e7
    catalog({"fashion": ["F1", "F2", "F3", "F4"]})
    arm = experiment_with(treatment("dp_item_item", dp_epsilon=1e6))[0]
    for _ in range(6):
        bought(subject(arm=arm), "F1", "F2")
    raw = subject(arm=arm)
    bought(raw, "F1")
    summary = build(arm, "k", seed=3)
    assert summary.epsilon_spent == 1e6
    record = ModelBuild.objects.get(pk=summary.build_id)
    assert record.strategy == "dp_item_item" and record.params["candidates"] == 500
    served = recommendations_for_subject(subject_id=raw, limit=3)
    assert served.personalized and served.strategy == "dp_item_item"
    assert served.items[0]["product"] == "F2"
    assert served.items[0]["reason"] == "Because you showed interest in Product F1 (privacy-protected similarities)"
    withdraw(raw)
    after = recommendations_for_subject(subject_id=raw, limit=3)
    assert not after.personalized and after.strategy == "dp_popularity"  # the noisy best sellers


# --- (issue 15) buy again through a build -------------------------------------------------------------


def _grocery_arm(level="full", policy="explicit_consent"):
    catalog({"groceries": ["G1", "G2", "G3"], "home": ["M1", "M2"], "health": ["H1"]}, sensitive=("health",))
    Category.objects.filter(key__in=["groceries", "health"]).update(repeatable=True)
    arm = experiment_with(treatment(level, sensitive_category_policy=policy))[0]
    for _ in range(3):
        bought(subject(arm=arm), "G1", "G2", "M1")
    raw = subject(arm=arm, sensitive=True)
    bought(raw, "G1", "M1", "H1", days_ago=3)
    bought(raw, "G1", days_ago=1)
    return arm, raw


def test_full_lists_re_buys_of_repeatable_items_only():
    arm, raw = _grocery_arm()
    build(arm, "k")
    served = recommendations_for_subject(subject_id=raw, limit=6)
    again = [item["product"] for item in served.items if item["reason"] == "Buy again"]
    assert again[:1] == ["G1"] and "M1" not in again  # M1: bought, but not repeatable
    assert served.items[0]["product"] == "G1"  # the first slot is a re-buy
    assert "H1" in again  # repeatable, and the subject consented to sensitive profiling


def test_a_sensitive_re_buy_goes_with_the_sensitive_consent():
    arm, raw = _grocery_arm()
    build(arm, "k")
    withdraw(raw, Purpose.SENSITIVE_PROFILING)
    served = recommendations_for_subject(subject_id=raw, limit=6)
    assert served.personalized and "H1" not in [item["product"] for item in served.items]
    withdraw(raw)
    assert not recommendations_for_subject(subject_id=raw, limit=6).personalized


def test_a_product_flag_overrides_its_category():
    arm, raw = _grocery_arm()
    Product.objects.filter(sku="M1").update(repeatable=True)
    Product.objects.filter(sku="G1").update(repeatable=False)
    build(arm, "k")
    again = [i["product"] for i in recommendations_for_subject(subject_id=raw, limit=6).items if i["reason"] == "Buy again"]
    assert "M1" in again and "G1" not in again


def test_session_arms_have_no_buy_again():
    arm, raw = _grocery_arm("session")
    build(arm, "k")
    served = recommendations_for_subject(subject_id=raw, limit=6, session=("G2",))
    assert "Buy again" not in _reasons(served)


def test_the_catalog_import_reads_repeatable_flags():
    services.catalog_import(
        categories=[{"key": "groceries", "repeatable": "yes"}, {"key": "home"}],
        products=[{"sku": "A", "category": "home", "repeatable": "true"}, {"sku": "B", "category": "groceries"}],
    )
    assert Category.objects.get(key="groceries").repeatable and not Category.objects.get(key="home").repeatable
    assert Product.objects.get(sku="A").repeatable is True and Product.objects.get(sku="B").repeatable is None
    services.catalog_import(categories=[{"key": "groceries"}])  # no column: the flag stays
    assert Category.objects.get(key="groceries").repeatable
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="not a yes/no"):
        services.catalog_import(categories=[{"key": "x", "repeatable": "often"}])


# --- (issue 15) evaluation on an export of orders -------------------------------------------------------


def test_the_command_evaluates_an_exported_orders_file(tmp_path):
    import numpy as np

    from marketplace.datasets import grocery_baskets

    market = grocery_baskets(customers=80, products=300, weeks=20, seed=4)
    lines = ["subject,product,time"]
    for s, i, t in zip(market.subjects, market.items, market.times, strict=True):
        lines.append(f"c{s},{market.item_skus[i]},{int(t) + 1_700_000_000}")
    (tmp_path / "orders.csv").write_text("\n".join(lines))
    catalog_lines = ["product,category,sensitive,repeatable"] + [
        f"{sku},{market.category_keys[c]},{'yes' if market.category_sensitive[c] else 'no'},yes"
        for sku, c in zip(market.item_skus, market.item_category, strict=True)
    ]
    (tmp_path / "catalog.csv").write_text("\n".join(catalog_lines))
    out = StringIO()
    call_command("evaluate_recommenders", "--interactions", str(tmp_path / "orders.csv"), "--catalog",
                 str(tmp_path / "catalog.csv"), "--epsilon", "1", "--cohort-k", "10", "--markdown",
                 stdout=out, skip_checks=True)
    text = out.getvalue()
    assert "buy again 50%" in text and "| dp_item_item | ε = 1 |" in text
    assert np.isfinite(len(text))


@pytest.mark.parametrize("content, message", [
    ("subject,product\nu1,P1\n", "missing columns time"),
    ("subject,product,time\nu1,P1,yesterday\n", "line 2, column time"),
    ("subject,product,time\nu1,,2026-01-01\n", "line 2, column product: empty"),
])
def test_a_bad_orders_file_names_its_line_and_column(tmp_path, content, message):
    path = tmp_path / "orders.csv"
    path.write_text(content)
    with pytest.raises(CommandError, match=message):
        call_command("evaluate_recommenders", "--interactions", str(path), stdout=StringIO(), skip_checks=True)


def test_a_product_missing_from_the_catalog_is_named(tmp_path):
    (tmp_path / "orders.csv").write_text("subject,product,time\nu1,P1,2026-01-01\nu1,P9,2026-01-02\n")
    (tmp_path / "catalog.csv").write_text("product,category\nP1,food\n")
    with pytest.raises(CommandError, match="line 3, column product: 'P9' is not in the catalog"):
        call_command("evaluate_recommenders", "--interactions", str(tmp_path / "orders.csv"), "--catalog",
                     str(tmp_path / "catalog.csv"), stdout=StringIO(), skip_checks=True)
