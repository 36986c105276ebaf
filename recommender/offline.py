"""Offline serving: the lists an arm's fitted model would serve subjects it was not built for.

The simulator's ground truth needs every shopper's list under every arm,
not only under the arm they were assigned to (``marketplace.driver``). A
build hands its fitted strategy and training data to ``OfflineModel`` (the
``fitted`` hook of ``recommendations_build``: the very model that serves,
DP noise included); ``served_lists`` then scores any subjects' evidence with
the engine's strategies and applies the serving rules of
``selectors._for_arm`` to the result, without the database or the cache:

- a personal list only with the personalization consent, for a level with
  per-subject lists or cohorts, and only for a subject with usable evidence
  (the build lists exactly those);
- sensitive items only where ``sensitive_ok`` (the serve-time consent and the
  arm's policy) allows them, in the personal list and in what it is shaped by;
- a short or missing personal list is filled from the arm's fallback (best
  sellers; noisy best sellers for a DP arm), as serving does.

Evidence is given as interaction triples, weighted and windowed as
``selectors.training_load`` does (orders ``ORDER_WEIGHT``, clicks
``CLICK_WEIGHT``, the arm's retention window): the caller keeps only what the
subject's consent under the arm lets the build use.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from experiments.models import PrivacyTreatment
from recommender import engine
from recommender.conf import ORDER_WEIGHT, TOP_N
from recommender.selectors import PER_SUBJECT_LEVELS, Training, _as_items
from recommender.services.builds import _entry, _fallback_entries, _personal_entries

Level = PrivacyTreatment.PersonalizationLevel
# Levels whose serving reads a subject's own entry (a list or a cohort), as selectors._for_arm does.
_SUBJECT_ENTRY_LEVELS = (Level.FULL, Level.COHORT, Level.DP_POPULARITY, Level.DP_ITEM_ITEM)


@dataclass(frozen=True)
class OfflineModel:
    """A build's fitted model and what serving reads besides a subject's own entry: the fallback list."""

    strategy: engine.Strategy
    training: Training
    fallback: tuple[list, ...]

    @classmethod
    def of(cls, strategy: engine.Strategy, training: Training, policy: str) -> OfflineModel:
        _, fallback = _fallback_entries(strategy, training, policy, False)
        return cls(strategy=strategy, training=training, fallback=tuple(fallback))

    @property
    def level(self) -> str:
        return self.strategy.level

    @property
    def built_at(self) -> float:
        """The build's clock (epoch seconds): what it learnt from, and whose consent, is as of then."""
        return float(self.training.data.as_of)


def served_lists(
    *,
    model: OfflineModel,
    subjects: np.ndarray,
    skus: list[str],
    times: np.ndarray,
    weights: np.ndarray,
    attributes: tuple[tuple[str, str, str], ...],
    personal_ok: np.ndarray,
    sensitive_ok: np.ndarray,
    as_of: float,
    limit: int,
) -> list[list[str]]:
    """The skus serving would show each of ``len(attributes)`` subjects (a row each).

    ``subjects``/``skus``/``times``/``weights``: their interactions the build
    could use (row index, product, epoch seconds, weight); ``personal_ok`` and
    ``sensitive_ok`` per row: their consent when served.
    """
    size = len(attributes)
    catalog = model.training.catalog
    known = np.array([sku in catalog.index for sku in skus], dtype=bool) if skus else np.zeros(0, dtype=bool)
    items = np.array([catalog.index[sku] for sku, ok in zip(skus, known, strict=True) if ok], dtype=np.int64)
    rows, when, weight = np.asarray(subjects)[known], np.asarray(times)[known], np.asarray(weights)[known]
    personal: list[list | None] = [None] * size
    level = model.level
    if level in _SUBJECT_ENTRY_LEVELS and size:
        data = model.training.data
        evidence = engine.TrainingData.from_triples(
            subjects=rows, items=items, weights=weight.astype(np.float32), times=when, n_subjects=size,
            item_category=data.item_category, category_sensitive=data.category_sensitive, attributes=attributes,
            category_names=data.category_names, purchases=weight == ORDER_WEIGHT, item_repeatable=data.item_repeatable,
            as_of=as_of,
        )
        # Like the build's targets: consenting, with something to learn from.
        targets = np.flatnonzero(np.asarray(personal_ok) & (np.diff(evidence.interactions.indptr) > 0))
        if targets.size:
            scorer = copy.copy(model.strategy)
            scorer.data = evidence  # the fitted model (similarities, noisy counts, cohorts) scores these rows
            if level == Level.COHORT:
                # The fitted model's own data for the population's category shares, these rows' attributes.
                membership = model.strategy.membership_from(rows=targets, evidence=evidence.interactions[targets],
                                                            attributes=[attributes[t] for t in targets.tolist()])
                cohorts = model.strategy.cohorts
                for row, cohort in zip(targets.tolist(), membership.tolist(), strict=True):
                    if cohort >= 0:
                        personal[row] = [_entry(catalog, i, s, None) for i, s in cohorts.lists[cohort]]
            else:
                top = scorer.recommend(rows=targets, evidence=evidence.interactions[targets], n=TOP_N,
                                       sensitive_ok=np.asarray(sensitive_ok)[targets])
                for r, row in enumerate(targets.tolist()):
                    personal[row] = _personal_entries(top, r, level, catalog, False) or None
    lists = []
    for row in range(size):
        ok = bool(sensitive_ok[row])
        seen: set[str] = set()
        shown = _as_items(personal[row] or [], limit, explain=False, exclude=seen, sensitive_ok=ok,
                          personal=level in PER_SUBJECT_LEVELS)
        if len(shown) < limit:
            shown += _as_items(list(model.fallback), limit - len(shown), explain=False, exclude=seen, sensitive_ok=True)
        lists.append([item["product"] for item in shown])
    return lists

