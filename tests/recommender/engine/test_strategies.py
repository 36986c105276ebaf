"""Each strategy on a small dataset whose answers were worked out by hand."""

import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

from recommender.engine import (
    CohortStrategy,
    DPPopularityStrategy,
    ItemItemStrategy,
    PopularityStrategy,
    SessionStrategy,
    TrainingData,
    analytic_gaussian_sigma,
    clip_contributions,
    item_item_similarity,
    topk_per_row,
)

# Items 0–3 are fashion, item 4 is health (sensitive).
#   u0: {0, 1}   u1: {0, 1, 2}   u2: {1, 2}   u3: {3, 4}
# Column cosines: cos(0,1) = 2/√6 ≈ 0.8165, cos(0,2) = 1/2, cos(1,2) = 2/√6, cos(3,4) = 1.
HISTORY = {0: [0, 1], 1: [0, 1, 2], 2: [1, 2], 3: [3, 4]}
ITEM_CATEGORY = np.array([0, 0, 0, 0, 1])
SENSITIVE = np.array([False, True])
C = 2 / math.sqrt(6)


def hand_data(**kwargs) -> TrainingData:
    subjects = [u for u, items in HISTORY.items() for _ in items]
    items = [i for u, items in HISTORY.items() for i in items]
    return TrainingData.from_triples(
        subjects=np.array(subjects), items=np.array(items), n_subjects=4,
        item_category=ITEM_CATEGORY, category_sensitive=SENSITIVE, **kwargs,
    )


def test_cosine_similarity_matches_the_hand_computation():
    similarity = item_item_similarity(hand_data().interactions, neighbours=10).toarray()
    expected = np.zeros((5, 5))
    expected[0, 1] = expected[1, 0] = C
    expected[1, 2] = expected[2, 1] = C
    expected[0, 2] = expected[2, 0] = 0.5
    expected[3, 4] = expected[4, 3] = 1.0
    np.testing.assert_allclose(similarity, expected, atol=1e-6)


def test_similarity_keeps_only_the_nearest_neighbours():
    similarity = item_item_similarity(hand_data().interactions, neighbours=1).toarray()
    assert similarity[0].nonzero()[0].tolist() == [1]  # 0.8165 beats 0.5
    assert similarity[2].nonzero()[0].tolist() == [1]


def test_full_item_item_scores_unseen_items_and_explains_them():
    strategy = ItemItemStrategy(neighbours=10, explain=True, min_support=1).fit(hand_data())
    top = strategy.recommend(rows=np.array([0, 2]), evidence=None, n=3)
    # u0 has {0, 1}: item 2 scores cos(0,2) + cos(1,2) = 0.5 + 0.8165; nothing else is reachable.
    assert top.row(0)[0][0] == 2 and top.row(0)[0][1] == pytest.approx(0.5 + C, abs=1e-5)
    assert len(top.row(0)) == 1
    assert top.because[0, 0] == 1  # item 1 contributed 0.8165 > 0.5
    # u2 has {1, 2}: item 0 scores 0.8165 + 0.5, explained by item 1.
    assert [i for i, _ in top.row(1)] == [0]
    assert top.because[1, 0] == 1


def test_full_keeps_sensitive_items_out_unless_allowed_for_that_subject():
    data = hand_data()
    excluded = ItemItemStrategy(neighbours=10, include_sensitive=False, min_support=1).fit(data)
    evidence = sp.csr_matrix(([1.0], ([0], [3])), shape=(1, 5))
    assert excluded.recommend(rows=np.array([3]), evidence=evidence, n=5).row(0) == []
    included = ItemItemStrategy(neighbours=10, include_sensitive=True, min_support=1).fit(data)
    assert [i for i, _ in included.recommend(rows=np.array([3]), evidence=evidence, n=5).row(0)] == [4]
    refused = included.recommend(rows=np.array([3]), evidence=evidence, n=5, sensitive_ok=np.array([False]))
    assert refused.row(0) == []


def test_bm25_weighting_ranks_like_the_hand_ordering():
    strategy = ItemItemStrategy(neighbours=10, weighting="bm25", min_support=1).fit(hand_data())
    assert [i for i, _ in strategy.recommend(rows=np.array([0]), evidence=None, n=3).row(0)] == [2]


def test_popularity_counts_distinct_subjects_and_breaks_ties_by_id():
    # Item 0 is bought five times by u0 alone: still one subject.
    data = TrainingData.from_triples(
        subjects=np.array([0, 0, 0, 0, 0, 1, 2, 1]), items=np.array([0, 0, 0, 0, 0, 1, 1, 2]),
        n_subjects=3, item_category=np.array([0, 0, 0]), category_sensitive=np.array([False]),
    )
    top = PopularityStrategy().fit(data).recommend(rows=np.array([0, 1]), evidence=None, n=3)
    assert [i for i, _ in top.row(0)] == [1, 0, 2]
    assert top.row(0) == top.row(1)  # non-personal: everyone gets the same list
    assert top.row(0)[0][1] == pytest.approx(1.0)


