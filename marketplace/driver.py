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
4. **Organic orders** — orders no recommendation caused, through
   ``events_record`` in batches of at most 1,000.
5. **The closed loop** — time advances build by build (``build_every``:
   hourly or daily, as the schedule would): each arm's recommendations are
   built by the real build service with the clock at that moment (training on
   what was recorded until then, consent as of then), then every session
   until the next build shows the list read through the real serving selector
   (the arm's strategy, the shopper's *current* consent, the sensitive-category
   policy, the fallback). What the shopper clicks and buys depends on how the
   items match their tastes and on their position (``marketplace.model``); the
   impressions, clicks and purchases are recorded before the next build, which
   learns from them. With ``recommendations="random"`` (the placebo) every
   arm's slot shows uniformly random catalog items instead, and nothing is built.

A DP arm is rebuilt only as often as its privacy budget sustains, by the
production schedule's own rule (``recommender.services.arms_due``: every 3
days by default), so none of its builds is refused.

The truth is exact and counterfactual: ``SimulationResult.truth`` holds every
arm's true metric values and effects over every exposed shopper — the lists
an arm served its own shoppers, and the lists its model would have served the
others (``marketplace.counterfactual``, ``marketplace.truth``); the command
writes them as JSON so a test can check that the platform recovers them.
``snapshots_daily`` then computes one results snapshot per simulated day
through the results enqueue path, as the scheduled job would have.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
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
from experiments.results import results_enqueue
from experiments.targeting import AGE_BANDS, PLATFORMS, PROVINCES
from marketplace.catalog import CATEGORIES, Catalog, catalog_draw
from marketplace.counterfactual import Counterfactual
from marketplace.model import (
    HISTORY_DAYS,
    ITEMS_PER_SESSION,
    arm_behaviour,
    decisions_draw,
    expected_values,
    session_outcomes_draw,
)
from marketplace.population import Population, population_build
from marketplace.truth import ground_truth
from recommender.selectors import recommendations_for_subject
from recommender.services import (
    arms_due,
    arms_to_build,
    build_key_for,
    catalog_import,
    recommendations_build,
)

RECOMMENDATION_MODES = ("served", "random")  # what the recommendation slot shows: the platform's lists, or the placebo
BUILD_SCHEDULES = {"hourly": timedelta(hours=1), "daily": timedelta(days=1)}

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
    recommendations: str  # "served", "random", and any build failures
    builds: int = 0  # build rounds (each: every arm and the platform list)
    sessions: int = 0
    truth: dict = field(default_factory=dict)
    expected: dict = field(default_factory=dict)  # arm → every shopper's expected values under it (model.expected_values)
    # arm → the share of its own sessions for which the offline list (marketplace.counterfactual) is the one served
    agreement: dict[str, float | None] = field(default_factory=dict)
    arm_of: np.ndarray | None = None  # each shopper's arm index (−1: not exposed), in the experiment's arm order
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

    def __init__(self, progress: tqdm | None, observer: Callable[[dict], None] | None = None) -> None:
        self.pending: list[dict] = []
        self.recorded = 0
        self.progress = progress
        self.observer = observer

    def add(self, event: dict) -> None:
        self.pending.append(event)
        if self.observer is not None:
            self.observer(event)
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


