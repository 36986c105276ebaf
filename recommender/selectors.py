"""The recommender's reads: what a subject is shown (consent first), the DP budget, what builds train on.

Serving: every request reads the subject's arm and *current* consent. Personal lists
(full history, cohort, session, the categories of a DP arm) are used only
while the personalization consent counts; sensitive items only with the
sensitive_profiling consent too and a policy that allows them. Whatever
cannot be confirmed — the consent state, the arm, the cache *and* the
database — is answered with non-personal best sellers and ``personalized:
false``; nothing here raises for a reader's fault.

Reads go to the cache first (the build's keys, through the arm's pointer)
and to the database record on a miss, so a Redis outage costs latency, not
answers.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
from django.core.cache import cache
from django.db import DatabaseError
from django.db.models import Count, Sum
from django.utils import timezone

from config.memo import VersionedMemo
from consent.models import Purpose, Subject
from consent.pseudonyms import subject_pseudonym
from consent.selectors import consent_state, consenting_subject_ids
from experiments.contracts import TreatmentContract
from experiments.models import Arm, Experiment, Exposure, OrderLine, OutcomeEvent, PrivacyTreatment
from experiments.selectors import running_experiment_configs
from recommender import engine
from recommender.cache_keys import (
    arm_of_key,
    cohort_key,
    fallback_key,
    item_key,
    pointer_key,
    subject_key,
)
from recommender.conf import (
    CACHE_SECONDS,
    CLICK_WEIGHT,
    HISTORY_DAYS,
    ORDER_WEIGHT,
    recommender_setting,
)
from recommender.models import Category, ModelBuild, Product, RecommendationList

logger = logging.getLogger(__name__)

Level = PrivacyTreatment.PersonalizationLevel
Policy = PrivacyTreatment.SensitivePolicy
# The levels whose builds precompute one list per subject (a cohort arm stores the subject's cohort instead).
PER_SUBJECT_LEVELS = (Level.FULL, Level.DP_POPULARITY, Level.DP_ITEM_ITEM)
POPULARITY = Level.POPULARITY.value
MAX_LIMIT = 100
MAX_SESSION_ITEMS = 50
ARM_CACHE_SECONDS = 3600  # an exposure's arm never changes while its experiment runs


@dataclass(frozen=True)
class ArmChoice:
    experiment_id: int
    arm_id: int
    treatment: TreatmentContract


@dataclass(frozen=True)
class Served:
    """One answer: items (dicts), the strategy that produced them, and whether it used the subject's data."""

    items: list[dict]
    strategy: str
    personalized: bool
    arm: ArmChoice | None = None


# --- the subject's arm -------------------------------------------------------------------


_UNREAD = object()


def subject_arm(*, pseudonym: str, configs: dict | None = None, cached: object = _UNREAD) -> ArmChoice | None:
    """The subject's arm in a running experiment (the lowest experiment id if several), or None.

    ``configs`` (running experiments by id) and ``cached`` (the value of the
    subject's ``arm_of_key``) may be passed by a caller that fetched them already.
    """
    if configs is None:
        configs = {config.id: config for config in running_experiment_configs()}
    if not configs:
        return None
    if cached is _UNREAD:
        cached = cache.get(arm_of_key(pseudonym))
    if cached is not None:
        experiment_id, arm_id = cached
        config = configs.get(experiment_id)
        if config is not None and arm_id in config.arms_by_id:
            return ArmChoice(experiment_id, arm_id, config.arms_by_id[arm_id].contract)
    row = (
        Exposure.objects.filter(subject_id=pseudonym, experiment_id__in=list(configs))
        .order_by("experiment_id")
        .values_list("experiment_id", "arm_id")
        .first()
    )
    if row is None:
        return None
    experiment_id, arm_id = row
    arm = configs[experiment_id].arms_by_id.get(arm_id)
    if arm is None:
        return None
    cache.set(arm_of_key(pseudonym), (experiment_id, arm_id), timeout=ARM_CACHE_SECONDS)
    return ArmChoice(experiment_id, arm_id, arm.contract)


# --- the build's lists -------------------------------------------------------------------