def test_popularity_leaves_sensitive_items_out_unless_included():
    data = hand_data()
    assert 4 not in [i for i, _ in PopularityStrategy().fit(data).recommend(rows=np.array([0]), evidence=None, n=5).row(0)]
    included = PopularityStrategy(include_sensitive=True).fit(data)
    assert 4 in [i for i, _ in included.recommend(rows=np.array([0]), evidence=None, n=5).row(0)]


def test_session_scores_from_the_session_items_only():
    strategy = SessionStrategy(neighbours=10, min_support=1).fit(hand_data())
    session = sp.csr_matrix(([1.0], ([0], [0])), shape=(1, 5))  # the session holds item 0
    top = strategy.recommend(rows=np.array([3]), evidence=session, n=5)
    # Row 3's own history ({3, 4}) is not used: neighbours of item 0 are 1 (0.8165) and 2 (0.5).
    assert top.row(0) == [(1, pytest.approx(C, abs=1e-6)), (2, pytest.approx(0.5))]
    with pytest.raises(ValueError):
        strategy.recommend(rows=np.array([0]), evidence=None, n=5)


def test_dp_popularity_with_negligible_noise_ranks_by_clipped_counts():
    # With ε huge the noise is negligible; clip=1 keeps each subject's most recent item only.
    times = np.array([1.0, 2.0, 1.0, 2.0, 3.0, 1.0, 2.0, 1.0, 2.0])  # per interaction, in HISTORY order
    data = hand_data(times=times)
    strategy = DPPopularityStrategy(epsilon=1e9, clip=1, seed=0, include_sensitive=True).fit(data)
    # Most recent: u0 → 1, u1 → 2, u2 → 2, u3 → 4.
    np.testing.assert_allclose(strategy.noisy_counts, [0, 1, 2, 0, 1], atol=1e-6)
    ranking = strategy.overall_ranking(3, sensitive=True)[0].tolist()
    assert ranking[0] == 2 and set(ranking[1:]) == {1, 4}  # 1 and 4 tie at one; noise orders them
    assert strategy.overall_ranking(3, sensitive=False)[0].tolist()[:2] == [2, 1]
    assert strategy.budget == (1e9, 0.0)


def test_dp_popularity_spreads_over_the_subjects_own_categories():
    data = hand_data()
    strategy = DPPopularityStrategy(epsilon=1e9, clip=5, seed=0).fit(data)
    # A subject whose evidence is fashion only gets fashion items not yet seen, best first.
    evidence = sp.csr_matrix(([1.0], ([0], [3])), shape=(1, 5))
    top = strategy.recommend(rows=np.array([0]), evidence=evidence, n=3)
    assert [i for i, _ in top.row(0)] == [1, 0, 2]  # counts 3, 2, 2 (tie: lower id); 3 is seen
    assert 4 not in [i for i, _ in top.row(0)]  # sensitive: excluded by policy


def test_cohorts_merge_small_groups_and_list_only_supported_items():
    # Six fashion fans: four in Jakarta, two in Bali (too few for k=3: generalised away).
    subjects = [0, 0, 1, 1, 2, 2, 3, 3, 4, 5]
    items = [0, 1, 0, 1, 0, 2, 1, 3, 0, 1]
    attributes = tuple([("25-34", "DKI Jakarta", "android")] * 4 + [("25-34", "Bali", "android")] * 2)
    data = TrainingData.from_triples(
        subjects=np.array(subjects), items=np.array(items), n_subjects=6, item_category=np.zeros(4, dtype=int),
        category_sensitive=np.array([False]), attributes=attributes, category_names=("fashion",),
    )
    strategy = CohortStrategy(k=3, min_item_support=2, learn=0.0).fit(data)
    cohorts = strategy.cohorts
    assert all(size >= 3 for size in cohorts.sizes)
    # Jakarta's four form a cohort; Bali's two are below k: they join the cohort of the same affinity.
    assert cohorts.keys == ["category=fashion|age=25-34|province=DKI Jakarta|platform=android"]
    assert cohorts.sizes.tolist() == [6]
    # Support: item 0 by u0,u1,u2,u4 (4), item 1 by u0,u1,u3,u5 (4), item 2 by u2 only, item 3 by u3 only.
    listed = [i for i, _ in cohorts.lists[0]]
    assert listed == [0, 1]  # 2 and 3 (one member each) are never listed
    top = strategy.recommend(rows=np.arange(6), evidence=None, n=5)
    assert all(top.row(r) == top.row(0) for r in range(6))  # the same list for every member


def test_cohorts_below_k_everywhere_leave_everyone_without_a_cohort():
    data = TrainingData.from_triples(
        subjects=np.array([0, 1]), items=np.array([0, 0]), n_subjects=2, item_category=np.zeros(1, dtype=int),
        category_sensitive=np.array([False]),
    )
    strategy = CohortStrategy(k=3).fit(data)
    assert strategy.cohorts.keys == []
    assert (strategy.recommend(rows=np.arange(2), evidence=None, n=3).items == -1).all()


