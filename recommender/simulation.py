"""A synthetic marketplace: catalog, subjects and interactions with real structure.

Pure numpy, no Django: the benchmark, ``evaluate_recommenders --synthetic``
and the tests use it directly; ``services.catalog_simulate`` writes its
catalog into the database for the demo. Subjects have two favourite
categories, product popularity inside a category is heavy-tailed (Pareto),
activity per subject is log-normal, and each subject's later interactions
drift within the same taste, so a time split leaves something to predict.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.marketplace import CATEGORIES as BASE_CATEGORIES
from recommender.engine import TrainingData

AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
PROVINCES = ("DKI Jakarta", "Jawa Barat", "Jawa Timur", "Jawa Tengah", "Banten", "Sumatera Utara", "Bali")
PLATFORMS = ("android", "ios", "web")
TASTE_CLUSTERS = 5


@dataclass(frozen=True)
class Marketplace:
    category_keys: tuple[str, ...]
    category_names: tuple[str, ...]
    category_sensitive: np.ndarray
    item_category: np.ndarray
    item_skus: tuple[str, ...]
    attributes: tuple[tuple[str, str, str], ...]
    subjects: np.ndarray  # one row per interaction
    items: np.ndarray
    times: np.ndarray  # seconds since the start
    weights: np.ndarray  # 1.0 purchase, 0.5 click

    @property
    def n_subjects(self) -> int:
        return len(self.attributes)

    def training_data(self, mask: np.ndarray | None = None) -> TrainingData:
        keep = slice(None) if mask is None else mask
        return TrainingData.from_triples(
            subjects=self.subjects[keep],
            items=self.items[keep],
            weights=self.weights[keep],
            times=self.times[keep],
            n_subjects=self.n_subjects,
            item_category=self.item_category,
            category_sensitive=self.category_sensitive,
            attributes=self.attributes,
            category_names=self.category_names,
        )


def _categories(n_categories: int) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    keys, names, sensitive = [], [], []
    for i in range(n_categories):
        key, name, flag = BASE_CATEGORIES[i % len(BASE_CATEGORIES)]
        suffix = "" if i < len(BASE_CATEGORIES) else f"-{i // len(BASE_CATEGORIES) + 1}"
        keys.append(key + suffix)
        names.append(name + (f" {i // len(BASE_CATEGORIES) + 1}" if suffix else ""))
        sensitive.append(flag)
    return tuple(keys), tuple(names), np.array(sensitive, dtype=bool)


def synthetic_marketplace(
    *,
    subjects: int = 2000,
    products: int = 500,
    interactions: int = 40_000,
    categories: int = 11,
    days: float = 90.0,
    seed: int = 0,
) -> Marketplace:
    rng = np.random.default_rng(seed)
    keys, names, sensitive = _categories(categories)
    item_category = rng.integers(0, categories, products)
    popularity = rng.pareto(1.2, products) + 1.0
    activity = np.maximum(1.0, rng.lognormal(2.5, 0.9, subjects))
    share = activity * interactions / activity.sum()
    per_subject = np.floor(share).astype(np.int64)
    # The largest remainders get one more, so the total is exactly ``interactions``.
    per_subject[np.argsort(per_subject - share)[: interactions - int(per_subject.sum())]] += 1
    subject_of = np.repeat(np.arange(subjects), per_subject)
    total = subject_of.size
    favourites = rng.integers(0, categories, (subjects, 2))
    # Sensitive categories are rarer favourites, as on a real marketplace.
    favourites = np.where(sensitive[favourites] & (rng.random((subjects, 2)) < 0.6),
                          rng.integers(0, categories, (subjects, 2)), favourites)
    loyal = rng.random(total) < 0.8
    pick = rng.integers(0, 2, total)
    category_of = np.where(loyal, favourites[subject_of, pick], rng.integers(0, categories, total))
    # Inside a category each subject leans to one "taste" cluster of products: the
    # co-occurrence structure item-item neighbours learn and popularity cannot.
    item_cluster = rng.integers(0, TASTE_CLUSTERS, products)
    tastes = rng.integers(0, TASTE_CLUSTERS, (subjects, 2))
    in_taste = loyal & (rng.random(total) < 0.6)
    cluster_of = np.where(in_taste, tastes[subject_of, pick], -1)
    items = np.zeros(total, dtype=np.int64)
    for c in range(categories):
        for cluster in range(-1, TASTE_CLUSTERS):
            chosen = (category_of == c) & (cluster_of == cluster)
            if not chosen.any():
                continue
            members = np.flatnonzero((item_category == c) & ((item_cluster == cluster) | (cluster < 0)))
            if members.size == 0:
                members = np.flatnonzero(item_category == c)
            if members.size == 0:
                members = np.arange(products)
            weights = popularity[members] / popularity[members].sum()
            items[chosen] = rng.choice(members, int(chosen.sum()), p=weights)
    times = rng.random(total) * days * 86400.0
    weights = np.where(rng.random(total) < 0.4, 1.0, 0.5).astype(np.float32)
    attributes = tuple(
        (AGE_BANDS[a], PROVINCES[p], PLATFORMS[q])
        for a, p, q in zip(
            rng.integers(0, len(AGE_BANDS), subjects),
            rng.integers(0, len(PROVINCES), subjects),
            rng.integers(0, len(PLATFORMS), subjects),
            strict=True,
        )
    )
    skus = tuple(f"P{i:06d}" for i in range(products))
    return Marketplace(
        category_keys=keys,
        category_names=names,
        category_sensitive=sensitive,
        item_category=item_category,
        item_skus=skus,
        attributes=attributes,
        subjects=subject_of,
        items=items,
        times=times,
        weights=weights,
    )
