"""The marketplace simulator: shoppers with known behaviour, driven through the platform's real services.

``simulate(experiment=…, subjects=…, days=…, seed=…)`` replays the last
``days`` days of a marketplace running ``experiment``:

1. **Assignment** — each shopper arrives once, at a time spread over the
   window, and is assigned by ``assignments_for_subject`` (the real
   assignment path, first exposure recorded at the arrival time).
2. **History** — orders in the five weeks before arrival (the CUPED
   covariate) go in through ``events_record``.
3. **Consent** — the arm's prompt decides whether the shopper grants
   personalization (and, for sensitive-category shoppers under an
   explicit-consent policy, sensitive profiling); some withdraw. Recorded by
   ``consent_record`` in time-ordered batches.
4. **Recommendations** — when the recommender app is installed, the
   recommendation builds run through their Celery task and every shopper's
   list is read through the real serving selector (consent checked); the
   items shown become the impressions and clicks.
5. **Outcomes** — orders, impressions and clicks after exposure, through
   ``events_record`` in batches of at most 1,000.

Behaviour (all parameters below; docs/metrics.md has the table): a shopper
has an order rate, an order value, a session rate, an age band, a province, a
platform, two favourite categories and maybe an interest in a sensitive
category (health, financial products). Personalization raises the order rate,
the order value and the click-through rate; it needs a consent for the full
and cohort levels, not for differentially private popularity. The prompt sets
the grant rate (younger shoppers grant more), and opt-outs rise with age and,
for sensitive-interest shoppers, when sensitive categories may be used.

Because the model is known, every arm has a *true* value of every metric:
the average over all exposed shoppers of their expected value under that arm
(the counterfactual for the arms they were not in). ``SimulationResult.truth``
holds them, and the effects against the control; the command writes them as
JSON so a test can check that the platform recovers them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from django.apps import apps
from django.db import transaction
from django.utils import timezone
from tqdm import tqdm

from consent.models import Purpose
from consent.services import ConsentEventInput, ConsentSource, consent_record
from experiments import services
from experiments.models import Arm, Experiment, Guardrail, Metric, PrivacyTreatment
from marketplace.catalog import AGE_BANDS, CATEGORIES, PLATFORMS, PROVINCES

logger = logging.getLogger(__name__)

AGE_WEIGHTS = (0.24, 0.31, 0.22, 0.14, 0.09)
PROVINCE_WEIGHTS = (0.22, 0.24, 0.18, 0.15, 0.09, 0.08, 0.04)
PLATFORM_WEIGHTS = (0.62, 0.18, 0.20)
PLATFORM_RATE = {"android": 1.0, "ios": 1.25, "web": 0.8}

# --- the behavioural model ---------------------------------------------------------

BASE_ORDER_RATE = 0.05  # orders per day, population mean (Gamma-distributed per shopper)
ORDER_RATE_SHAPE = 1.2
ORDER_VALUE_MEDIAN = 165_000.0  # IDR
ORDER_VALUE_SIGMA = 0.5  # between shoppers (log scale)
BASKET_SIGMA = 0.35  # between one shopper's orders (log scale)
SESSION_RATE = 0.25  # sessions with recommendations per day
ITEMS_PER_SESSION = 5
HISTORY_DAYS = 35  # order history written before each arrival
HISTORY_RATE_FACTOR = 0.9  # habits before the experiment, slightly lower
SENSITIVE_INTEREST = 0.15  # share of shoppers interested in health or financial products
SENSITIVE_CONSENT_GRANT = 0.35  # of those, granting sensitive profiling when asked explicitly

PROMPT_GRANT = {"none": 0.03, "banner": 0.70, "modal": 0.55, "just_in_time": 0.62}  # "none": via settings
AGE_GRANT_SHIFT = {"18-24": 0.08, "25-34": 0.04, "35-44": 0.0, "45-54": -0.06, "55+": -0.12}
WITHDRAW_BY_LEVEL = {
    "full": 0.035, "dp_item_item": 0.025, "cohort": 0.02, "dp_popularity": 0.008, "popularity": 0.008, "session": 0.012,
}
AGE_WITHDRAW_SHIFT = {"18-24": 0.0, "25-34": 0.0, "35-44": 0.005, "45-54": 0.015, "55+": 0.025}
SENSITIVE_WITHDRAW_SHIFT = {"include": 0.09, "explicit_consent": 0.05, "exclude": 0.0}
PERSONAL_LEVELS = frozenset({"full", "dp_item_item", "cohort"})  # need the personalization consent to take effect
ORDER_LIFT = {"full": 1.25, "dp_item_item": 1.18, "cohort": 1.15, "dp_popularity": 1.08, "popularity": 1.0, "session": 1.08}
VALUE_LIFT = {"full": 1.06, "dp_item_item": 1.04, "cohort": 1.03, "dp_popularity": 1.01, "popularity": 1.0, "session": 1.02}
CLICK_RATE = {"full": 0.07, "dp_item_item": 0.06, "cohort": 0.05, "dp_popularity": 0.04, "popularity": 0.03, "session": 0.045}
BASE_CLICK_RATE = 0.03  # what anyone sees without personalization
SENSITIVE_EXCLUDED_LIFT_SHARE = 0.5  # sensitive shoppers keep half the lift when their categories are excluded

TRUTH_METRICS = (
    Metric.CONVERSION,
    Metric.OPT_OUT,
    Metric.CONSENT_RATE,
    Metric.GMV,
    Metric.ORDERS,
    Metric.AOV,
    Metric.CTR,
)

# The demo's privacy experiment: (arm key, weight, is control, treatment).
DEMO_ARMS = (
    (
        "control",
        1.0,
        True,
        {
            "name": "Full personalization, consent banner",
            "consent_prompt": "banner",
            "personalization_level": "full",
            "sensitive_category_policy": "explicit_consent",
            # Sensitive data may be used (with its own consent): the shorter sensitive retention applies.
            "retention_days": 90,
        },
    ),
    (
        "optin-cohort",
        1.0,
        False,
        {
            "name": "Explicit opt-in, k-anonymous cohorts",
            "consent_prompt": "modal",
            "personalization_level": "cohort",
            "sensitive_category_policy": "explicit_consent",
            "cohort_k": 50,
            "retention_days": 90,
        },
    ),
    (
        "dp-popularity",
        1.0,
        False,
        {
            "name": "No prompt, differentially private popularity",
            "consent_prompt": "none",
            "personalization_level": "dp_popularity",
            "sensitive_category_policy": "exclude",
            "dp_epsilon": 1.0,
            "retention_days": 90,
        },
    ),
    (
        "no-sensitive",
        1.0,
        False,
        {
            "name": "Full personalization, sensitive categories excluded",
            "consent_prompt": "banner",
            "personalization_level": "full",
            "sensitive_category_policy": "exclude",
            "retention_days": 365,
        },
    ),
)


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
    level = treatment["personalization_level"]
    policy = treatment["sensitive_category_policy"]
    age_grant = np.array([AGE_GRANT_SHIFT[band] for band in AGE_BANDS])[population.age]
    age_withdraw = np.array([AGE_WITHDRAW_SHIFT[band] for band in AGE_BANDS])[population.age]
    prompted = treatment["consent_prompt"] != "none"
    grant = np.clip(PROMPT_GRANT[treatment["consent_prompt"]] + (age_grant if prompted else 0.0), 0.0, 1.0)
    grant = np.broadcast_to(grant, (population.size,)).copy()
    withdraw = WITHDRAW_BY_LEVEL[level] + age_withdraw
    if level in PERSONAL_LEVELS:
        withdraw = withdraw + population.sensitive * SENSITIVE_WITHDRAW_SHIFT[policy]
    withdraw = np.clip(withdraw, 0.0, 1.0)
    effect = grant * (1.0 - withdraw) if level in PERSONAL_LEVELS else np.ones(population.size)
    lift = np.full(population.size, ORDER_LIFT[level])
    if policy == "exclude" and level in PERSONAL_LEVELS:
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
    arrival: list[datetime]
    horizon_days: np.ndarray  # time from the end of the consent decisions to the simulation's end
    decided_at: list[datetime]  # when the consent decisions are taken (after arrival)

    @property
    def size(self) -> int:
        return len(self.ids)


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


def true_metrics(behaviour: ArmBehaviour, population: Population) -> dict[str, float]:
    """The arm's true value of every metric over the whole population (ratios: ratio of means)."""
    e = expected_values(behaviour, population)
    return {
        Metric.CONVERSION: float(e["converted"].mean()),
        Metric.OPT_OUT: float(e["opted_out"].mean()),
        Metric.CONSENT_RATE: float(e["consented"].mean()),
        Metric.GMV: float(e["gmv"].mean()),
        Metric.ORDERS: float(e["orders"].mean()),
        Metric.AOV: float(e["gmv"].sum() / e["orders"].sum()),
        Metric.CTR: float(e["clicks"].sum() / e["impressions"].sum()),
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
        effect[mine] = (grant[mine] & ~withdraw[mine]) if behaviour.level in PERSONAL_LEVELS else True
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


# --- the catalog -----------------------------------------------------------------------


@dataclass(frozen=True)
class Catalog:
    skus: tuple[str, ...]
    item_category: np.ndarray
    category_keys: tuple[str, ...]
    category_sensitive: np.ndarray
    popularity: np.ndarray  # per item, for picking products within a category

    def items_of(self, category: int) -> np.ndarray:
        return np.flatnonzero(self.item_category == category)


def catalog_build(*, seed: int, products: int = 400) -> Catalog:
    """A catalog with sensitive categories, written to the recommender's tables when it is installed.

    The recommender is optional here (experiments does not depend on it): it
    is reached only through the app registry and its import service.
    """
    rng = np.random.default_rng(seed)
    item_category = np.arange(products) % len(CATEGORIES)
    rng.shuffle(item_category)
    skus = tuple(f"SIM-{i:05d}" for i in range(products))
    if recommender_available():
        from recommender.services import catalog_import

        catalog_import(
            categories=[{"key": key, "name": name, "sensitive": str(flag)} for key, name, flag in CATEGORIES],
            products=[
                {"sku": sku, "name": f"{CATEGORIES[c][1]} item {sku[4:]}", "category": CATEGORIES[c][0]}
                for sku, c in zip(skus, item_category.tolist(), strict=True)
            ],
        )
    return Catalog(
        skus=skus,
        item_category=item_category,
        category_keys=tuple(key for key, _, _ in CATEGORIES),
        category_sensitive=np.array([flag for _, _, flag in CATEGORIES], dtype=bool),
        popularity=rng.pareto(1.2, products) + 1.0,
    )


# --- the driver ------------------------------------------------------------------------


@dataclass
class SimulationResult:
    experiment: str
    seed: int
    window_start: datetime
    window_end: datetime
    subjects: int  # shoppers who arrived
    exposed: int  # of them, assigned to the experiment
    by_arm: dict[str, int]
    events: int
    consent_decisions: int
    recommendations: str  # "served" or why not
    truth: dict = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase


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
        arrival=arrival,
        horizon_days=np.maximum(horizon, 0.0),
        decided_at=decided,
    )