def current_build(*, arm_id: int | None, cached: int | None = None) -> int | None:
    """The build serving an arm: the cache's pointer, else the newest published build on record."""
    key = pointer_key(arm_id)
    build_id = cached if cached is not None else cache.get(key)
    if build_id is not None:
        return build_id
    build_id = (
        ModelBuild.objects.filter(arm_id=arm_id, status=ModelBuild.Status.SUCCEEDED, published_at__isnull=False)
        .order_by("-published_at", "-id")
        .values_list("id", flat=True)
        .first()
    )
    if build_id is not None:
        # ``add``: a pointer a newer build published meanwhile is never overwritten.
        cache.add(key, build_id, timeout=CACHE_SECONDS)
    return build_id


def _record(**lookup) -> dict | list | None:
    """A list from the database record, shaped as the cache holds it."""
    row = RecommendationList.objects.filter(**lookup).values_list(
        "kind", "key", "items", "size", "without_sensitive"
    ).first()
    if row is None:
        return None
    kind, list_key, items, size, without_sensitive = row
    if kind == RecommendationList.Kind.SUBJECT:
        value = {"cohort": list_key} if list_key else {"items": items}
        return {**value, "without_sensitive": without_sensitive}
    if kind == RecommendationList.Kind.FALLBACK:
        return {"items": items, "strategy": list_key}
    if kind == RecommendationList.Kind.COHORT:
        return {"items": items, "size": size}
    return items  # item rows hold their payload


def _cached_or_record(cache_key_: str, **lookup) -> dict | None:
    value = cache.get(cache_key_)
    return value if value is not None else _record(**lookup)


def fallback_list(*, build_id: int, cached: dict | None = None) -> tuple[str, list]:
    value = cached if cached is not None else _record(build_id=build_id, kind=RecommendationList.Kind.FALLBACK)
    if value is None:
        return POPULARITY, []
    return value.get("strategy", POPULARITY), value["items"]


def subject_list(*, build_id: int, pseudonym: str, cached: dict | None = None, sensitive_ok: bool = True) -> list | None:
    """The subject's list in a build, as their consent allows *now*.

    A list that used the subject's sensitive interactions is served only while
    their sensitive_profiling consent counts; otherwise its twin computed
    without them (``without_sensitive``), or nothing — the arm's fallback.
    """
    value = cached if cached is not None else _record(build_id=build_id, subject_id=pseudonym)
    if value is None:
        return None
    if not sensitive_ok and value.get("without_sensitive") is not None:
        value = value["without_sensitive"]
        if not value:
            return None
    if "cohort" in value:
        cohort = _cached_or_record(
            cohort_key(build_id, value["cohort"]),
            build_id=build_id,
            kind=RecommendationList.Kind.COHORT,
            key=value["cohort"],
        )
        return cohort["items"] if cohort else None
    return value["items"]


def session_list(*, build_id: int, skus: Sequence[str], sensitive_ok: bool, explain: bool) -> list:
    """Item-item scores from the session's items only; nothing about the subject is read or kept."""
    keys = {item_key(build_id, sku): sku for sku in skus}
    found = cache.get_many(list(keys))
    missing = [sku for key, sku in keys.items() if key not in found]
    if missing:
        for sku, payload in RecommendationList.objects.filter(
            build_id=build_id, kind=RecommendationList.Kind.ITEM, key__in=missing
        ).values_list("key", "items"):
            found[item_key(build_id, sku)] = payload
    scores: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    entries: dict[str, list] = {}
    in_session = set(skus)
    for payload in found.values():
        if payload["sensitive"] and not sensitive_ok:
            continue  # a sensitive item in the session says something sensitive: not used without consent
        for sku, category, score, sensitive, *_ in payload["items"]:
            if sku in in_session:
                continue
            scores[sku] = scores.get(sku, 0.0) + score
            entries.setdefault(sku, [sku, category, 0.0, sensitive, None, False])
            if score > best.get(sku, (-1.0, ""))[0]:
                best[sku] = (score, payload["name"])
    ranked = sorted(scores, key=lambda sku: (-scores[sku], sku))
    result = []
    for sku in ranked:
        entry = list(entries[sku])
        entry[2] = round(scores[sku], 6)
        entry[4] = f"Similar to {best[sku][1]} in your session" if explain else None
        result.append(entry)
    return result


