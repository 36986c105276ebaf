"""Writes of the recommender: the catalog, and builds of each arm's recommendations.

A build (``recommendations_build``) reads consenting subjects' orders and
recommendation clicks, drops what the arm's sensitive-category policy and
each subject's sensitive consent do not allow, fits the arm's strategy
(``engine``), and precomputes its lists. It writes them to the database (the
record, and the fallback) and to the cache under keys of its own, and only
then *publishes*: one pointer per arm moves to the new build. A build that
fails before that leaves the pointer — and so the previous lists — serving.
Builds are unique per arm and build key: a redelivered or repeated task
finds the succeeded build and does nothing.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

import numpy as np
import scipy.sparse as sp
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from consent.models import Purpose, Subject
from consent.pseudonyms import subject_pseudonym
from consent.selectors import consenting_subject_ids
from experiments.models import Arm, Experiment, Exposure, OrderLine, OutcomeEvent, PrivacyTreatment
from recommender import engine
from recommender.models import Category, ModelBuild, Product, RecommendationList

logger = logging.getLogger(__name__)

Level = PrivacyTreatment.PersonalizationLevel
Policy = PrivacyTreatment.SensitivePolicy

# --- settings (each overridable in Django settings) ------------------------------------

TOP_N: int = getattr(settings, "RECOMMENDER_TOP_N", 50)  # per subject; serving fills up to 100
FALLBACK_N: int = 100  # the non-personal list covers the largest ``limit``
NEIGHBOURS: int = getattr(settings, "RECOMMENDER_NEIGHBOURS", 50)
WEIGHTING: str = getattr(settings, "RECOMMENDER_WEIGHTING", "cosine")
DP_CLIP: int = getattr(settings, "RECOMMENDER_DP_CLIP", 20)
DP_MECHANISM: str = getattr(settings, "RECOMMENDER_DP_MECHANISM", "laplace")
DP_DELTA: float = getattr(settings, "RECOMMENDER_DP_DELTA", 1e-6)
HISTORY_DAYS: int = getattr(settings, "RECOMMENDER_HISTORY_DAYS", 180)
KEEP_BUILDS: int = getattr(settings, "RECOMMENDER_KEEP_BUILDS", 24)  # per arm, with their lists
CACHE_SECONDS: int = getattr(settings, "RECOMMENDER_CACHE_SECONDS", 26 * 3600)
MIN_INTERACTIONS: int = getattr(settings, "RECOMMENDER_MIN_INTERACTIONS", 1)
ORDER_WEIGHT, CLICK_WEIGHT = 1.0, 0.5

# Read when used (``recommender_setting``), so that an override takes effect without a re-import.
SETTING_DEFAULTS: dict[str, float | int] = {
    # A similarity, or a cohort's listed item, needs at least this many distinct subjects.
    "RECOMMENDER_MIN_SUPPORT": 5,
    # The share of a full-history list given to the subject's own re-buys of repeatable items.
    "RECOMMENDER_BUY_AGAIN_SHARE": 0.5,
    "RECOMMENDER_BUY_AGAIN_HALF_LIFE_DAYS": 30.0,
    # DP item-item: the model's vocabulary (items chosen by noisy counts) and the share of ε choosing it.
    "RECOMMENDER_DP_CANDIDATES": 500,
    "RECOMMENDER_DP_SELECTION_SHARE": 0.2,
    # Per arm, over a sliding period: the ε (and δ) all its DP builds may spend together.
    "RECOMMENDER_DP_BUDGET_EPSILON": 10.0,
    "RECOMMENDER_DP_BUDGET_DELTA": 1e-5,
    "RECOMMENDER_DP_BUDGET_DAYS": 30,
}


def recommender_setting(name: str):
    """A recommender setting from Django settings, else its default (``SETTING_DEFAULTS``)."""
    return getattr(settings, name, SETTING_DEFAULTS[name])

# A build still "running" after this long was abandoned by a dead worker: take it over.
STALE_AFTER = timedelta(seconds=getattr(settings, "CELERY_TASK_TIME_LIMIT", 1800))

# --- cache keys ------------------------------------------------------------------------

KEY_PREFIX = "reco:v1:"


def _digest(text: str) -> str:
    # Skus and cohort keys may hold spaces and '&': hashed, every key stays cache-safe.
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def pointer_key(arm_id: int | None) -> str:
    return f"{KEY_PREFIX}current:{arm_id if arm_id is not None else 'platform'}"


def subject_key(build_id: int, pseudonym: str) -> str:
    return f"{KEY_PREFIX}{build_id}:s:{pseudonym}"


def cohort_key(build_id: int, cohort: str) -> str:
    return f"{KEY_PREFIX}{build_id}:c:{_digest(cohort)}"


def item_key(build_id: int, sku: str) -> str:
    return f"{KEY_PREFIX}{build_id}:i:{_digest(sku)}"


def fallback_key(build_id: int) -> str:
    return f"{KEY_PREFIX}{build_id}:f"


def arm_of_key(pseudonym: str) -> str:
    return f"{KEY_PREFIX}arm-of:{pseudonym}"


def subject_cache_keys(pseudonym: str) -> list[str]:
    """Every cache key that may hold this subject's data (for erasure).

    Every build that may have written keys still alive: whatever its status —
    running (it may be publishing right now), failed (it may have written its
    keys before failing) or succeeded — if it started within a key's lifetime
    plus the longest a build may run.
    """
    since = timezone.now() - timedelta(seconds=CACHE_SECONDS) - STALE_AFTER
    build_ids = ModelBuild.objects.filter(started_at__gte=since).values_list("id", flat=True)
    return [arm_of_key(pseudonym), *(subject_key(build_id, pseudonym) for build_id in build_ids)]


# --- catalog ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogImport:
    categories_created: int = 0
    categories_updated: int = 0
    products_created: int = 0
    products_updated: int = 0


_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


def _flag(value: object, where: str, errors: dict) -> bool:
    text = str(value if value is not None else "").strip().lower()
    if text in _TRUE:
        return True
    if text not in _FALSE:
        errors.setdefault(where, []).append(f"{value!r} is not a yes/no value (true/false, 1/0).")
    return False


def _text(row: Mapping, name: str, where: str, errors: dict, *, max_length: int, required: bool = True) -> str:
    value = (row.get(name) or "").strip()
    if required and not value:
        errors.setdefault(f"{where}.{name}", []).append("This field is required.")
    elif len(value) > max_length:
        errors.setdefault(f"{where}.{name}", []).append(f"At most {max_length} characters.")
    elif not value.isprintable():
        errors.setdefault(f"{where}.{name}", []).append("Must not contain control characters.")
    return value


def catalog_import(
    *, categories: Iterable[Mapping[str, object]] = (), products: Iterable[Mapping[str, object]] = ()
) -> CatalogImport:
    """Create or update categories (key, name, sensitive, repeatable) and products (sku, name, category,
    price, active, repeatable).

    All or nothing: any bad row raises a ValidationError naming its line and
    column (``categories[3].sensitive``), and nothing is written.
    """
    errors: dict[str, list[str]] = {}
    clean_categories: dict[str, dict] = {}
    for index, row in enumerate(categories):
        where = f"categories[{index}]"
        key = _text(row, "key", where, errors, max_length=64)
        name = _text(row, "name", where, errors, max_length=120, required=False) or key
        sensitive = _flag(row.get("sensitive"), f"{where}.sensitive", errors)
        # Absent or blank: a new category is not repeatable, an existing one keeps its flag.
        repeatable = None if row.get("repeatable") in (None, "") else _flag(
            row.get("repeatable"), f"{where}.repeatable", errors)
        if key in clean_categories:
            errors.setdefault(f"{where}.key", []).append(f"Category {key!r} appears twice.")
        clean_categories[key] = {"name": name, "sensitive": sensitive, "repeatable": repeatable}
    known = set(Category.objects.values_list("key", flat=True)) | set(clean_categories)
    clean_products: dict[str, dict] = {}
    for index, row in enumerate(products):
        where = f"products[{index}]"
        sku = _text(row, "sku", where, errors, max_length=64)
        name = _text(row, "name", where, errors, max_length=200, required=False) or sku
        category = _text(row, "category", where, errors, max_length=64)
        if category and category not in known:
            errors.setdefault(f"{where}.category", []).append(f"Unknown category {category!r}.")
        price = None
        raw_price = str(row.get("price") or "").strip()
        if raw_price:
            try:
                price = Decimal(raw_price)
                if not price.is_finite() or price < 0 or price >= Decimal("1e13"):
                    raise InvalidOperation
                price = price.quantize(Decimal("0.01"))
            except InvalidOperation:
                errors.setdefault(f"{where}.price", []).append("Must be a non-negative amount in IDR.")
                price = None
        active = True if row.get("active") in (None, "") else _flag(row.get("active"), f"{where}.active", errors)
        # Blank: as the category says.
        repeatable = None if row.get("repeatable") in (None, "") else _flag(
            row.get("repeatable"), f"{where}.repeatable", errors)
        if sku in clean_products:
            errors.setdefault(f"{where}.sku", []).append(f"Product {sku!r} appears twice.")
        clean_products[sku] = {"name": name, "category": category, "price": price, "active": active,
                               "repeatable": repeatable}
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        existing = {c.key: c for c in Category.objects.select_for_update().filter(key__in=clean_categories)}
        new = [
            Category(key=key, name=values["name"], sensitive=values["sensitive"], repeatable=bool(values["repeatable"]))
            for key, values in clean_categories.items()
            if key not in existing
        ]
        for key, values in clean_categories.items():
            if key in existing:
                existing[key].name, existing[key].sensitive = values["name"], values["sensitive"]
                if values["repeatable"] is not None:
                    existing[key].repeatable = values["repeatable"]
        Category.objects.bulk_create(new, batch_size=1000)
        Category.objects.bulk_update(list(existing.values()), ["name", "sensitive", "repeatable"], batch_size=1000)
        category_ids = dict(Category.objects.values_list("key", "id"))
        current = {p.sku: p for p in Product.objects.select_for_update().filter(sku__in=clean_products)}
        new_products, changed = [], []
        for sku, values in clean_products.items():
            fields = {
                "name": values["name"],
                "category_id": category_ids[values["category"]],
                "price": values["price"],
                "active": values["active"],
                "repeatable": values["repeatable"],
            }
            if sku in current:
                for name, value in fields.items():
                    setattr(current[sku], name, value)
                changed.append(current[sku])
            else:
                new_products.append(Product(sku=sku, **fields))
        Product.objects.bulk_create(new_products, batch_size=2000)
        Product.objects.bulk_update(changed, ["name", "category_id", "price", "active", "repeatable"], batch_size=2000)
    return CatalogImport(
        categories_created=len(new),
        categories_updated=len(existing),
        products_created=len(new_products),
        products_updated=len(changed),
    )


def catalog_import_csv(*, categories_csv: str | None = None, products_csv: str | None = None) -> CatalogImport:
    """``catalog_import`` from CSV text with a header row (columns as ``catalog_import`` names them)."""

    def rows(text: str | None, required: set[str], label: str) -> list[dict]:
        if not text:
            return []
        reader = csv.DictReader(io.StringIO(text))
        missing = sorted(required - set(reader.fieldnames or ()))
        if missing:
            raise ValidationError({label: f"Missing columns: {', '.join(missing)}."})
        return list(reader)

    return catalog_import(
        categories=rows(categories_csv, {"key"}, "categories"),
        products=rows(products_csv, {"sku", "category"}, "products"),
    )


def catalog_simulate(*, marketplace) -> CatalogImport:
    """Write a ``simulation.Marketplace``'s catalog (the demo's simulator fills the catalog so)."""
    repeatable = (marketplace.category_repeatable if marketplace.category_repeatable is not None
                  else np.zeros(len(marketplace.category_keys), dtype=bool))
    return catalog_import(
        categories=[
            {"key": key, "name": name, "sensitive": "true" if flag else "false", "repeatable": "true" if again else "false"}
            for key, name, flag, again in zip(
                marketplace.category_keys, marketplace.category_names, marketplace.category_sensitive, repeatable,
                strict=True,
            )
        ],
        products=[
            {"sku": sku, "name": f"{marketplace.category_names[c]} item {sku}", "category": marketplace.category_keys[c]}
            for sku, c in zip(marketplace.item_skus, marketplace.item_category.tolist(), strict=True)
        ],
    )


# --- training data -------------------------------------------------------------------------


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
    consenting = consenting_subject_ids(purposes=[Purpose.PERSONALIZATION], now=now)
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


# --- strategies per treatment ------------------------------------------------------------


def strategy_for(*, treatment: Mapping[str, object] | None, explain: bool = False, seed: int | None = None) -> engine.Strategy:
    """The engine strategy a treatment (``PrivacyTreatment.as_contract()``) asks for; None: platform popularity."""
    if treatment is None:
        return engine.PopularityStrategy(include_sensitive=False)
    level = treatment["personalization_level"]
    include_sensitive = treatment["sensitive_category_policy"] != Policy.EXCLUDE
    min_support = int(recommender_setting("RECOMMENDER_MIN_SUPPORT"))
    if level == Level.FULL:
        return engine.ItemItemStrategy(
            neighbours=NEIGHBOURS, weighting=WEIGHTING, include_sensitive=include_sensitive, explain=explain,
            min_support=min_support, buy_again_share=float(recommender_setting("RECOMMENDER_BUY_AGAIN_SHARE")),
            buy_again_half_life_days=float(recommender_setting("RECOMMENDER_BUY_AGAIN_HALF_LIFE_DAYS")),
        )
    if level == Level.SESSION:
        return engine.SessionStrategy(neighbours=NEIGHBOURS, weighting=WEIGHTING, include_sensitive=include_sensitive,
                                      min_support=min_support)
    if level == Level.COHORT:
        return engine.CohortStrategy(k=int(treatment["cohort_k"]), include_sensitive=include_sensitive,
                                     list_size=FALLBACK_N, min_item_support=min_support, neighbours=NEIGHBOURS)
    if level == Level.DP_POPULARITY:
        return engine.DPPopularityStrategy(
            epsilon=float(treatment["dp_epsilon"]),
            clip=DP_CLIP,
            mechanism=DP_MECHANISM,
            delta=DP_DELTA,
            include_sensitive=include_sensitive,
            seed=seed,
        )
    if level == Level.DP_ITEM_ITEM:
        return engine.DPItemItemStrategy(
            epsilon=float(treatment["dp_epsilon"]),
            clip=DP_CLIP,
            mechanism=DP_MECHANISM,
            delta=DP_DELTA,
            candidates=int(recommender_setting("RECOMMENDER_DP_CANDIDATES")),
            selection_share=float(recommender_setting("RECOMMENDER_DP_SELECTION_SHARE")),
            neighbours=NEIGHBOURS,
            include_sensitive=include_sensitive,
            explain=explain,
            seed=seed,
        )
    if level == Level.POPULARITY:
        return engine.PopularityStrategy(include_sensitive=include_sensitive)
    raise ValueError(f"unknown personalization level {level!r}")


# --- builds ------------------------------------------------------------------------------


class InsufficientTrainingData(RuntimeError):
    """Too little usable data to build: publishing would replace good lists with empty ones."""


class PrivacyBudgetExhausted(RuntimeError):
    """A DP build would spend more ε (or δ) than its arm has left in the budget period."""


@dataclass(frozen=True)
class BuildSummary:
    """What a build task returns (no personal data: it lands in the result backend)."""

    build_id: int | None
    outcome: str  # built | already_built | in_progress | refused
    strategy: str = ""
    lists: int = 0
    subjects_trained: int = 0
    epsilon_spent: float | None = None
    reason: str = ""

    def as_dict(self) -> dict:
        return {
            "build": self.build_id,
            "outcome": self.outcome,
            "strategy": self.strategy,
            "lists": self.lists,
            "subjects_trained": self.subjects_trained,
            "epsilon_spent": self.epsilon_spent,
            "reason": self.reason,
        }


def build_key_for(now: datetime) -> str:
    """The scheduled build key: the UTC hour, so the hourly job builds each hour once."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H")