class _Phases:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._current: tuple[str, float] | None = None

    def begin(self, name: str | None) -> None:
        now = time.perf_counter()
        if self._current is not None:
            self.seconds[self._current[0]] = round(now - self._current[1], 2)
        self._current = (name, now) if name else None


class _Batcher:
    """Collects events and records them through ``events_record``, 1,000 at a time."""

    def __init__(self, progress: tqdm | None) -> None:
        self.pending: list[dict] = []
        self.recorded = 0
        self.progress = progress

    def add(self, event: dict) -> None:
        self.pending.append(event)
        if len(self.pending) >= services.MAX_EVENTS_PER_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        result = services.events_record(events=self.pending)
        self.recorded += result.recorded
        if self.progress is not None:
            self.progress.update(len(self.pending))
        self.pending = []


def _order_event(rng, catalog: Catalog, favourites, event_id, subject_id, when, value, recommended=()) -> dict:
    lines = []
    count = 1 + int(rng.random() < 0.35) + int(rng.random() < 0.1)
    shares = rng.dirichlet(np.ones(count))
    amount = max(100, int(round(value / 100.0)) * 100)  # whole hundreds of rupiah
    remaining = amount
    for j in range(count):
        if recommended and rng.random() < 0.3:
            sku, category = recommended[int(rng.integers(len(recommended)))]
        else:
            category_index = int(favourites[int(rng.integers(2))]) if rng.random() < 0.8 else int(rng.integers(len(catalog.category_keys)))
            members = catalog.items_of(category_index)
            weights = catalog.popularity[members] / catalog.popularity[members].sum()
            item = int(rng.choice(members, p=weights))
            sku, category = catalog.skus[item], catalog.category_keys[category_index]
        price = remaining if j == count - 1 else max(0, int(round(amount * shares[j] / 100.0)) * 100)
        price = min(price, remaining)
        remaining -= price
        lines.append({"product_id": sku, "category": category, "quantity": 1, "price": price})
    return {
        "event_id": event_id,
        "subject_id": subject_id,
        "type": "order",
        "timestamp": when,
        "amount": amount,
        "lines": lines,
    }


