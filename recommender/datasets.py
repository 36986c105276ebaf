"""Interaction data sets for offline evaluation: their shape (``Marketplace``), and the generated ones by name.

An export of orders (``evaluation.orders_read``) and a generated data set have
the same shape. The generators live in a higher app (``marketplace.datasets``),
which registers them here at start-up (``dataset_register``), so
``evaluate_recommenders --synthetic`` reaches them without this app importing it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recommender.engine import TrainingData


@dataclass(frozen=True)
class Marketplace:
    """A catalog, its subjects' attributes and their interactions (one row per interaction)."""

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
    category_repeatable: np.ndarray | None = None  # per category: consumables bought again
    product_repeatable: np.ndarray | None = None  # per product, when products say it themselves

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
            purchases=self.weights[keep] >= 1.0,
            item_repeatable=self.item_repeatable,
        )

    @property
    def item_repeatable(self) -> np.ndarray | None:
        if self.product_repeatable is not None:
            return self.product_repeatable
        return None if self.category_repeatable is None else self.category_repeatable[self.item_category]


_GENERATORS: dict[str, Callable[..., Marketplace]] = {}


def dataset_register(*, name: str, generate: Callable[..., Marketplace]) -> None:
    """Make ``generate(**options)`` the generated data set ``name`` (the marketplace app's start-up calls it)."""
    _GENERATORS[name] = generate


def dataset_generate(*, name: str, **options) -> Marketplace:
    """The generated data set ``name``, made with ``options``; LookupError if no app registered it."""
    try:
        generate = _GENERATORS[name]
    except KeyError:
        raise LookupError(f"No generated data set {name!r} (the marketplace app registers them).") from None
    return generate(**options)
