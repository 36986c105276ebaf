"""Builds of each arm's recommendations: train under the arm's privacy rules, precompute, publish.

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

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import scipy.sparse as sp
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from config.task_registry import registered_task
from consent.models import Subject
from experiments.contracts import TreatmentContract
from experiments.models import Arm, Exposure, PrivacyTreatment
from recommender import engine
from recommender.cache_keys import cohort_key, fallback_key, item_key, pointer_key, subject_key
from recommender.conf import (
    CACHE_SECONDS,
    DP_CLIP,
    DP_DELTA,
    DP_MECHANISM,
    FALLBACK_N,
    HISTORY_DAYS,
    KEEP_BUILDS,
    MIN_INTERACTIONS,
    NEIGHBOURS,
    STALE_AFTER,
    TOP_N,
    WEIGHTING,
    recommender_setting,
)
from recommender.models import ModelBuild, RecommendationList
from recommender.selectors import (
    PER_SUBJECT_LEVELS,
    CatalogArrays,
    Training,
    arms_to_build,
    dp_build_interval,
    privacy_budget,
    training_load,
)

logger = logging.getLogger(__name__)

# recommender.tasks, by name: it imports this module.
BUILD_TASK = "recommender.tasks.recommendations_build"

Level = PrivacyTreatment.PersonalizationLevel
Policy = PrivacyTreatment.SensitivePolicy


# --- strategies per treatment ------------------------------------------------------------


def strategy_for(*, treatment: TreatmentContract | None, explain: bool = False, seed: int | None = None) -> engine.Strategy:
    """The engine strategy a treatment contract asks for; None: platform popularity."""
    if treatment is None:
        return engine.PopularityStrategy(include_sensitive=False)
    level = treatment.personalization_level
    include_sensitive = treatment.includes_sensitive
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
        return engine.CohortStrategy(k=int(treatment.cohort_k), include_sensitive=include_sensitive,
                                     list_size=FALLBACK_N, min_item_support=min_support, neighbours=NEIGHBOURS)
    if level in (Level.DP_POPULARITY, Level.DP_ITEM_ITEM):
        # What every DP strategy is given: its ε, the per-subject clip and the noise mechanism.
        dp = {"epsilon": float(treatment.dp_epsilon), "clip": DP_CLIP, "mechanism": DP_MECHANISM,
              "delta": DP_DELTA, "include_sensitive": include_sensitive, "seed": seed}
        if level == Level.DP_POPULARITY:
            return engine.DPPopularityStrategy(**dp)
        return engine.DPItemItemStrategy(
            **dp,
            candidates=int(recommender_setting("RECOMMENDER_DP_CANDIDATES")),
            selection_share=float(recommender_setting("RECOMMENDER_DP_SELECTION_SHARE")),
            neighbours=NEIGHBOURS,
            explain=explain,
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
    *, arm_id: int | None, build_key: str, now: datetime | None = None, seed: int | None = None,
    fitted: Callable[[engine.Strategy, Training, str], None] | None = None,
) -> BuildSummary:
    """Build one arm's recommendations (``arm_id`` None: the platform popularity list); idempotent.

    ``fitted`` (offline analysis: the simulator's counterfactual lists, ``recommender.offline``)
    is called with the fitted strategy, its training data and the sensitive-category policy, once
    the model is fitted; it must not change them.

    A DP arm whose budget for the period cannot pay for this build is refused
    (outcome ``refused``, recorded as a failed build with the reason): the
    previous build keeps serving, with its ε already accounted.
    """
    now = now or timezone.now()
    arm = Arm.objects.select_related("treatment", "experiment").get(pk=arm_id) if arm_id is not None else None
    treatment = arm.treatment.as_contract() if arm is not None else None
    explain = bool(treatment and treatment.show_explanations)
    strategy = strategy_for(treatment=treatment, explain=explain, seed=seed)
    build, outcome, reason = _claim(arm, build_key, strategy, now)
    if outcome != "claimed":
        if outcome == "refused":
            logger.warning("recommendation build %s refused: %s", build.pk, reason)
        return BuildSummary(build_id=build.pk, outcome=outcome, strategy=build.strategy, reason=reason)
    started = time.monotonic()
    try:
        summary = _build(build, arm, treatment, strategy, now=now, fitted=fitted)
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


def _build(build: ModelBuild, arm: Arm | None, treatment: TreatmentContract | None, strategy: engine.Strategy, *,
           now: datetime, fitted: Callable[[engine.Strategy, Training, str], None] | None = None) -> BuildSummary:
    policy = treatment.sensitive_category_policy if treatment else Policy.EXCLUDE
    history_days = min(HISTORY_DAYS, int(treatment.retention_days)) if treatment else HISTORY_DAYS
    training = training_load(policy=policy, now=now, history_days=history_days)
    if training.interactions < MIN_INTERACTIONS or not training.catalog.skus:
        raise InsufficientTrainingData(
            f"{training.interactions} usable interactions (need {MIN_INTERACTIONS}) over "
            f"{len(training.catalog.skus)} active products"
        )
    explain = bool(treatment and treatment.show_explanations)
    strategy.fit(training.data)
    if fitted is not None:
        fitted(strategy, training, policy)
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


def arms_due(*, arm_ids: Iterable[int], now: datetime) -> list[int]:
    """``arm_ids`` less the differentially private arms built more recently than their budget's pace.

    One build of a DP arm spends its ε; the hourly schedule would spend a budget of 10 at
    ε = 1 in ten hours and then have every build refused for the rest of the period. A DP
    arm is therefore rebuilt once ``dp_build_interval`` (every 3 days by default) has passed
    since its last successful build; in between its last lists keep serving.
    """
    arm_ids = list(arm_ids)
    last_built = dict(
        ModelBuild.objects.filter(arm_id__in=arm_ids, status=ModelBuild.Status.SUCCEEDED)
        .values("arm_id").annotate(last=Max("started_at")).values_list("arm_id", "last")
    )
    arms = Arm.objects.select_related("treatment").in_bulk([pk for pk in arm_ids if pk in last_built])
    due = []
    for arm_id in arm_ids:
        if arm_id in arms:
            strategy = strategy_for(treatment=arms[arm_id].treatment.as_contract())
            if isinstance(strategy, engine.DifferentiallyPrivateStrategy):
                epsilon, delta = strategy.budget
                if now - last_built[arm_id] < dp_build_interval(epsilon=epsilon, delta=delta):
                    continue
        due.append(arm_id)
    return due


def recommendations_build_enqueue(
    *, arm_ids: Iterable[int] | None = None, build_key: str | None = None, include_platform: bool = True
) -> dict:
    """Fan the builds out to the workers: one task per arm, as one Celery group, after commit."""
    from celery import group

    build_task = registered_task(BUILD_TASK)
    now = timezone.now()
    # The schedule rebuilds a DP arm only as often as its budget sustains; arms asked for by name are built.
    arm_ids = list(arm_ids) if arm_ids is not None else arms_due(arm_ids=arms_to_build(), now=now)
    build_key = build_key or build_key_for(now)
    signatures = [build_task.si(arm_id, build_key) for arm_id in arm_ids]
    if include_platform:
        signatures.append(build_task.si(None, build_key))
    if signatures:
        transaction.on_commit(lambda: group(signatures).apply_async(), robust=False)
    return {"build_key": build_key, "arms": arm_ids, "platform": include_platform}