def _order_event(rng, catalog: Catalog, affinity, event_id, subject_id, when, value) -> dict:
    """An organic order: its items from the shopper's tastes (category by affinity, item by popularity)."""
    lines = []
    count = 1 + int(rng.random() < 0.35) + int(rng.random() < 0.1)
    shares = rng.dirichlet(np.ones(count))
    amount = max(100, int(round(value / 100.0)) * 100)  # whole hundreds of rupiah
    remaining = amount
    for j in range(count):
        category_index = int(rng.choice(len(affinity), p=affinity))
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
    recommendations: str = "served",
    build_every: str = "daily",
    products: int = 400,
    progress: bool | None = None,
    write: Callable[[str], None] = lambda line: None,
) -> SimulationResult:
    """Run the marketplace for ``days`` days ending at ``end`` (default: now) through the real services.

    The experiment must be running and should have started at ``end − days``
    (``experiment_setup`` does that). ``namespace`` prefixes the shoppers' ids
    and event ids (default: the experiment key), so runs never collide.
    ``recommendations`` is "served" (the platform's lists) or "random" (the
    placebo); ``build_every`` "daily" or "hourly"; ``products`` the catalog's size
    (a small population learns little about a large catalog).
    """
    if recommendations not in RECOMMENDATION_MODES:
        raise ValueError(f"recommendations must be one of {', '.join(RECOMMENDATION_MODES)}, not {recommendations!r}")
    if build_every not in BUILD_SCHEDULES:
        raise ValueError(f"build_every must be one of {', '.join(BUILD_SCHEDULES)}, not {build_every!r}")
    end = (end or timezone.now()).replace(microsecond=0)
    start = end - timedelta(days=days)
    namespace = namespace or experiment.key
    rng = np.random.default_rng(seed + 1)
    catalog = catalog_build(seed=seed, products=products)
    population = population_build(size=subjects, seed=seed, start=start, end=end, catalog=catalog, namespace=namespace)
    arms = {arm.key: arm for arm in experiment.arms.select_related("treatment").order_by("id")}
    arm_keys = list(arms)
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
    arm_index = {key: i for i, key in enumerate(arm_keys)}
    arm_of = np.array([arm_index[a] if a is not None else -1 for a in assigned])

    # Every shopper's consent and organic behaviour, drawn at once (the same function the model's tests sample).
    draws = decisions_draw(population=population, arm_of=arm_of, behaviours=[behaviours[key] for key in arm_keys], rng=rng)
    history_start = np.concatenate([[0], np.cumsum(draws.history_counts)])
    order_start = np.concatenate([[0], np.cumsum(draws.order_counts)])

    # What every arm would have served every shopper (the truth's counterfactual): it follows every event.
    counterfactual = Counterfactual(
        population=population, catalog=catalog, decisions=draws, arm_of=arm_of,
        arm_ids=[arms[key].pk for key in arm_keys], treatments=[arms[key].treatment.as_contract().to_dict() for key in arm_keys],
        attributes=tuple((AGE_BANDS[population.age[i]], PROVINCES[population.province[i]], PLATFORMS[population.platform[i]])
                         for i in range(population.size)),
    )
    batcher = _Batcher(None, observer=counterfactual.record if recommendations == "served" else None)
    # 2. History: orders before arrival (CUPED's covariate and what the recommenders first learn from).
    total_history = int(draws.history_counts[exposed].sum())
    phases.begin("history")
    write(f"  recording {total_history:,} orders of history")
    with tqdm(total=total_history, unit="event", desc="history", disable=_disabled(progress)) as bar:
        batcher.progress = bar
        for i in np.flatnonzero(exposed).tolist():
            times = _uniform_times(rng, population.arrival[i] - timedelta(days=HISTORY_DAYS), population.arrival[i],
                                   int(draws.history_counts[i]))
            for k, when in enumerate(times):
                value = draws.history_values[history_start[i] + k]
                batcher.add(_order_event(rng, catalog, population.affinity[i], f"{namespace}-h{i}-{k}", population.ids[i], when, value))
        batcher.flush()

    # 3. Consent: grants at the next 4-hour mark after arrival, withdrawals an hour later
    # (consent_record stamps a batch with one time: slots keep the batches few).
    phases.begin("consent")
    consent_count = _consent_record(experiment=experiment, arms=arms, assigned=assigned, population=population,
                                    draws=draws, progress=progress, write=write)

    # 4. Organic orders after exposure (the builds only read what happened before their clock).
    phases.begin("organic orders")
    total_orders = int(draws.order_counts[exposed].sum())
    write(f"  recording {total_orders:,} organic orders")
    with tqdm(total=total_orders, unit="event", desc="orders", disable=_disabled(progress)) as bar:
        batcher.progress = bar
        for i in np.flatnonzero(exposed).tolist():
            begin = population.decided_at[i] + timedelta(hours=1)
            for k, when in enumerate(_uniform_times(rng, begin, end, int(draws.order_counts[i]))):
                value = draws.order_values[order_start[i] + k]
                batcher.add(_order_event(rng, catalog, population.affinity[i], f"{namespace}-o{i}-{k}", population.ids[i], when, value))
        batcher.flush()

    # 5. The closed loop: build, serve every session until the next build, record what the shoppers did.
    sessions: list[tuple[datetime, int]] = []
    for i in np.flatnonzero(exposed & (draws.sessions > 0)).tolist():
        begin = population.decided_at[i] + timedelta(hours=1)
        sessions += [(when, i) for when in _uniform_times(rng, begin, end, int(draws.sessions[i]))]
    sessions.sort()
    step = BUILD_SCHEDULES[build_every]
    build_times = [start + k * step for k in range(int(np.ceil((end - start) / step)))]
    shopper = np.array([i for _, i in sessions], dtype=np.int64)
    shown = np.full((len(sessions), ITEMS_PER_SESSION), -1, dtype=np.int64)
    sku_index = {sku: n for n, sku in enumerate(catalog.skus)}
    counterfactual.sessions_set(len(sessions), ITEMS_PER_SESSION)
    failures: list[str] = []
    build_rounds = 0
    timings = {"builds": 0.0, "serving": 0.0, "counterfactual lists": 0.0, "recording": 0.0}
    phases.begin("closed loop")
    write(f"  {len(sessions):,} sessions, {'builds ' + build_every if recommendations == 'served' else 'random items (placebo)'}")
    cursor = 0
    with tqdm(total=len(sessions), unit="session", desc="sessions", disable=_disabled(progress)) as bar:
        for k, built_at in enumerate(build_times):
            until = build_times[k + 1] if k + 1 < len(build_times) else end + timedelta(seconds=1)
            first = cursor
            while cursor < len(sessions) and sessions[cursor][0] < until:
                cursor += 1
            if recommendations == "served":
                clock = time.perf_counter()
                failures += _builds_run(experiment=experiment, now=built_at, counterfactual=counterfactual)
                build_rounds += 1
                timings["builds"] += time.perf_counter() - clock
                clock = time.perf_counter()
                lists: dict[int, list[int]] = {}  # a shopper's list is the same until the next build
                for s in range(first, cursor):
                    i = int(shopper[s])
                    if i not in lists:
                        # Consent judged at the session's simulated time, as the offline lists judge it
                        # (by the wall clock, a grant given in the simulated past may have expired).
                        answer = recommendations_for_subject(subject_id=population.ids[i], limit=ITEMS_PER_SESSION,
                                                             now=sessions[s][0])
                        lists[i] = [sku_index[item["product"]] for item in answer.items if item["product"] in sku_index]
                    shown[s, : len(lists[i])] = lists[i][:ITEMS_PER_SESSION]
                timings["serving"] += time.perf_counter() - clock
                clock = time.perf_counter()
                counterfactual.lists_fill(built_at=built_at, sessions=slice(first, cursor), shopper=shopper, served=shown)
                timings["counterfactual lists"] += time.perf_counter() - clock
            else:
                for s in range(first, cursor):
                    shown[s] = rng.choice(len(catalog.skus), ITEMS_PER_SESSION, replace=False)
            clock = time.perf_counter()
            window = slice(first, cursor)
            outcomes = session_outcomes_draw(population=population, catalog=catalog, shopper=shopper[window],
                                             shown=shown[window], rng=rng)
            for offset, s in enumerate(range(first, cursor)):
                _session_record(batcher, catalog, population, namespace, s, sessions[s][0], int(shopper[s]),
                                shown[s], outcomes.clicks[offset], outcomes.purchases[offset])
            batcher.flush()  # before the next build, which learns from these clicks and purchases
            timings["recording"] += time.perf_counter() - clock
            bar.update(cursor - first)
    phases.begin(None)
    phases.seconds.update({f"  of which {name}": round(sec, 2) for name, sec in timings.items() if sec})

    # Every exposed shopper's expected outcomes under every arm: in their own arm from the lists served,
    # in the others from the lists those arms' models would have served them (under the placebo,
    # random items whatever the arm).
    own = arm_of[shopper]
    expected = {}
    for key in arm_keys:
        a = arm_index[key]
        lists = shown if recommendations == "random" else np.where((own == a)[:, None], shown, counterfactual.shown[a])
        expected[key] = expected_values(behaviour=behaviours[key], population=population, catalog=catalog,
                                        shopper=shopper, shown=lists)
    truth = ground_truth(experiment=experiment, expected=expected, arm_of=arm_of, arm_keys=arm_keys, seed=seed,
                         start=start, end=end, recommendations=recommendations)
    status = recommendations if not failures else f"{recommendations} ({len(failures)} builds failed: {failures[0]}…)"
    return SimulationResult(
        experiment=experiment.key,
        seed=seed,
        window_start=start,
        window_end=end,
        subjects=subjects,
        exposed=int(exposed.sum()),
        by_arm={key: int((arm_of == arm_index[key]).sum()) for key in arm_keys},
        events=batcher.recorded,
        consent_decisions=consent_count,
        recommendations=status,
        builds=build_rounds,
        sessions=len(sessions),
        truth=truth,
        expected=expected,
        agreement=dict(zip(arm_keys, counterfactual.agreement(), strict=True)) if recommendations == "served" else {},
        arm_of=arm_of,
        seconds=phases.seconds,
    )


