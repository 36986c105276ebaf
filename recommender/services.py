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
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
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
    """Every cache key that may hold this subject's data (for erasure)."""
    build_ids = ModelBuild.objects.filter(
        status=ModelBuild.Status.SUCCEEDED, finished_at__gte=timezone.now() - timedelta(seconds=CACHE_SECONDS)
    ).values_list("id", flat=True)
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
    """Create or update categories (key, name, sensitive) and products (sku, name, category, price, active).

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
        if key in clean_categories:
            errors.setdefault(f"{where}.key", []).append(f"Category {key!r} appears twice.")
        clean_categories[key] = {"name": name, "sensitive": sensitive}
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
        if sku in clean_products:
            errors.setdefault(f"{where}.sku", []).append(f"Product {sku!r} appears twice.")
        clean_products[sku] = {"name": name, "category": category, "price": price, "active": active}
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        existing = {c.key: c for c in Category.objects.select_for_update().filter(key__in=clean_categories)}
        new = [Category(key=key, **values) for key, values in clean_categories.items() if key not in existing]
        for key, values in clean_categories.items():
            if key in existing:
                existing[key].name, existing[key].sensitive = values["name"], values["sensitive"]
        Category.objects.bulk_create(new, batch_size=1000)
        Category.objects.bulk_update(list(existing.values()), ["name", "sensitive"], batch_size=1000)
        category_ids = dict(Category.objects.values_list("key", "id"))
        current = {p.sku: p for p in Product.objects.select_for_update().filter(sku__in=clean_products)}
        new_products, changed = [], []
        for sku, values in clean_products.items():
            fields = {
                "name": values["name"],
                "category_id": category_ids[values["category"]],
                "price": values["price"],
                "active": values["active"],
            }
            if sku in current:
                for name, value in fields.items():
                    setattr(current[sku], name, value)
                changed.append(current[sku])
            else:
                new_products.append(Product(sku=sku, **fields))
        Product.objects.bulk_create(new_products, batch_size=2000)
        Product.objects.bulk_update(changed, ["name", "category_id", "price", "active"], batch_size=2000)
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
    return catalog_import(
        categories=[
            {"key": key, "name": name, "sensitive": "true" if flag else "false"}
            for key, name, flag in zip(
                marketplace.category_keys, marketplace.category_names, marketplace.category_sensitive, strict=True
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

    @property
    def item_sensitive(self) -> np.ndarray:
        return self.category_sensitive[self.item_category]


def catalog_arrays() -> CatalogArrays:
    """The active catalog as arrays, items in sku order."""
    categories = list(Category.objects.order_by("id").values_list("id", "key", "name", "sensitive"))
    position = {row[0]: i for i, row in enumerate(categories)}
    products = list(Product.objects.filter(active=True).order_by("sku").values_list("sku", "name", "category_id"))
    return CatalogArrays(
        skus=[sku for sku, _, _ in products],
        names=[name for _, name, _ in products],
        categories=[categories[position[c]][1] for _, _, c in products],
        item_category=np.array([position[c] for _, _, c in products], dtype=np.int64),
        category_keys=[row[1] for row in categories],
        category_names=[row[2] for row in categories],
        category_sensitive=np.array([row[3] for row in categories], dtype=bool),
        index={sku: i for i, (sku, _, _) in enumerate(products)},
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
    if level == Level.FULL:
        return engine.ItemItemStrategy(
            neighbours=NEIGHBOURS, weighting=WEIGHTING, include_sensitive=include_sensitive, explain=explain
        )
    if level == Level.SESSION:
        return engine.SessionStrategy(neighbours=NEIGHBOURS, weighting=WEIGHTING, include_sensitive=include_sensitive)
    if level == Level.COHORT:
        return engine.CohortStrategy(k=int(treatment["cohort_k"]), include_sensitive=include_sensitive, list_size=FALLBACK_N)
    if level == Level.DP_POPULARITY:
        return engine.DPPopularityStrategy(
            epsilon=float(treatment["dp_epsilon"]),
            clip=DP_CLIP,
            mechanism=DP_MECHANISM,
            delta=DP_DELTA,
            include_sensitive=include_sensitive,
            seed=seed,
        )
    if level == Level.POPULARITY:
        return engine.PopularityStrategy(include_sensitive=include_sensitive)
    raise ValueError(f"unknown personalization level {level!r}")


# --- builds ------------------------------------------------------------------------------


class InsufficientTrainingData(RuntimeError):
    """Too little usable data to build: publishing would replace good lists with empty ones."""


@dataclass(frozen=True)
class BuildSummary:
    """What a build task returns (no personal data: it lands in the result backend)."""

    build_id: int | None
    outcome: str  # built | already_built | in_progress
    strategy: str = ""
    lists: int = 0
    subjects_trained: int = 0
    epsilon_spent: float | None = None

    def as_dict(self) -> dict:
        return {
            "build": self.build_id,
            "outcome": self.outcome,
            "strategy": self.strategy,
            "lists": self.lists,
            "subjects_trained": self.subjects_trained,
            "epsilon_spent": self.epsilon_spent,
        }


def build_key_for(now: datetime) -> str:
    """The scheduled build key: the UTC hour, so the hourly job builds each hour once."""
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H")


def _claim(arm: Arm | None, build_key: str, strategy: str, now: datetime) -> tuple[ModelBuild | None, str]:
    with transaction.atomic():
        lookup = {"arm": arm, "build_key": build_key}
        build = ModelBuild.objects.select_for_update().filter(**lookup).first()
        if build is None:
            build = ModelBuild.objects.create(
                **lookup, strategy=strategy, status=ModelBuild.Status.RUNNING, attempts=1, started_at=now
            )
            return build, "claimed"
        if build.status == ModelBuild.Status.SUCCEEDED:
            return build, "already_built"
        if build.status == ModelBuild.Status.RUNNING and build.started_at > now - STALE_AFTER:
            return build, "in_progress"
        build.status = ModelBuild.Status.RUNNING
        build.attempts += 1
        build.started_at = now
        build.strategy = strategy
        build.error = ""
        build.save(update_fields=["status", "attempts", "started_at", "strategy", "error"])
        return build, "claimed"


def recommendations_build(
    *, arm_id: int | None, build_key: str, now: datetime | None = None, seed: int | None = None
) -> BuildSummary:
    """Build one arm's recommendations (``arm_id`` None: the platform popularity list); idempotent."""
    now = now or timezone.now()
    arm = Arm.objects.select_related("treatment", "experiment").get(pk=arm_id) if arm_id is not None else None
    treatment = arm.treatment.as_contract() if arm is not None else None
    strategy_level = treatment["personalization_level"] if treatment else Level.POPULARITY
    build, outcome = _claim(arm, build_key, strategy_level, now)
    if outcome != "claimed":
        return BuildSummary(build_id=build.pk, outcome=outcome, strategy=build.strategy)
    started = time.monotonic()
    try:
        summary = _build(build, arm, treatment, now=now, seed=seed)
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