def _claim(arm: Arm | None, build_key: str, strategy: engine.Strategy, now: datetime) -> tuple[ModelBuild, str, str]:
    """Claim the build (``claimed``, or why not), and for a DP strategy charge its budget first.

    The charge is made under a lock on the arm's row, so two builds of one arm
    cannot both spend the last of its budget; it is committed before any noise
    is drawn, and stays charged whatever happens next. Each attempt draws fresh
    noise, so each attempt is charged: ``epsilon_spent`` adds up.
    """
    dp = isinstance(strategy, engine.DifferentiallyPrivateStrategy)
    with transaction.atomic():
        if dp and arm is not None:
            Arm.objects.select_for_update().filter(pk=arm.pk).first()
        lookup = {"arm": arm, "build_key": build_key}
        build = ModelBuild.objects.select_for_update().filter(**lookup).first()
        if build is None:
            build = ModelBuild(**lookup, status=ModelBuild.Status.RUNNING, attempts=0, started_at=now)
        elif build.status == ModelBuild.Status.SUCCEEDED:
            return build, "already_built", ""
        elif build.status == ModelBuild.Status.RUNNING and build.started_at > now - STALE_AFTER:
            return build, "in_progress", ""
        build.status = ModelBuild.Status.RUNNING
        build.attempts += 1
        build.started_at = now
        build.strategy = strategy.level
        build.error = ""
        build.finished_at = None
        if dp and arm is not None:
            from recommender.selectors import privacy_budget

            epsilon, delta = strategy.budget
            budget = privacy_budget(arm_id=arm.pk, now=now, exclude_build=build.pk)
            refusal = budget.refusal(epsilon=epsilon, delta=delta)
            if refusal:
                build.status = ModelBuild.Status.FAILED
                build.finished_at = now
                build.error = PrivacyBudgetExhausted.__name__
                build.params = {**strategy.params(), "refused": refusal}
                build.save()
                return build, "refused", refusal
            build.epsilon_spent = (build.epsilon_spent or 0.0) + epsilon
            build.delta_spent = ((build.delta_spent or 0.0) + delta) or None
        build.save()
        return build, "claimed", ""