def _uniform_times(rng, start: datetime, end: datetime, count: int) -> list[datetime]:
    span = (end - start).total_seconds()
    if count <= 0 or span <= 0:
        return []
    return [start + timedelta(seconds=float(s)) for s in np.sort(rng.uniform(0, span, count))]


def recommender_available() -> bool:
    return apps.is_installed("recommender")


def _disabled(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None shows the bar only on a terminal."""
    return None if progress is None else not progress


def simulate(
    *,
    experiment: Experiment,
    subjects: int,
    days: float = 14.0,
    seed: int = 1,
    end: datetime | None = None,
    namespace: str | None = None,
    recommendations: bool = True,
    serve_limit: int | None = 2000,
    progress: bool | None = None,
    write: Callable[[str], None] = lambda line: None,
) -> SimulationResult:
    """Run the marketplace for ``days`` days ending at ``end`` (default: now) through the real services.

    The experiment must be running and should have started at ``end − days``
    (``experiment_setup`` does that). ``namespace`` prefixes the shoppers' ids
    and event ids (default: the experiment key), so runs never collide.
    ``serve_limit`` caps how many shoppers' lists are read through serving
    (None: all); the rest see their categories' best sellers.
    """
    end = (end or timezone.now()).replace(microsecond=0)
    start = end - timedelta(days=days)
    namespace = namespace or experiment.key
    rng = np.random.default_rng(seed + 1)
    catalog = catalog_build(seed=seed)
    population = population_build(size=subjects, seed=seed, start=start, end=end, catalog=catalog, namespace=namespace)
    arms = {arm.key: arm for arm in experiment.arms.select_related("treatment").order_by("id")}
    behaviours = {key: arm_behaviour(arm.treatment.as_contract(), population) for key, arm in arms.items()}

    # 1. Arrivals: the real assignment service, first exposure at the arrival time.
    phases = _Phases()
    phases.begin("assignment")
    write(f"  assigning {subjects:,} shoppers")
    assigned: list[str | None] = [None] * subjects
    with tqdm(total=subjects, unit="shopper", desc="assign", disable=_disabled(progress)) as bar:
        for chunk in range(0, subjects, 500):
            with transaction.atomic():  # one commit per 500 shoppers, not per shopper
                for i in range(chunk, min(chunk + 500, subjects)):
                    result = services.assignments_for_subject(
                        subject_id=population.ids[i],
                        attributes={
                            "age_band": AGE_BANDS[population.age[i]],
                            "province": PROVINCES[population.province[i]],
                            "platform": PLATFORMS[population.platform[i]],
                        },
                        now=population.arrival[i],
                    )
                    assigned[i] = next((a.arm for a in result if a.experiment == experiment.key), None)
            bar.update(min(500, subjects - chunk))
    exposed = np.array([arm is not None for arm in assigned])
    arm_index = {key: i for i, key in enumerate(arms)}
    arm_of = np.array([arm_index[a] if a is not None else -1 for a in assigned])

    # Every random outcome of every shopper, drawn at once (the same function the model's tests sample).
    draws = sample_outcomes(population=population, arm_of=arm_of, behaviours=[behaviours[key] for key in arms], rng=rng)
    grant, withdraw, effect = draws.grant, draws.withdraw, draws.effect
    history_counts, order_counts, sessions = draws.history_counts, draws.order_counts, draws.sessions
    history_start = np.concatenate([[0], np.cumsum(history_counts)])
    order_start = np.concatenate([[0], np.cumsum(order_counts)])
    click_start = np.concatenate([[0], np.cumsum(sessions * ITEMS_PER_SESSION)])

    batcher = _Batcher(None)
    # 2. History: orders before arrival (CUPED's covariate), for everyone exposed.
    total_history = int(history_counts[exposed].sum())
    phases.begin("history")
    write(f"  recording {total_history:,} orders of history")
    with tqdm(total=total_history, unit="event", desc="history", disable=_disabled(progress)) as bar:
        batcher.progress = bar
        for i in np.flatnonzero(exposed).tolist():
            times = _uniform_times(rng, population.arrival[i] - timedelta(days=HISTORY_DAYS), population.arrival[i], int(history_counts[i]))
            for k, when in enumerate(times):
                value = draws.history_values[history_start[i] + k]
                batcher.add(_order_event(rng, catalog, population.favourites[i], f"{namespace}-h{i}-{k}", population.ids[i], when, value))
        batcher.flush()

    # 3. Consent: grants at the next 4-hour mark after arrival, withdrawals an hour later
    # (consent_record stamps a batch with one time: slots keep the batches few).
    decisions: dict[datetime, list[ConsentEventInput]] = {}
    for i in np.flatnonzero(exposed).tolist():
        arm = arms[assigned[i]]
        treatment = arm.treatment
        source = ConsentSource(
            experiment=experiment.key, arm=arm.key, prompt=treatment.consent_prompt if treatment.consent_prompt != "none" else "settings",
            channel=PLATFORMS[population.platform[i]],
        )
        at = population.decided_at[i]
        if grant[i]:
            decisions.setdefault(at, []).append(
                ConsentEventInput(subject_id=population.ids[i], purpose=Purpose.PERSONALIZATION, action="grant", notice_version="1", source=source)
            )
            if (
                population.sensitive[i]
                and treatment.sensitive_category_policy != PrivacyTreatment.SensitivePolicy.EXCLUDE
                and rng.random() < SENSITIVE_CONSENT_GRANT
            ):
                decisions[at].append(
                    ConsentEventInput(subject_id=population.ids[i], purpose=Purpose.SENSITIVE_PROFILING, action="grant", notice_version="1", source=source)
                )
        if withdraw[i]:
            decisions.setdefault(at + timedelta(hours=1), []).append(
                ConsentEventInput(subject_id=population.ids[i], purpose=Purpose.PERSONALIZATION, action="withdraw", source=source)
            )
    consent_count = sum(len(batch) for batch in decisions.values())
    phases.begin("consent")
    write(f"  recording {consent_count:,} consent decisions")
    with tqdm(total=consent_count, unit="decision", desc="consent", disable=_disabled(progress)) as bar:
        for moment in sorted(decisions):
            batch = decisions[moment]
            for chunk in range(0, len(batch), 1000):
                consent_record(events=batch[chunk : chunk + 1000], now=moment)
                bar.update(len(batch[chunk : chunk + 1000]))

    # 4. Recommendations: build every arm's lists and read each shopper's through serving.
    served: dict[int, list[tuple[str, str]]] = {}
    reco_status = "not installed"
    if recommendations and recommender_available():
        phases.begin("recommendations")
        wanted = np.flatnonzero(exposed & (sessions > 0))
        if serve_limit is not None and len(wanted) > serve_limit:
            # Serving reads the arm and the consent state per request (a few ms each):
            # a sample keeps the demo quick; the others are shown best sellers of their categories.
            wanted = np.sort(rng.choice(wanted, serve_limit, replace=False))
        reco_status = _serve_recommendations(
            experiment=experiment, population=population, wanted=wanted.tolist(),
            served=served, progress=progress, write=write,
        )
    elif not recommendations:
        reco_status = "disabled"

    # 5. Outcomes after exposure: orders, impressions, clicks.
    expected_events = int(order_counts[exposed].sum() + ITEMS_PER_SESSION * sessions[exposed].sum() * 1.05)
    phases.begin("outcomes")
    write(f"  recording about {expected_events:,} outcome events")
    with tqdm(total=expected_events, unit="event", desc="outcomes", disable=_disabled(progress)) as bar:
        batcher.progress = bar
        for i in np.flatnonzero(exposed).tolist():
            begin = population.decided_at[i] + timedelta(hours=1)
            recommended = served.get(i, [])
            for k, when in enumerate(_uniform_times(rng, begin, end, int(order_counts[i]))):
                value = draws.order_values[order_start[i] + k]
                batcher.add(
                    _order_event(rng, catalog, population.favourites[i], f"{namespace}-o{i}-{k}", population.ids[i], when, value,
                                 recommended=recommended if effect[i] else ())
                )
            for s, when in enumerate(_uniform_times(rng, begin, end, int(sessions[i]))):
                shown = _shown(rng, catalog, population.favourites[i], recommended)
                for position, (sku, category) in enumerate(shown):
                    base = {"subject_id": population.ids[i], "product_id": sku, "category": category, "position": position}
                    batcher.add({**base, "event_id": f"{namespace}-i{i}-{s}-{position}", "type": "rec_impression", "timestamp": when})
                    if draws.clicks[click_start[i] + s * ITEMS_PER_SESSION + position]:
                        batcher.add(
                            {**base, "event_id": f"{namespace}-c{i}-{s}-{position}", "type": "rec_click",
                             "timestamp": when + timedelta(seconds=20 + position * 5)}
                        )
        batcher.flush()

    phases.begin(None)
    truth = ground_truth(
        experiment=experiment, population=population, exposed=exposed, behaviours=behaviours, seed=seed, start=start, end=end,
        by_arm={key: int((arm_of == arm_index[key]).sum()) for key in arms},
    )
    return SimulationResult(
        experiment=experiment.key,
        seed=seed,
        window_start=start,
        window_end=end,
        subjects=subjects,
        exposed=int(exposed.sum()),
        by_arm={key: int((arm_of == arm_index[key]).sum()) for key in arms},
        events=batcher.recorded,
        consent_decisions=consent_count,
        recommendations=reco_status,
        truth=truth,
        seconds=phases.seconds,
    )


def _shown(rng, catalog: Catalog, favourites, recommended: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The items of one recommendation slot: the served list, topped up from the shopper's categories."""
    shown = list(recommended[:ITEMS_PER_SESSION])
    while len(shown) < ITEMS_PER_SESSION:
        members = catalog.items_of(int(favourites[int(rng.integers(2))]))
        item = int(rng.choice(members))
        shown.append((catalog.skus[item], catalog.category_keys[int(catalog.item_category[item])]))
    return shown


def _serve_recommendations(*, experiment, population, wanted: Iterable[int], served, progress, write) -> str:
    from recommender.selectors import recommendations_for_subject
    from recommender.services import arms_to_build, build_key_for
    from recommender.tasks import recommendations_build

    write("  building recommendations (Celery tasks)")
    build_key = f"sim-{experiment.key}-{build_key_for(timezone.now())}"
    failed = []
    for arm_id in [*arms_to_build(), None]:
        try:
            recommendations_build.delay(arm_id, build_key).get()
        except Exception as exc:  # a build with too little data: serving falls back to best sellers
            failed.append(f"{arm_id}: {type(exc).__name__}")
            logger.warning("simulated build for arm %s failed: %s", arm_id, exc)
    wanted = list(wanted)
    with tqdm(total=len(wanted), unit="shopper", desc="serve", disable=_disabled(progress)) as bar:
        for i in wanted:
            answer = recommendations_for_subject(subject_id=population.ids[i], limit=ITEMS_PER_SESSION)
            served[i] = [(item["product"], item["category"]) for item in answer.items]
            bar.update(1)
    return "served" if not failed else f"served (builds failed: {', '.join(failed)})"


def ground_truth(*, experiment, population, exposed, behaviours, seed, start, end, by_arm) -> dict:
    """Every arm's true metric values over the exposed shoppers, and the effects against the control."""
    control = experiment.arms.get(is_control=True).key
    subset = _subset(population, exposed)
    values = {key: true_metrics(arm_behaviour_subset(behaviour, exposed), subset) for key, behaviour in behaviours.items()}
    effects = {
        key: {
            metric: {
                "absolute": values[key][metric] - values[control][metric],
                "relative": (values[key][metric] - values[control][metric]) / values[control][metric]
                if values[control][metric]
                else None,
            }
            for metric in TRUTH_METRICS
        }
        for key in values
        if key != control
    }
    return {
        "schema_version": 1,
        "experiment": experiment.key,
        "seed": seed,
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "subjects_exposed": int(exposed.sum()),
        "control": control,
        "note": "True values are averages over all exposed shoppers of their expected value under each arm; "
        "GMV is uncapped. Compare with results computed with gmv_cap_percentile = None.",
        "arms": {key: {"subjects": by_arm[key], "true": values[key]} for key in values},
        "effects": effects,
    }


def arm_behaviour_subset(behaviour: ArmBehaviour, mask: np.ndarray) -> ArmBehaviour:
    return ArmBehaviour(
        grant=behaviour.grant[mask],
        withdraw=behaviour.withdraw[mask],
        effect=behaviour.effect[mask],
        order_lift=behaviour.order_lift[mask],
        value_lift=behaviour.value_lift,
        click_rate=behaviour.click_rate,
        level=behaviour.level,
    )


def _subset(population: Population, mask: np.ndarray) -> Population:
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
        arrival=[population.arrival[i] for i in index],
        horizon_days=population.horizon_days[mask],
        decided_at=[population.decided_at[i] for i in index],
    )