def _consent_record(*, experiment, arms, assigned, population: Population, draws, progress, write) -> int:
    decisions: dict[datetime, list[ConsentEventInput]] = {}
    for i, arm_key in enumerate(assigned):
        if arm_key is None:
            continue
        arm = arms[arm_key]
        treatment = arm.treatment
        source = ConsentSource(
            experiment=experiment.key, arm=arm.key, prompt=treatment.consent_prompt if treatment.consent_prompt != "none" else "settings",
            channel=PLATFORMS[population.platform[i]],
        )
        at = population.decided_at[i]
        if draws.grant[i]:
            decisions.setdefault(at, []).append(
                ConsentEventInput(subject_id=population.ids[i], purpose=Purpose.PERSONALIZATION, action="grant", notice_version="1", source=source)
            )
            if draws.sensitive_grant[i] and treatment.sensitive_category_policy != PrivacyTreatment.SensitivePolicy.EXCLUDE:
                decisions[at].append(
                    ConsentEventInput(subject_id=population.ids[i], purpose=Purpose.SENSITIVE_PROFILING, action="grant", notice_version="1", source=source)
                )
        if draws.withdraw[i]:
            decisions.setdefault(at + timedelta(hours=1), []).append(
                ConsentEventInput(subject_id=population.ids[i], purpose=Purpose.PERSONALIZATION, action="withdraw", source=source)
            )
    consent_count = sum(len(batch) for batch in decisions.values())
    write(f"  recording {consent_count:,} consent decisions")
    with tqdm(total=consent_count, unit="decision", desc="consent", disable=_disabled(progress)) as bar:
        for moment in sorted(decisions):
            batch = decisions[moment]
            for chunk in range(0, len(batch), 1000):
                consent_record(events=batch[chunk : chunk + 1000], now=moment)
                bar.update(len(batch[chunk : chunk + 1000]))
    return consent_count


