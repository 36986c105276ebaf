"""The offline evaluation: metrics by hand, the time split, and the command on real and synthetic data."""

import math
from io import StringIO

import numpy as np
import pytest
import scipy.sparse as sp
from django.core.management import call_command
from django.core.management.base import CommandError

from marketplace.datasets import synthetic_marketplace
from recommender.evaluation import evaluate, ranking_metrics, render, time_split
from tests.recommender.factories import bought, catalog, subject, withdraw


def test_ranking_metrics_by_hand():
    # Row 0 will choose {1, 2}; its list [2, 5, 1] hits at ranks 1 and 3.
    # Row 1 will choose {7}; its list [3, 4, 5] misses.
    test = sp.csr_matrix(([1, 1, 1], ([0, 0, 1], [1, 2, 7])), shape=(2, 10))
    recommended = np.array([[2, 5, 1], [3, 4, 5]])
    recall, ndcg, coverage, rows = ranking_metrics(recommended, test, 3)
    assert recall == pytest.approx((2 / 2 + 0) / 2)
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3)
    assert ndcg == pytest.approx((dcg / idcg + 0) / 2)
    assert coverage == pytest.approx(5 / 10) and rows == 2
    # Recall is capped at k: a row with 5 later items and 3 hits in 3 slots scores 1.
    test = sp.csr_matrix(([1] * 5, ([0] * 5, [0, 1, 2, 3, 4])), shape=(1, 10))
    assert ranking_metrics(np.array([[0, 1, 2]]), test, 3)[0] == pytest.approx(1.0)


def test_time_split_keeps_only_new_items_after_the_cutoff():
    # Subject 0: item 0 early, items 0 (again) and 1 late. Subject 1: only early. Subject 2: only late.
    split = time_split(
        subjects=np.array([0, 0, 0, 1, 2]), items=np.array([0, 0, 1, 2, 3]), times=np.array([1.0, 9.0, 9.0, 1.0, 9.0]),
        weights=np.ones(5), n_subjects=3, item_category=np.zeros(4, dtype=int),
        category_sensitive=np.array([False]), quantile=0.4,  # cutoff 5.8
    )
    assert split.subjects.tolist() == [0]
    assert split.test[0].indices.tolist() == [1]  # item 0 was already theirs
    assert split.train.interactions[2].nnz == 0  # nothing late leaks into training
    assert split.sessions[0].indices.tolist() == [0]


def test_evaluation_on_a_synthetic_marketplace_orders_strategies_sensibly():
    market = synthetic_marketplace(subjects=3000, products=600, interactions=60_000, seed=3)
    split = time_split(
        subjects=market.subjects, items=market.items, times=market.times, weights=market.weights,
        n_subjects=market.n_subjects, item_category=market.item_category,
        category_sensitive=market.category_sensitive, attributes=market.attributes,
        category_names=market.category_keys,
    )
    results = {(r.strategy, r.setting): r for r in evaluate(split, cohort_ks=(5, 50), epsilons=(0.05, 5.0))}
    full = results[("full", "cosine, 50 neighbours, m = 5")]
    popularity = results[("popularity", "—")]
    assert full.recall > popularity.recall and full.coverage > popularity.coverage
    # Less privacy budget, less utility: ε = 0.05 drowns the counts in noise.
    assert results[("dp_popularity", "ε = 5")].recall > results[("dp_popularity", "ε = 0.05")].recall
    table = render(list(results.values()), markdown=True)
    assert table.startswith("| strategy | setting | recall@20 new | NDCG@20 new | recall@20 baskets | NDCG@20 baskets |")


@pytest.mark.django_db
def test_the_command_evaluates_consenting_subjects_only():
    catalog({"fashion": ["F1", "F2", "F3", "F4"]})
    consenting = [subject() for _ in range(4)]
    for raw in consenting:
        bought(raw, "F1", "F2", days_ago=10)
        bought(raw, "F3", days_ago=1)
    refuser = subject()
    bought(refuser, "F1", days_ago=10)
    bought(refuser, "F4", days_ago=1)
    withdraw(refuser)
    out = StringIO()
    call_command("evaluate_recommenders", "--epsilon", "1", "--cohort-k", "2", "--split", "0.6", stdout=out, skip_checks=True)
    text = out.getvalue()
    assert text.startswith("4 subjects evaluated")
    assert "full" in text and "ε = 1" in text and "k = 2" in text


@pytest.mark.django_db
def test_the_command_says_when_there_is_nothing_to_evaluate():
    with pytest.raises(CommandError, match="nothing to evaluate"):
        call_command("evaluate_recommenders", stdout=StringIO(), skip_checks=True)


def test_the_command_on_synthetic_data_prints_a_markdown_table():
    out = StringIO()
    call_command(
        "evaluate_recommenders", "--synthetic", "--subjects", "800", "--products", "200", "--interactions-count", "12000",
        "--markdown", "--epsilon", "1", "--cohort-k", "10", stdout=out, skip_checks=True,
    )
    assert "| dp_popularity | ε = 1 |" in out.getvalue()
