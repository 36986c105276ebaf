"""The engine's newer pieces on hand-checked data: support thresholds, the compiled kernels, buy again,
cohorts that learn from pooled interactions, and differentially private item-item."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from marketplace.datasets import synthetic_marketplace
from recommender.engine import (
    STRATEGIES,
    CohortStrategy,
    DPItemItemStrategy,
    ItemItemStrategy,
    SessionStrategy,
    TopN,
    TrainingData,
    blend_buy_again,
    buy_again_slots,
    item_item_similarity,
    pair_weights,
    score_with_similarity,
)

DAY = 86400.0


def data_from(history: dict[int, list[int]], *, n_items: int, sensitive_items=(), **kwargs) -> TrainingData:
    subjects = [u for u, items in history.items() for _ in items]
    items = [i for _, items in history.items() for i in items]
    category = np.array([1 if i in sensitive_items else 0 for i in range(n_items)])
    return TrainingData.from_triples(
        subjects=np.array(subjects, dtype=int), items=np.array(items, dtype=int), n_subjects=max(history) + 1,
        item_category=category, category_sensitive=np.array([False, True]), **kwargs,
    )


# --- support thresholds -------------------------------------------------------------------------

# Items 0 and 1 are co-bought by four subjects, items 0 and 2 by five: with m = 5 only (0, 2) is a similarity.
SUPPORT = {u: [0, 1] for u in range(4)} | {u: [0, 2] for u in range(4, 9)} | {9: [0]}


def test_a_pair_co_bought_by_fewer_than_m_subjects_is_never_a_neighbour():
    data = data_from(SUPPORT, n_items=3)
    similarity = item_item_similarity(data.interactions, neighbours=10, min_support=5).toarray()
    assert similarity[0, 2] > 0 and similarity[2, 0] > 0
    assert similarity[0, 1] == 0 and similarity[1, 0] == 0
    # m = 4 lets (0, 1) in: the threshold, not the data, removed it.
    assert item_item_similarity(data.interactions, neighbours=10, min_support=4).toarray()[0, 1] > 0


@pytest.mark.parametrize("strategy_class", [ItemItemStrategy, SessionStrategy])
def test_nor_a_recommendation_or_a_reason(strategy_class):
    data = data_from(SUPPORT, n_items=3)
    strategy = strategy_class(neighbours=10, min_support=5, explain=True).fit(data)
    evidence = sp.csr_matrix(([1.0], ([0], [1])), shape=(1, 3))  # only item 1: its one pair is unsupported
    top = strategy.recommend(rows=np.array([9]), evidence=evidence, n=3)
    assert top.row(0) == []
    evidence = sp.csr_matrix(([1.0, 1.0], ([0, 0], [0, 1])), shape=(1, 3))
    top = strategy.recommend(rows=np.array([9]), evidence=evidence, n=3)
    assert [i for i, _ in top.row(0)] == [2]
    assert top.because[0, 0] == 0  # explained by item 0, never by item 1


def test_a_cohort_lists_nothing_fewer_than_m_members_chose():
    # Ten subjects in one cohort: item 0 chosen by all, item 1 by four, item 2 by five.
    history = {u: [0] + ([1] if u < 4 else []) + ([2] if u >= 5 else []) for u in range(10)}
    data = data_from(history, n_items=3)
    for learn in (0.0, 1.0):
        cohort = CohortStrategy(k=5, min_item_support=5, learn=learn).fit(data)
        listed = {i for entries in cohort.cohorts.lists for i, _ in entries}
        assert listed == {0, 2}


# --- the compiled kernels against dense arithmetic ------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), m=st.integers(1, 4), k=st.integers(1, 6))
def test_neighbours_with_support_equal_a_dense_computation(seed, m, k):
    rng = np.random.default_rng(seed)
    dense = (rng.random((30, 12)) < 0.3) * rng.choice([0.5, 1.0], (30, 12))
    matrix = sp.csr_matrix(dense.astype(np.float32))
    similarity = item_item_similarity(matrix, neighbours=k, min_support=m).toarray()
    norms = np.sqrt((dense**2).sum(axis=0))
    norms[norms == 0] = 1
    cosine = (dense.T @ dense) / np.outer(norms, norms)
    support = (dense > 0).T.astype(int) @ (dense > 0).astype(int)
    for i in range(12):
        allowed = [j for j in range(12) if j != i and support[i, j] >= m and cosine[i, j] > 0]
        expected = sorted(allowed, key=lambda j: (-round(cosine[i, j], 5), j))[:k]
        got = [j for j in np.argsort(-similarity[i], kind="stable") if similarity[i, j] > 0]
        assert sorted(got) == sorted(expected) or np.allclose(
            sorted(similarity[i][got], reverse=True), [cosine[i, j] for j in expected], atol=1e-5)
        np.testing.assert_allclose(similarity[i, got], cosine[i, got], atol=1e-5)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_scoring_equals_the_sparse_product_with_reasons_and_sensitive_evidence(seed):
    rng = np.random.default_rng(seed)
    similarity = sp.csr_matrix(((rng.random((10, 10)) < 0.4) * rng.random((10, 10))).astype(np.float32))
    similarity.setdiag(0)
    similarity.eliminate_zeros()
    evidence = sp.csr_matrix(((rng.random((6, 10)) < 0.3) * 1.0).astype(np.float32))
    sensitive = np.zeros(10, dtype=bool)
    sensitive[[2, 7]] = True
    top = score_with_similarity(evidence, similarity, 4, blocked=np.zeros(10, bool), item_sensitive=sensitive,
                                may_sensitive=np.ones(6, bool))
    dense_e, dense_s = evidence.toarray(), similarity.toarray()
    for r in range(6):
        scores = dense_e[r] @ dense_s
        scores[dense_e[r] > 0] = 0  # already the subject's
        expected = [i for i in sorted(range(10), key=lambda i: (-scores[i], i)) if scores[i] > 0][:4]
        got = [i for i in top.items[r] if i >= 0]
        assert got == expected
        for slot, i in enumerate(got):
            assert top.scores[r, slot] == pytest.approx(scores[i], rel=1e-5)
            contributions = dense_e[r] * dense_s[:, i]
            assert contributions[top.because[r, slot]] == pytest.approx(contributions.max(), rel=1e-6)
            assert top.sensitive_evidence[r, slot] == bool((contributions[sensitive] > 0).any())


# --- buy again ----------------------------------------------------------------------------------


def test_buy_again_slots_follow_the_documented_rule():
    assert buy_again_slots(6, 0.5).tolist() == [True, False, True, False, True, False]
    assert buy_again_slots(6, 1 / 3).tolist() == [True, False, False, True, False, False]
    assert not buy_again_slots(4, 0.0).any() and buy_again_slots(4, 1.0).all()


def test_a_shorter_kind_leaves_its_slots_to_the_other():
    new = TopN(items=np.array([[10, 11, 12, -1]]), scores=np.array([[3.0, 2.0, 1.0, 0.0]], dtype=np.float32))
    blended = blend_buy_again(new, np.array([[5, -1, -1, -1]]), np.array([[9.0, 0, 0, 0]]), 4, 0.5)
    assert blended.items.tolist() == [[5, 10, 11, 12]]
    assert blended.rebuy.tolist() == [[True, False, False, False]]


def repeat_buyer() -> TrainingData:
    # Subject 0 bought item 0 three times (last 10 days ago), item 1 once (yesterday), item 2 (not
    # repeatable) twice, item 4 (sensitive, repeatable) once; four others make 0–3 similar.
    subjects = [0, 0, 0, 0, 0, 0, 0] + [1, 1, 2, 2, 3, 3, 4, 4]
    items = [0, 0, 0, 1, 2, 2, 4] + [0, 3, 0, 3, 1, 3, 1, 3]
    times = [30, 20, 10, 1, 5, 4, 2] + [50] * 8
    now = 100.0
    return TrainingData.from_triples(
        subjects=np.array(subjects), items=np.array(items), times=(now - np.array(times, dtype=float)) * DAY,
        n_subjects=5, item_category=np.array([0, 0, 0, 0, 1]), category_sensitive=np.array([False, True]),
        item_repeatable=np.array([True, True, False, True, True]), as_of=now * DAY,
    )


def test_buy_again_scores_frequency_times_recency():
    data = repeat_buyer()
    strategy = ItemItemStrategy(min_support=1, buy_again_share=0.5, buy_again_half_life_days=10,
                                include_sensitive=True).fit(data)
    scores = strategy.buy_again_scores(np.array([0]), data.interactions[[0]]).toarray()[0]
    # Item 0: 3 × 2^(−10/10) = 1.5; item 1: 1 × 2^(−1/10); item 2 is not repeatable; item 4: 2^(−2/10).
    assert scores[0] == pytest.approx(1.5, rel=1e-5)
    assert scores[1] == pytest.approx(2 ** -0.1, rel=1e-5)
    assert scores[2] == 0
    assert scores[4] == pytest.approx(2 ** -0.2, rel=1e-5)


def test_full_blends_re_buys_and_new_items_and_marks_sensitive_re_buys():
    data = repeat_buyer()
    strategy = ItemItemStrategy(min_support=1, buy_again_share=0.5, buy_again_half_life_days=10,
                                include_sensitive=True, explain=True).fit(data)
    top = strategy.recommend(rows=np.array([0]), evidence=None, n=4)
    # Slot 1 re-buy (item 0, the best), slot 2 new (item 3, the only unseen), then re-buys fill.
    assert top.items[0].tolist() == [0, 3, 1, 4]
    assert top.rebuy[0].tolist() == [True, False, True, True]
    assert top.sensitive_evidence[0, 3]  # a re-buy of a health product is sensitive evidence
    refused = strategy.recommend(rows=np.array([0]), evidence=None, n=4, sensitive_ok=np.array([False]))
    assert 4 not in refused.items[0].tolist()
    assert 2 not in top.items[0].tolist()  # bought twice, but not repeatable


def test_session_and_cohort_never_re_list_the_subjects_own_purchases_as_buy_again():
    data = repeat_buyer()
    session = SessionStrategy(min_support=1, buy_again_share=1.0).fit(data)
    assert session.buy_again_share == 0.0
    top = session.recommend(rows=np.array([0]), evidence=data.interactions[[0]], n=4)
    assert top.rebuy is None and not set(top.items[0].tolist()) & {0, 1, 2, 4}
    assert "buy_again_share" not in CohortStrategy(k=2).params()


# --- cohorts that learn -----------------------------------------------------------------------


def test_a_cohort_learns_what_is_co_bought_with_its_typical_items():
    # The fashion cohort (subjects 0–5 buy item 0, 12–17 items 2 and 3) never bought item 1; the home
    # cohort (6–11) buys item 0 with item 1, so six subjects support the pair (0, 1). Members' counts
    # alone cannot list item 1 for the fashion cohort; the pooled item-item term does.
    history = {u: [0] for u in range(6)}
    history |= {u: [0, 1, 4, 5, 6, 7] for u in range(6, 12)}
    history |= {u: [2, 3] for u in range(12, 18)}
    category = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    subjects = [u for u, items in history.items() for _ in items]
    items = [i for _, items in history.items() for i in items]
    data = TrainingData.from_triples(
        subjects=np.array(subjects), items=np.array(items), n_subjects=18, item_category=category,
        category_sensitive=np.array([False, False]), category_names=("fashion", "home"),
    )
    plain = CohortStrategy(k=5, min_item_support=5, learn=0.0).fit(data)
    learnt = CohortStrategy(k=5, min_item_support=5, learn=1.0).fit(data)
    assert plain.cohorts.membership[0] == plain.cohorts.membership[12] != plain.cohorts.membership[6]
    fashion_plain = [i for i, _ in plain.cohorts.lists[plain.cohorts.membership[0]]]
    fashion_learnt = [i for i, _ in learnt.cohorts.lists[learnt.cohorts.membership[0]]]
    assert sorted(fashion_plain) == [0, 2, 3]
    assert 1 in fashion_learnt and set(fashion_learnt) <= {0, 1, 2, 3, 4, 5, 6, 7}


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 1000), k=st.integers(2, 30))
def test_every_cohort_has_at_least_k_members(seed, k):
    market = synthetic_marketplace(subjects=300, products=60, interactions=3000, seed=seed)
    cohorts = CohortStrategy(k=k).fit(market.training_data()).cohorts
    if cohorts.keys:
        assert cohorts.sizes.min() >= k
        assert np.bincount(cohorts.membership[cohorts.membership >= 0]).tolist() == cohorts.sizes.tolist()


def test_the_cohort_a_new_subject_joins_does_not_depend_on_who_else_is_scored():
    """``membership_from`` with ``attributes`` (offline scoring of subjects the model was not fitted on):
    the category shares that define an affinity are the fitted data's, so a batch scores as its rows alone."""
    market = synthetic_marketplace(subjects=300, products=60, interactions=3000, seed=4)
    data = market.training_data()
    cohort = CohortStrategy(k=5).fit(data)
    rows = np.arange(0, 300, 7)
    attributes = [("25-34", "DKI Jakarta", "android")] * len(rows)
    batch = cohort.membership_from(rows=rows, evidence=data.interactions[rows], attributes=attributes)
    alone = [cohort.membership_from(rows=rows[r : r + 1], evidence=data.interactions[rows[r : r + 1]],
                                    attributes=attributes[r : r + 1])[0] for r in range(len(rows))]
    assert batch.tolist() == alone
    assert (batch >= 0).all()


