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
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.stats import norm

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
    """

    interactions: sp.csr_matrix
    item_category: np.ndarray
    category_sensitive: np.ndarray
    last_seen: sp.csr_matrix | None = None
    attributes: tuple[tuple[str, ...], ...] | None = None
    category_names: tuple[str, ...] | None = None

    def __post_init__(self):
        if self.interactions.shape[1] != len(self.item_category):
            raise ValueError("interactions has a column per item: item_category must match")
        if len(self.item_category) and self.item_category.max(initial=-1) >= len(self.category_sensitive):
            raise ValueError("item_category refers to a category without a sensitive flag")
        if self.attributes is not None and len(self.attributes) != self.interactions.shape[0]:
            raise ValueError("attributes needs one tuple per subject row")

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
    ) -> TrainingData:
        """From one row per interaction; repeats of a (subject, item) pair are summed."""
        subjects = np.asarray(subjects, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        n_items = len(item_category)
        if weights is None:
            weights = np.ones(len(subjects), dtype=np.float32)
        matrix = sp.csr_matrix(
            (np.asarray(weights, dtype=np.float32), (subjects, items)), shape=(n_subjects, n_items)
        )
        matrix.sum_duplicates()
        last_seen = None
        if times is not None:
            # The latest time per pair: sort by time, and let later duplicates overwrite earlier ones.
            order = np.argsort(times, kind="stable")
            keys = subjects[order] * n_items + items[order]
            unique_keys, last_index = np.unique(keys[::-1], return_index=True)
            latest = np.asarray(times, dtype=np.float64)[order][::-1][last_index]
            last_seen = sp.csr_matrix(
                (latest, (unique_keys // n_items, unique_keys % n_items)), shape=(n_subjects, n_items)
            )
            last_seen.sort_indices()
        matrix.sort_indices()
        return cls(
            interactions=matrix,
            item_category=np.asarray(item_category, dtype=np.int64),
            category_sensitive=np.asarray(category_sensitive, dtype=bool),
            last_seen=last_seen,
            attributes=attributes,
            category_names=category_names,
        )


@dataclass(frozen=True)
class TopN:
    """Per row: item ids (−1 where the list is shorter), scores and, optionally, reasons.

    ``because[r, j]`` is the item (from the row's own evidence) that explains
    recommendation ``items[r, j]``, or −1; ``cohorts[r]`` the row's cohort (−1: none).
    """

    items: np.ndarray
    scores: np.ndarray
    because: np.ndarray | None = None
    cohorts: np.ndarray | None = None

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
    loop over rows: at most twice the stored values are touched.
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
        order = np.argsort(-chosen_values, axis=1, kind="stable")
        chosen = np.take_along_axis(chosen, order, axis=1)
        chosen_values = np.take_along_axis(chosen_values, order, axis=1)
        columns = matrix.indices[np.take_along_axis(positions, chosen, axis=1)]
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


def item_item_similarity(
    interactions: sp.csr_matrix, *, neighbours: int, weighting: str = "cosine", chunk: int = 4000
) -> sp.csr_matrix:
    """Items × items, keeping each item's ``neighbours`` most similar others (no self-similarity).

    The Gram matrix is computed in blocks of item rows, each pruned to its top
    neighbours at once, so memory stays bounded by one block's candidates.
    """
    if weighting == "cosine":
        weighted = interactions.astype(np.float32)
        norms = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=0)).ravel())
        norms[norms == 0] = 1.0
        weighted = weighted.multiply((1.0 / norms).astype(np.float32)).tocsr()
    elif weighting == "bm25":
        weighted = bm25_weight(interactions)
    else:
        raise ValueError(f"unknown weighting {weighting!r}: cosine or bm25")
    by_item = weighted.T.tocsr().astype(np.float32)
    n_items = by_item.shape[0]
    row_parts, col_parts, val_parts = [], [], []
    for start in range(0, n_items, chunk):
        block = (by_item[start : start + chunk] @ weighted).tocsr()
        block.setdiag(0, k=start)
        block.eliminate_zeros()
        columns, values = topk_per_row(block, neighbours)
        keep = columns >= 0
        row_parts.append(np.nonzero(keep)[0] + start)
        col_parts.append(columns[keep])
        val_parts.append(values[keep])
    if not row_parts:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    similarity = sp.csr_matrix(
        (np.concatenate(val_parts), (np.concatenate(row_parts), np.concatenate(col_parts))),
        shape=(n_items, n_items),
        dtype=np.float32,
    )
    similarity.sort_indices()
    return similarity


def _explain(evidence: sp.csr_matrix, similarity: sp.csr_matrix, items: np.ndarray, *, chunk: int = 1000) -> np.ndarray:
    """For each recommended (row, item): the evidence item that contributed most to its score.

    For item i the candidates are the items j that have i among their
    neighbours; the contribution of j is evidence(row, j) · sim(j, i). Rows go
    in chunks through one reused dense buffer, so each lookup is an array read.
    """
    because = np.full(items.shape, -1, dtype=np.int64)
    into = similarity.T.tocsr()  # row i: the items j with i among their neighbours
    n_items = evidence.shape[1]
    buffer = np.zeros((min(chunk, max(evidence.shape[0], 1)), n_items), dtype=np.float32)
    for start in range(0, evidence.shape[0], chunk):
        part = evidence[start : start + chunk]
        part_rows = np.repeat(np.arange(part.shape[0]), np.diff(part.indptr))
        buffer[part_rows, part.indices] = part.data
        rows, slots = np.nonzero(items[start : start + chunk] >= 0)
        targets = items[start + rows, slots]
        counts = np.diff(into.indptr)[targets]
        if counts.sum():
            pair = np.repeat(np.arange(rows.size), counts)
            begin = np.repeat(into.indptr[targets] - (np.cumsum(counts) - counts), counts)
            sources = into.indices[begin + np.arange(pair.size)]
            contribution = buffer[rows[pair], sources] * into.data[begin + np.arange(pair.size)]
            has = counts > 0
            starts = (np.cumsum(counts) - counts)[has]
            best = np.maximum.reduceat(contribution, starts)
            is_best = contribution == np.repeat(best, counts[has])
            winners = np.flatnonzero(is_best & (contribution > 0))
            winner_pairs = pair[winners]
            first = np.ones(winners.size, dtype=bool)
            first[1:] = winner_pairs[1:] != winner_pairs[:-1]
            chosen = winners[first]
            because[start + rows[winner_pairs[first]], slots[winner_pairs[first]]] = sources[chosen]
        buffer[part_rows, part.indices] = 0.0
    return because


class ItemItemStrategy(Strategy):
    """``full``: item-item collaborative filtering over the subject's purchase and click history.

    score(subject, i) = Σ_j history(subject, j) · sim(j, i), over each item's
    ``neighbours`` most similar items (cosine or BM25 weighting); items the
    subject already has are not recommended again.
    """

    level = "full"
    personal = True

    def __init__(self, *, neighbours: int = 50, weighting: str = "cosine", include_sensitive: bool = False,
                 explain: bool = False, saturate: bool = True, chunk: int = 20_000):
        super().__init__(include_sensitive=include_sensitive)
        if neighbours < 1:
            raise ValueError("neighbours must be at least 1")
        self.neighbours = neighbours
        self.weighting = weighting
        self.explain = explain
        # A purchase counts once however often it is repeated (a click half): otherwise the
        # staples a subject re-buys every week dominate both the similarities and their scores.
        # BM25 saturates repeats itself (its k1), so it gets the raw counts, as implicit does.
        self.saturate = saturate and weighting == "cosine"
        self.chunk = chunk

    def params(self) -> dict:
        return {**super().params(), "neighbours": self.neighbours, "weighting": self.weighting,
                "saturate": self.saturate}

    def _weights(self, matrix: sp.csr_matrix) -> sp.csr_matrix:
        matrix = matrix.tocsr().astype(np.float32)
        if self.saturate:
            matrix = matrix.copy()
            np.minimum(matrix.data, 1.0, out=matrix.data)
        return matrix

    def fit(self, data: TrainingData) -> ItemItemStrategy:
        self.data = data
        self.similarity = item_item_similarity(
            self._weights(data.interactions), neighbours=self.neighbours, weighting=self.weighting
        )
        return self

    def recommend(self, *, rows, evidence, n, sensitive_ok=None, exclude_evidence: bool = True) -> TopN:
        assert self.data is not None, "fit first"
        if evidence is None:
            evidence = self.data.interactions[rows]
        evidence = self._weights(evidence)
        may_sensitive = _row_blocks(rows, sensitive_ok)
        blocked = self._blocked_items()
        sensitive_items = self.data.item_sensitive
        out_items = np.full((evidence.shape[0], n), -1, dtype=np.int64)
        out_scores = np.zeros((evidence.shape[0], n), dtype=np.float32)
        for start in range(0, evidence.shape[0], self.chunk):
            part = evidence[start : start + self.chunk]
            columns, values = _top_allowed(
                part @ self.similarity,
                n,
                blocked=blocked,
                sensitive_items=sensitive_items,
                may_sensitive=may_sensitive[start : start + self.chunk],
                seen=part if exclude_evidence else None,
            )
            out_items[start : start + self.chunk] = columns
            out_scores[start : start + self.chunk] = values
        because = _explain(evidence, self.similarity, out_items) if self.explain else None
        return TopN(items=out_items, scores=out_scores, because=because)

    def neighbours_of(self, item: int) -> list[tuple[int, float]]:
        start, end = self.similarity.indptr[item], self.similarity.indptr[item + 1]
        order = np.argsort(-self.similarity.data[start:end], kind="stable")
        return list(zip(self.similarity.indices[start:end][order].tolist(),
                        self.similarity.data[start:end][order].tolist(), strict=True))


class SessionStrategy(ItemItemStrategy):
    """``session``: item-item scores from the items of the current session only.

    The similarity is learned from consenting subjects' histories, like
    ``full``; what it is applied to is only what the request carries, so
    nothing about the subject is stored.
    """

    level = "session"
    personal = True

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


class CohortStrategy(Strategy):
    """``cohort``: recommendations per k-anonymous cohort, never per individual.

    Subjects with history are grouped by category affinity and coarse
    attributes (age band, province, platform); any group smaller than ``k``
    is merged into its generalisation (dropping province, then platform, then
    age band, then the category), and what is left below ``k`` at the root
    joins the nearest cohort with the same affinity, or the largest. A cohort's
    list ranks items by how many distinct members chose them; an item only one
    member chose (fewer than ``min_item_support``) is never listed, so no list
    reveals one member's purchase.
    """

    level = "cohort"
    personal = True

    def __init__(self, *, k: int, min_item_support: int = 2, include_sensitive: bool = False, list_size: int = 100):
        super().__init__(include_sensitive=include_sensitive)
        if k < 2:
            raise ValueError("k must be at least 2")
        self.k = k
        self.min_item_support = min_item_support
        self.list_size = list_size

    def params(self) -> dict:
        return {**super().params(), "k": self.k, "min_item_support": self.min_item_support}

    def fit(self, data: TrainingData) -> CohortStrategy:
        self.data = data
        self.cohorts = self._form_cohorts(data)
        self._rank_cohorts(data)
        return self

    def _affinity(self, data: TrainingData) -> np.ndarray:
        """Per subject: the category of most of their interactions (−1 without any)."""
        matrix = data.interactions
        n_categories = len(data.category_sensitive)
        rows = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
        per_category = sp.csr_matrix(
            (np.ones(matrix.nnz, dtype=np.float32), (rows, data.item_category[matrix.indices])),
            shape=(matrix.shape[0], n_categories),
        ).toarray() if matrix.shape[0] * n_categories <= 50_000_000 else None
        if per_category is None:  # very many subjects: a sparse argmax per row
            counts = sp.csr_matrix(
                (np.ones(matrix.nnz, dtype=np.float32), (rows, data.item_category[matrix.indices])),
                shape=(matrix.shape[0], n_categories),
            )
            columns, _ = topk_per_row(counts, 1)
            affinity = columns[:, 0]
        else:
            affinity = np.where(per_category.sum(axis=1) > 0, per_category.argmax(axis=1), -1)
        return affinity

    def _form_cohorts(self, data: TrainingData) -> Cohorts:
        affinity = self._affinity(data)
        attributes = data.attributes or tuple(("", "", "") for _ in range(data.n_subjects))
        names = data.category_names or tuple(str(c) for c in range(len(data.category_sensitive)))
        population = np.flatnonzero(affinity >= 0)
        membership = np.full(data.n_subjects, -1, dtype=np.int64)
        keys: list[str] = []
        members: list[list[int]] = []
        category_of: list[int] = []

        def key_for(row: int, kept: tuple[int, ...] | None) -> str:
            if kept is None:
                return "*"
            parts = [f"category={names[affinity[row]]}"]
            parts += [f"{ATTRIBUTE_NAMES[i]}={attributes[row][i] or '?'}" for i in kept]
            return "|".join(parts)

        pending = population.tolist()
        for kept in (*COHORT_LEVELS, None):
            groups: dict[str, list[int]] = {}
            for row in pending:
                groups.setdefault(key_for(row, kept), []).append(row)
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
                same = [i for i, c in enumerate(category_of) if c == affinity[row]]
                target = max(same or range(len(members)), key=lambda i: len(members[i]))
                members[target].append(row)
            pending = []
        for index, group in enumerate(members):
            membership[group] = index
        return Cohorts(keys=keys, sizes=np.array([len(g) for g in members], dtype=np.int64), membership=membership)

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
        support.data[support.data < self.min_item_support] = 0
        support.eliminate_zeros()
        global_counts = np.bincount(matrix.indices, minlength=data.n_items).astype(np.float64)
        # Ties between equally supported items go to the globally more popular one.
        tie_break = global_counts / (global_counts.max(initial=0.0) + 1.0)
        support.data = support.data + tie_break[support.indices].astype(np.float32) * 0.5
        support = _mask_entries(support, self._blocked_items())
        columns, values = topk_per_row(support, self.list_size)
        cohorts.lists = [
            [(int(c), float(math.floor(v)) / float(cohorts.sizes[i])) for c, v in zip(columns[i], values[i], strict=True) if c >= 0]
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


class DPPopularityStrategy(Strategy):
    """``dp_popularity``: popularity per category with user-level differential privacy.

    Each subject contributes at most ``clip`` distinct items (their most
    recent), each counted once; every item of the catalog — including those
    nobody chose, so that the released set itself leaks nothing — gets
    Laplace noise of scale clip/ε (or Gaussian noise calibrated to (ε, δ)).
    Only the noisy counts leave ``fit``: rankings per category and overall are
    post-processing and cost no further budget. Recommending to a consenting
    subject spreads the list over the categories of their own history (their
    data, for them only); everyone else gets the overall noisy ranking.
    """

    level = "dp_popularity"
    personal = False

    def __init__(self, *, epsilon: float, clip: int = 20, mechanism: str = "laplace", delta: float = 1e-6,
                 include_sensitive: bool = False, seed: int | None = None):
        super().__init__(include_sensitive=include_sensitive)
        if not epsilon or epsilon <= 0:
            raise ValueError("epsilon must be positive")
        if clip < 1:
            raise ValueError("clip must be at least 1")
        if mechanism not in ("laplace", "gaussian"):
            raise ValueError("mechanism is laplace or gaussian")
        self.epsilon = float(epsilon)
        self.clip = int(clip)
        self.mechanism = mechanism
        self.delta = float(delta) if mechanism == "gaussian" else 0.0
        self.seed = seed

    def params(self) -> dict:
        return {**super().params(), "epsilon": self.epsilon, "clip": self.clip, "mechanism": self.mechanism,
                "delta": self.delta}

    @property
    def noise_scale(self) -> float:
        """Laplace b, or Gaussian σ."""
        if self.mechanism == "laplace":
            return self.clip / self.epsilon
        return analytic_gaussian_sigma(epsilon=self.epsilon, delta=self.delta, sensitivity=math.sqrt(self.clip))

    @property
    def budget(self) -> tuple[float, float]:
        """(ε, δ) that one ``fit`` spends."""
        return self.epsilon, self.delta

    def fit(self, data: TrainingData) -> DPPopularityStrategy:
        self.data = data
        released = ~self._blocked_items()
        usable = data.interactions
        if not released.all():
            # Items outside the release are removed before clipping, so the clip is spent on released items.
            usable = _mask_entries(usable, ~released)
        last_seen = data.last_seen
        if last_seen is not None and not released.all():
            last_seen = _mask_entries(last_seen, ~released)
        clipped = clip_contributions(usable, clip=self.clip, last_seen=last_seen)
        true_counts = np.bincount(clipped.indices, minlength=data.n_items).astype(np.float64)
        # Fresh OS entropy unless a seed is given (tests): noise that could be regenerated
        # from public inputs could be subtracted again.
        rng = np.random.default_rng(self.seed)
        if self.mechanism == "laplace":
            noise = rng.laplace(0.0, self.noise_scale, size=data.n_items)
        else:
            noise = rng.normal(0.0, self.noise_scale, size=data.n_items)
        noisy = true_counts + noise
        noisy[~released] = -np.inf
        self.noisy_counts = noisy  # the only output derived from the data
        return self

    def category_ranking(self, category: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        allowed = (self.data.item_category == category) & np.isfinite(self.noisy_counts)
        return rank_scores(self.noisy_counts, n, allowed=allowed)

    def overall_ranking(self, n: int, *, sensitive: bool) -> tuple[np.ndarray, np.ndarray]:
        allowed = np.isfinite(self.noisy_counts)
        if not sensitive:
            allowed &= ~self.data.item_sensitive
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
        return TopN(items=columns, scores=values)


STRATEGIES: dict[str, type[Strategy]] = {
    cls.level: cls
    for cls in (ItemItemStrategy, CohortStrategy, DPPopularityStrategy, PopularityStrategy, SessionStrategy)
}