def _entry(catalog: CatalogArrays, item: int, score: float, reason: str | None) -> list:
    return [catalog.skus[item], catalog.categories[item], round(float(score), 6), bool(catalog.item_sensitive[item]), reason]


def _reason(level: str, catalog: CatalogArrays, because: int, cohort_label: str | None = None) -> str | None:
    if level in (Level.FULL, Level.SESSION) and because >= 0:
        return f"Because you showed interest in {catalog.names[because]}"
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
    if isinstance(strategy, engine.DPPopularityStrategy):
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


def _build(build: ModelBuild, arm: Arm | None, treatment: Mapping | None, *, now: datetime, seed: int | None) -> BuildSummary:
    policy = treatment["sensitive_category_policy"] if treatment else Policy.EXCLUDE
    history_days = min(HISTORY_DAYS, int(treatment["retention_days"])) if treatment else HISTORY_DAYS
    training = training_load(policy=policy, now=now, history_days=history_days)
    if training.interactions < MIN_INTERACTIONS or not training.catalog.skus:
        raise InsufficientTrainingData(
            f"{training.interactions} usable interactions (need {MIN_INTERACTIONS}) over "
            f"{len(training.catalog.skus)} active products"
        )
    explain = bool(treatment and treatment["show_explanations"])
    strategy = strategy_for(treatment=treatment, explain=explain, seed=seed)
    strategy.fit(training.data)
    level = strategy.level
    catalog = training.catalog
    created = timezone.now()
    lists: list[RecommendationList] = []
    cache_entries: dict[str, object] = {}
    targets = _targets(arm, training)

    if len(targets) and level in (Level.FULL, Level.DP_POPULARITY):
        top = strategy.recommend(
            rows=targets, evidence=training.data.interactions[targets], n=TOP_N, sensitive_ok=training.sensitive_ok[targets]
        )
        because = top.because if top.because is not None else np.full(top.items.shape, -1)
        for r, row in enumerate(targets.tolist()):
            entries = [
                _entry(catalog, int(i), s, _reason(level, catalog, int(b)) if explain else None)
                for i, s, b in zip(top.items[r], top.scores[r], because[r], strict=True)
                if i >= 0
            ]
            if entries:
                pseudonym = training.pseudonyms[row]
                lists.append(RecommendationList(build=build, kind="subject", subject_id=pseudonym, items=entries, created_at=created))
                cache_entries[subject_key(build.pk, pseudonym)] = {"items": entries}
    if level == Level.COHORT:
        cohorts = strategy.cohorts
        for index, key in enumerate(cohorts.keys):
            entries = [_entry(catalog, i, s, _reason(level, catalog, -1) if explain else None) for i, s in cohorts.lists[index]]
            lists.append(RecommendationList(build=build, kind="cohort", key=key, size=int(cohorts.sizes[index]), items=entries, created_at=created))
            cache_entries[cohort_key(build.pk, key)] = {"items": entries, "size": int(cohorts.sizes[index])}
        for row in targets.tolist():
            index = int(cohorts.membership[row])
            if index >= 0:
                pseudonym = training.pseudonyms[row]
                lists.append(RecommendationList(build=build, kind="subject", subject_id=pseudonym, key=cohorts.keys[index], created_at=created))
                cache_entries[subject_key(build.pk, pseudonym)] = {"cohort": cohorts.keys[index]}
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

    epsilon, delta = strategy.budget if isinstance(strategy, engine.DPPopularityStrategy) else (None, None)
    with transaction.atomic():
        # A previous attempt of this build may have written some rows: replace them.
        RecommendationList.objects.filter(build=build).delete()
        RecommendationList.objects.bulk_create(lists, batch_size=2000)
    for chunk_start in range(0, len(cache_entries), 1000):
        chunk = dict(list(cache_entries.items())[chunk_start : chunk_start + 1000])
        cache.set_many(chunk, timeout=CACHE_SECONDS)
    with transaction.atomic():
        ModelBuild.objects.filter(pk=build.pk).update(
            status=ModelBuild.Status.SUCCEEDED,
            finished_at=timezone.now(),
            published_at=timezone.now(),
            params=strategy.params(),
            subjects_trained=training.data.n_subjects,
            interactions_trained=training.interactions,
            lists_written=len(lists),
            epsilon_spent=epsilon,
            delta_spent=delta if delta else None,
        )
        pointer = pointer_key(arm.pk if arm else None)
        transaction.on_commit(lambda: _publish(pointer, build.pk), robust=True)
    recommendations_prune(arm_id=arm.pk if arm else None)
    logger.info("recommendation build %s (%s) published: %s lists", build.pk, level, len(lists))
    return BuildSummary(
        build_id=build.pk,
        outcome="built",
        strategy=level,
        lists=len(lists),
        subjects_trained=training.data.n_subjects,
        epsilon_spent=epsilon,
    )


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
