"""Compiled inner loops of the item-item strategies (numba): neighbours with support, and scoring.

Two loops dominate an item-item build, and neither is a good fit for sparse
matrix algebra on skewed data: a staple bought by nearly everyone co-occurs
with most of the catalog, so ``Xᵀ·X`` materialises a dense row per staple
that must then be sorted, and its diagonal zeroed. Here, as in implicit's
C++ ``all_pairs_knn``, each item's co-occurrences are accumulated into one
reused dense buffer, the item itself is skipped (no diagonal), a pair is kept
only when enough distinct subjects support it, and the best ``k`` go through
a bounded heap — nothing is materialised beyond one item at a time. Items
(or subject rows) are split into blocks that run on all cores.

Ties are broken towards the lower item id, so results do not depend on the
number of threads. Pure functions over CSR arrays; ``engine`` wraps them.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _better(value_a, id_a, value_b, id_b) -> bool:
    # Higher value first; equal values: the lower id first.
    return value_a > value_b or (value_a == value_b and id_a < id_b)


@njit(cache=True, inline="always")
def _heap_push(values, ids, size, k, value, item) -> int:
    """Offer (value, item) to a heap of the ``k`` best, the worst at the root; returns the new size."""
    if size < k:
        position = size
        while position > 0:  # sift up past better parents
            parent = (position - 1) // 2
            if not _better(values[parent], ids[parent], value, item):
                break
            values[position] = values[parent]
            ids[position] = ids[parent]
            position = parent
        values[position] = value
        ids[position] = item
        return size + 1
    if not _better(value, item, values[0], ids[0]):
        return size
    position = 0
    while True:  # replace the worst and sift down past worse children
        child = 2 * position + 1
        if child >= size:
            break
        if child + 1 < size and _better(values[child], ids[child], values[child + 1], ids[child + 1]):
            child += 1
        if _better(values[child], ids[child], value, item):
            break
        values[position] = values[child]
        ids[position] = ids[child]
        position = child
    values[position] = value
    ids[position] = item
    return size


@njit(cache=True)
def _heap_drain(values, ids, size, out_ids, out_values) -> None:
    """Write the heap's entries best first into ``out_*`` (left to right)."""
    order = np.empty(size, dtype=np.int64)
    for a in range(size):
        order[a] = a
    # Insertion sort: k is small (≤ a few hundred).
    for a in range(1, size):
        current = order[a]
        b = a - 1
        while b >= 0 and _better(values[current], ids[current], values[order[b]], ids[order[b]]):
            order[b + 1] = order[b]
            b -= 1
        order[b + 1] = current
    for a in range(size):
        out_ids[a] = ids[order[a]]
        out_values[a] = values[order[a]]


@njit(parallel=True, cache=True)
def neighbours_with_support(
    item_indptr, item_subjects, item_weights, subject_indptr, subject_items, subject_weights,
    norms, k, min_support, blocks,
):
    """Each item's ``k`` most similar other items, over pairs co-chosen by ≥ ``min_support`` subjects.

    ``item_*`` is the items × subjects CSR of the weights, ``subject_*`` the
    subjects × items CSR of the same weights. similarity(i, j) =
    Σ_u w(u, i)·w(u, j) / (norms[i]·norms[j]). Returns (columns, values,
    support) of shape (items, k), −1 / 0 padded, best first.
    """
    n_items = item_indptr.size - 1
    out_columns = np.full((n_items, k), -1, dtype=np.int64)
    out_values = np.zeros((n_items, k), dtype=np.float32)
    out_support = np.zeros((n_items, k), dtype=np.int32)
    size_of_block = (n_items + blocks - 1) // blocks
    for block in prange(blocks):
        total = np.zeros(n_items, dtype=np.float64)
        count = np.zeros(n_items, dtype=np.int32)
        touched = np.empty(n_items, dtype=np.int64)
        heap_values = np.empty(k, dtype=np.float64)
        heap_ids = np.empty(k, dtype=np.int64)
        row_ids = np.empty(k, dtype=np.int64)
        row_values = np.empty(k, dtype=np.float64)
        for i in range(block * size_of_block, min((block + 1) * size_of_block, n_items)):
            n_touched = 0
            for p in range(item_indptr[i], item_indptr[i + 1]):
                subject = item_subjects[p]
                weight = item_weights[p]
                for q in range(subject_indptr[subject], subject_indptr[subject + 1]):
                    j = subject_items[q]
                    if j == i:
                        continue
                    if count[j] == 0:
                        touched[n_touched] = j
                        n_touched += 1
                    count[j] += 1
                    total[j] += weight * subject_weights[q]
            size = 0
            for t in range(n_touched):
                j = touched[t]
                if count[j] >= min_support and total[j] > 0:
                    value = total[j] / (norms[i] * norms[j])
                    if size < k or _better(value, j, heap_values[0], heap_ids[0]):
                        size = _heap_push(heap_values, heap_ids, size, k, value, j)
            _heap_drain(heap_values, heap_ids, size, row_ids, row_values)
            for a in range(size):
                out_columns[i, a] = row_ids[a]
                out_values[i, a] = row_values[a]
                out_support[i, a] = count[row_ids[a]]
            for t in range(n_touched):
                j = touched[t]
                total[j] = 0.0
                count[j] = 0
    return out_columns, out_values, out_support