# --- the differential-privacy budget ---------------------------------------------------------


@dataclass(frozen=True)
class PrivacyBudget:
    """An arm's differential-privacy spend over the budget period, by basic sequential composition.

    Every DP build of the arm releases a fresh (ε, δ)-DP statistic of the same
    subjects, so over any period the guarantee is (Σ ε, Σ δ) of the builds in
    it (Dwork & Roth 2014, Thm. 3.16). A build is refused when it would take
    the sum past the budget.
    """

    arm_id: int
    period_days: int
    epsilon_budget: float
    delta_budget: float
    epsilon_spent: float
    delta_spent: float
    builds: int

    @property
    def epsilon_remaining(self) -> float:
        return max(self.epsilon_budget - self.epsilon_spent, 0.0)

    def refusal(self, *, epsilon: float, delta: float) -> str:
        """Why a build spending (ε, δ) would exceed the budget; empty when it fits."""
        # A hair of tolerance: ten builds of ε = 0.1 fit a budget of 1.
        if self.epsilon_spent + epsilon > self.epsilon_budget * (1 + 1e-9):
            return (f"ε = {epsilon:g} would bring this arm's spend over the last {self.period_days} days to "
                    f"{self.epsilon_spent + epsilon:g}, over its budget of {self.epsilon_budget:g}")
        if delta and self.delta_spent + delta > self.delta_budget * (1 + 1e-9):
            return (f"δ = {delta:g} would bring this arm's spend over the last {self.period_days} days to "
                    f"{self.delta_spent + delta:g}, over its budget of {self.delta_budget:g}")
        return ""


def privacy_budget(*, arm_id: int, now=None, exclude_build: int | None = None) -> PrivacyBudget:
    """What an arm's DP builds spent in the budget period ending ``now`` (``RECOMMENDER_DP_BUDGET_*``)."""
    now = now or timezone.now()
    days = int(recommender_setting("RECOMMENDER_DP_BUDGET_DAYS"))
    spending = ModelBuild.objects.filter(
        arm_id=arm_id, epsilon_spent__isnull=False, started_at__gt=now - timedelta(days=days)
    )
    if exclude_build is not None:
        spending = spending.exclude(pk=exclude_build)
    totals = spending.aggregate(epsilon=Sum("epsilon_spent"), delta=Sum("delta_spent"), builds=Count("id"))
    return PrivacyBudget(
        arm_id=arm_id,
        period_days=days,
        epsilon_budget=float(recommender_setting("RECOMMENDER_DP_BUDGET_EPSILON")),
        delta_budget=float(recommender_setting("RECOMMENDER_DP_BUDGET_DELTA")),
        epsilon_spent=float(totals["epsilon"] or 0.0),
        delta_spent=float(totals["delta"] or 0.0),
        builds=int(totals["builds"]),
    )


def dp_build_interval(*, epsilon: float, delta: float) -> timedelta:
    """The shortest interval between an arm's DP builds that its budget sustains for ever.

    One build spends ``epsilon`` (and ``delta``) of what the budget allows over
    its period (``RECOMMENDER_DP_BUDGET_*``): builds this far apart never spend
    more than the budget in any period (defaults: ε = 1 a build, 10 per 30 days:
    every 3 days). A schedule that rebuilds a DP arm more often runs it dry and
    then has its builds refused until old spending leaves the period.
    """
    share = max(epsilon / float(recommender_setting("RECOMMENDER_DP_BUDGET_EPSILON")),
                delta / float(recommender_setting("RECOMMENDER_DP_BUDGET_DELTA")))
    return timedelta(days=int(recommender_setting("RECOMMENDER_DP_BUDGET_DAYS")) * share)


# --- the answer ----------------------------------------------------------------------------

PLATFORM_MEMO_SECONDS = 60.0
# No version to follow: the list is reloaded once it is PLATFORM_MEMO_SECONDS old.
_platform_memo: VersionedMemo[list] = VersionedMemo(max_age_seconds=PLATFORM_MEMO_SECONDS)


def _platform_items() -> list:
    """The platform popularity list; remembered in-process so that it outlives a double outage."""
    try:
        return _platform_memo.get(None, _platform_items_load)
    except DatabaseError:
        logger.warning("platform popularity unavailable: serving the last one this process saw")
        last = _platform_memo.last
        return [] if last is None else last


