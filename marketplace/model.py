"""The behavioural model: how shoppers respond to a privacy treatment, its expectation and its draws.

Pure numpy. A shopper (``marketplace.population``) has an order rate, an
order value, a session rate, an age band, a platform and maybe an interest in
a sensitive category (health, financial products). Personalization raises the
order rate, the order value and the click-through rate; it needs a consent
for the full and cohort levels, not for differentially private popularity.
The prompt sets the grant rate (younger shoppers grant more), and opt-outs
rise with age and, for sensitive-interest shoppers, when sensitive categories
may be used. ``expected_values`` is the expectation of ``sample_outcomes``'
draws (tests/marketplace/test_model.py checks it by Monte Carlo), which is
what makes the ground truth (``marketplace.truth``) true. docs/metrics.md has
the parameters' table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from experiments.targeting import AGE_BANDS
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
ORDER_LIFT = {"full": 1.25, "dp_item_item": 1.18, "cohort": 1.15, "dp_popularity": 1.08, "popularity": 1.0, "session": 1.08}
VALUE_LIFT = {"full": 1.06, "dp_item_item": 1.04, "cohort": 1.03, "dp_popularity": 1.01, "popularity": 1.0, "session": 1.02}
CLICK_RATE = {"full": 0.07, "dp_item_item": 0.06, "cohort": 0.05, "dp_popularity": 0.04, "popularity": 0.03, "session": 0.045}
BASE_CLICK_RATE = 0.03  # what anyone sees without personalization
SENSITIVE_EXCLUDED_LIFT_SHARE = 0.5  # sensitive shoppers keep half the lift when their categories are excluded


@dataclass(frozen=True)
class ArmBehaviour:
    """What an arm's treatment does to one shopper population (vectors over shoppers)."""

    grant: np.ndarray  # P(grant personalization after exposure)
    withdraw: np.ndarray  # P(withdraw personalization after exposure)
    effect: np.ndarray  # P(the arm's personalization reaches the shopper)
    order_lift: np.ndarray  # order-rate multiplier when it does
    value_lift: float
    click_rate: float
    level: str


def arm_behaviour(treatment: dict, population: Population) -> ArmBehaviour:
    """What the treatment (its contract's JSON form: this module stays pure numpy, no Django) does to each of the shoppers."""
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
    effect = grant * (1.0 - withdraw) if level in CONSENT_GATED_LEVELS else np.ones(population.size)
    lift = np.full(population.size, ORDER_LIFT[level])
    if policy == "exclude" and level in CONSENT_GATED_LEVELS:
        lift = np.where(population.sensitive, 1.0 + (ORDER_LIFT[level] - 1.0) * SENSITIVE_EXCLUDED_LIFT_SHARE, lift)
    return ArmBehaviour(
        grant=grant,
        withdraw=withdraw,
        effect=effect,
        order_lift=lift,
        value_lift=VALUE_LIFT[level],
        click_rate=CLICK_RATE[level],
        level=level,
    )


def arm_behaviour_subset(behaviour: ArmBehaviour, mask: np.ndarray) -> ArmBehaviour:
    """The behaviour of the shoppers ``mask`` selects."""
    return ArmBehaviour(
        grant=behaviour.grant[mask],
        withdraw=behaviour.withdraw[mask],
        effect=behaviour.effect[mask],
        order_lift=behaviour.order_lift[mask],
        value_lift=behaviour.value_lift,
        click_rate=behaviour.click_rate,
        level=behaviour.level,
    )