def test_topk_per_row_matches_a_full_sort():
    rng = np.random.default_rng(3)
    matrix = sp.random(200, 300, density=0.1, format="csr", random_state=4, dtype=np.float64)
    matrix.data = rng.random(matrix.nnz)
    columns, values = topk_per_row(matrix, 7)
    dense = matrix.toarray()
    for r in range(200):
        order = np.argsort(-dense[r], kind="stable")
        expected = [c for c in order if dense[r, c] > 0][:7]
        assert columns[r][columns[r] >= 0].tolist() == expected


# --- differential privacy: noise scale and clipping ------------------------------------------


def test_clipping_bounds_each_subjects_contribution():
    rng = np.random.default_rng(0)
    matrix = sp.random(50, 40, density=0.5, format="csr", random_state=1)
    times = matrix.copy()
    times.data = rng.random(times.nnz)
    clipped = clip_contributions(matrix, clip=3, last_seen=times)
    per_subject = np.asarray(clipped.sum(axis=1)).ravel()
    assert per_subject.max() == 3 and set(np.unique(clipped.data)) == {1.0}
    # The kept items are each subject's three most recent.
    for r in range(50):
        row = times[r]
        newest = set(row.indices[np.argsort(-row.data)][:3].tolist())
        assert set(clipped[r].indices.tolist()) == newest


@pytest.mark.parametrize("epsilon, clip", [(0.5, 5), (2.0, 20)])
def test_laplace_noise_has_scale_clip_over_epsilon(epsilon, clip):
    # An empty histogram over many items: what is released is pure noise.
    n_items = 20_000
    data = TrainingData.from_triples(
        subjects=np.zeros(0, dtype=int), items=np.zeros(0, dtype=int), n_subjects=1,
        item_category=np.zeros(n_items, dtype=int), category_sensitive=np.array([False]),
    )
    strategy = DPPopularityStrategy(epsilon=epsilon, clip=clip, seed=12345).fit(data)
    scale = clip / epsilon
    assert strategy.noise_scale == scale
    result = stats.kstest(strategy.noisy_counts, "laplace", args=(0, scale))
    assert result.pvalue > 0.001
    # A wrong calibration (half or double the scale) would be rejected.
    assert stats.kstest(strategy.noisy_counts, "laplace", args=(0, scale / 2)).pvalue < 1e-6
    assert stats.kstest(strategy.noisy_counts, "laplace", args=(0, scale * 2)).pvalue < 1e-6


def test_gaussian_noise_is_calibrated_to_epsilon_and_delta():
    epsilon, delta, clip = 1.0, 1e-6, 9
    sigma = analytic_gaussian_sigma(epsilon=epsilon, delta=delta, sensitivity=math.sqrt(clip))
    # Tighter than the classic bound, and achieving δ (Balle & Wang, Thm. 8).
    classic = math.sqrt(clip) * math.sqrt(2 * math.log(1.25 / delta)) / epsilon
    assert sigma < classic
    a, b = math.sqrt(clip) / (2 * sigma), epsilon * sigma / math.sqrt(clip)
    achieved = stats.norm.cdf(a - b) - math.exp(epsilon) * stats.norm.cdf(-a - b)
    assert achieved == pytest.approx(delta, rel=1e-3)
    data = TrainingData.from_triples(
        subjects=np.zeros(0, dtype=int), items=np.zeros(0, dtype=int), n_subjects=1,
        item_category=np.zeros(20_000, dtype=int), category_sensitive=np.array([False]),
    )
    strategy = DPPopularityStrategy(epsilon=epsilon, clip=clip, mechanism="gaussian", delta=delta, seed=7).fit(data)
    assert stats.kstest(strategy.noisy_counts, "norm", args=(0, sigma)).pvalue > 0.001
    assert strategy.budget == (epsilon, delta)


def test_dp_noise_differs_between_builds_without_a_seed():
    data = hand_data()
    first = DPPopularityStrategy(epsilon=1.0).fit(data).noisy_counts
    second = DPPopularityStrategy(epsilon=1.0).fit(data).noisy_counts
    assert not np.allclose(first, second)


def test_repeated_purchases_count_once_in_item_item():
    # u0 buys item 0 five times and item 1 once; u1 buys items 0 and 2 once each.
    data = TrainingData.from_triples(
        subjects=np.array([0, 0, 0, 0, 0, 0, 1, 1]), items=np.array([0, 0, 0, 0, 0, 1, 0, 2]), n_subjects=2,
        item_category=np.zeros(3, dtype=int), category_sensitive=np.array([False]),
    )
    saturated = ItemItemStrategy(neighbours=5, min_support=1).fit(data).similarity.toarray()
    # As if each purchase happened once: cos(0,1) = cos(0,2) = 1/√2.
    assert saturated[0, 1] == pytest.approx(1 / math.sqrt(2)) and saturated[0, 2] == pytest.approx(1 / math.sqrt(2))
    raw = ItemItemStrategy(neighbours=5, saturate=False, min_support=1).fit(data).similarity.toarray()
    assert raw[0, 1] == pytest.approx(5 / math.sqrt(26)) and raw[0, 1] > raw[0, 2]