def _platform_items_load() -> list:
    build_id = current_build(arm_id=None)
    return fallback_list(build_id=build_id, cached=cache.get(fallback_key(build_id)))[1] if build_id is not None else []


def _as_items(entries: list, limit: int, *, explain: bool, exclude: set[str], sensitive_ok: bool,
              personal: bool = False) -> list[dict]:
    """Entries as the API shows them: without what the answer may not hold.

    Sensitive items need ``sensitive_ok``; in a subject's own list (``personal``)
    so does an entry that their sensitive interactions shaped (its sixth field;
    a list built before the field existed counts as shaped by them).
    """
    items = []
    for entry in entries:
        sku, category, score, sensitive, reason = entry[:5]
        shaped_by_sensitive = bool(entry[5]) if len(entry) > 5 else True
        if sku in exclude or (sensitive and not sensitive_ok):
            continue
        if personal and shaped_by_sensitive and not sensitive_ok:
            continue
        item = {"product": sku, "category": category, "score": score}
        if explain:
            item["reason"] = reason or "Popular on the marketplace"
        items.append(item)
        exclude.add(sku)
        if len(items) >= limit:
            break
    return items


def _non_personal(limit: int, *, arm: ArmChoice | None = None, strategy: str = POPULARITY, entries: list | None = None,
                  explain: bool = False) -> Served:
    if entries is None:
        entries, strategy = _platform_items(), POPULARITY
    # Non-personal lists were built with the arm's policy for non-personal answers.
    items = _as_items(entries, limit, explain=explain, exclude=set(), sensitive_ok=True)
    return Served(items=items, strategy=strategy, personalized=False, arm=arm)


