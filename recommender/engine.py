"""The recommendation strategies: pure numpy/scipy, no Django, one interface.

Each personalization level of a privacy treatment is a small class::

    strategy.fit(data)                                  # learn from consenting subjects' data
    strategy.recommend(rows=..., evidence=..., n=20)    # top-n per row → TopN

``data`` is a ``TrainingData``: the interaction matrix (subjects × items, CSR)
that the build service assembled from consenting subjects only, the catalog's
item → category map and sensitive flags, and the subjects' coarse attributes.
``rows`` are subject row numbers in that matrix and ``evidence`` is what the
strategy may use about each of them when it recommends: their history (full),
their session's items (session), or nothing at all (popularity, cohort: never
an individual profile). The same classes run in the build, in the offline
evaluation and in the benchmark, so what is evaluated is what is served.
"""

from __future__ import annotations

import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numba
import numpy as np
import scipy.sparse as sp
from scipy.stats import norm

from recommender import kernels

# --- data -------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingData:
    """What a strategy may learn from. Built from consenting subjects' interactions only.

    ``interactions`` (subjects × items, CSR, float32) holds the summed weights
    of each subject's orders and clicks; ``last_seen`` (same shape and pattern)
    the latest time of each, in seconds, for the recency-based clipping of
    differentially private counts. ``item_category`` maps item → category row;
    ``category_sensitive`` flags the categories that are specific personal data.
    ``attributes`` holds the subjects' coarse attributes (age band, province,
    platform), one tuple of strings per row, for cohorts.

    For "buy again": ``purchases`` counts each subject's orders of each item
    (clicks excluded) and ``last_purchased`` holds the latest order's time;
    ``item_repeatable`` flags the consumables a shopper buys again; ``as_of``
    is the time the data describes (recency is measured from it).
    """

    interactions: sp.csr_matrix
    item_category: np.ndarray
    category_sensitive: np.ndarray
    last_seen: sp.csr_matrix | None = None
    attributes: tuple[tuple[str, ...], ...] | None = None
    category_names: tuple[str, ...] | None = None
    purchases: sp.csr_matrix | None = None
    last_purchased: sp.csr_matrix | None = None
    item_repeatable: np.ndarray | None = None
    as_of: float | None = None

    def __post_init__(self):
        if self.interactions.shape[1] != len(self.item_category):
            raise ValueError("interactions has a column per item: item_category must match")
        if len(self.item_category) and self.item_category.max(initial=-1) >= len(self.category_sensitive):
            raise ValueError("item_category refers to a category without a sensitive flag")
        if self.attributes is not None and len(self.attributes) != self.interactions.shape[0]:
            raise ValueError("attributes needs one tuple per subject row")
        if self.item_repeatable is not None and len(self.item_repeatable) != len(self.item_category):
            raise ValueError("item_repeatable needs one flag per item")

    @property
    def n_subjects(self) -> int:
        return self.interactions.shape[0]

    @property
    def n_items(self) -> int:
        return self.interactions.shape[1]

    @property
    def item_sensitive(self) -> np.ndarray:
        return self.category_sensitive[self.item_category]

    @classmethod
    def from_triples(
        cls,
        *,
        subjects: np.ndarray,
        items: np.ndarray,
        weights: np.ndarray | None = None,
        times: np.ndarray | None = None,
        n_subjects: int,
        item_category: np.ndarray,
        category_sensitive: np.ndarray,
        attributes: tuple[tuple[str, ...], ...] | None = None,
        category_names: tuple[str, ...] | None = None,
        purchases: np.ndarray | None = None,
        item_repeatable: np.ndarray | None = None,
        as_of: float | None = None,
    ) -> TrainingData:
        """From one row per interaction; repeats of a (subject, item) pair are summed.

        ``purchases`` flags the rows that are orders (default: all of them).
        """
        subjects = np.asarray(subjects, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        n_items = len(item_category)
        shape = (n_subjects, n_items)
        if weights is None:
            weights = np.ones(len(subjects), dtype=np.float32)
        matrix = sp.csr_matrix((np.asarray(weights, dtype=np.float32), (subjects, items)), shape=shape)
        matrix.sum_duplicates()
        matrix.sort_indices()
        ordered = np.ones(len(subjects), dtype=bool) if purchases is None else np.asarray(purchases, dtype=bool)
        bought = sp.csr_matrix(
            (np.ones(int(ordered.sum()), dtype=np.float32), (subjects[ordered], items[ordered])), shape=shape
        )
        bought.sum_duplicates()
        bought.sort_indices()
        last_seen = last_purchased = None
        if times is not None:
            times = np.asarray(times, dtype=np.float64)
            last_seen = _latest_per_pair(subjects, items, times, shape)
            last_purchased = _latest_per_pair(subjects[ordered], items[ordered], times[ordered], shape)
            if as_of is None and times.size:
                as_of = float(times.max())
        return cls(
            interactions=matrix,
            item_category=np.asarray(item_category, dtype=np.int64),
            category_sensitive=np.asarray(category_sensitive, dtype=bool),
            last_seen=last_seen,
            attributes=attributes,
            category_names=category_names,
            purchases=bought,
            last_purchased=last_purchased,
            item_repeatable=None if item_repeatable is None else np.asarray(item_repeatable, dtype=bool),
            as_of=as_of,
        )


def _latest_per_pair(subjects: np.ndarray, items: np.ndarray, times: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """The latest time of each (subject, item) pair, as a CSR with the pairs' pattern."""
    n_items = shape[1]
    # Sort by time, and let later duplicates overwrite earlier ones.
    order = np.argsort(times, kind="stable")
    keys = subjects[order] * n_items + items[order]
    unique_keys, last_index = np.unique(keys[::-1], return_index=True)
    latest = times[order][::-1][last_index]
    matrix = sp.csr_matrix((latest, (unique_keys // n_items, unique_keys % n_items)), shape=shape)
    matrix.sort_indices()
    return matrix


@dataclass(frozen=True)
class TopN:
    """Per row: item ids (−1 where the list is shorter), scores and, optionally, reasons.

    ``because[r, j]`` is the item (from the row's own evidence) that explains
    recommendation ``items[r, j]``, or −1; ``cohorts[r]`` the row's cohort (−1: none).
    ``sensitive_evidence[r, j]`` records whether an item of a sensitive
    category among the row's evidence contributed to recommendation
    ``items[r, j]`` (its rank then says something sensitive about the
    subject); ``rebuy[r, j]`` marks a "buy again" entry.
    """

    items: np.ndarray
    scores: np.ndarray
    because: np.ndarray | None = None
    cohorts: np.ndarray | None = None
    sensitive_evidence: np.ndarray | None = None
    rebuy: np.ndarray | None = None

    def row(self, r: int) -> list[tuple[int, float]]:
        keep = self.items[r] >= 0
        return list(zip(self.items[r][keep].tolist(), self.scores[r][keep].tolist(), strict=True))


def _empty_topn(rows: int, n: int) -> TopN:
    return TopN(items=np.full((rows, n), -1, dtype=np.int64), scores=np.zeros((rows, n), dtype=np.float32))


# --- top-k helpers -------------------------------------------------------------------


def topk_per_row(matrix: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest stored values of every CSR row, best first: (columns, values), −1 padded.

    Rows are bucketed by length (≤ k, ≤ 2k, ≤ 4k, …) and each bucket is padded
    into a dense block, so one ``argpartition`` per bucket replaces a Python
    loop over rows: at most twice the stored values are touched. Equal values
    are listed lower column first.
    """
    matrix = matrix.tocsr()
    n_rows = matrix.shape[0]
    out_cols = np.full((n_rows, k), -1, dtype=np.int64)
    out_vals = np.zeros((n_rows, k), dtype=np.float32)
    if k <= 0 or matrix.nnz == 0:
        return out_cols, out_vals
    lengths = np.diff(matrix.indptr)
    longest = int(lengths.max())
    low, high = 0, k
    while low < longest:
        rows = np.flatnonzero((lengths > low) & (lengths <= high))
        low, high = high, high * 2
        if rows.size == 0:
            continue
        width = int(lengths[rows].max())
        offsets = np.arange(width)
        valid = offsets[None, :] < lengths[rows][:, None]
        positions = np.where(valid, matrix.indptr[rows][:, None] + offsets[None, :], 0)
        values = np.where(valid, matrix.data[positions], -np.inf)
        take = min(k, width)
        if width > take:
            chosen = np.argpartition(-values, take - 1, axis=1)[:, :take]
        else:
            chosen = np.broadcast_to(offsets, (rows.size, width))
        chosen_values = np.take_along_axis(values, chosen, axis=1)
        chosen_columns = matrix.indices[np.take_along_axis(positions, chosen, axis=1)]
        # Best first; equal values: the lower column first.
        order = np.lexsort((chosen_columns, -chosen_values), axis=1)
        chosen_values = np.take_along_axis(chosen_values, order, axis=1)
        columns = np.take_along_axis(chosen_columns, order, axis=1)
        finite = np.isfinite(chosen_values)
        out_cols[rows, :take] = np.where(finite, columns, -1)
        out_vals[rows, :take] = np.where(finite, chosen_values, 0.0)
    return out_cols, out_vals


def rank_scores(scores: np.ndarray, n: int, *, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best items of one score vector (ties: lower item id first), skipping disallowed ones."""
    scores = np.asarray(scores, dtype=np.float64)
    candidates = np.flatnonzero(np.isfinite(scores) if allowed is None else (allowed & np.isfinite(scores)))
    if candidates.size == 0:
        return np.full(n, -1, dtype=np.int64), np.zeros(n, dtype=np.float32)
    order = candidates[np.lexsort((candidates, -scores[candidates]))][:n]
    items = np.full(n, -1, dtype=np.int64)
    values = np.zeros(n, dtype=np.float32)
    items[: order.size] = order
    values[: order.size] = scores[order]
    return items, values


def _mask_entries(matrix: sp.csr_matrix, blocked_items: np.ndarray | None) -> sp.csr_matrix:
    """Drop the stored entries whose item (column) is blocked."""
    if blocked_items is None or not blocked_items.any() or matrix.nnz == 0:
        return matrix
    keep = ~blocked_items[matrix.indices]
    if keep.all():
        return matrix
    rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))[keep]
    masked = sp.csr_matrix((matrix.data[keep], (rows, matrix.indices[keep])), shape=matrix.shape)
    masked.sort_indices()
    return masked


_SEEN = np.float32(-1e30)


def _top_allowed(
    scores: sp.csr_matrix,
    n: int,
    *,
    blocked: np.ndarray,
    sensitive_items: np.ndarray,
    may_sensitive: np.ndarray,
    seen: sp.csr_matrix | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``n`` per row of a candidate score matrix, without blocked or already-seen items,
    and without sensitive items for rows that may not receive them."""
    scores = scores.tocsr().astype(np.float32)
    if seen is not None and seen.nnz:
        # Items the row already has sink far below any score (one C-level sparse add).
        sink = seen.tocsr().astype(np.float32, copy=True)
        sink.data[:] = _SEEN
        scores = (scores + sink).tocsr()
    drop = blocked[scores.indices] | (scores.data <= _SEEN / 2)
    if not may_sensitive.all():
        row_of = np.repeat(np.arange(scores.shape[0]), np.diff(scores.indptr))
        drop |= ~may_sensitive[row_of] & sensitive_items[scores.indices]
    scores.data[drop] = -np.inf
    return topk_per_row(scores, n)


def _row_blocks(rows: np.ndarray, sensitive_ok: np.ndarray | None) -> np.ndarray:
    """Per requested row: may it receive sensitive items?"""
    if sensitive_ok is None:
        return np.ones(len(rows), dtype=bool)
    return np.asarray(sensitive_ok, dtype=bool)


# --- the interface -------------------------------------------------------------------


class Strategy(ABC):
    """One personalization level. ``personal``: its lists are derived from the subject's own data."""

    level: ClassVar[str]
    personal: ClassVar[bool]

    def __init__(self, *, include_sensitive: bool = False):
        # Whether sensitive categories may appear at all (the treatment's policy is not
        # "exclude"). Per subject, ``recommend``'s ``sensitive_ok`` narrows it further.
        self.include_sensitive = include_sensitive
        self.data: TrainingData | None = None

    @abstractmethod
    def fit(self, data: TrainingData) -> Strategy: ...

    @abstractmethod
    def recommend(
        self,
        *,
        rows: np.ndarray,
        evidence: sp.csr_matrix | None,
        n: int,
        sensitive_ok: np.ndarray | None = None,
    ) -> TopN:
        """Top-``n`` per requested row.

        ``evidence`` (one row per requested row, items as columns) is what the
        strategy may use about each subject; ``sensitive_ok`` says per row
        whether sensitive items may be recommended to that subject.
        """

    def _blocked_items(self) -> np.ndarray:
        assert self.data is not None, "fit first"
        if self.include_sensitive:
            return np.zeros(self.data.n_items, dtype=bool)
        return self.data.item_sensitive.copy()

    def params(self) -> dict:
        return {"include_sensitive": self.include_sensitive}


# --- popularity ----------------------------------------------------------------------


class PopularityStrategy(Strategy):
    """Non-personal best sellers: items ranked by how many distinct subjects chose them."""

    level = "popularity"
    personal = False

    def fit(self, data: TrainingData) -> PopularityStrategy:
        self.data = data
        # Distinct subjects, not summed weights: one heavy buyer cannot make a best seller.
        self.counts = np.bincount(data.interactions.indices, minlength=data.n_items).astype(np.float64)
        return self

    def ranking(self, n: int, *, sensitive: bool = False) -> tuple[np.ndarray, np.ndarray]:
        allowed = ~self._blocked_items() if sensitive else ~(self._blocked_items() | self.data.item_sensitive)
        allowed &= self.counts > 0
        return rank_scores(self.counts, n, allowed=allowed)

    def recommend(self, *, rows, evidence, n, sensitive_ok=None) -> TopN:
        # Non-personal: sensitive items only where the policy includes them, for everyone alike.
        items, scores = self.ranking(n, sensitive=self.include_sensitive)
        total = max(self.counts.max(initial=0.0), 1.0)
        return TopN(items=np.tile(items, (len(rows), 1)), scores=np.tile(scores / total, (len(rows), 1)))


# --- item-item collaborative filtering ------------------------------------------------


def bm25_weight(matrix: sp.csr_matrix, *, k1: float = 1.2, b: float = 0.75) -> sp.csr_matrix:
    """BM25 weighting of a subjects × items matrix (items as documents, subjects as terms).

    The formula and defaults of implicit's ``BM25Recommender``, so the two can be compared.
    """
    items_by_subject = matrix.T.tocsr().astype(np.float64)
    coo = items_by_subject.tocoo()
    n_items = float(items_by_subject.shape[0])
    idf = np.log(n_items) - np.log1p(np.bincount(coo.col, minlength=items_by_subject.shape[1]))
    lengths = np.asarray(items_by_subject.sum(axis=1)).ravel()
    average = lengths.mean() if lengths.size and lengths.mean() > 0 else 1.0
    length_norm = (1.0 - b) + b * lengths / average
    data = coo.data * (k1 + 1.0) / (k1 * length_norm[coo.row] + coo.data) * idf[coo.col]
    weighted = sp.csr_matrix((data.astype(np.float32), (coo.row, coo.col)), shape=items_by_subject.shape)
    return weighted.T.tocsr()


def _blocks(rows: int) -> int:
    """How many blocks a kernel splits its rows into: a few per thread, for balance."""
    return max(1, min(rows, numba.get_num_threads() * 8))


# numba's default threading layer (workqueue) must not be entered by two threads of one process
# at once (a threaded Celery pool, a test driving builds from threads): one kernel at a time.
_KERNEL_LOCK = threading.Lock()


def item_item_similarity(
    interactions: sp.csr_matrix, *, neighbours: int, weighting: str = "cosine", min_support: int = 1
) -> sp.csr_matrix:
    """Items × items, keeping each item's ``neighbours`` most similar others (no self-similarity).

    A pair is kept only when at least ``min_support`` distinct subjects chose
    both items: a similarity from fewer co-purchases would reveal what
    individuals bought (Calandrino et al., IEEE S&P 2011). The compiled kernel
    (``kernels.neighbours_with_support``) accumulates one item's co-occurrences
    at a time into a reused buffer, so a staple co-bought with most of the
    catalog costs one pass, never a dense row of the Gram matrix.
    """
    if neighbours < 1:
        raise ValueError("neighbours must be at least 1")
    if min_support < 1:
        raise ValueError("min_support must be at least 1")
    if weighting == "cosine":
        weighted = interactions.tocsr().astype(np.float32)
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=0)).ravel())
        norms[norms == 0] = 1.0
    elif weighting == "bm25":
        weighted = bm25_weight(interactions)
        norms = np.ones(weighted.shape[1], dtype=np.float64)
    else:
        raise ValueError(f"unknown weighting {weighting!r}: cosine or bm25")
    weighted.sort_indices()
    by_item = weighted.T.tocsr()
    n_items = weighted.shape[1]
    with _KERNEL_LOCK:
        columns, values, _ = kernels.neighbours_with_support(
            by_item.indptr, by_item.indices, by_item.data, weighted.indptr, weighted.indices, weighted.data,
            norms.astype(np.float64), int(neighbours), int(min_support), _blocks(n_items),
        )
    keep = columns >= 0
    counts = keep.sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    similarity = sp.csr_matrix((values[keep], columns[keep], indptr), shape=(n_items, n_items), dtype=np.float32)
    similarity.sort_indices()
    return similarity


def score_with_similarity(
    evidence: sp.csr_matrix,
    similarity: sp.csr_matrix,
    n: int,
    *,
    blocked: np.ndarray,
    item_sensitive: np.ndarray,
    may_sensitive: np.ndarray,
    exclude_evidence: bool = True,
) -> TopN:
    """Top-``n`` per evidence row by Σ_j evidence(j)·similarity(j, i), with reasons and sensitive evidence.

    ``because`` is the evidence item that contributed most to each entry;
    ``sensitive_evidence`` whether a sensitive evidence item contributed at all.
    """
    evidence = evidence.tocsr().astype(np.float32)
    evidence.sort_indices()
    if evidence.shape[0] == 0:
        empty = np.zeros((0, n), dtype=np.int64)
        return TopN(items=empty, scores=np.zeros((0, n), np.float32), because=empty.copy(),
                    sensitive_evidence=np.zeros((0, n), dtype=bool))
    with _KERNEL_LOCK:
        items, scores, because, sensitive = kernels.score_rows(
            evidence.indptr, evidence.indices, evidence.data, similarity.indptr, similarity.indices,
            similarity.data, np.asarray(blocked, dtype=np.bool_), np.asarray(item_sensitive, dtype=np.bool_),
            np.asarray(may_sensitive, dtype=np.bool_), bool(exclude_evidence), int(n), _blocks(evidence.shape[0]),
        )
    return TopN(items=items, scores=scores, because=because, sensitive_evidence=sensitive)


def buy_again_slots(n: int, share: float) -> np.ndarray:
    """Which of ``n`` list positions go to "buy again" (True) under a share of the list.

    Position p (0-based) is a re-buy slot when ⌈(p + 1)·share⌉ > ⌈p·share⌉:
    share 0.5 alternates re-buy, new, re-buy, …; 1/3 gives re-buy, new, new, ….
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError("the buy-again share is between 0 and 1")
    positions = np.arange(n, dtype=np.float64)
    # A hair below each product so that exact multiples are not rounded up by float error.
    return np.ceil((positions + 1) * share - 1e-9) > np.ceil(positions * share - 1e-9)


def blend_buy_again(new: TopN, rebuy_items: np.ndarray, rebuy_scores: np.ndarray, n: int, share: float) -> TopN:
    """Interleave re-buy candidates into new-item lists by ``buy_again_slots``; either fills the other's gaps.

    Candidate t of a kind takes that kind's t-th slot; sorting the candidates
    by slot and keeping the first ``n`` compacts a shorter kind's gaps.
    """
    rows = new.items.shape[0]
    pattern = buy_again_slots(2 * n, share)
    rebuy_positions = np.flatnonzero(pattern)
    new_positions = np.flatnonzero(~pattern)

    def keys_for(positions: np.ndarray, width: int) -> np.ndarray:
        keys = np.full(width, np.inf)
        take = min(width, positions.size)
        keys[:take] = positions[:take]
        # Beyond the pattern (one kind ran out of slots): after everything, in order.
        keys[take:] = 4 * n + np.arange(width - take)
        return keys

    items = np.concatenate([new.items, rebuy_items], axis=1)
    keys = np.concatenate(
        [np.tile(keys_for(new_positions, new.items.shape[1]), (rows, 1)),
         np.tile(keys_for(rebuy_positions, rebuy_items.shape[1]), (rows, 1))], axis=1)
    if share <= 0:
        keys[:, new.items.shape[1]:] = np.inf
    keys[items < 0] = np.inf
    order = np.argsort(keys, axis=1, kind="stable")[:, :n]
    chosen = np.take_along_axis(items, order, axis=1)
    empty = np.take_along_axis(keys, order, axis=1) == np.inf
    chosen[empty] = -1

    def pick(first: np.ndarray, second: np.ndarray, fill) -> np.ndarray:
        merged = np.take_along_axis(np.concatenate([first, second], axis=1), order, axis=1)
        merged[empty] = fill
        return merged

    is_rebuy = order >= new.items.shape[1]
    is_rebuy[empty] = False
    width = rebuy_items.shape[1]
    because = new.because if new.because is not None else np.full(new.items.shape, -1)
    sensitive = new.sensitive_evidence if new.sensitive_evidence is not None else np.zeros(new.items.shape, bool)
    return TopN(
        items=chosen,
        scores=pick(new.scores, rebuy_scores.astype(np.float32), 0.0),
        # A re-buy is explained by the item itself, and is sensitive evidence when the item is.
        because=pick(because, rebuy_items, -1),
        sensitive_evidence=pick(sensitive, np.zeros((rows, width), dtype=bool), False),
        rebuy=is_rebuy,
    )


class ItemItemStrategy(Strategy):
    """``full``: item-item collaborative filtering over the subject's purchase and click history.

    score(subject, i) = Σ_j history(subject, j) · sim(j, i), over each item's
    ``neighbours`` most similar items (cosine or BM25 weighting), each pair
    supported by at least ``min_support`` distinct subjects; items the subject
    already has are not recommended as new.

    Buy again (``buy_again_share`` > 0, and items marked repeatable): the
    subject's own purchases of repeatable items are candidates too, scored
    frequency × 2^(−days since the last purchase / ``buy_again_half_life_days``),
    and take that share of the list's slots (``buy_again_slots``); when there
    are fewer of one kind, the other fills the list.
    """

    level = "full"
    personal = True

    def __init__(self, *, neighbours: int = 50, weighting: str = "cosine", include_sensitive: bool = False,
                 explain: bool = False, saturate: bool = True, min_support: int = 5,
                 buy_again_share: float = 0.0, buy_again_half_life_days: float = 30.0):
        super().__init__(include_sensitive=include_sensitive)
        if neighbours < 1:
            raise ValueError("neighbours must be at least 1")
        if min_support < 1:
            raise ValueError("min_support must be at least 1")
        if not 0.0 <= buy_again_share <= 1.0:
            raise ValueError("buy_again_share is between 0 and 1")
        if buy_again_half_life_days <= 0:
            raise ValueError("buy_again_half_life_days must be positive")
        self.neighbours = neighbours
        self.weighting = weighting
        self.explain = explain
        # A purchase counts once however often it is repeated (a click half): otherwise the
        # staples a subject re-buys every week dominate both the similarities and their scores.
        # BM25 saturates repeats itself (its k1), so it gets the raw counts, as implicit does.
        self.saturate = saturate and weighting == "cosine"
        self.min_support = min_support
        self.buy_again_share = buy_again_share
        self.buy_again_half_life_days = buy_again_half_life_days

    def params(self) -> dict:
        return {**super().params(), "neighbours": self.neighbours, "weighting": self.weighting,
                "saturate": self.saturate, "min_support": self.min_support,
                "buy_again_share": self.buy_again_share, "buy_again_half_life_days": self.buy_again_half_life_days}

    def _weights(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        matrix = matrix.tocsr().astype(np.float32)
        if self.saturate:
            matrix = matrix.copy()
            np.minimum(matrix.data, 1.0, out=matrix.data)
        return matrix

    def fit(self, data: TrainingData) -> ItemItemStrategy:
        self.data = data
        self.similarity = item_item_similarity(
            self._weights(data.interactions), neighbours=self.neighbours, weighting=self.weighting,
            min_support=self.min_support,
        )
        return self

    def recommend(self, *, rows, evidence, n, sensitive_ok=None, exclude_evidence: bool = True) -> TopN:
        assert self.data is not None, "fit first"
        rows = np.asarray(rows, dtype=np.int64)
        if evidence is None:
            evidence = self.data.interactions[rows]
        evidence = self._weights(evidence)
        may_sensitive = _row_blocks(rows, sensitive_ok)
        top = score_with_similarity(
            evidence, self.similarity, n, blocked=self._blocked_items(), item_sensitive=self.data.item_sensitive,
            may_sensitive=may_sensitive, exclude_evidence=exclude_evidence,
        )
        if self.buy_again_share > 0 and self.data.item_repeatable is not None:
            rebuy_items, rebuy_scores = self._rebuy_candidates(rows, evidence, n, may_sensitive)
            top = blend_buy_again(top, rebuy_items, rebuy_scores, n, self.buy_again_share)
            # A re-buy of a sensitive item is sensitive evidence itself.
            sensitive_rebuy = top.rebuy & self.data.item_sensitive[np.maximum(top.items, 0)] & (top.items >= 0)
            top = TopN(items=top.items, scores=top.scores, because=top.because,
                       sensitive_evidence=top.sensitive_evidence | sensitive_rebuy, rebuy=top.rebuy)
        if not self.explain:
            top = TopN(items=top.items, scores=top.scores, sensitive_evidence=top.sensitive_evidence, rebuy=top.rebuy)
        return top

    def buy_again_scores(self, rows: np.ndarray, evidence: sp.csr_matrix) -> sp.csr_matrix:
        """Rows × items: the re-buy score of each repeatable item the row's evidence holds and the subject ordered."""
        data = self.data
        purchases = data.purchases[rows] if data.purchases is not None else data.interactions[rows]
        present = evidence.copy()
        present.data[:] = 1.0
        candidates = purchases.multiply(present).tocsr()
        candidates = _mask_entries(candidates, ~data.item_repeatable | self._blocked_items())
        candidates.eliminate_zeros()
        if data.last_purchased is not None and data.as_of is not None and candidates.nnz:
            last = data.last_purchased[rows].tocsr()
            # Elementwise: the pattern of ``candidates`` is a subset of ``last``'s.
            last_at = np.asarray(last[np.repeat(np.arange(candidates.shape[0]), np.diff(candidates.indptr)),
                                      candidates.indices]).ravel()
            age_days = np.maximum(data.as_of - last_at, 0.0) / 86400.0
            candidates.data = (candidates.data * np.exp2(-age_days / self.buy_again_half_life_days)).astype(np.float32)
        return candidates

    def _rebuy_candidates(self, rows, evidence, n, may_sensitive) -> tuple[np.ndarray, np.ndarray]:
        candidates = self.buy_again_scores(rows, evidence)
        if not may_sensitive.all() and candidates.nnz:
            row_of = np.repeat(np.arange(candidates.shape[0]), np.diff(candidates.indptr))
            candidates.data[~may_sensitive[row_of] & self.data.item_sensitive[candidates.indices]] = 0.0
            candidates.eliminate_zeros()
        return topk_per_row(candidates, n)

    def neighbours_of(self, item: int) -> list[tuple[int, float]]:
        start, end = self.similarity.indptr[item], self.similarity.indptr[item + 1]
        order = np.lexsort((self.similarity.indices[start:end], -self.similarity.data[start:end]))
        return list(zip(self.similarity.indices[start:end][order].tolist(),
                        self.similarity.data[start:end][order].tolist(), strict=True))


class SessionStrategy(ItemItemStrategy):
    """``session``: item-item scores from the items of the current session only.

    The similarity is learned from consenting subjects' histories, like
    ``full`` (with the same support threshold); what it is applied to is only
    what the request carries, so nothing about the subject is stored — and
    there is no "buy again", which would need their history.
    """

    level = "session"
    personal = True

    def __init__(self, **kwargs):
        kwargs.pop("buy_again_share", None)
        super().__init__(**kwargs, buy_again_share=0.0)

    def recommend(self, *, rows, evidence, n, sensitive_ok=None, exclude_evidence: bool = True) -> TopN:
        if evidence is None:
            raise ValueError("the session strategy recommends from the session's items only")
        return super().recommend(rows=rows, evidence=evidence, n=n, sensitive_ok=sensitive_ok,
                                 exclude_evidence=exclude_evidence)


# --- k-anonymous cohorts ---------------------------------------------------------------

# Coarse attributes kept at each generalisation level, most specific first (indices
# into (age_band, province, platform)); the affinity category is always kept until
# the root cohort, which keeps nothing.
COHORT_LEVELS: tuple[tuple[int, ...], ...] = ((0, 1, 2), (0, 2), (0,), ())
ATTRIBUTE_NAMES = ("age", "province", "platform")


@dataclass
class Cohorts:
    keys: list[str]
    sizes: np.ndarray
    membership: np.ndarray  # per subject row: cohort index, −1 for none
    lists: list[list[tuple[int, float]]] = field(default_factory=list)
    category_of: list[int] = field(default_factory=list)  # per cohort: its affinity category (−1: the root)


def _cohort_key(names: tuple[str, ...], category: int, attributes: tuple[str, ...], kept: tuple[int, ...] | None) -> str:
    """A cohort's key at one generalisation level (None: the root, which keeps nothing)."""
    if kept is None:
        return "*"
    parts = [f"category={names[category]}"]
    parts += [f"{ATTRIBUTE_NAMES[i]}={attributes[i] or '?'}" for i in kept]
    return "|".join(parts)


def _nearest_cohort(category_of: list[int], members: list[list[int]], category: int) -> int:
    """The largest cohort of the same affinity, else the largest of all."""
    same = [i for i, c in enumerate(category_of) if c == category]
    return max(same or range(len(members)), key=lambda i: len(members[i]))


class CohortStrategy(Strategy):
    """``cohort``: recommendations per k-anonymous cohort, never per individual.

    Subjects with history are grouped by category affinity and coarse
    attributes (age band, province, platform); any group smaller than ``k``
    is merged into its generalisation (dropping province, then platform, then
    age band, then the category), and what is left below ``k`` at the root
    joins the nearest cohort with the same affinity, or the largest.

    A cohort's list is learnt from the cohort's *pooled* interactions, never
    from an individual profile: its profile p(c, j) is the share of members
    who chose item j, counting only items at least ``min_item_support``
    members chose; the list ranks items by

        score(c, i) = p(c, i) + ``learn`` · Σ_j p(c, j) · sim(j, i)

    where sim is the item-item similarity of all consenting subjects, each
    pair supported by at least ``min_item_support`` subjects. The second term
    brings in what is co-bought with the cohort's typical items — where
    popularity, inside a cohort or out, sees only what is common. ``learn``
    = 0 is the plain ranking by distinct members.
    """

    level = "cohort"
    personal = True

    def __init__(self, *, k: int, min_item_support: int = 5, include_sensitive: bool = False, list_size: int = 100,
                 learn: float = 1.0, neighbours: int = 50):
        super().__init__(include_sensitive=include_sensitive)
        if k < 2:
            raise ValueError("k must be at least 2")
        if min_item_support < 1:
            raise ValueError("min_item_support must be at least 1")
        if learn < 0:
            raise ValueError("learn must not be negative")
        self.k = k
        self.min_item_support = min_item_support
        self.list_size = list_size
        self.learn = learn
        self.neighbours = neighbours

    def params(self) -> dict:
        return {**super().params(), "k": self.k, "min_item_support": self.min_item_support, "learn": self.learn,
                "neighbours": self.neighbours}

    def fit(self, data: TrainingData) -> CohortStrategy:
        self.data = data
        self.cohorts = self._form_cohorts(data)
        self._rank_cohorts(data)
        return self

    def _affinity(self, data: TrainingData, matrix: sp.csr_matrix | None = None) -> np.ndarray:
        """Per row: the category it over-chooses most (−1 without any interaction).

        The excess of the row's items in a category over what the population's
        category shares predict for a row of its size: a grocery shopper's
        largest category is produce for nearly everyone, their excess tells
        the baby-care or pet-food household apart. Ties: the lower category.
        """
        matrix = (data.interactions if matrix is None else matrix).tocsr()
        n_categories = len(data.category_sensitive)
        rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
        counts = sp.csr_matrix(
            (np.ones(matrix.nnz, dtype=np.float64), (rows, data.item_category[matrix.indices])),
            shape=(matrix.shape[0], n_categories),
        )
        counts.sum_duplicates()
        population = np.bincount(data.item_category[data.interactions.indices], minlength=n_categories)
        share = population / max(population.sum(), 1)
        totals = np.diff(matrix.indptr).astype(np.float64)
        count_rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
        # Shifted to stay positive (a stored value must win over the absent ones), a hair off per category.
        counts.data = counts.data - totals[count_rows] * share[counts.indices] + totals[count_rows] + 1.0 \
            - counts.indices * 1e-7
        columns, _ = topk_per_row(counts, 1)
        return columns[:, 0]

    def _form_cohorts(self, data: TrainingData) -> Cohorts:
        affinity = self._affinity(data)
        attributes = data.attributes or tuple(("", "", "") for _ in range(data.n_subjects))
        names = data.category_names or tuple(str(c) for c in range(len(data.category_sensitive)))
        population = np.flatnonzero(affinity >= 0)
        membership = np.full(data.n_subjects, -1, dtype=np.int64)
        keys: list[str] = []
        members: list[list[int]] = []
        category_of: list[int] = []
        pending = population.tolist()
        for kept in (*COHORT_LEVELS, None):
            groups: dict[str, list[int]] = {}
            for row in pending:
                groups.setdefault(_cohort_key(names, affinity[row], attributes[row], kept), []).append(row)
            pending = []
            for key, group in sorted(groups.items()):
                if len(group) >= self.k:
                    keys.append(key)
                    members.append(group)
                    category_of.append(int(affinity[group[0]]) if kept is not None else -1)
                else:
                    pending.extend(group)
        if pending and members:
            # The root's remainder (< k): join a cohort of the same affinity, else the largest.
            for row in pending:
                members[_nearest_cohort(category_of, members, affinity[row])].append(row)
            pending = []
        for index, group in enumerate(members):
            membership[group] = index
        cohorts = Cohorts(keys=keys, sizes=np.array([len(g) for g in members], dtype=np.int64), membership=membership)
        cohorts.category_of = category_of
        return cohorts

    def membership_from(self, *, rows: np.ndarray, evidence: sp.csr_matrix,
                        attributes: Sequence[tuple[str, str, str]] | None = None) -> np.ndarray:
        """The existing cohort each row would join with only this evidence (−1: none), e.g. without its
        sensitive items: the most specific cohort of its affinity and attributes, as in ``fit``.

        ``rows`` index the fitted data's attributes unless ``attributes`` gives them, one per row
        (subjects the model was not fitted on: ``recommender.offline``); the category shares that
        define an affinity are always the fitted data's.
        """
        assert self.data is not None, "fit first"
        cohorts = self.cohorts
        affinity = self._affinity(self.data, evidence)
        if attributes is not None:
            given = list(attributes)
            attributes, rows = given, np.arange(len(given))
        else:
            attributes = self.data.attributes or tuple(("", "", "") for _ in range(self.data.n_subjects))
        names = self.data.category_names or tuple(str(c) for c in range(len(self.data.category_sensitive)))
        index = {key: i for i, key in enumerate(cohorts.keys)}
        members = [[0] * int(size) for size in cohorts.sizes]  # only the sizes matter to the nearest rule
        out = np.full(len(rows), -1, dtype=np.int64)
        for r, row in enumerate(np.asarray(rows).tolist()):
            if affinity[r] < 0 or not cohorts.keys:
                continue
            for kept in (*COHORT_LEVELS, None):
                key = _cohort_key(names, affinity[r], attributes[row], kept)
                if key in index:
                    out[r] = index[key]
                    break
            else:
                out[r] = _nearest_cohort(cohorts.category_of, members, affinity[r])
        return out

    def _rank_cohorts(self, data: TrainingData) -> None:
        cohorts = self.cohorts
        matrix = data.interactions
        if not cohorts.keys:
            return
        rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
        in_cohort = cohorts.membership[rows] >= 0
        support = sp.csr_matrix(
            (np.ones(int(in_cohort.sum()), dtype=np.float32),
             (cohorts.membership[rows][in_cohort], matrix.indices[in_cohort])),
            shape=(len(cohorts.keys), data.n_items),
        )
        support.sum_duplicates()
        # An item fewer than m members chose is not part of the cohort's profile: it would be theirs.
        support.data[support.data < self.min_item_support] = 0
        support.eliminate_zeros()
        profile = (sp.diags(1.0 / cohorts.sizes.astype(np.float64)) @ support).tocsr()
        scores = profile
        if self.learn > 0 and profile.nnz:
            saturated = matrix.astype(np.float32)
            saturated.data = np.minimum(saturated.data, 1.0)
            similarity = item_item_similarity(saturated, neighbours=self.neighbours,
                                              min_support=self.min_item_support)
            scores = (profile + self.learn * (profile @ similarity)).tocsr()
        global_counts = np.bincount(matrix.indices, minlength=data.n_items).astype(np.float64)
        # Ties between equal scores go to the globally more popular item.
        tie_break = global_counts / (global_counts.max(initial=0.0) + 1.0) * 1e-6
        scores = scores.astype(np.float64)
        scores.data = scores.data + tie_break[scores.indices]
        scores = _mask_entries(scores, self._blocked_items())
        columns, values = topk_per_row(scores, self.list_size)
        cohorts.lists = [
            [(int(c), round(float(v), 6)) for c, v in zip(columns[i], values[i], strict=True) if c >= 0]
            for i in range(len(cohorts.keys))
        ]

    def recommend(self, *, rows, evidence, n, sensitive_ok=None) -> TopN:
        assert self.data is not None, "fit first"
        # ``evidence`` is ignored on purpose: a cohort's members all get the cohort's list.
        rows = np.asarray(rows, dtype=np.int64)
        cohort_of = self.cohorts.membership[rows]
        may_sensitive = _row_blocks(rows, sensitive_ok)
        out = _empty_topn(len(rows), n)
        if not self.cohorts.keys:
            return TopN(items=out.items, scores=out.scores, cohorts=cohort_of)
        sensitive_items = self.data.item_sensitive
        tables = {}
        for flag in (False, True):
            items = np.full((len(self.cohorts.keys), n), -1, dtype=np.int64)
            scores = np.zeros((len(self.cohorts.keys), n), dtype=np.float32)
            for c, entries in enumerate(self.cohorts.lists):
                kept = [(i, v) for i, v in entries if flag or not sensitive_items[i]][:n]
                if kept:
                    items[c, : len(kept)] = [i for i, _ in kept]
                    scores[c, : len(kept)] = [v for _, v in kept]
            tables[flag] = (items, scores)
        for flag in (False, True):
            chosen = np.flatnonzero((cohort_of >= 0) & (may_sensitive == flag))
            out.items[chosen] = tables[flag][0][cohort_of[chosen]]
            out.scores[chosen] = tables[flag][1][cohort_of[chosen]]
        return TopN(items=out.items, scores=out.scores, cohorts=cohort_of)


# --- differentially private popularity ---------------------------------------------------


def analytic_gaussian_sigma(*, epsilon: float, delta: float, sensitivity: float) -> float:
    """The smallest σ for which the Gaussian mechanism is (ε, δ)-DP (Balle & Wang, 2018, Thm. 8).

    Unlike the classic σ = Δ·√(2 ln(1.25/δ))/ε it holds for every ε > 0, and is tighter.
    """
    if epsilon <= 0 or not 0 < delta < 1 or sensitivity <= 0:
        raise ValueError("need epsilon > 0, 0 < delta < 1 and sensitivity > 0")

    def delta_of(sigma: float) -> float:
        a = sensitivity / (2 * sigma)
        b = epsilon * sigma / sensitivity
        return float(norm.cdf(a - b) - math.exp(epsilon) * norm.cdf(-a - b))

    low, high = 1e-6 * sensitivity, sensitivity
    while delta_of(high) > delta:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        if delta_of(middle) > delta:
            low = middle
        else:
            high = middle
    return high


def clip_contributions(interactions: sp.csr_matrix, *, clip: int, last_seen: sp.csr_matrix | None = None) -> sp.csr_matrix:
    """Keep at most ``clip`` distinct items per subject, each counted once (value 1).

    This bounds one subject's influence on the item histogram: L1 sensitivity
    ``clip``, L2 sensitivity √clip. The most recent items are kept (by
    ``last_seen``), else those with the highest weight.
    """
    matrix = interactions.tocsr()
    ranking = last_seen.tocsr() if last_seen is not None else matrix
    if ranking.nnz != matrix.nnz:
        raise ValueError("last_seen must have the interactions' sparsity pattern")
    columns, _ = topk_per_row(sp.csr_matrix((ranking.data.astype(np.float64), ranking.indices, ranking.indptr), shape=ranking.shape), clip)
    keep = columns >= 0
    rows = np.nonzero(keep)[0]
    return sp.csr_matrix((np.ones(rows.size, dtype=np.float64), (rows, columns[keep])), shape=matrix.shape)


def mechanism_scale(*, mechanism: str, epsilon: float, delta: float, l1: float, l2: float) -> float:
    """The noise scale of one release: Laplace b = Δ₁/ε, or the analytic Gaussian σ for (ε, δ) and Δ₂."""
    if mechanism == "laplace":
        return l1 / epsilon
    if mechanism == "gaussian":
        return analytic_gaussian_sigma(epsilon=epsilon, delta=delta, sensitivity=l2)
    raise ValueError("mechanism is laplace or gaussian")


def _noise(rng: np.random.Generator, mechanism: str, scale: float, size) -> np.ndarray:
    if mechanism == "laplace":
        return rng.laplace(0.0, scale, size=size)
    return rng.normal(0.0, scale, size=size)


def _noise_std(mechanism: str, scale: float) -> float:
    return scale * math.sqrt(2.0) if mechanism == "laplace" else scale


class DifferentiallyPrivateStrategy(Strategy):
    """What the DP strategies share: the budget (ε, δ) one ``fit`` spends and the noisy item counts.

    Each subject contributes at most ``clip`` distinct items (their most
    recent), each counted once; every released item of the catalog —
    including those nobody chose, so that the released set itself leaks
    nothing — gets noise: Laplace of scale clip/ε, or Gaussian calibrated to
    (ε, δ) with L2 sensitivity √clip. Noise comes from fresh OS entropy unless
    a seed is given (tests): noise that could be regenerated from public
    inputs could be subtracted again.
    """

    def __init__(self, *, epsilon: float, clip: int = 20, mechanism: str = "laplace", delta: float = 1e-6,
                 include_sensitive: bool = False, seed: int | None = None):
        super().__init__(include_sensitive=include_sensitive)
        if not epsilon or epsilon <= 0:
            raise ValueError("epsilon must be positive")
        if clip < 1:
            raise ValueError("clip must be at least 1")
        if mechanism not in ("laplace", "gaussian"):
            raise ValueError("mechanism is laplace or gaussian")
        if mechanism == "gaussian" and not 0 < delta < 1:
            raise ValueError("the Gaussian mechanism needs 0 < delta < 1")
        self.epsilon = float(epsilon)
        self.clip = int(clip)
        self.mechanism = mechanism
        self.delta = float(delta) if mechanism == "gaussian" else 0.0
        self.seed = seed

    def params(self) -> dict:
        return {**super().params(), "epsilon": self.epsilon, "clip": self.clip, "mechanism": self.mechanism,
                "delta": self.delta}

    @property
    def budget(self) -> tuple[float, float]:
        """(ε, δ) that one ``fit`` spends."""
        return self.epsilon, self.delta

    def _noisy_item_counts(self, data: TrainingData, rng: np.random.Generator, *, epsilon: float,
                           delta: float) -> tuple[np.ndarray, float]:
        """User-level DP counts of every released item (−inf: not released), and the noise scale used."""
        released = ~self._blocked_items()
        usable = data.interactions
        last_seen = data.last_seen
        if not released.all():
            # Items outside the release are removed before clipping, so the clip is spent on released items.
            usable = _mask_entries(usable, ~released)
            if last_seen is not None:
                last_seen = _mask_entries(last_seen, ~released)
        clipped = clip_contributions(usable, clip=self.clip, last_seen=last_seen)
        true_counts = np.bincount(clipped.indices, minlength=data.n_items).astype(np.float64)
        scale = mechanism_scale(mechanism=self.mechanism, epsilon=epsilon, delta=delta, l1=self.clip,
                                l2=math.sqrt(self.clip))
        noisy = true_counts + _noise(rng, self.mechanism, scale, data.n_items)
        noisy[~released] = -np.inf
        return noisy, scale

    def overall_ranking(self, n: int, *, sensitive: bool) -> tuple[np.ndarray, np.ndarray]:
        """The noisy best sellers (post-processing: no further budget)."""
        allowed = np.isfinite(self.noisy_counts)
        if not sensitive:
            allowed &= ~self.data.item_sensitive
        return rank_scores(self.noisy_counts, n, allowed=allowed)


class DPPopularityStrategy(DifferentiallyPrivateStrategy):
    """``dp_popularity``: popularity per category with user-level differential privacy.

    The noisy item counts (``DifferentiallyPrivateStrategy``) are the only
    output derived from the data: rankings per category and overall are
    post-processing and cost no further budget. Recommending to a consenting
    subject spreads the list over the categories of their own history (their
    data, for them only); everyone else gets the overall noisy ranking.
    """

    level = "dp_popularity"
    personal = False

    @property
    def noise_scale(self) -> float:
        """Laplace b, or Gaussian σ."""
        return mechanism_scale(mechanism=self.mechanism, epsilon=self.epsilon, delta=self.delta, l1=self.clip,
                               l2=math.sqrt(self.clip))

    def fit(self, data: TrainingData) -> DPPopularityStrategy:
        self.data = data
        rng = np.random.default_rng(self.seed)
        self.noisy_counts, _ = self._noisy_item_counts(data, rng, epsilon=self.epsilon, delta=self.delta)
        return self

    def category_ranking(self, category: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        allowed = (self.data.item_category == category) & np.isfinite(self.noisy_counts)
        return rank_scores(self.noisy_counts, n, allowed=allowed)

    def recommend(self, *, rows, evidence, n, sensitive_ok=None) -> TopN:
        """Per row: the categories of the row's evidence, in proportion, then the overall ranking.

        Item i of category c scores share(c) / (1 + rank of i in c), so the list
        interleaves the subject's categories in proportion to their interest;
        the overall noisy ranking fills what is left (at a tiny score).
        """
        assert self.data is not None, "fit first"
        rows = np.asarray(rows, dtype=np.int64)
        may_sensitive = _row_blocks(rows, sensitive_ok)
        data = self.data
        n_categories = len(data.category_sensitive)
        depth = n * 2
        category_lists = [self.category_ranking(c, depth)[0] for c in range(n_categories)]
        cat_rows = np.repeat(np.arange(n_categories), [int((lst >= 0).sum()) for lst in category_lists])
        cat_items = np.concatenate([lst[lst >= 0] for lst in category_lists]) if n_categories else np.zeros(0, np.int64)
        cat_rank = np.concatenate([np.arange(int((lst >= 0).sum())) for lst in category_lists]) if n_categories else np.zeros(0)
        by_category = sp.csr_matrix(
            ((1.0 / (1.0 + cat_rank)).astype(np.float32), (cat_rows, cat_items)), shape=(n_categories, data.n_items)
        )
        if evidence is not None and evidence.nnz:
            evidence = evidence.tocsr()
            ev_rows = np.repeat(np.arange(evidence.shape[0]), np.diff(evidence.indptr))
            interest = sp.csr_matrix(
                (evidence.data.astype(np.float32), (ev_rows, data.item_category[evidence.indices])),
                shape=(len(rows), n_categories),
            )
            totals = np.asarray(interest.sum(axis=1)).ravel()
            totals[totals == 0] = 1.0
            interest = sp.diags((1.0 / totals).astype(np.float32)) @ interest
            scores = (interest @ by_category).tocsr()
        else:
            evidence = None
            scores = sp.csr_matrix((len(rows), data.n_items), dtype=np.float32)
        overall = {flag: self.overall_ranking(depth, sensitive=flag)[0] for flag in (False, True)}
        fill_rows, fill_items, fill_scores = [], [], []
        for flag in (False, True):
            chosen = np.flatnonzero(may_sensitive == flag)
            ranked = overall[flag][overall[flag] >= 0]
            fill_rows.append(np.repeat(chosen, ranked.size))
            fill_items.append(np.tile(ranked, chosen.size))
            fill_scores.append(np.tile(1e-6 / (1.0 + np.arange(ranked.size)), chosen.size))
        fill = sp.csr_matrix(
            (np.concatenate(fill_scores).astype(np.float32), (np.concatenate(fill_rows), np.concatenate(fill_items))),
            shape=(len(rows), data.n_items),
        )
        columns, values = _top_allowed(
            scores + fill,
            n,
            blocked=~np.isfinite(self.noisy_counts),
            sensitive_items=data.item_sensitive,
            may_sensitive=may_sensitive,
            seen=evidence,
        )
        return TopN(items=columns, scores=values, sensitive_evidence=_rows_with_sensitive(evidence, data, columns))


def _rows_with_sensitive(evidence: sp.csr_matrix | None, data: TrainingData, columns: np.ndarray) -> np.ndarray:
    """Every entry of a row whose evidence holds a sensitive item (its category shares shaped them all)."""
    if evidence is None or evidence.nnz == 0:
        return np.zeros(columns.shape, dtype=bool)
    evidence = evidence.tocsr()
    row_of = np.repeat(np.arange(evidence.shape[0]), np.diff(evidence.indptr))
    has = np.bincount(row_of[data.item_sensitive[evidence.indices]], minlength=evidence.shape[0]) > 0
    return np.repeat(has[:, None], columns.shape[1], axis=1) & (columns >= 0)


# --- differentially private item-item ------------------------------------------------------


def pair_weights(items_per_subject: np.ndarray, *, mechanism: str) -> np.ndarray:
    """Each subject's weight on their co-occurring pairs, so that their whole contribution has norm ≤ 1.

    A subject with n items adds their weight to n(n−1)/2 pairs. Laplace needs
    the L1 norm bounded: weight 1/(n(n−1)/2); Gaussian the L2 norm: weight
    1/√(n(n−1)/2) (McSherry & Mironov 2009, §3: per-user weights that bound a
    user's influence on the covariance). Subjects with fewer than two items
    contribute no pair (weight 0).
    """
    n = np.asarray(items_per_subject, dtype=np.float64)
    pairs = n * (n - 1) / 2
    weights = np.zeros_like(pairs)
    some = pairs > 0
    weights[some] = 1.0 / pairs[some] if mechanism == "laplace" else 1.0 / np.sqrt(pairs[some])
    return weights


class DPItemItemStrategy(DifferentiallyPrivateStrategy):
    """``dp_item_item``: item-item recommendations from a differentially private co-occurrence matrix.

    After McSherry & Mironov (KDD 2009), in two releases whose budgets add up
    to ε per build (sequential composition):

    1. ``selection_share``·ε: the noisy item counts of every released item
       (as ``dp_popularity``); the ``candidates`` items with the highest noisy
       counts form the model's vocabulary (post-processing).
    2. the rest of ε: each subject's most recent ``clip`` candidate items,
       their pairs weighted so the subject's whole contribution has norm ≤ 1
       (``pair_weights``: L1 for Laplace, L2 for Gaussian), summed into the
       candidates × candidates co-occurrence, and noise of scale 1/ε₂ (or the
       Gaussian σ for Δ₂ = 1) added to *every* pair, including those nobody
       co-chose.

    Everything after is post-processing: pairs whose noisy co-occurrence is
    below ``min_signal`` noise standard deviations are dropped, the rest are
    normalised by the noisy counts like a cosine, and each item keeps its
    ``neighbours`` best. Recommending scores the subject's *own* history —
    personal data they consented to, used for them only — against those
    similarities; it releases nothing about anyone else.
    """

    level = "dp_item_item"
    personal = True

    def __init__(self, *, epsilon: float, clip: int = 20, mechanism: str = "laplace", delta: float = 1e-6,
                 candidates: int = 1000, selection_share: float = 0.2, neighbours: int = 50,
                 min_signal: float = 2.0, include_sensitive: bool = False, explain: bool = False,
                 seed: int | None = None):
        super().__init__(epsilon=epsilon, clip=clip, mechanism=mechanism, delta=delta,
                         include_sensitive=include_sensitive, seed=seed)
        if candidates < 2:
            raise ValueError("candidates must be at least 2")
        if not 0 < selection_share < 1:
            raise ValueError("selection_share is strictly between 0 and 1")
        if neighbours < 1:
            raise ValueError("neighbours must be at least 1")
        self.candidates = int(candidates)
        self.selection_share = float(selection_share)
        self.neighbours = int(neighbours)
        self.min_signal = float(min_signal)
        self.explain = explain

    def params(self) -> dict:
        return {**super().params(), "candidates": self.candidates, "selection_share": self.selection_share,
                "neighbours": self.neighbours, "min_signal": self.min_signal}

    @property
    def phase_budgets(self) -> tuple[tuple[float, float], tuple[float, float]]:
        """(ε, δ) of the item-count release and of the co-occurrence release; they add up to ``budget``."""
        selection = self.epsilon * self.selection_share
        return (selection, self.delta / 2), (self.epsilon - selection, self.delta / 2)

    @property
    def pair_noise_scale(self) -> float:
        """The co-occurrence noise: Laplace b = 1/ε₂, or the Gaussian σ for (ε₂, δ₂) and Δ₂ = 1."""
        (_, _), (epsilon, delta) = self.phase_budgets
        return mechanism_scale(mechanism=self.mechanism, epsilon=epsilon, delta=delta, l1=1.0, l2=1.0)

    def fit(self, data: TrainingData) -> DPItemItemStrategy:
        self.data = data
        rng = np.random.default_rng(self.seed)
        (epsilon_1, delta_1), _ = self.phase_budgets
        self.noisy_counts, _ = self._noisy_item_counts(data, rng, epsilon=epsilon_1, delta=delta_1)
        vocabulary, _ = rank_scores(self.noisy_counts, self.candidates, allowed=np.isfinite(self.noisy_counts))
        self.vocabulary = np.sort(vocabulary[vocabulary >= 0])
        noisy = self._noisy_cooccurrence(data, rng)
        self.similarity = self._similarity(noisy)
        return self

    def _noisy_cooccurrence(self, data: TrainingData, rng: np.random.Generator) -> np.ndarray:
        """The candidates × candidates weighted co-occurrence plus noise on every pair (symmetric, zero diagonal)."""
        size = self.vocabulary.size
        outside = np.ones(data.n_items, dtype=bool)
        outside[self.vocabulary] = False
        usable = _mask_entries(data.interactions, outside)
        last_seen = _mask_entries(data.last_seen, outside) if data.last_seen is not None else None
        clipped = clip_contributions(usable, clip=self.clip, last_seen=last_seen)
        position = np.full(data.n_items, -1, dtype=np.int64)
        position[self.vocabulary] = np.arange(size)
        binary = sp.csr_matrix(
            (clipped.data, position[clipped.indices], clipped.indptr), shape=(clipped.shape[0], size)
        )
        weights = pair_weights(np.diff(binary.indptr), mechanism=self.mechanism)
        weighted = sp.diags(weights) @ binary
        cooccurrence = np.asarray((binary.T @ weighted).todense(), dtype=np.float64)
        upper = np.triu_indices(size, k=1)
        noisy = np.zeros((size, size), dtype=np.float64)
        noisy[upper] = cooccurrence[upper] + _noise(rng, self.mechanism, self.pair_noise_scale, upper[0].size)
        return noisy + noisy.T

    def _similarity(self, noisy: np.ndarray) -> sp.csr_matrix:
        threshold = self.min_signal * _noise_std(self.mechanism, self.pair_noise_scale)
        counts = np.maximum(self.noisy_counts[self.vocabulary], 1.0)
        scaled = noisy / np.sqrt(counts[:, None] * counts[None, :])
        scaled[noisy <= threshold] = 0.0
        np.fill_diagonal(scaled, 0.0)
        columns, values = topk_per_row(sp.csr_matrix(scaled), self.neighbours)
        keep = (columns >= 0) & (values > 0)
        rows = np.nonzero(keep)[0]
        n_items = self.data.n_items
        similarity = sp.csr_matrix(
            (values[keep], (self.vocabulary[rows], self.vocabulary[columns[keep]])), shape=(n_items, n_items),
            dtype=np.float32,
        )
        similarity.sort_indices()
        return similarity

    def recommend(self, *, rows, evidence, n, sensitive_ok=None) -> TopN:
        assert self.data is not None, "fit first"
        rows = np.asarray(rows, dtype=np.int64)
        if evidence is None:
            evidence = self.data.interactions[rows]
        evidence = evidence.tocsr().astype(np.float32)
        evidence.data = np.minimum(evidence.data, 1.0)
        top = score_with_similarity(
            evidence, self.similarity, n, blocked=~np.isfinite(self.noisy_counts),
            item_sensitive=self.data.item_sensitive, may_sensitive=_row_blocks(rows, sensitive_ok),
        )
        if not self.explain:
            top = TopN(items=top.items, scores=top.scores, sensitive_evidence=top.sensitive_evidence)
        return top


STRATEGIES: dict[str, type[Strategy]] = {
    cls.level: cls
    for cls in (ItemItemStrategy, CohortStrategy, DPItemItemStrategy, DPPopularityStrategy, PopularityStrategy,
                SessionStrategy)
}