def recommendations_build(
    *, arm_id: int | None, build_key: str, now: datetime | None = None, seed: int | None = None
) -> BuildSummary:
    """Build one arm's recommendations (``arm_id`` None: the platform popularity list); idempotent.

    A DP arm whose budget for the period cannot pay for this build is refused
    (outcome ``refused``, recorded as a failed build with the reason): the
    previous build keeps serving, with its ε already accounted.
    """
    now = now or timezone.now()
    arm = Arm.objects.select_related("treatment", "experiment").get(pk=arm_id) if arm_id is not None else None
    treatment = arm.treatment.as_contract() if arm is not None else None
    explain = bool(treatment and treatment["show_explanations"])
    strategy = strategy_for(treatment=treatment, explain=explain, seed=seed)
    build, outcome, reason = _claim(arm, build_key, strategy, now)
    if outcome != "claimed":
        if outcome == "refused":
            logger.warning("recommendation build %s refused: %s", build.pk, reason)
        return BuildSummary(build_id=build.pk, outcome=outcome, strategy=build.strategy, reason=reason)
    started = time.monotonic()
    try:
        summary = _build(build, arm, treatment, strategy, now=now)
    except Exception as exc:
        ModelBuild.objects.filter(pk=build.pk).update(
            status=ModelBuild.Status.FAILED,
            finished_at=timezone.now(),
            duration_seconds=time.monotonic() - started,
            error=type(exc).__name__[:200],
        )
        logger.warning("recommendation build %s failed (%s); the previous build keeps serving", build.pk, type(exc).__name__)
        raise
    ModelBuild.objects.filter(pk=build.pk).update(duration_seconds=time.monotonic() - started)
    return summary