def test_a_cohort_without_the_sensitive_items_is_an_existing_cohort():
    history = {u: [0, 1] for u in range(5)} | {u: [2, 3, 0] for u in range(5, 10)}
    data = data_from(history, n_items=4, sensitive_items=(2, 3))
    data = TrainingData(**{**data.__dict__, "category_names": ("fashion", "health")})
    cohort = CohortStrategy(k=5, min_item_support=1, include_sensitive=True).fit(data)
    health_member = 7
    assert "health" in cohort.cohorts.keys[cohort.cohorts.membership[health_member]]
    without = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 4))
    twin = cohort.membership_from(rows=np.array([health_member]), evidence=without)[0]
    assert "fashion" in cohort.cohorts.keys[twin]


# --- differentially private item-item -------------------------------------------------------------


def test_pair_weights_bound_each_subjects_contribution_to_norm_one():
    n = np.array([0, 1, 2, 5, 20])
    laplace = pair_weights(n, mechanism="laplace")
    gaussian = pair_weights(n, mechanism="gaussian")
    pairs = n * (n - 1) / 2
    assert laplace[:2].tolist() == [0, 0] and gaussian[:2].tolist() == [0, 0]
    np.testing.assert_allclose(laplace[2:] * pairs[2:], 1.0)  # L1 norm of the pair contributions
    np.testing.assert_allclose(np.sqrt(gaussian[2:] ** 2 * pairs[2:]), 1.0)  # L2 norm


