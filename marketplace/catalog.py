"""The simulated marketplace's catalog: its categories, and the products the simulator's shoppers buy.

Pure data and numpy (no Django import), so that the generated data sets
(``marketplace.datasets``), which the benchmarks use without settings, can
read it too. ``marketplace.driver`` writes the simulator's catalog to the
recommender's tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CATEGORIES = (
    # key, name, sensitive (UU PDP Art. 4(2): health and financial data are specific personal data)
    ("fashion", "Fashion", False),
    ("electronics", "Electronics", False),
    ("home-living", "Home & Living", False),
    ("beauty", "Beauty", False),
    ("groceries", "Groceries", False),
    ("sports", "Sports & Outdoors", False),
    ("toys", "Toys & Baby", False),
    ("automotive", "Automotive", False),
    ("books", "Books & Stationery", False),
    ("health", "Health & Pharmacy", True),
    ("financial-products", "Financial Products", True),
)

ITEM_PRICE_MEDIAN = 120_000.0  # IDR
ITEM_PRICE_SIGMA = 0.6  # between items (log scale)
APPEAL_EXPONENT = 0.15  # appeal ∝ popularity^0.15: best sellers are a little more clickable for everyone

# The marketplace's consumables: what a shopper buys again (groceries, beauty, health).
REPEATABLE_KEYS = frozenset({"groceries", "beauty", "health"})


@dataclass(frozen=True)
class Catalog:
    """The simulator's products: a sku, a category and a popularity each (index = product)."""

    skus: tuple[str, ...]
    item_category: np.ndarray
    category_keys: tuple[str, ...]
    category_sensitive: np.ndarray
    popularity: np.ndarray  # per item, for picking products within a category
    price: np.ndarray  # per item, IDR: what a recommendation-led purchase of it is worth
    appeal: np.ndarray  # per item, mean 1: how clickable it is to anyone (popular items a little more)

    def items_of(self, category: int) -> np.ndarray:
        return np.flatnonzero(self.item_category == category)


def catalog_draw(*, seed: int, products: int = 400) -> Catalog:
    """The simulator's catalog: ``products`` products spread evenly over ``CATEGORIES``, shuffled."""
    rng = np.random.default_rng(seed)
    item_category = np.arange(products) % len(CATEGORIES)
    rng.shuffle(item_category)
    return Catalog(
        skus=tuple(f"SIM-{i:05d}" for i in range(products)),
        item_category=item_category,
        category_keys=tuple(key for key, _, _ in CATEGORIES),
        category_sensitive=np.array([flag for _, _, flag in CATEGORIES], dtype=bool),
        popularity=(popularity := rng.pareto(1.2, products) + 1.0),
        # Drawn after the rest, so the catalogs of earlier versions keep their categories and popularity.
        price=np.round(ITEM_PRICE_MEDIAN * np.exp(rng.normal(0.0, ITEM_PRICE_SIGMA, products)), -2),
        appeal=(appeal := popularity**APPEAL_EXPONENT) / appeal.mean(),
    )


def categories_repeat(n_categories: int) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    """``n_categories`` categories (keys, names, sensitive flags): ``CATEGORIES`` over again, numbered."""
    keys, names, sensitive = [], [], []
    for i in range(n_categories):
        key, name, flag = CATEGORIES[i % len(CATEGORIES)]
        suffix = "" if i < len(CATEGORIES) else f"-{i // len(CATEGORIES) + 1}"
        keys.append(key + suffix)
        names.append(name + (f" {i // len(CATEGORIES) + 1}" if suffix else ""))
        sensitive.append(flag)
    return tuple(keys), tuple(names), np.array(sensitive, dtype=bool)