def _entry(catalog: CatalogArrays, item: int, score: float, reason: str | None, sensitive_evidence: bool = False) -> list:
    return [catalog.skus[item], catalog.categories[item], round(float(score), 6), bool(catalog.item_sensitive[item]),
            reason, bool(sensitive_evidence)]


def _reason(level: str, catalog: CatalogArrays, because: int, *, rebuy: bool = False) -> str | None:
    if rebuy:
        return "Buy again"
    if level in (Level.FULL, Level.SESSION) and because >= 0:
        return f"Because you showed interest in {catalog.names[because]}"
    if level == Level.DP_ITEM_ITEM and because >= 0:
        return f"Because you showed interest in {catalog.names[because]} (privacy-protected similarities)"
    if level == Level.COHORT:
        return "Popular with shoppers like you"
    if level == Level.DP_POPULARITY:
        return "Popular in a category you browse (privacy-protected counts)"
    return None


def _fallback_entries(strategy: engine.Strategy, training: Training, policy: str, explain: bool) -> tuple[str, list]:
    """The arm's non-personal list: noisy best sellers for DP arms, best sellers otherwise.

    Sensitive items appear in it only under the ``include`` policy: shown to
    everyone alike, they profile nobody (the compliance review's reading).
    """
    catalog = training.catalog
    sensitive = policy == Policy.INCLUDE
    if isinstance(strategy, engine.DifferentiallyPrivateStrategy):
        items, scores = strategy.overall_ranking(FALLBACK_N, sensitive=sensitive)
        reason = "Popular on the marketplace (privacy-protected counts)" if explain else None
        label = Level.DP_POPULARITY.value
    else:
        popularity = engine.PopularityStrategy(include_sensitive=sensitive).fit(training.data)
        items, scores = popularity.ranking(FALLBACK_N, sensitive=sensitive)
        total = max(float(popularity.counts.max(initial=0.0)), 1.0)
        scores = scores / total
        reason = "Best seller" if explain else None
        label = Level.POPULARITY.value
    return label, [_entry(catalog, int(i), s, reason) for i, s in zip(items, scores, strict=True) if i >= 0]