def test_dp_item_item_clips_weights_and_adds_up_its_budget():
    # One heavy subject with 30 items and clip 5: their five most recent count, each pair weighted 1/10.
    history = {0: list(range(30))}
    times = np.arange(30, dtype=float)  # item 29 is the most recent
    data = data_from(history, n_items=30, times=times)
    strategy = DPItemItemStrategy(epsilon=1e9, clip=5, candidates=30, min_signal=0.0, seed=1).fit(data)
    noisy = strategy._noisy_cooccurrence(data, np.random.default_rng(2))
    recent = [strategy.vocabulary.tolist().index(i) for i in range(25, 30)]
    block = noisy[np.ix_(recent, recent)]
    np.testing.assert_allclose(block[~np.eye(5, dtype=bool)], 1 / 10, atol=1e-6)
    assert abs(noisy).sum() == pytest.approx(20 * 0.1, abs=1e-5)  # nothing outside the five
    (e1, d1), (e2, d2) = strategy.phase_budgets
    assert e1 + e2 == pytest.approx(strategy.budget[0]) and d1 + d2 == strategy.budget[1]


@pytest.mark.parametrize("mechanism", ["laplace", "gaussian"])
def test_dp_item_item_noise_has_the_calibrated_scale(mechanism):
    # Nobody chose anything: every released co-occurrence is pure noise, on every pair.
    data = data_from({0: []}, n_items=300)
    strategy = DPItemItemStrategy(epsilon=2.0, candidates=300, selection_share=0.25, mechanism=mechanism,
                                  delta=1e-6, seed=5).fit(data)
    noisy = strategy._noisy_cooccurrence(data, np.random.default_rng(11))
    values = noisy[np.triu_indices(300, k=1)]
    epsilon_2 = 2.0 * 0.75
    if mechanism == "laplace":
        scale = 1 / epsilon_2
        assert strategy.pair_noise_scale == pytest.approx(scale)
        assert stats.kstest(values, "laplace", args=(0, scale)).pvalue > 0.001
        assert stats.kstest(values, "laplace", args=(0, scale * 2)).pvalue < 1e-6
    else:
        from recommender.engine import analytic_gaussian_sigma

        sigma = analytic_gaussian_sigma(epsilon=epsilon_2, delta=0.5e-6, sensitivity=1.0)
        assert strategy.pair_noise_scale == pytest.approx(sigma)
        assert stats.kstest(values, "norm", args=(0, sigma)).pvalue > 0.001
        assert stats.kstest(values, "norm", args=(0, sigma * 2)).pvalue < 1e-6
    assert np.allclose(noisy, noisy.T) and not np.diag(noisy).any()


