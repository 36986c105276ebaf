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
4. **Recommendations** — unless turned off, the
   recommendation builds run through their Celery task and every shopper's
   list is read through the real serving selector (consent checked); the
   items shown become the impressions and clicks.
5. **Outcomes** — orders, impressions and clicks after exposure, through
   ``events_record`` in batches of at most 1,000.

The shoppers (``marketplace.population``) behave as ``marketplace.model``
says, so the truth is known: ``SimulationResult.truth`` holds every arm's true
metric values and effects (``marketplace.truth``); the command writes them as
JSON so a test can check that the platform recovers them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from django.db import transaction
from django.utils import timezone
from tqdm import tqdm

from consent.models import Purpose
from consent.services import ConsentEventInput, ConsentSource, consent_record
from experiments import services
from experiments.models import Experiment, PrivacyTreatment
from experiments.targeting import AGE_BANDS, PLATFORMS, PROVINCES
from marketplace.catalog import CATEGORIES, Catalog, catalog_draw
from marketplace.model import (
    HISTORY_DAYS,
    ITEMS_PER_SESSION,
    SENSITIVE_CONSENT_GRANT,
    arm_behaviour,
    sample_outcomes,
)
from marketplace.population import population_build
from marketplace.truth import ground_truth
from recommender.selectors import recommendations_for_subject
from recommender.services import arms_to_build, build_key_for, catalog_import
from recommender.tasks import recommendations_build

logger = logging.getLogger(__name__)


@dataclass
class SimulationResult:
    """What a simulation did: the shoppers, the events and decisions recorded, and the ground truth."""

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


def catalog_build(*, seed: int, products: int = 400) -> Catalog:
    """The simulator's catalog (``catalog_draw``), written to the recommender's tables."""
    catalog = catalog_draw(seed=seed, products=products)
    catalog_import(
        categories=[{"key": key, "name": name, "sensitive": str(flag)} for key, name, flag in CATEGORIES],
        products=[
            {"sku": sku, "name": f"{CATEGORIES[c][1]} item {sku[4:]}", "category": CATEGORIES[c][0]}
            for sku, c in zip(catalog.skus, catalog.item_category.tolist(), strict=True)
        ],
    )
    return catalog


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
    behaviours = {key: arm_behaviour(arm.treatment.as_contract().to_dict(), population) for key, arm in arms.items()}

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
    reco_status = "disabled"
    if recommendations:
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