def _targets(arm: Arm | None, training: Training) -> np.ndarray:
    """Rows of the arm's exposed subjects who are in the training data (so: consenting, with history)."""
    if arm is None:
        return np.zeros(0, dtype=np.int64)
    exposed = Exposure.objects.filter(arm=arm).values_list("subject_id", flat=True).iterator(chunk_size=20_000)
    return np.array(sorted(training.row_of[p] for p in exposed if p in training.row_of), dtype=np.int64)


PER_SUBJECT_LEVELS = (Level.FULL, Level.DP_POPULARITY, Level.DP_ITEM_ITEM)


def _with_sensitive_evidence(training: Training, rows: np.ndarray) -> np.ndarray:
    """Which of these training rows hold an interaction in a sensitive category."""
    evidence = training.data.interactions[rows]
    row_of = np.repeat(np.arange(len(rows)), np.diff(evidence.indptr))
    flagged = row_of[training.catalog.item_sensitive[evidence.indices]]
    return np.bincount(flagged, minlength=len(rows)) > 0


def _without_sensitive(training: Training, rows: np.ndarray):
    """The rows' evidence with their sensitive items removed (what is left without that consent)."""
    evidence = training.data.interactions[rows].tocsr()
    keep = ~training.catalog.item_sensitive[evidence.indices]
    row_of = np.repeat(np.arange(len(rows)), np.diff(evidence.indptr))
    return sp.csr_matrix((evidence.data[keep], (row_of[keep], evidence.indices[keep])), shape=evidence.shape)


