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


def stand_in_sessions(population, catalog: Catalog, sessions: np.ndarray, personal: np.ndarray, rng):
    """Sessions and the lists shown in them without a database: a personal list (items of the shopper's
    two favourite categories) where ``personal``, else the same non-personal list for everyone."""
    from marketplace.model import ITEMS_PER_SESSION

    shopper = np.repeat(np.arange(population.size), sessions)
    shown = np.tile(np.arange(ITEMS_PER_SESSION), (len(shopper), 1))
    mine = personal[shopper]
    for s in np.flatnonzero(mine).tolist():
        members = np.concatenate([catalog.items_of(int(c)) for c in population.favourites[shopper[s]]])
        shown[s] = rng.choice(members, ITEMS_PER_SESSION, replace=False)
    return shopper, shown
