"""Small fixtures for the simulator's tests."""

import numpy as np

from marketplace.catalog import CATEGORIES, Catalog


def small_catalog() -> Catalog:
    """Four products in each category, all equally popular (no database)."""
    return Catalog(
        skus=tuple(f"SIM-{i:05d}" for i in range(44)),
        item_category=np.arange(44) % len(CATEGORIES),
        category_keys=tuple(key for key, _, _ in CATEGORIES),
        category_sensitive=np.array([flag for _, _, flag in CATEGORIES]),
        popularity=np.ones(44),
        price=np.full(44, 120_000.0),
        appeal=np.ones(44),
    )