def _personal_entries(top: engine.TopN, r: int, level: str, catalog: CatalogArrays, explain: bool) -> list:
    because = top.because if top.because is not None else np.full(top.items.shape, -1)
    flags = top.sensitive_evidence if top.sensitive_evidence is not None else np.zeros(top.items.shape, dtype=bool)
    rebuy = top.rebuy if top.rebuy is not None else np.zeros(top.items.shape, dtype=bool)
    return [
        _entry(catalog, int(i), score, _reason(level, catalog, int(b), rebuy=bool(again)) if explain else None, bool(flag))
        for i, score, b, flag, again in zip(top.items[r], top.scores[r], because[r], flags[r], rebuy[r], strict=True)
        if i >= 0
    ]


def _build(build: ModelBuild, arm: Arm | None, treatment: Mapping | None, strategy: engine.Strategy, *,
           now: datetime) -> BuildSummary:
    policy = treatment["sensitive_category_policy"] if treatment else Policy.EXCLUDE
    history_days = min(HISTORY_DAYS, int(treatment["retention_days"])) if treatment else HISTORY_DAYS
    training = training_load(policy=policy, now=now, history_days=history_days)
    if training.interactions < MIN_INTERACTIONS or not training.catalog.skus:
        raise InsufficientTrainingData(
            f"{training.interactions} usable interactions (need {MIN_INTERACTIONS}) over "
            f"{len(training.catalog.skus)} active products"
        )
    explain = bool(treatment and treatment["show_explanations"])
    strategy.fit(training.data)
    level = strategy.level
    catalog = training.catalog
    created = timezone.now()
    lists: list[RecommendationList] = []
    cache_entries: dict[str, object] = {}
    targets = _targets(arm, training)

    if len(targets) and level in PER_SUBJECT_LEVELS:
        top = strategy.recommend(
            rows=targets, evidence=training.data.interactions[targets], n=TOP_N, sensitive_ok=training.sensitive_ok[targets]
        )
        # A list that used the subject's sensitive interactions gets a twin computed without them,
        # served once (and as soon as) the subject's sensitive_profiling consent no longer counts.
        sensitive_rows = np.flatnonzero(_with_sensitive_evidence(training, targets))
        variants: dict[int, dict] = {}
        if sensitive_rows.size:
            twin = strategy.recommend(
                rows=targets[sensitive_rows], evidence=_without_sensitive(training, targets[sensitive_rows]),
                n=TOP_N, sensitive_ok=np.zeros(sensitive_rows.size, dtype=bool),
            )
            for v, r in enumerate(sensitive_rows.tolist()):
                variants[r] = {"items": _personal_entries(twin, v, level, catalog, explain)}
        for r, row in enumerate(targets.tolist()):
            entries = _personal_entries(top, r, level, catalog, explain)
            if entries:
                pseudonym = training.pseudonyms[row]
                variant = variants.get(r)
                lists.append(RecommendationList(build=build, kind="subject", subject_id=pseudonym, items=entries,
                                                without_sensitive=variant, created_at=created))
                cache_entries[subject_key(build.pk, pseudonym)] = {"items": entries, "without_sensitive": variant}
    if level == Level.COHORT:
        cohorts = strategy.cohorts
        for index, key in enumerate(cohorts.keys):
            entries = [_entry(catalog, i, s, _reason(level, catalog, -1) if explain else None) for i, s in cohorts.lists[index]]
            lists.append(RecommendationList(build=build, kind="cohort", key=key, size=int(cohorts.sizes[index]), items=entries, created_at=created))
            cache_entries[cohort_key(build.pk, key)] = {"items": entries, "size": int(cohorts.sizes[index])}
        members = targets[cohorts.membership[targets] >= 0]
        # A cohort chosen from the subject's sensitive interactions (say, a health affinity) has a twin:
        # the cohort their other interactions would put them in (or none).
        sensitive_members = members[_with_sensitive_evidence(training, members)] if members.size else members
        twins = dict(zip(sensitive_members.tolist(), strategy.membership_from(
            rows=sensitive_members, evidence=_without_sensitive(training, sensitive_members)).tolist(), strict=True)
        ) if sensitive_members.size else {}
        for row in members.tolist():
            index = int(cohorts.membership[row])
            pseudonym = training.pseudonyms[row]
            variant = None
            if row in twins:
                variant = {"cohort": cohorts.keys[twins[row]]} if twins[row] >= 0 else {}
            lists.append(RecommendationList(build=build, kind="subject", subject_id=pseudonym, key=cohorts.keys[index],
                                            without_sensitive=variant, created_at=created))
            cache_entries[subject_key(build.pk, pseudonym)] = {"cohort": cohorts.keys[index], "without_sensitive": variant}
    if level == Level.SESSION:
        similarity = strategy.similarity
        for item in np.flatnonzero(np.diff(similarity.indptr)).tolist():
            neighbours = [_entry(catalog, j, s, None) for j, s in strategy.neighbours_of(item)]
            payload = {"name": catalog.names[item], "sensitive": bool(catalog.item_sensitive[item]), "items": neighbours}
            lists.append(RecommendationList(build=build, kind="item", key=catalog.skus[item], items=payload, created_at=created))
            cache_entries[item_key(build.pk, catalog.skus[item])] = payload
    fallback_label, fallback = _fallback_entries(strategy, training, policy, explain)
    lists.append(RecommendationList(build=build, kind="fallback", key=fallback_label, items=fallback, created_at=created))
    cache_entries[fallback_key(build.pk)] = {"items": fallback, "strategy": fallback_label}

    written, lists_written = _lists_write(build, lists, cache_entries)
    with transaction.atomic():
        ModelBuild.objects.filter(pk=build.pk).update(
            status=ModelBuild.Status.SUCCEEDED,
            finished_at=timezone.now(),
            published_at=timezone.now(),
            params=strategy.params(),
            subjects_trained=training.data.n_subjects,
            interactions_trained=training.interactions,
        )
        pointer = pointer_key(arm.pk if arm else None)
        transaction.on_commit(lambda: _publish(pointer, build.pk), robust=True)
    _erased_forget(build.pk, written)
    recommendations_prune(arm_id=arm.pk if arm else None)
    logger.info("recommendation build %s (%s) published", build.pk, level)
    return BuildSummary(
        build_id=build.pk,
        outcome="built",
        strategy=level,
        lists=lists_written,
        subjects_trained=training.data.n_subjects,
        epsilon_spent=build.epsilon_spent,
    )