def test_dp_item_item_scores_the_subjects_own_history_and_keeps_sensitive_items_out():
    history = {u: [0, 1] for u in range(40)} | {u: [2, 3] for u in range(40, 80)} | {80: [0]}
    data = data_from(history, n_items=4, sensitive_items=(3,))
    strategy = DPItemItemStrategy(epsilon=1e6, candidates=4, seed=0, explain=True).fit(data)
    top = strategy.recommend(rows=np.array([80]), evidence=None, n=3)
    assert [i for i, _ in top.row(0)] == [1] and top.because[0, 0] == 0
    assert 3 not in np.flatnonzero(np.isfinite(strategy.noisy_counts))  # excluded policy: not released
    assert STRATEGIES["dp_item_item"] is DPItemItemStrategy and DPItemItemStrategy.personal


def test_dp_item_item_recall_rises_with_epsilon():
    from recommender.evaluation import ranking_metrics, time_split

    market = synthetic_marketplace(subjects=4000, products=300, interactions=80_000, seed=2)
    split = time_split(subjects=market.subjects, items=market.items, times=market.times, weights=market.weights,
                       n_subjects=market.n_subjects, item_category=market.item_category,
                       category_sensitive=market.category_sensitive)
    rows = split.subjects
    recall = {}
    for epsilon in (0.05, 50.0):
        strategy = DPItemItemStrategy(epsilon=epsilon, candidates=200, seed=3).fit(split.train)
        top = strategy.recommend(rows=rows, evidence=split.train.interactions[rows], n=20)
        recall[epsilon] = ranking_metrics(top.items, split.test[rows], 20)[0]
    assert recall[50.0] > recall[0.05] * 1.5
    assert math.isfinite(recall[0.05])