# --- the demo experiment -----------------------------------------------------------------

# The largest GMV loss per subject the demo's product team accepts for more privacy.
DEMO_GMV_MARGIN = 0.10
# What a product manager would read off the marketplace's history to plan the demo experiment:
# GMV per subject (capped, IDR) and its spread per subject, and the opt-out rate, in this simulator.
DEMO_PLAN = {"gmv_baseline": 75_000.0, "gmv_standard_deviation": 180_000.0, "opt_out_baseline": 0.045}


def experiment_setup(
    *,
    key: str,
    owner,
    start: datetime,
    arms=DEMO_ARMS,
    gmv_cap_percentile: float | None = 0.99,
    opt_out_margin: float = 0.02,
    planned_subjects_per_arm: int | None = None,
    salt: str | None = None,
    decision_rule: str = Experiment.DecisionRule.PRIVACY_FIRST,
    decision_margin: float | None = DEMO_GMV_MARGIN,
    daily_subjects: float | None = None,
) -> Experiment:
    """Create and start (at ``start``) a privacy experiment with the given arms and an opt-out guardrail.

    The demo's question is privacy first: the most private design whose GMV per
    subject stays within ``decision_margin`` of the control, its opt-out
    guardrail passing. With ``daily_subjects`` the planner sizes it (from the
    simulated marketplace's GMV level and spread, ``DEMO_PLAN``); otherwise
    ``planned_subjects_per_arm`` is used as given. ``salt`` fixes the
    assignment hash (a reproducible simulation); by default it is random.
    """
    with transaction.atomic():
        experiment = services.experiment_save(
            experiment=Experiment(
                key=key,
                name="Privacy designs for product recommendations",
                hypothesis=(
                    "An explicit opt-in with k-anonymous cohort recommendations keeps most of full "
                    "personalization's GMV while cutting opt-outs; excluding sensitive categories cuts "
                    "opt-outs among shoppers interested in them."
                ),
                owner=owner,
                primary_metric=Metric.GMV,
                planned_subjects_per_arm=planned_subjects_per_arm,
                gmv_cap_percentile=gmv_cap_percentile,
                decision_rule=decision_rule,
                decision_margin=None if decision_rule == Experiment.DecisionRule.SUPERIORITY else decision_margin,
                **({"salt": salt} if salt else {}),
                **({"plan_daily_subjects": daily_subjects, "plan_baseline": DEMO_PLAN["gmv_baseline"],
                    "plan_standard_deviation": DEMO_PLAN["gmv_standard_deviation"]} if daily_subjects else {}),
            )
        )
        for arm_key, weight, is_control, fields in arms:
            treatment = _treatment_for(fields)
            Arm.objects.create(experiment=experiment, key=arm_key, treatment=treatment, weight=weight, is_control=is_control)
        Guardrail.objects.create(
            experiment=experiment, metric=Metric.OPT_OUT, margin=opt_out_margin,
            plan_baseline=DEMO_PLAN["opt_out_baseline"] if daily_subjects else None,
        )
        if daily_subjects:
            services.experiment_plan_apply(experiment=experiment)
    return services.experiment_transition(experiment=experiment, action="start", now=start)


def _treatment_for(fields: dict) -> PrivacyTreatment:
    """A treatment with exactly these settings: reused if it exists, else created (renamed if taken)."""
    settings = {name: value for name, value in fields.items() if name != "name"}
    existing = PrivacyTreatment.objects.filter(name__startswith=fields["name"], **settings).order_by("id").first()
    if existing is not None:
        return existing
    name, version = fields["name"], 1
    while PrivacyTreatment.objects.filter(name=name).exists():
        version += 1
        name = f"{fields['name']} (v{version})"
    return PrivacyTreatment.objects.create(**{**fields, "name": name})
