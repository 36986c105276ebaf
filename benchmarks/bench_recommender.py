"""Recommender: the item-item build against ``implicit`` (serving latency: ``bench_serving``).

1. Full item-item build and top-20 for every subject, ours
   (``recommender.engine.ItemItemStrategy`` as a ``full`` arm builds it: compiled
   kernels, cosine, support threshold m = 5, buy again for repeatable items)
   against ``implicit.nearest_neighbours.CosineRecommender(K=50)`` fit +
   ``recommend`` on the same matrix, alternated in the same run, on two data sets:
   - a synthetic marketplace: 100,000 subjects, 20,000 products, 2,000,000 interactions;
   - real-shaped grocery baskets (``marketplace.datasets.grocery_baskets``: 600
     customers, 14,000 products, a year of staple-heavy baskets — no real basket
     data can be downloaded here).
   Target: ≤ 1.0× implicit's time on both.
2. recall@20 (NDCG@20) of both on a time split of the same data (train on the
   first 80 % of the time): on new items (ours without buy again, as implicit
   filters what the subject has) and on whole baskets (ours as served, with buy
   again). Target: ours ≥ implicit's recall on new items.
"""

import os
import statistics
import time

import numpy as np

from benchmarks.table import Row

FULL = {"subjects": 100_000, "products": 20_000, "interactions": 2_000_000, "categories": 40}
QUICK = {"subjects": 10_000, "products": 2_000, "interactions": 200_000, "categories": 20}
GROCERY = {"customers": 600, "products": 14_000, "weeks": 52}
GROCERY_QUICK = {"customers": 200, "products": 4_000, "weeks": 26}
TOP = 20
MIN_SUPPORT = 5  # recommender.services' default RECOMMENDER_MIN_SUPPORT
BUY_AGAIN_SHARE = 0.5  # … and RECOMMENDER_BUY_AGAIN_SHARE


def _neighbours() -> int:
    # The production setting (recommender.services.NEIGHBOURS), without importing Django here.
    return int(os.environ.get("BENCH_NEIGHBOURS", "50"))


def _markets(quick: bool):
    from marketplace.datasets import grocery_baskets, synthetic_marketplace

    sizes = QUICK if quick else FULL
    grocery = GROCERY_QUICK if quick else GROCERY
    return [
        (f"synthetic marketplace: {sizes['subjects']:,} subjects, {sizes['products']:,} products, "
         f"{sizes['interactions']:,} interactions", synthetic_marketplace(**sizes, seed=20261128)),
        (f"grocery baskets (generated, staple-heavy): {grocery['customers']:,} customers, {grocery['products']:,} "
         "products, {lines:,} lines", grocery_baskets(**grocery, seed=20261201)),
    ]


def _ours(data, rows, neighbours, *, buy_again_share=BUY_AGAIN_SHARE):
    from recommender.engine import ItemItemStrategy

    strategy = ItemItemStrategy(neighbours=neighbours, include_sensitive=True, min_support=MIN_SUPPORT,
                                buy_again_share=buy_again_share).fit(data)
    return strategy.recommend(rows=rows, evidence=None, n=TOP).items


def _implicit(matrix, neighbours):
    import warnings

    from implicit.nearest_neighbours import CosineRecommender
    from implicit.utils import ParameterWarning

    # implicit's own normalisation hands itself a COO matrix and warns about it.
    warnings.filterwarnings("ignore", category=ParameterWarning)

    model = CosineRecommender(K=neighbours)
    model.fit(matrix, show_progress=False)
    ids, _ = model.recommend(np.arange(matrix.shape[0]), matrix, N=TOP, filter_already_liked_items=True)
    return ids


def _warm_up() -> None:
    # The kernels compile once per machine (cached on disk); that is not what is measured.
    from marketplace.datasets import synthetic_marketplace

    market = synthetic_marketplace(subjects=200, products=50, interactions=2000, seed=1)
    _ours(market.training_data(), np.arange(200), 5)


def _build_rows(quick: bool) -> list[Row]:
    try:
        import implicit  # noqa: F401
    except ImportError:
        implicit = None
    _warm_up()
    neighbours = _neighbours()
    rows_out: list[Row] = []
    for label, market in _markets(quick):
        label = label.format(lines=len(market.items))
        data = market.training_data()
        matrix = data.interactions.tocsr()
        rows = np.arange(data.n_subjects)
        repeats = 3 if quick else 3
        ours_s, peer_s = [], []
        for _ in range(repeats):  # alternated, so machine noise hits both alike
            started = time.perf_counter()
            _ours(data, rows, neighbours)
            ours_s.append(time.perf_counter() - started)
            if implicit is not None:
                started = time.perf_counter()
                _implicit(matrix, neighbours)
                peer_s.append(time.perf_counter() - started)
        ours = statistics.median(ours_s)
        title = f"full build + top-{TOP} for every subject ({neighbours} neighbours, m = {MIN_SUPPORT}), {label}"
        if implicit is None:
            rows_out.append(Row(title, f"{ours:.2f} s", peer="peer not installed (pip install implicit)"))
            continue
        peer = statistics.median(peer_s)
        rows_out.append(Row(
            title,
            f"{ours:.2f} s",
            peer=f"implicit CosineRecommender {peer:.2f} s",
            ratio=f"{ours / peer:.2f}× implicit's time",
            target="≤ 1.0× implicit",
            passed=ours <= peer,
        ))
        rows_out.extend(_recall_rows(market, neighbours, label.split(":")[0]))
    return rows_out


def _recall_rows(market, neighbours, label) -> list[Row]:
    from recommender.evaluation import ranking_metrics, time_split

    split = time_split(
        subjects=market.subjects, items=market.items, times=market.times, weights=market.weights,
        n_subjects=market.n_subjects, item_category=market.item_category,
        category_sensitive=market.category_sensitive, item_repeatable=market.item_repeatable,
    )
    rows, baskets = split.subjects, split.basket_subjects
    peer_all = np.asarray(_implicit(split.train.interactions.tocsr(), neighbours))
    ours_new = _ours(split.train, rows, neighbours, buy_again_share=0.0)
    ours_recall, ours_ndcg, _, n = ranking_metrics(ours_new, split.test[rows], TOP)
    peer_recall, peer_ndcg, _, _ = ranking_metrics(peer_all[rows], split.test[rows], TOP)
    served = _ours(split.train, baskets, neighbours)
    basket_recall, basket_ndcg, _, n_baskets = ranking_metrics(served, split.baskets[baskets], TOP)
    peer_basket, peer_basket_ndcg, _, _ = ranking_metrics(peer_all[baskets], split.baskets[baskets], TOP)
    return [
        Row(
            f"recall@{TOP} (NDCG@{TOP}) on new items, time split 80/20, {label}, {n:,} subjects",
            f"{ours_recall:.4f} ({ours_ndcg:.4f})",
            peer=f"implicit {peer_recall:.4f} ({peer_ndcg:.4f})",
            ratio=f"{ours_recall - peer_recall:+.4f}",
            target="≥ implicit's recall",
            passed=ours_recall >= peer_recall,
        ),
        Row(
            f"recall@{TOP} (NDCG@{TOP}) on whole baskets, as served (buy again {BUY_AGAIN_SHARE:.0%}), {label}, "
            f"{n_baskets:,} subjects",
            f"{basket_recall:.4f} ({basket_ndcg:.4f})",
            peer=f"implicit {peer_basket:.4f} ({peer_basket_ndcg:.4f})",
            ratio=f"{basket_recall - peer_basket:+.4f}",
        ),
    ]


def run(quick: bool) -> list[Row]:
    return _build_rows(quick)
