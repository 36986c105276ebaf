"""Offline evaluation: the privacy/utility table PMs read before choosing arms.

Interactions are split in time: everything up to the cutoff (by default the
80th percentile of interaction times) trains each strategy, and what each
subject chose *afterwards* is what a good list should have contained — in
two readings:

- **new items**: only what was new to the subject (discovery);
- **whole baskets**: everything they chose after the cutoff, re-buys
  included (what a grocery shopper's next baskets actually hold).

Per strategy (and per ε and per k) it reports on both:

- recall@k: hits / min(k, items the subject chose later), averaged over subjects;
- NDCG@k: like recall, but a hit counts more the higher it is listed;
- coverage: the share of the catalog that appears in anyone's list.

Pure numpy: the ``evaluate_recommenders`` command feeds it the database's
consenting subjects, an exported CSV of orders, or a synthetic marketplace;
the benchmark the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recommender import engine

SESSION_ITEMS = 3  # the session strategy sees only the subject's last few items


@dataclass(frozen=True)
class Split:
    train: engine.TrainingData
    test: sp.csr_matrix  # subjects × items: what each chose after the cutoff, new to them
    sessions: sp.csr_matrix  # the last SESSION_ITEMS training items of each subject
    subjects: np.ndarray  # rows evaluated: history before and something new after
    cutoff: float
    baskets: sp.csr_matrix | None = None  # subjects × items: everything each chose after the cutoff

    @property
    def basket_subjects(self) -> np.ndarray:
        """Rows evaluated on whole baskets: history before and anything after."""
        if self.baskets is None:
            return self.subjects
        return np.flatnonzero((np.diff(self.train.interactions.indptr) > 0) & (np.diff(self.baskets.indptr) > 0))


@dataclass(frozen=True)
class Result:
    strategy: str
    setting: str
    recall: float
    ndcg: float
    coverage: float
    subjects: int
    personalized: str
    basket_recall: float | None = None
    basket_ndcg: float | None = None

    def row(self) -> tuple:
        basket = (f"{self.basket_recall:.4f}", f"{self.basket_ndcg:.4f}") if self.basket_recall is not None else ("—", "—")
        return (self.strategy, self.setting, f"{self.recall:.4f}", f"{self.ndcg:.4f}", *basket,
                f"{self.coverage:.1%}", str(self.subjects), self.personalized)


HEADER = ("strategy", "setting", "recall@k new", "NDCG@k new", "recall@k baskets", "NDCG@k baskets", "coverage",
          "subjects", "uses the subject's data")


def time_split(
    *,
    subjects: np.ndarray,
    items: np.ndarray,
    times: np.ndarray,
    weights: np.ndarray,
    n_subjects: int,
    item_category: np.ndarray,
    category_sensitive: np.ndarray,
    attributes=None,
    category_names=None,
    purchases: np.ndarray | None = None,
    item_repeatable: np.ndarray | None = None,
    quantile: float = 0.8,
) -> Split:
    if not 0 < quantile < 1:
        raise ValueError("the split quantile is between 0 and 1")
    subjects, items, times = np.asarray(subjects), np.asarray(items), np.asarray(times, dtype=np.float64)
    weights = np.asarray(weights)
    purchases = weights >= 1.0 if purchases is None else np.asarray(purchases, dtype=bool)
    cutoff = float(np.quantile(times, quantile)) if times.size else 0.0
    before = times <= cutoff
    train = engine.TrainingData.from_triples(
        subjects=subjects[before], items=items[before], weights=weights[before], times=times[before],
        n_subjects=n_subjects, item_category=item_category, category_sensitive=category_sensitive,
        attributes=attributes, category_names=category_names, purchases=purchases[before],
        item_repeatable=item_repeatable, as_of=cutoff,
    )
    n_items = len(item_category)
    later = sp.csr_matrix(
        (np.ones(int((~before).sum()), dtype=np.float32), (subjects[~before], items[~before])), shape=(n_subjects, n_items)
    )
    later.sum_duplicates()
    later.data[:] = 1.0
    seen = train.interactions.copy()
    seen.data[:] = 1.0
    new = (later - later.multiply(seen)).tocsr()
    new.eliminate_zeros()
    has_history = np.diff(train.interactions.indptr) > 0
    has_new = np.diff(new.indptr) > 0
    # Sessions: each subject's SESSION_ITEMS most recent training items.
    recent, _ = engine.topk_per_row(train.last_seen, SESSION_ITEMS) if train.last_seen is not None else (None, None)
    rows = np.repeat(np.arange(n_subjects), SESSION_ITEMS)
    keep = recent.ravel() >= 0
    sessions = sp.csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float32), (rows[keep], recent.ravel()[keep])), shape=(n_subjects, n_items)
    )
    return Split(train=train, test=new, sessions=sessions, subjects=np.flatnonzero(has_history & has_new),
                 cutoff=cutoff, baskets=later.tocsr())


def ranking_metrics(recommended: np.ndarray, test: sp.csr_matrix, k: int) -> tuple[float, float, float, int]:
    """Mean recall@k and NDCG@k over rows, catalog coverage, and rows evaluated."""
    recommended = recommended[:, :k]
    n_rows = recommended.shape[0]
    if n_rows == 0:
        return 0.0, 0.0, 0.0, 0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    recalls = np.zeros(n_rows)
    ndcgs = np.zeros(n_rows)
    for r in range(n_rows):
        relevant = test.indices[test.indptr[r] : test.indptr[r + 1]]
        hits = np.isin(recommended[r], relevant) & (recommended[r] >= 0)
        ideal = min(k, relevant.size)
        recalls[r] = hits.sum() / ideal
        ndcgs[r] = (discounts[: hits.size] * hits).sum() / discounts[:ideal].sum()
    listed = np.unique(recommended[recommended >= 0])
    coverage = listed.size / test.shape[1] if test.shape[1] else 0.0
    return float(recalls.mean()), float(ndcgs.mean()), float(coverage), n_rows


def evaluate(
    split: Split,
    *,
    k: int = 20,
    cohort_ks: Sequence[int] = (5, 20, 50, 100),
    epsilons: Sequence[float] = (0.1, 0.5, 1.0, 2.0, 5.0),
    include_sensitive: bool = False,
    neighbours: int = 50,
    min_support: int = 5,
    buy_again_share: float = 0.5,
    dp_clip: int = 20,
    dp_candidates: int = 500,
    seed: int | None = 0,
    progress: Callable[[str], None] | None = None,
) -> list[Result]:
    """Every strategy, as a build would configure it, on both readings of the test period."""
    new_rows = split.subjects
    basket_rows = split.basket_subjects
    rows = np.union1d(new_rows, basket_rows)
    at_new = np.searchsorted(rows, new_rows)
    at_basket = np.searchsorted(rows, basket_rows)
    history = split.train.interactions[rows]
    baskets = split.baskets[basket_rows] if split.baskets is not None else None
    test = split.test[new_rows]
    results = []

    def add(strategy: engine.Strategy, setting: str, evidence, personalized: str) -> None:
        if progress is not None:
            progress(f"{strategy.level} {setting}")
        strategy.fit(split.train)
        top = strategy.recommend(rows=rows, evidence=evidence, n=k)
        recall, ndcg, coverage, count = ranking_metrics(top.items[at_new], test, k)
        basket_recall = basket_ndcg = None
        if baskets is not None:
            basket_recall, basket_ndcg, _, _ = ranking_metrics(top.items[at_basket], baskets, k)
        results.append(Result(strategy.level, setting, recall, ndcg, coverage, count, personalized,
                              basket_recall, basket_ndcg))

    repeatable = split.train.item_repeatable is not None and split.train.item_repeatable.any()
    add(engine.PopularityStrategy(include_sensitive=include_sensitive), "—", None, "no")
    shares = sorted({0.0, buy_again_share} if repeatable else {0.0})
    for share in shares:
        label = f"cosine, {neighbours} neighbours, m = {min_support}" + (f", buy again {share:.0%}" if share else "")
        add(engine.ItemItemStrategy(neighbours=neighbours, include_sensitive=include_sensitive, min_support=min_support,
                                    buy_again_share=share), label, history, "full history")
    add(engine.ItemItemStrategy(neighbours=neighbours, weighting="bm25", include_sensitive=include_sensitive,
                                min_support=min_support), f"bm25, {neighbours} neighbours, m = {min_support}",
        history, "full history")
    add(engine.SessionStrategy(neighbours=neighbours, include_sensitive=include_sensitive, min_support=min_support),
        f"last {SESSION_ITEMS} items", split.sessions[rows], "this session only")
    for cohort_k in cohort_ks:
        for learn, how in ((1.0, "pooled item-item"), (0.0, "members' counts")):
            add(engine.CohortStrategy(k=cohort_k, include_sensitive=include_sensitive, min_item_support=min_support,
                                      learn=learn, neighbours=neighbours),
                f"k = {cohort_k}, {how}", None, "cohort membership")
    for epsilon in epsilons:
        add(engine.DPPopularityStrategy(epsilon=epsilon, clip=dp_clip, include_sensitive=include_sensitive, seed=seed),
            f"ε = {epsilon:g}", history, "own categories; counts DP")
    for epsilon in epsilons:
        add(engine.DPItemItemStrategy(epsilon=epsilon, clip=dp_clip, candidates=dp_candidates, neighbours=neighbours,
                                      include_sensitive=include_sensitive, seed=seed),
            f"ε = {epsilon:g}", history, "full history; similarities DP")
    return results


def render(results: Sequence[Result], *, markdown: bool = False, k: int = 20) -> str:
    header = tuple(h.replace("@k", f"@{k}") for h in HEADER)
    body = [result.row() for result in results]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(str(line[i])) for line in [header, *body]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([fmt.format(*header), fmt.format(*("-" * w for w in widths)), *(fmt.format(*row) for row in body)])


# --- an export of the marketplace's own orders ------------------------------------------------


class OrdersFileError(ValueError):
    """A problem with an orders or catalog CSV, naming the line and column."""


_YES = {"1", "true", "yes", "y", "t"}
_NO = {"0", "false", "no", "n", "f", ""}


def _read_csv(source, required: tuple[str, ...], label: str):
    import pandas as pd

    try:
        frame = pd.read_csv(source, dtype=str, keep_default_na=False, skipinitialspace=True)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise OrdersFileError(f"{label}: cannot be read as CSV ({exc})") from exc
    frame.columns = [str(c).strip().lower() for c in frame.columns]
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise OrdersFileError(f"{label}: missing columns {', '.join(missing)} (has: {', '.join(frame.columns)})")
    for column in frame.columns:
        frame[column] = frame[column].str.strip()
    return frame


def _flags(values, label: str, column: str):
    lowered = values.str.lower()
    bad = ~lowered.isin(_YES | _NO)
    if bad.any():
        line = int(bad.to_numpy().nonzero()[0][0]) + 2  # the header is line 1
        raise OrdersFileError(f"{label} line {line}, column {column}: {values[bad].iloc[0]!r} is not yes/no")
    return lowered.isin(_YES).to_numpy()


def orders_read(interactions, *, catalog=None, sensitive: Sequence[str] = (), repeatable: Sequence[str] = ()):  # noqa: C901
    """A ``datasets.Marketplace`` from an export of orders, for ``evaluate``: nothing is stored.

    ``interactions``: CSV with ``subject,product,time[,category]``, one row per
    product ordered (time: ISO 8601 or Unix seconds). ``catalog``: CSV with
    ``product,category[,sensitive][,repeatable]`` (yes/no; a category is
    sensitive when any of its products says so). ``sensitive`` and
    ``repeatable`` name categories to mark as well (``repeatable=["*"]``: all).
    Raises ``OrdersFileError`` naming the line and column of a bad value.
    """
    import pandas as pd

    from recommender.datasets import Marketplace  # datasets imports engine only: no cycle

    orders = _read_csv(interactions, ("subject", "product", "time"), "interactions")
    if orders.empty:
        raise OrdersFileError("interactions: no rows")
    for column in ("subject", "product", "time"):
        empty = orders[column] == ""
        if empty.any():
            line = int(empty.to_numpy().nonzero()[0][0]) + 2
            raise OrdersFileError(f"interactions line {line}, column {column}: empty")
    numeric = pd.to_numeric(orders["time"], errors="coerce")
    parsed = pd.to_datetime(orders["time"].where(numeric.isna()), errors="coerce", utc=True, format="ISO8601")
    seconds = numeric.to_numpy(dtype=np.float64, na_value=np.nan)
    from_dates = (parsed - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy(dtype=np.float64, na_value=np.nan)
    times = np.where(np.isnan(seconds), from_dates, seconds)
    bad = np.isnan(times)
    if bad.any():
        line = int(bad.nonzero()[0][0]) + 2
        raise OrdersFileError(f"interactions line {line}, column time: {orders['time'].iloc[line - 2]!r} is neither "
                              "ISO 8601 nor Unix seconds")
    product_category: dict[str, str] = {}
    product_repeatable: dict[str, bool] = {}
    sensitive_categories = set(sensitive)
    if catalog is not None:
        products = _read_csv(catalog, ("product", "category"), "catalog")
        duplicated = products["product"].duplicated()
        if duplicated.any():
            line = int(duplicated.to_numpy().nonzero()[0][0]) + 2
            raise OrdersFileError(f"catalog line {line}, column product: {products['product'][duplicated].iloc[0]!r} "
                                  "appears twice")
        product_category = dict(zip(products["product"], products["category"], strict=True))
        if "sensitive" in products.columns:
            flags = _flags(products["sensitive"], "catalog", "sensitive")
            sensitive_categories |= set(products["category"][flags])
        if "repeatable" in products.columns:
            product_repeatable = dict(zip(products["product"], _flags(products["repeatable"], "catalog", "repeatable"),
                                          strict=True))
        unknown = ~orders["product"].isin(product_category)
        if unknown.any():
            line = int(unknown.to_numpy().nonzero()[0][0]) + 2
            raise OrdersFileError(f"interactions line {line}, column product: {orders['product'][unknown].iloc[0]!r} "
                                  f"is not in the catalog ({int(unknown.sum())} rows like it)")
    elif "category" in orders.columns:
        product_category = dict(zip(orders["product"], orders["category"].replace("", "unknown"), strict=True))
    subject_codes, _ = pd.factorize(orders["subject"])
    item_codes, skus = pd.factorize(orders["product"])
    categories_of_items = [product_category.get(sku, "unknown") for sku in skus]
    category_codes, category_keys = pd.factorize(pd.Series(categories_of_items, dtype=str))
    keys = tuple(str(k) for k in category_keys)
    every = "*" in repeatable
    category_repeatable = np.array([every or key in repeatable for key in keys], dtype=bool)
    item_repeatable = np.array([product_repeatable.get(sku, category_repeatable[c])
                                for sku, c in zip(skus, category_codes, strict=True)], dtype=bool)
    n_subjects = int(subject_codes.max()) + 1
    market = Marketplace(
        category_keys=keys,
        category_names=keys,
        category_sensitive=np.array([key in sensitive_categories for key in keys], dtype=bool),
        item_category=np.asarray(category_codes, dtype=np.int64),
        item_skus=tuple(str(s) for s in skus),
        attributes=tuple(("", "", "") for _ in range(n_subjects)),
        subjects=np.asarray(subject_codes, dtype=np.int64),
        items=np.asarray(item_codes, dtype=np.int64),
        times=times,
        weights=np.ones(len(orders), dtype=np.float32),
        category_repeatable=category_repeatable,
        product_repeatable=item_repeatable,
    )
    return market