@njit(parallel=True, cache=True)
def score_rows(
    evidence_indptr, evidence_items, evidence_weights, similarity_indptr, similarity_items, similarity_values,
    blocked, item_sensitive, may_sensitive, exclude_evidence, n, blocks,
):
    """Per evidence row: the top-``n`` items by Σ_j evidence(j)·similarity(j, i).

    Skips blocked items, the row's own evidence items (``exclude_evidence``)
    and, for rows that may not receive them, sensitive items. Also returns per
    recommended item the evidence item that contributed most (ties: the lower
    id) and whether any sensitive evidence item contributed to its score.
    """
    n_rows = evidence_indptr.size - 1
    n_items = blocked.size
    out_items = np.full((n_rows, n), -1, dtype=np.int64)
    out_scores = np.zeros((n_rows, n), dtype=np.float32)
    out_because = np.full((n_rows, n), -1, dtype=np.int64)
    out_sensitive = np.zeros((n_rows, n), dtype=np.bool_)
    size_of_block = (n_rows + blocks - 1) // blocks
    for block in prange(blocks):
        score = np.zeros(n_items, dtype=np.float64)
        best = np.zeros(n_items, dtype=np.float64)
        because = np.full(n_items, -1, dtype=np.int64)
        from_sensitive = np.zeros(n_items, dtype=np.bool_)
        seen = np.full(n_items, -1, dtype=np.int64)
        touched = np.empty(n_items, dtype=np.int64)
        heap_values = np.empty(n, dtype=np.float64)
        heap_ids = np.empty(n, dtype=np.int64)
        row_ids = np.empty(n, dtype=np.int64)
        row_values = np.empty(n, dtype=np.float64)
        for r in range(block * size_of_block, min((block + 1) * size_of_block, n_rows)):
            if exclude_evidence:
                for q in range(evidence_indptr[r], evidence_indptr[r + 1]):
                    seen[evidence_items[q]] = r
            n_touched = 0
            for q in range(evidence_indptr[r], evidence_indptr[r + 1]):
                j = evidence_items[q]
                weight = evidence_weights[q]
                sensitive_source = item_sensitive[j]
                for p in range(similarity_indptr[j], similarity_indptr[j + 1]):
                    i = similarity_items[p]
                    contribution = weight * similarity_values[p]
                    if contribution <= 0:
                        continue
                    if because[i] < 0:
                        touched[n_touched] = i
                        n_touched += 1
                        best[i] = contribution
                        because[i] = j
                    elif _better(contribution, j, best[i], because[i]):
                        best[i] = contribution
                        because[i] = j
                    score[i] += contribution
                    if sensitive_source:
                        from_sensitive[i] = True
            size = 0
            for t in range(n_touched):
                i = touched[t]
                if blocked[i] or seen[i] == r or (item_sensitive[i] and not may_sensitive[r]):
                    continue
                if size < n or _better(score[i], i, heap_values[0], heap_ids[0]):
                    size = _heap_push(heap_values, heap_ids, size, n, score[i], i)
            _heap_drain(heap_values, heap_ids, size, row_ids, row_values)
            for a in range(size):
                i = row_ids[a]
                out_items[r, a] = i
                out_scores[r, a] = row_values[a]
                out_because[r, a] = because[i]
                out_sensitive[r, a] = from_sensitive[i]
            for t in range(n_touched):
                i = touched[t]
                score[i] = 0.0
                best[i] = 0.0
                because[i] = -1
                from_sensitive[i] = False
    return out_items, out_scores, out_because, out_sensitive
