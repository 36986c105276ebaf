"""What is held about one subject, in every app: its export, and its erasure from every table and cache."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime

from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from config.jsonsafe import json_safe
from consent.models import (
    SUBJECT_RECORD,
    ConsentEvent,
    CurrentConsent,
    DataSubjectRequest,
    PendingCacheInvalidation,
    Subject,
)
from consent.registry import personal_cache_sources, personal_data_sources
from consent.selectors import consent_history
from consent.services.cache import consent_cache_invalidate


def subject_export(*, pseudonym: str, now: datetime | None = None) -> dict:
    """Everything held about the subject, from this app and every registered one."""
    now = now or timezone.now()
    subject = (
        Subject.objects.filter(pk=pseudonym)
        .values(*SUBJECT_RECORD)
        .first()
    )
    states = CurrentConsent.objects.filter(subject_id=pseudonym).order_by("purpose_id")
    return json_safe(
        {
            "generated_at": now,
            "subject": subject,
            "consent": {
                "current": [
                    {
                        "purpose": state.purpose_id,
                        "granted": state.granted,
                        "notice_version": state.notice.version if state.notice else None,
                        "changed_at": state.changed_at,
                        "expires_at": state.expires_at,
                    }
                    for state in states.select_related("notice")
                ],
                "history": [asdict(record) for record in consent_history(pseudonym=pseudonym)],
            },
            "requests": list(
                DataSubjectRequest.objects.filter(subject_pseudonym=pseudonym)
                .order_by("received_at")
                .values("id", "type", "status", "received_at", "due_at", "completed_at")
            ),
            "sources": {
                source.label: source.export(pseudonym) for source in personal_data_sources()
            },
        }
    )


def _subject_cache_keys(pseudonym: str) -> list[str]:
    """The registered apps' cache keys of the subject (the consent state is tombstoned apart)."""
    keys: list[str] = []
    for source in personal_cache_sources():
        keys.extend(source.keys(pseudonym))
    return keys


@dataclass(frozen=True)
class ErasureSummary:
    rows_by_source: dict[str, int]
    cache_keys: int

    @property
    def rows(self) -> int:
        return sum(self.rows_by_source.values())

    @property
    def found_nothing(self) -> bool:
        """Nothing was held but the subject record itself (which filing the request creates)."""
        return self.rows - self.rows_by_source.get("consent.subject", 0) == 0


def subject_erase(*, pseudonym: str) -> ErasureSummary:
    """Remove the subject's personal rows from every table and every cache entry.

    Registered apps first (their rows may refer to the subject), then this
    app's: derived state, requests, the ledger (the one sanctioned deletion
    from it), and the subject. Aggregates that identify nobody stay (consent
    tallies, experiment results), and so does the record of an erasure
    request once it no longer names the subject. Must run inside a
    transaction. Registered cache keys are deleted before and again after
    commit; the consent state's entry gets tombstones (a reader that read the
    subject before the commit cannot cache it again), which expire within
    ``TOMBSTONE_SECONDS`` and hold nothing about the subject.
    """
    # The subject's row first (FOR UPDATE): a recommendation build writing this subject's lists holds
    # it (FOR KEY SHARE) until it commits, so either the build sees the erasure or the erasure its rows.
    list(Subject.objects.select_for_update().filter(pk=pseudonym).values_list("pk", flat=True))
    keys = _subject_cache_keys(pseudonym)
    cache.delete_many(keys)
    counts: dict[str, int] = {}
    for source in personal_data_sources():
        counts[source.label] = source.erase(pseudonym)
    counts["consent.currentconsent"], _ = CurrentConsent.objects.filter(
        subject_id=pseudonym
    ).delete()
    counts["consent.datasubjectrequest"], _ = DataSubjectRequest.objects.filter(
        subject_pseudonym=pseudonym
    ).delete()
    counts["consent.consentevent"] = ConsentEvent.objects.filter(
        subject_id=pseudonym
    ).sanctioned_delete(reason="erasure")
    counts["consent.subject"], _ = Subject.objects.filter(pk=pseudonym).delete()
    consent_cache_invalidate(pseudonyms=[pseudonym])
    PendingCacheInvalidation.objects.filter(pseudonym=pseudonym).delete()
    # Listed again after commit: a build that started meanwhile may have written keys of its own.
    transaction.on_commit(lambda: cache.delete_many(_subject_cache_keys(pseudonym)), robust=True)
    return ErasureSummary(rows_by_source=counts, cache_keys=len(keys) + 1)