def _live_subjects(pseudonyms: Iterable[str], *, lock: bool) -> set[str]:
    """Which of these subjects still exist; with ``lock``, held (FOR KEY SHARE) until the transaction ends.

    The lock is the one an erasure's FOR UPDATE on the subject waits for (and
    the other way round), so a build never writes a list for a subject whose
    erasure has committed, and an erasure that starts while a build writes
    sees — and deletes — what the build wrote. Builds' KEY SHARE locks do not
    block one another.
    """
    found: set[str] = set()
    ordered = sorted(set(pseudonyms))
    quote = connection.ops.quote_name
    table, column = quote(Subject._meta.db_table), quote(Subject._meta.pk.column)
    for start in range(0, len(ordered), 10_000):
        chunk = ordered[start : start + 10_000]
        if lock and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # Names from the model's metadata, quoted; the values are bound.
                cursor.execute(
                    f"SELECT {column} FROM {table} WHERE {column} = ANY(%s) ORDER BY {column} FOR KEY SHARE",  # noqa: S608
                    [chunk],
                )
                found.update(row[0] for row in cursor.fetchall())
        else:
            found.update(Subject.objects.filter(pk__in=chunk).values_list("pk", flat=True))
    return found


def _lists_write(build: ModelBuild, lists: list[RecommendationList],
                 cache_entries: dict[str, object]) -> tuple[set[str], int]:
    """Write the build's lists to the database, then to the cache; returns the subjects and the lists written.

    Subjects erased since the training data was read are left out (their rows
    would fail the commit, their keys outlive the erasure).
    """
    pseudonyms = {row.subject_id for row in lists if row.subject_id is not None}
    with transaction.atomic():
        # Lock first, then replace the rows a previous attempt of this build may have written:
        # an erasure waiting on one of these subjects holds no lock this transaction needs.
        alive = _live_subjects(pseudonyms, lock=True)
        RecommendationList.objects.filter(build=build).delete()
        kept = [row for row in lists if row.subject_id is None or row.subject_id in alive]
        RecommendationList.objects.bulk_create(kept, batch_size=2000)
        ModelBuild.objects.filter(pk=build.pk).update(lists_written=len(kept))
    gone = {subject_key(build.pk, p) for p in pseudonyms - alive}
    entries = [(key, value) for key, value in cache_entries.items() if key not in gone]
    for chunk_start in range(0, len(entries), 1000):
        cache.set_many(dict(entries[chunk_start : chunk_start + 1000]), timeout=CACHE_SECONDS)
    return alive, len(kept)


def _erased_forget(build_id: int, written: set[str]) -> None:
    """Delete the cache keys this build wrote for subjects erased while it was writing them.

    An erasure that committed before this check is seen here; one that commits
    after it deletes this build's keys itself (its key list covers every build
    that may have written any: ``subject_cache_keys``).
    """
    erased = written - _live_subjects(written, lock=False)
    if erased:
        cache.delete_many([subject_key(build_id, p) for p in erased])
        RecommendationList.objects.filter(build_id=build_id, subject_id__in=erased).delete()
        logger.info("recommendation build %s: %s subjects erased while publishing, their lists deleted",
                    build_id, len(erased))