def recommendations_for_subject(
    *, subject_id: str, limit: int = 20, session: Sequence[str] = (), now: datetime | None = None
) -> Served:
    """What to show the subject now: personal only if the arm and the current consent allow it.

    ``now`` (default: the wall clock) is the moment served, at which consent is
    judged: the simulator serves sessions in its simulated past, where a grant
    given then counts then, though it may have expired by the wall clock.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be 1..{MAX_LIMIT}")
    pseudonym = subject_pseudonym(subject_id)
    try:
        configs = {config.id: config for config in running_experiment_configs()}
        # One round trip for the subject's cached arm and every running arm's build pointer.
        pointers = {pointer_key(a): a for config in configs.values() for a in config.arms_by_id}
        found = cache.get_many([arm_of_key(pseudonym), *pointers]) if configs else {}
        arm = subject_arm(pseudonym=pseudonym, configs=configs, cached=found.get(arm_of_key(pseudonym)))
    except DatabaseError:
        logger.warning("the subject's arm cannot be read: serving non-personal recommendations")
        return _non_personal(limit)
    if arm is None:  # unknown subject, or in no running experiment
        return _non_personal(limit)
    try:
        state = consent_state(pseudonym=pseudonym, now=now)
    except Exception as exc:  # unconfirmable consent means no personalization
        logger.warning("consent state unavailable (%s): failing closed", type(exc).__name__)
        return _non_personal(limit, arm=arm)
    try:
        return _for_arm(arm, pseudonym, state, limit, session, pointer=found.get(pointer_key(arm.arm_id)))
    except DatabaseError as exc:
        logger.warning("recommendation record unavailable (%s): failing closed", type(exc).__name__)
        return _non_personal(limit, arm=arm)


def _for_arm(arm: ArmChoice, pseudonym: str, state, limit: int, session: Sequence[str], *,
             pointer: int | None = None) -> Served:
    treatment = arm.treatment
    level = treatment.personalization_level
    explain = treatment.show_explanations
    build_id = current_build(arm_id=arm.arm_id, cached=pointer)
    if build_id is None:  # this arm has never been built
        return _non_personal(limit, arm=arm)
    personal_ok = state.personalization_allowed
    sensitive_ok = (
        personal_ok
        and treatment.includes_sensitive
        and state.sensitive_allowed
    )
    personal: list | None = None
    fallback_cached: object = _UNREAD
    if personal_ok:
        if level in (Level.FULL, Level.COHORT, Level.DP_POPULARITY, Level.DP_ITEM_ITEM):
            # The subject's list and the arm's fallback in one round trip: a short list is filled
            # from the fallback, and a second round trip costs more than the fallback's bytes.
            found = cache.get_many([subject_key(build_id, pseudonym), fallback_key(build_id)])
            fallback_cached = found.get(fallback_key(build_id))
            personal = subject_list(
                build_id=build_id, pseudonym=pseudonym, cached=found.get(subject_key(build_id, pseudonym)),
                sensitive_ok=sensitive_ok,
            )
        elif level == Level.SESSION and session:
            personal = session_list(build_id=build_id, skus=session, sensitive_ok=sensitive_ok, explain=explain)
    seen = set(session)
    # A cohort's list is the cohort's, not shaped by the subject's own items: the cohort choice is.
    items = _as_items(personal or [], limit, explain=explain, exclude=seen, sensitive_ok=sensitive_ok,
                      personal=level in PER_SUBJECT_LEVELS)
    if len(items) >= limit:
        return Served(items=items, strategy=level, personalized=True, arm=arm)
    # The arm's non-personal list: the whole answer, or the rest of a short personal one
    # (its own policy for sensitive items applies). Read here if it was not read with the list.
    if fallback_cached is _UNREAD:
        fallback_cached = cache.get(fallback_key(build_id))
    fallback_strategy, fallback = fallback_list(build_id=build_id, cached=fallback_cached)
    if not items:
        return _non_personal(limit, arm=arm, strategy=fallback_strategy, entries=fallback, explain=explain)
    items += _as_items(fallback, limit - len(items), explain=explain, exclude=seen, sensitive_ok=True)
    return Served(items=items, strategy=level, personalized=True, arm=arm)


# --- what builds read: the catalog, the training data, the arms to build ----------------------


@dataclass
class CatalogArrays:
    skus: list[str]
    names: list[str]
    categories: list[str]  # category key per item
    item_category: np.ndarray
    category_keys: list[str]
    category_names: list[str]
    category_sensitive: np.ndarray
    index: dict[str, int] = field(default_factory=dict)
    item_repeatable: np.ndarray | None = None

    @property
    def item_sensitive(self) -> np.ndarray:
        return self.category_sensitive[self.item_category]


def catalog_arrays() -> CatalogArrays:
    """The active catalog as arrays, items in sku order."""
    categories = list(Category.objects.order_by("id").values_list("id", "key", "name", "sensitive", "repeatable"))
    position = {row[0]: i for i, row in enumerate(categories)}
    products = list(
        Product.objects.filter(active=True).order_by("sku").values_list("sku", "name", "category_id", "repeatable")
    )
    category_repeatable = {row[0]: row[4] for row in categories}
    return CatalogArrays(
        skus=[sku for sku, _, _, _ in products],
        names=[name for _, name, _, _ in products],
        categories=[categories[position[c]][1] for _, _, c, _ in products],
        item_category=np.array([position[c] for _, _, c, _ in products], dtype=np.int64),
        category_keys=[row[1] for row in categories],
        category_names=[row[2] for row in categories],
        category_sensitive=np.array([row[3] for row in categories], dtype=bool),
        index={sku: i for i, (sku, _, _, _) in enumerate(products)},
        item_repeatable=np.array(
            [category_repeatable[c] if again is None else again for _, _, c, again in products], dtype=bool
        ),
    )


@dataclass
class Training:
    """A build's training data and how its rows map back to subjects."""

    data: engine.TrainingData
    catalog: CatalogArrays
    pseudonyms: list[str]  # row → pseudonym
    row_of: dict[str, int]
    sensitive_ok: np.ndarray  # per row: the subject's sensitive data may be used
    interactions: int
    # One entry per interaction (row, item, time in seconds, weight), for the offline evaluation's time split.
    raw: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None


