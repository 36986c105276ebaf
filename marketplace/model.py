"""The behavioural model: how shoppers decide on consent, and how they respond to what they are shown.

Pure numpy. A shopper (``marketplace.population``) has latent tastes (an
affinity per category), an organic order rate and order value, a session
rate, an age band, a platform and maybe an interest in a sensitive category
(health, financial products). The prompt sets the grant rate (younger
shoppers grant more), and opt-outs rise with age and, for sensitive-interest
shoppers, when sensitive categories may be used.

There is no fixed lift per personalization level: in every session the
shopper sees the list the platform served them (``marketplace.driver`` reads
it through the real serving path), clicks each item with a probability set by
how well it matches their tastes and by its position, and buys a clicked item
with ``CLICK_CONVERSION`` at the item's price. Organic orders, which no
recommendation caused, come on top. So an arm earns more only through the
lists it serves and the consent decisions that allow personal ones.

``expected_values`` is the exact expectation of ``session_outcomes_draw``
and the organic draws given the lists shown (tests/marketplace/test_model.py
checks it by Monte Carlo), which is what makes the ground truth
(``marketplace.truth``) true. docs/metrics.md has the parameters' table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.targeting import AGE_BANDS
from marketplace.catalog import Catalog
from marketplace.population import Population

BASKET_SIGMA = 0.35  # between one shopper's orders (log scale)
ITEMS_PER_SESSION = 5
HISTORY_DAYS = 35  # order history written before each arrival
HISTORY_RATE_FACTOR = 0.9  # habits before the experiment, slightly lower
SENSITIVE_CONSENT_GRANT = 0.35  # of the sensitive-interest shoppers, granting sensitive profiling when asked explicitly

PROMPT_GRANT = {"none": 0.03, "banner": 0.70, "modal": 0.55, "just_in_time": 0.62}  # "none": via settings
AGE_GRANT_SHIFT = {"18-24": 0.08, "25-34": 0.04, "35-44": 0.0, "45-54": -0.06, "55+": -0.12}
WITHDRAW_BY_LEVEL = {
    "full": 0.035, "dp_item_item": 0.025, "cohort": 0.02, "dp_popularity": 0.008, "popularity": 0.008, "session": 0.012,
}
AGE_WITHDRAW_SHIFT = {"18-24": 0.0, "25-34": 0.0, "35-44": 0.005, "45-54": 0.015, "55+": 0.025}
SENSITIVE_WITHDRAW_SHIFT = {"include": 0.09, "explicit_consent": 0.05, "exclude": 0.0}
# The levels whose effect needs the personalization consent (consent.compliance.PERSONAL_LEVELS, a
# different set, are the levels that profile the subject at all, DP popularity included).
CONSENT_GATED_LEVELS = frozenset({"full", "dp_item_item", "cohort"})

# Response to a shown item: P(click) = BASE_CLICK × match × POSITION_WEIGHT[position], at most MAX_CLICK;
# match = the shopper's affinity for the item's category × the number of categories × the item's appeal,
# so a shopper with even tastes shown an average item clicks at BASE_CLICK in the first slot.
BASE_CLICK = 0.03
MAX_CLICK = 0.6
POSITION_WEIGHT = 1.0 / (1.0 + 0.35 * np.arange(ITEMS_PER_SESSION))
CLICK_CONVERSION = 0.15  # P(buy the clicked item), at its price


@dataclass(frozen=True)
class ArmBehaviour:
    """What an arm's treatment does to the shoppers' consent decisions (vectors over shoppers)."""

    grant: np.ndarray  # P(grant personalization after exposure)
    withdraw: np.ndarray  # P(withdraw personalization after exposure)
    sensitive_grant: np.ndarray  # P(grant sensitive profiling too, given a personalization grant)
    level: str


def arm_behaviour(treatment: dict, population: Population) -> ArmBehaviour:
    """What the treatment (its contract's JSON form: this module stays pure numpy, no Django) does to each of the shoppers' consent."""
    level = treatment["personalization_level"]
    policy = treatment["sensitive_category_policy"]
    age_grant = np.array([AGE_GRANT_SHIFT[band] for band in AGE_BANDS])[population.age]
    age_withdraw = np.array([AGE_WITHDRAW_SHIFT[band] for band in AGE_BANDS])[population.age]
    prompted = treatment["consent_prompt"] != "none"
    grant = np.clip(PROMPT_GRANT[treatment["consent_prompt"]] + (age_grant if prompted else 0.0), 0.0, 1.0)
    grant = np.broadcast_to(grant, (population.size,)).copy()
    withdraw = WITHDRAW_BY_LEVEL[level] + age_withdraw
    if level in CONSENT_GATED_LEVELS:
        withdraw = withdraw + population.sensitive * SENSITIVE_WITHDRAW_SHIFT[policy]
    withdraw = np.clip(withdraw, 0.0, 1.0)
    sensitive_grant = np.where(population.sensitive & (policy != "exclude"), SENSITIVE_CONSENT_GRANT, 0.0)
    return ArmBehaviour(grant=grant, withdraw=withdraw, sensitive_grant=sensitive_grant, level=level)


@dataclass(frozen=True)
class Decisions:
    """One realisation of every shopper's consent and of their organic behaviour (flat arrays per order)."""

    grant: np.ndarray
    withdraw: np.ndarray
    sensitive_grant: np.ndarray
    history_counts: np.ndarray
    history_values: np.ndarray  # flat, shopper by shopper
    order_counts: np.ndarray  # organic orders after exposure
    order_values: np.ndarray  # flat, shopper by shopper
    sessions: np.ndarray  # sessions with a recommendation slot after exposure
    # The same decisions under every arm (arms × shoppers), from the same uniforms: what each shopper
    # would have decided in each arm. Row ``arm_of[i]`` is what they decided (the three arrays above).
    grant_under: np.ndarray | None = None
    withdraw_under: np.ndarray | None = None
    sensitive_grant_under: np.ndarray | None = None


def decisions_draw(*, population: Population, arm_of: np.ndarray, behaviours: list[ArmBehaviour], rng) -> Decisions:
    """Draw every shopper's consent under the arm ``arm_of[i]`` (−1: not exposed) and their organic behaviour."""
    size = population.size
    exposed = arm_of >= 0
    grant = np.zeros(size, dtype=bool)
    withdraw = np.zeros(size, dtype=bool)
    sensitive_grant = np.zeros(size, dtype=bool)
    u_grant, u_withdraw, u_sensitive = rng.random(size), rng.random(size), rng.random(size)
    grant_under = np.array([u_grant < b.grant for b in behaviours]).reshape(len(behaviours), size)
    withdraw_under = np.array([u_withdraw < b.withdraw for b in behaviours]).reshape(len(behaviours), size)
    sensitive_grant_under = grant_under & np.array(
        [u_sensitive < b.sensitive_grant for b in behaviours]).reshape(len(behaviours), size)
    for index in range(len(behaviours)):
        mine = arm_of == index
        grant[mine] = grant_under[index, mine]
        withdraw[mine] = withdraw_under[index, mine]
        sensitive_grant[mine] = sensitive_grant_under[index, mine]
    history_counts = np.where(exposed, rng.poisson(population.order_rate * HISTORY_RATE_FACTOR * HISTORY_DAYS), 0)
    order_counts = np.where(exposed, rng.poisson(population.order_rate * population.horizon_days), 0)
    sessions = np.where(exposed, rng.poisson(population.session_rate * population.horizon_days), 0)

    def values(counts: np.ndarray) -> np.ndarray:
        # Each order: the shopper's typical value × a log-normal basket factor of mean 1.
        baskets = np.exp(rng.normal(-BASKET_SIGMA**2 / 2, BASKET_SIGMA, int(counts.sum())))
        return np.repeat(population.order_value, counts) * baskets

    return Decisions(
        grant=grant, withdraw=withdraw, sensitive_grant=sensitive_grant,
        history_counts=history_counts, history_values=values(history_counts),
        order_counts=order_counts, order_values=values(order_counts), sessions=sessions,
        grant_under=grant_under, withdraw_under=withdraw_under, sensitive_grant_under=sensitive_grant_under,
    )


def click_probabilities(*, population: Population, catalog: Catalog, shopper: np.ndarray, shown: np.ndarray) -> np.ndarray:
    """P(click) of each shown item: ``shown`` is (sessions × ITEMS_PER_SESSION) item indices, −1 for an empty slot."""
    item = np.where(shown >= 0, shown, 0)
    categories = len(catalog.category_keys)
    match = population.affinity[shopper[:, None], catalog.item_category[item]] * categories * catalog.appeal[item]
    p = np.minimum(BASE_CLICK * match * POSITION_WEIGHT[None, : shown.shape[1]], MAX_CLICK)
    return np.where(shown >= 0, p, 0.0)


@dataclass(frozen=True)
class SessionOutcomes:
    clicks: np.ndarray  # (sessions × slots) bool
    purchases: np.ndarray  # (sessions × slots) bool: a clicked item bought


def session_outcomes_draw(*, population: Population, catalog: Catalog, shopper: np.ndarray, shown: np.ndarray,
                          rng) -> SessionOutcomes:
    """What each shopper did with each list shown: clicks by taste × position, purchases of clicked items."""
    p = click_probabilities(population=population, catalog=catalog, shopper=shopper, shown=shown)
    clicks = rng.random(shown.shape) < p
    purchases = clicks & (rng.random(shown.shape) < CLICK_CONVERSION)
    return SessionOutcomes(clicks=clicks, purchases=purchases)


def consent_expectations(behaviour: ArmBehaviour) -> dict[str, np.ndarray]:
    return {
        # An opt-out ends a grant (docs/metrics.md): a shopper who never granted withdraws nothing.
        "opted_out": behaviour.grant * behaviour.withdraw,
        "consented": behaviour.grant * (1.0 - behaviour.withdraw),
    }


def expected_values(*, behaviour: ArmBehaviour, population: Population, catalog: Catalog, shopper: np.ndarray,
                    shown: np.ndarray) -> dict[str, np.ndarray]:
    """Each shopper's expected value of every metric's per-subject quantities under the arm.

    Exact given the lists shown (``shopper[s]`` saw ``shown[s]`` in session s):
    organic orders are Poisson with the shopper's rate, each shown item is
    clicked and bought independently (``click_probabilities``, ``CLICK_CONVERSION``).
    """
    size = population.size
    horizon = population.horizon_days
    organic = population.order_rate * horizon
    p = click_probabilities(population=population, catalog=catalog, shopper=shopper, shown=shown)
    buy = p * CLICK_CONVERSION
    price = catalog.price[np.where(shown >= 0, shown, 0)]
    induced_orders = np.bincount(shopper, weights=buy.sum(axis=1), minlength=size)
    induced_gmv = np.bincount(shopper, weights=(buy * price).sum(axis=1), minlength=size)
    # log P(no induced purchase) = Σ log(1 − p·c) over every item shown.
    no_purchase = np.exp(np.bincount(shopper, weights=np.log1p(-buy).sum(axis=1), minlength=size))
    impressions = np.bincount(shopper, weights=(shown >= 0).sum(axis=1), minlength=size)
    clicks = np.bincount(shopper, weights=p.sum(axis=1), minlength=size)
    return {
        "converted": 1.0 - np.exp(-organic) * no_purchase,
        **consent_expectations(behaviour),
        "gmv": organic * population.order_value + induced_gmv,
        "orders": organic + induced_orders,
        # The same in two parts: organic (the same under every arm) and what the lists shown caused.
        "gmv_organic": organic * population.order_value,
        "gmv_induced": induced_gmv,
        "orders_organic": organic,
        "orders_induced": induced_orders,
        "impressions": impressions,
        "clicks": clicks,
    }
