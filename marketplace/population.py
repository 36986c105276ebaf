"""The simulated shoppers: who they are (age, province, platform, habits, tastes) and when they arrive.

Pure numpy: the subject attributes are the assignment request's, with the
known values of ``experiments.targeting``. ``population_build`` draws the
simulator's shoppers (their order and session rates, order values and
favourite categories, docs/metrics.md has the table); ``attributes_draw``
draws the attributes alone, uniformly, for the generated data sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from experiments.targeting import AGE_BANDS, PLATFORMS, PROVINCES
from marketplace.catalog import Catalog

AGE_WEIGHTS = (0.24, 0.31, 0.22, 0.14, 0.09)
PROVINCE_WEIGHTS = (0.22, 0.24, 0.18, 0.15, 0.09, 0.08, 0.04)
PLATFORM_WEIGHTS = (0.62, 0.18, 0.20)
PLATFORM_RATE = {"android": 1.0, "ios": 1.25, "web": 0.8}

BASE_ORDER_RATE = 0.05  # orders per day, population mean (Gamma-distributed per shopper)
ORDER_RATE_SHAPE = 1.2
ORDER_VALUE_MEDIAN = 165_000.0  # IDR
ORDER_VALUE_SIGMA = 0.5  # between shoppers (log scale)
SESSION_RATE = 0.25  # sessions with recommendations per day
FAVOURITE_WEIGHT = 0.75  # of a shopper's taste, on their two favourite categories
TASTE_CONCENTRATION = 0.5  # Dirichlet concentration of the rest (lower: more uneven)
SENSITIVE_INTEREST = 0.15  # share of shoppers interested in health or financial products


@dataclass
class Population:
    """The simulated shoppers, as arrays (index = shopper)."""

    ids: list[str]
    age: np.ndarray
    province: np.ndarray
    platform: np.ndarray
    sensitive: np.ndarray  # bool: interested in a sensitive category
    order_rate: np.ndarray  # per day, before any treatment
    order_value: np.ndarray  # IDR, the shopper's typical order
    session_rate: np.ndarray  # per day
    favourites: np.ndarray  # (n, 2) category indices
    affinity: np.ndarray  # (n, categories), rows sum to 1: the shopper's latent tastes over the categories
    arrival: list[datetime]
    horizon_days: np.ndarray  # time from the end of the consent decisions to the simulation's end
    decided_at: list[datetime]  # when the consent decisions are taken (after arrival)

    @property
    def size(self) -> int:
        return len(self.ids)


DECISION_SLOT_HOURS = 4  # consent decisions are taken at the next 4-hour mark after arrival


def _decision_slot(moment: datetime) -> datetime:
    """The first slot boundary at or after ``moment`` (slots of DECISION_SLOT_HOURS, in UTC)."""
    epoch = datetime(2000, 1, 1, tzinfo=moment.tzinfo)
    slot = timedelta(hours=DECISION_SLOT_HOURS)
    index = -((epoch - moment) // slot)  # ceiling division
    return epoch + index * slot


def population_build(*, size: int, seed: int, start: datetime, end: datetime, catalog: Catalog, namespace: str) -> Population:
    """Shoppers arriving uniformly over ``[start, end − 3h)``; all their randomness from ``seed``."""
    rng = np.random.default_rng(seed)
    span = (end - timedelta(hours=DECISION_SLOT_HOURS + 3) - start).total_seconds()
    offsets = np.sort(rng.uniform(0, span, size))
    arrival = [start + timedelta(seconds=float(s)) for s in offsets]
    decided = [_decision_slot(moment) for moment in arrival]
    horizon = np.array([(end - (d + timedelta(hours=1))).total_seconds() / 86400 for d in decided])
    platform = rng.choice(len(PLATFORMS), size, p=PLATFORM_WEIGHTS)
    platform_rate = np.array([PLATFORM_RATE[p] for p in PLATFORMS])[platform]
    rate = rng.gamma(ORDER_RATE_SHAPE, BASE_ORDER_RATE / ORDER_RATE_SHAPE, size) * platform_rate
    categories = len(catalog.category_keys)
    sensitive_categories = np.flatnonzero(catalog.category_sensitive)
    ordinary = np.flatnonzero(~catalog.category_sensitive)
    favourites = rng.choice(ordinary, (size, 2))
    sensitive = rng.random(size) < SENSITIVE_INTEREST
    if len(sensitive_categories):
        favourites[sensitive, 1] = rng.choice(sensitive_categories, int(sensitive.sum()))
    assert favourites.max() < categories
    # Latent tastes: most weight on the two favourites, the rest spread unevenly (Dirichlet) over all categories.
    affinity = (1.0 - FAVOURITE_WEIGHT) * rng.dirichlet(np.full(categories, TASTE_CONCENTRATION), size)
    np.add.at(affinity, (np.repeat(np.arange(size), 2), favourites.ravel()), FAVOURITE_WEIGHT / 2)
    return Population(
        ids=[f"{namespace}-{i}" for i in range(size)],
        age=rng.choice(len(AGE_BANDS), size, p=AGE_WEIGHTS),
        province=rng.choice(len(PROVINCES), size, p=PROVINCE_WEIGHTS),
        platform=platform,
        sensitive=sensitive,
        order_rate=rate,
        order_value=ORDER_VALUE_MEDIAN * np.exp(rng.normal(0.0, ORDER_VALUE_SIGMA, size)),
        session_rate=SESSION_RATE * (0.5 + rng.random(size)),
        favourites=favourites,
        affinity=affinity,
        arrival=arrival,
        horizon_days=np.maximum(horizon, 0.0),
        decided_at=decided,
    )


def population_subset(population: Population, mask: np.ndarray) -> Population:
    """The shoppers ``mask`` selects, in order."""
    index = np.flatnonzero(mask)
    return Population(
        ids=[population.ids[i] for i in index],
        age=population.age[mask],
        province=population.province[mask],
        platform=population.platform[mask],
        sensitive=population.sensitive[mask],
        order_rate=population.order_rate[mask],
        order_value=population.order_value[mask],
        session_rate=population.session_rate[mask],
        favourites=population.favourites[mask],
        affinity=population.affinity[mask],
        arrival=[population.arrival[i] for i in index],
        horizon_days=population.horizon_days[mask],
        decided_at=[population.decided_at[i] for i in index],
    )


def attributes_draw(rng: np.random.Generator, size: int) -> tuple[tuple[str, str, str], ...]:
    """``size`` shoppers' (age band, province, platform), each value equally likely."""
    return tuple(
        (AGE_BANDS[a], PROVINCES[p], PLATFORMS[q])
        for a, p, q in zip(
            rng.integers(0, len(AGE_BANDS), size),
            rng.integers(0, len(PROVINCES), size),
            rng.integers(0, len(PLATFORMS), size),
            strict=True,
        )
    )