def expected_values(behaviour: ArmBehaviour, population: Population) -> dict[str, np.ndarray]:
    """Each shopper's expected value of every metric's per-subject quantities under the arm."""
    horizon = population.horizon_days
    rate = population.order_rate * horizon
    effect = behaviour.effect
    treated_orders = rate * behaviour.order_lift
    orders = effect * treated_orders + (1.0 - effect) * rate
    converted = effect * (1.0 - np.exp(-treated_orders)) + (1.0 - effect) * (1.0 - np.exp(-rate))
    gmv = population.order_value * (effect * treated_orders * behaviour.value_lift + (1.0 - effect) * rate)
    impressions = ITEMS_PER_SESSION * population.session_rate * horizon
    clicks = impressions * (effect * behaviour.click_rate + (1.0 - effect) * BASE_CLICK_RATE)
    return {
        "converted": converted,
        # An opt-out ends a grant (docs/metrics.md): a shopper who never granted withdraws nothing.
        "opted_out": behaviour.grant * behaviour.withdraw,
        "consented": behaviour.grant * (1.0 - behaviour.withdraw),
        "gmv": gmv,
        "orders": orders,
        "impressions": impressions,
        "clicks": clicks,
    }


@dataclass(frozen=True)
class Draws:
    """One realisation of every shopper's random behaviour (flat arrays are per order / per impression)."""

    grant: np.ndarray
    withdraw: np.ndarray
    effect: np.ndarray  # the arm's personalization reached the shopper
    history_counts: np.ndarray
    history_values: np.ndarray  # flat, shopper by shopper
    order_counts: np.ndarray
    order_values: np.ndarray  # flat, shopper by shopper
    sessions: np.ndarray
    clicks: np.ndarray  # flat bools, ITEMS_PER_SESSION per session, shopper by shopper


def sample_outcomes(*, population: Population, arm_of: np.ndarray, behaviours: list[ArmBehaviour], rng) -> Draws:
    """Draw every shopper's behaviour under the arm ``arm_of[i]`` (−1: not exposed, nothing after arrival).

    ``expected_values`` is the expectation of exactly these draws (the model's
    tests check it by Monte Carlo); the simulator turns them into service calls.
    """
    size = population.size
    exposed = arm_of >= 0
    grant = np.zeros(size, dtype=bool)
    withdraw = np.zeros(size, dtype=bool)
    effect = np.zeros(size, dtype=bool)
    lift = np.ones(size)
    value_lift = np.ones(size)
    click_rate = np.full(size, BASE_CLICK_RATE)
    u_grant, u_withdraw = rng.random(size), rng.random(size)
    for index, behaviour in enumerate(behaviours):
        mine = arm_of == index
        grant[mine] = u_grant[mine] < behaviour.grant[mine]
        withdraw[mine] = u_withdraw[mine] < behaviour.withdraw[mine]
        effect[mine] = (grant[mine] & ~withdraw[mine]) if behaviour.level in CONSENT_GATED_LEVELS else True
        reached = mine & effect
        lift[reached] = behaviour.order_lift[reached]
        value_lift[reached] = behaviour.value_lift
        click_rate[reached] = behaviour.click_rate
    history_counts = np.where(exposed, rng.poisson(population.order_rate * HISTORY_RATE_FACTOR * HISTORY_DAYS), 0)
    order_counts = np.where(exposed, rng.poisson(population.order_rate * population.horizon_days * lift), 0)
    sessions = np.where(exposed, rng.poisson(population.session_rate * population.horizon_days), 0)

    def values(counts: np.ndarray, scale: np.ndarray) -> np.ndarray:
        # Each order: the shopper's typical value × a log-normal basket factor of mean 1.
        baskets = np.exp(rng.normal(-BASKET_SIGMA**2 / 2, BASKET_SIGMA, int(counts.sum())))
        return np.repeat(scale, counts) * baskets

    history_values = values(history_counts, population.order_value)
    order_values = values(order_counts, population.order_value * value_lift)
    impressions = sessions * ITEMS_PER_SESSION
    clicks = rng.random(int(impressions.sum())) < np.repeat(click_rate, impressions)
    return Draws(
        grant=grant,
        withdraw=withdraw,
        effect=effect,
        history_counts=history_counts,
        history_values=history_values,
        order_counts=order_counts,
        order_values=order_values,
        sessions=sessions,
        clicks=clicks,
    )