def _publish(pointer: str, build_id: int) -> None:
    cache.set(pointer, build_id, timeout=CACHE_SECONDS)
    if cache.get(pointer) != build_id:
        # The cache did not take it (Redis down): serving reads the database's record
        # until the pointer expires or the next build publishes.
        cache.delete(pointer)
        logger.warning("cache unavailable while publishing build %s: serving from the database", build_id)


def recommendations_prune(*, arm_id: int | None, keep: int = KEEP_BUILDS) -> int:
    """Delete the lists of all but the ``keep`` newest published builds of an arm (build rows stay)."""
    published = ModelBuild.objects.filter(arm_id=arm_id, published_at__isnull=False).order_by("-published_at", "-id")
    old = list(published.values_list("id", flat=True)[keep:])
    failed = list(
        ModelBuild.objects.filter(arm_id=arm_id, status=ModelBuild.Status.FAILED).values_list("id", flat=True)
    )
    deleted, _ = RecommendationList.objects.filter(build_id__in=old + failed).delete()
    return deleted


# --- fan-out -----------------------------------------------------------------------------


def arms_to_build() -> list[int]:
    """Arms of running experiments, by id."""
    return list(
        Arm.objects.filter(experiment__status=Experiment.Status.RUNNING).order_by("id").values_list("id", flat=True)
    )


def recommendations_build_enqueue(
    *, arm_ids: Iterable[int] | None = None, build_key: str | None = None, include_platform: bool = True
) -> dict:
    """Fan the builds out to the workers: one task per arm, as one Celery group, after commit."""
    from celery import group

    from recommender.tasks import recommendations_build as build_task

    arm_ids = list(arm_ids) if arm_ids is not None else arms_to_build()
    build_key = build_key or build_key_for(timezone.now())
    signatures = [build_task.si(arm_id, build_key) for arm_id in arm_ids]
    if include_platform:
        signatures.append(build_task.si(None, build_key))
    if signatures:
        transaction.on_commit(lambda: group(signatures).apply_async(), robust=False)
    return {"build_key": build_key, "arms": arm_ids, "platform": include_platform}


# --- serving -------------------------------------------------------------------------------


def recommendations_serve(*, subject_id: str, limit: int = 20, session: Iterable[str] = ()):
    """Answer a recommendation request, and have what was shown recorded as impression events.

    Impressions are recorded only for subjects in an experiment (they are its
    outcome data), by a Celery task, off the request path: the answer never
    waits for, or fails because of, the events table. Their event ids are
    fixed here, so a redelivered task records nothing twice.
    """
    from recommender.selectors import recommendations_for_subject

    served = recommendations_for_subject(subject_id=subject_id, limit=limit, session=tuple(session))
    if served.arm is not None and served.items:
        _impressions_enqueue(subject_id=subject_id, items=served.items)
    return served


def impression_events(*, pseudonym: str, request_id: str, shown_at: str, items: list[list[str]]) -> list[dict]:
    """One ``rec_impression`` event per item shown, ids fixed by the answer's ``request_id``."""
    return [
        {
            "event_id": f"imp-{request_id}-{position}",
            "subject_id": pseudonym,
            "type": OutcomeEvent.Type.REC_IMPRESSION.value,
            "timestamp": shown_at,
            "product_id": sku,
            "category": category,
            "position": position,
        }
        for position, (sku, category) in enumerate(items)
    ]


def _impressions_enqueue(*, subject_id: str, items: list[dict]) -> None:
    from recommender.tasks import recommendations_impressions_record

    shown = [[item["product"], item["category"]] for item in items]
    try:
        recommendations_impressions_record.apply_async(
            # The pseudonym, never the raw id: the message is stored in the broker.
            args=[subject_pseudonym(subject_id), uuid.uuid4().hex, timezone.now().isoformat(), shown],
            argsrepr=f"(<subject>, {len(shown)} items)",
        )
    except Exception as exc:  # the broker is down: the answer still goes out
        logger.warning("recommendation impressions not queued (%s)", type(exc).__name__)


def impressions_record(*, pseudonym: str, request_id: str, shown_at: str, items: list[list[str]]) -> int:
    """Record what one answer showed through the outcome-events service; returns how many were new."""
    from experiments.services import events_record

    events = impression_events(pseudonym=pseudonym, request_id=request_id, shown_at=shown_at, items=items)
    try:
        return events_record(events=events, pseudonymous=True).recorded
    except ValidationError as exc:
        # E.g. the subject was erased meanwhile: nothing to attribute them to. Not retried.
        logger.warning("recommendation impressions not recorded (%s)", "; ".join(sorted(exc.message_dict)))
        return 0
