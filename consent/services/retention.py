"""The retention purge: raw personal data older than its purpose's retention period, in batches."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone

from consent.models import ConsentEvent, CurrentConsent, DataSubjectRequest, Subject
from consent.registry import personal_data_sources
from consent.selectors import PurposeRule, purpose_rules_load
from consent.services.cache import consent_cache_invalidate

logger = logging.getLogger(__name__)

EXPORT_KEPT_FOR = timedelta(days=30)  # an access request's answer, then it is cleared
DSR_RECORD_KEPT_FOR = timedelta(days=3 * 365)  # completed requests, as the record of compliance


def _batched(step: Callable[[], int]) -> int:
    """Run ``step`` (one batch, in its own transaction) until it deletes nothing."""
    total = 0
    while True:
        with transaction.atomic():
            deleted = step()
        if not deleted:
            return total
        total += deleted


def consent_retention_purge(
    *, now: datetime | None = None, batch_size: int = 1000
) -> dict[str, int]:
    """Delete raw personal data older than its purpose's retention period, in batches.

    Idempotent: a second run the same day finds nothing. Covers registered
    sources that name a purpose, and those with a retention rule of their own
    (``purge``: experiment exposures and metric facts); in the ledger, decisions superseded long ago
    and consents that ended (withdrawn, expired, lapsed by a new notice) longer
    than the retention period ago — the current grant and its proof stay;
    answers to access requests after 30 days; completed requests after three
    years; and subjects nobody holds anything about any more.
    """
    now = now or timezone.now()
    rules = purpose_rules_load()
    counts: dict[str, int] = {}
    for source in personal_data_sources():
        if source.purger is not None:
            counts[source.label] = _batched(
                lambda s=source: s.purger(now=now, batch_size=batch_size)
            )
            continue
        if source.purpose is None or source.timestamp_field is None:
            continue
        rule = rules.get(source.purpose)
        if rule is None:
            logger.warning(
                "retention: source %s names unknown purpose %s", source.label, source.purpose
            )
            continue
        cutoff = now - timedelta(days=rule.retention_days)
        counts[source.label] = _batched(
            lambda s=source, c=cutoff: s.purge(older_than=c, batch_size=batch_size)
        )
    ended = superseded = 0
    for rule in rules.values():
        cutoff = now - timedelta(days=rule.retention_days)
        ended += _batched(lambda r=rule, c=cutoff: _purge_ended_consents(r, c, now, batch_size))
        superseded += _batched(lambda r=rule, c=cutoff: _purge_superseded_events(r, c, batch_size))
    counts["consent.ended_consents"] = ended
    counts["consent.superseded_events"] = superseded
    counts["consent.exports_cleared"] = DataSubjectRequest.objects.filter(
        export__isnull=False, completed_at__lt=now - EXPORT_KEPT_FOR
    ).update(export=None, export_cleared_at=now)
    counts["consent.requests"] = _batched(
        lambda: _delete_batch(
            DataSubjectRequest.objects.filter(
                Q(status=DataSubjectRequest.Status.COMPLETED, completed_at__lt=now - DSR_RECORD_KEPT_FOR)
                | Q(status=DataSubjectRequest.Status.CANCELLED, cancelled_at__lt=now - DSR_RECORD_KEPT_FOR)
            ),
            batch_size,
        )
    )
    longest = max((rule.retention_days for rule in rules.values()), default=365)
    counts["consent.subjects"] = _batched(
        lambda: _delete_batch(_orphan_subjects(now - timedelta(days=longest)), batch_size)
    )
    logger.info("retention purge: %s", counts)
    return counts


def _delete_batch(queryset, batch_size: int) -> int:
    pks = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
    if not pks:
        return 0
    deleted, _ = queryset.model._default_manager.filter(pk__in=pks).delete()
    return deleted


def _purge_ended_consents(
    rule: PurposeRule, cutoff: datetime, now: datetime, batch_size: int
) -> int:
    ended = Q(granted=False, changed_at__lt=cutoff) | Q(granted=True, expires_at__lt=cutoff)
    lapsed_by = rule.reconsent_notice(now)
    if lapsed_by is not None and lapsed_by.effective_at < cutoff:
        stale = [n.id for n in rule.notices if n.order < lapsed_by.order]
        ended |= Q(granted=True, notice_id__in=stale)
    rows = list(
        CurrentConsent.objects.filter(ended, purpose_id=rule.key)
        .order_by("pk")
        .values_list("pk", "subject_id")[:batch_size]
    )
    if not rows:
        return 0
    subjects = [subject for _, subject in rows]
    states, _ = CurrentConsent.objects.filter(pk__in=[pk for pk, _ in rows]).delete()
    events = ConsentEvent.objects.filter(
        subject_id__in=subjects, purpose_id=rule.key
    ).sanctioned_delete(reason="retention")
    consent_cache_invalidate(pseudonyms=subjects)
    return states + events


def _purge_superseded_events(rule: PurposeRule, cutoff: datetime, batch_size: int) -> int:
    current = CurrentConsent.objects.filter(
        subject_id=OuterRef("subject_id"), purpose_id=rule.key, last_event_id=OuterRef("id")
    )
    ids = list(
        ConsentEvent.objects.filter(purpose_id=rule.key, recorded_at__lt=cutoff)
        .filter(~Exists(current))
        .order_by("id")
        .values_list("id", flat=True)[:batch_size]
    )
    if not ids:
        return 0
    return ConsentEvent.objects.filter(id__in=ids).sanctioned_delete(reason="retention")


def _orphan_subjects(seen_before: datetime):
    subjects = Subject.objects.filter(
        first_seen__lt=seen_before, restricted_at__isnull=True, objected_at__isnull=True
    ).exclude(Exists(ConsentEvent.objects.filter(subject_id=OuterRef("pk"))))
    subjects = subjects.exclude(Exists(CurrentConsent.objects.filter(subject_id=OuterRef("pk"))))
    subjects = subjects.exclude(
        Exists(DataSubjectRequest.objects.filter(subject_pseudonym=OuterRef("pk")))
    )
    for source in personal_data_sources():
        if source.model is not None:
            holds = source.model._default_manager.filter(**{source.subject_column: OuterRef("pk")})
            subjects = subjects.exclude(Exists(holds))
    return subjects