def _builds_run(*, experiment, now: datetime, counterfactual: Counterfactual) -> list[str]:
    """One scheduled build round at ``now``: every running arm and the platform list, by the real build service.

    Each build hands its fitted model to ``counterfactual`` (the lists it would serve shoppers of other arms).
    A DP arm is built when its budget's pace has passed since its last build (``arms_due``, as scheduled
    in production); until then its last build keeps serving.
    """
    build_key = f"sim-{experiment.key}-{build_key_for(now)}"
    failed = []
    for arm_id in [*arms_due(arm_ids=arms_to_build(), now=now), None]:
        try:
            summary = recommendations_build(arm_id=arm_id, build_key=build_key, now=now,
                                            fitted=counterfactual.fitted(arm_id))
        except Exception as exc:  # too little data yet (the first hours): serving falls back, as in production
            counterfactual.built(arm_id, "failed")
            failed.append(f"arm {arm_id} at {now:%m-%d %H:%M}: {type(exc).__name__}")
            logger.info("simulated build for arm %s at %s failed: %s", arm_id, now, exc)
            continue
        counterfactual.built(arm_id, summary.outcome, summary.build_id)
        if summary.outcome == "refused":
            failed.append(f"arm {arm_id} at {now:%m-%d %H:%M}: refused ({summary.reason})")
    return failed


def _session_record(batcher, catalog: Catalog, population: Population, namespace: str, s: int, when: datetime, i: int,
                    shown, clicks, purchases) -> None:
    """One session's impressions, clicks and the purchases of clicked items, as events."""
    for position, item in enumerate(shown.tolist()):
        if item < 0:
            continue
        sku, category = catalog.skus[item], catalog.category_keys[int(catalog.item_category[item])]
        base = {"subject_id": population.ids[i], "product_id": sku, "category": category, "position": position}
        batcher.add({**base, "event_id": f"{namespace}-i{s}-{position}", "type": "rec_impression", "timestamp": when})
        if clicks[position]:
            clicked = when + timedelta(seconds=20 + position * 5)
            batcher.add({**base, "event_id": f"{namespace}-c{s}-{position}", "type": "rec_click", "timestamp": clicked})
            if purchases[position]:
                price = int(catalog.price[item])
                batcher.add({
                    "event_id": f"{namespace}-p{s}-{position}", "subject_id": population.ids[i], "type": "order",
                    "timestamp": clicked + timedelta(minutes=2), "amount": price,
                    "lines": [{"product_id": sku, "category": category, "quantity": 1, "price": price}],
                })


def snapshots_daily(*, experiment: Experiment, start: datetime, end: datetime, write: Callable[[str], None] = lambda line: None) -> int:
    """One results run per simulated day, as the scheduled job would have queued it (window ending that day).

    Through ``results_enqueue`` (the one way a results run is queued), so the
    monitor, the guardrail alerts and the decision history follow each day.
    """
    days = int(np.ceil((end - start) / timedelta(days=1)))
    for day in range(1, days + 1):
        as_of = min(start + timedelta(days=day), end)
        results_enqueue(experiment_ids=[experiment.pk], as_of=as_of, after_commit=False)
    write(f"  {days} daily snapshots computed")
    return days