def training_load(*, policy: str, now: datetime | None = None, history_days: int = HISTORY_DAYS) -> Training:
    """Consenting subjects' orders and recommendation clicks, filtered by the sensitive policy.

    Only subjects with a current personalization consent (and no restriction
    or objection) are read — the filter runs in the database, so nothing of
    anyone else is loaded. A subject's interactions in sensitive categories are
    kept only if the policy is not ``exclude`` and the subject has the explicit
    sensitive_profiling consent too; ``include`` cannot lower that bar.
    """
    now = now or timezone.now()
    since = now - timedelta(days=history_days)
    catalog = catalog_arrays()
    # Read once into a list: as of a past moment it is an anti-join on the ledger, which PostgreSQL
    # would otherwise plan inside each of the two IN subqueries below (minutes on the demo's data).
    consenting = list(consenting_subject_ids(purposes=[Purpose.PERSONALIZATION], now=now))
    sensitive_consenting = (
        set(consenting_subject_ids(purposes=[Purpose.PERSONALIZATION, Purpose.SENSITIVE_PROFILING], now=now))
        if policy != Policy.EXCLUDE
        else set()
    )
    triples: list[tuple[str, str, datetime, float]] = []
    orders = OrderLine.objects.filter(subject_id__in=consenting, occurred_at__gte=since, occurred_at__lte=now)
    for subject, sku, when in orders.values_list("subject_id", "product_id", "occurred_at").iterator(chunk_size=20_000):
        triples.append((subject, sku, when, ORDER_WEIGHT))
    clicks = OutcomeEvent.objects.filter(
        subject_id__in=consenting,
        type=OutcomeEvent.Type.REC_CLICK,
        occurred_at__gte=since,
        occurred_at__lte=now,
    )
    for subject, sku, when in clicks.values_list("subject_id", "product_id", "occurred_at").iterator(chunk_size=20_000):
        triples.append((subject, sku, when, CLICK_WEIGHT))
    sensitive_items = catalog.item_sensitive
    pseudonyms: list[str] = []
    row_of: dict[str, int] = {}
    subjects, items, times, weights = [], [], [], []
    for subject, sku, when, weight in triples:
        item = catalog.index.get(sku)
        if item is None:  # not (or no longer) in the active catalog: nothing to recommend from it
            continue
        if sensitive_items[item] and subject not in sensitive_consenting:
            continue
        row = row_of.get(subject)
        if row is None:
            row = row_of[subject] = len(pseudonyms)
            pseudonyms.append(subject)
        subjects.append(row)
        items.append(item)
        times.append(when.timestamp())
        weights.append(weight)
    attributes_by_subject = {
        pk: (age or "", province or "", platform or "")
        for pk, age, province, platform in Subject.objects.filter(pk__in=pseudonyms).values_list(
            "pseudonym", "age_band", "province", "platform"
        )
    } if len(pseudonyms) <= 50_000 else _attributes_in_batches(pseudonyms)
    raw = (
        np.array(subjects, dtype=np.int64),
        np.array(items, dtype=np.int64),
        np.array(times, dtype=np.float64),
        np.array(weights, dtype=np.float32),
    )
    data = engine.TrainingData.from_triples(
        subjects=raw[0],
        items=raw[1],
        weights=raw[3],
        times=raw[2],
        n_subjects=len(pseudonyms),
        item_category=catalog.item_category,
        category_sensitive=catalog.category_sensitive,
        attributes=tuple(attributes_by_subject.get(p, ("", "", "")) for p in pseudonyms),
        category_names=tuple(catalog.category_keys),
        purchases=raw[3] == ORDER_WEIGHT,
        item_repeatable=catalog.item_repeatable,
        as_of=now.timestamp(),
    )
    return Training(
        data=data,
        catalog=catalog,
        pseudonyms=pseudonyms,
        row_of=row_of,
        sensitive_ok=np.array([p in sensitive_consenting for p in pseudonyms], dtype=bool),
        interactions=len(subjects),
        raw=raw,
    )


def _attributes_in_batches(pseudonyms: list[str]) -> dict[str, tuple[str, str, str]]:
    found = {}
    for start in range(0, len(pseudonyms), 20_000):
        for pk, age, province, platform in Subject.objects.filter(pk__in=pseudonyms[start : start + 20_000]).values_list(
            "pseudonym", "age_band", "province", "platform"
        ):
            found[pk] = (age or "", province or "", platform or "")
    return found


def arms_to_build() -> list[int]:
    """Arms of running experiments, by id."""
    return list(
        Arm.objects.filter(experiment__status=Experiment.Status.RUNNING).order_by("id").values_list("id", flat=True)
    )
