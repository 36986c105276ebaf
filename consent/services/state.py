"""Rebuilding the derived consent state from the ledger, and reporting where they differ."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Max

from consent.models import ConsentEvent, CurrentConsent, Subject
from consent.services.cache import consent_cache_invalidate
from consent.services.ledger_writes import state_of_event, states_apply


@dataclass
class RebuildReport:
    subjects: int = 0
    pairs: int = 0
    missing: int = 0  # the ledger has a decision the state table lacks
    extra: int = 0  # the state table has a row no ledger event supports
    mismatched: int = 0  # both exist but disagree
    applied: bool = False
    examples: list[str] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return self.missing + self.extra + self.mismatched


def _state_tuple(state: CurrentConsent) -> tuple:
    return (state.granted, state.notice_id, state.last_event_id, state.changed_at, state.expires_at)


def consent_state_rebuild(*, apply: bool = True, batch_size: int = 500) -> RebuildReport:
    """Replay the ledger into the state table, subject by subject, and report differences.

    With ``apply`` the table is corrected; each batch of subjects is locked
    while it is compared, so concurrent writes cannot be mistaken for drift.
    """
    report = RebuildReport(applied=apply)
    last_pk = ""
    while True:
        with transaction.atomic():
            batch = list(
                Subject.objects.select_for_update()
                .filter(pk__gt=last_pk)
                .order_by("pk")
                .values_list("pk", flat=True)[:batch_size]
            )
            if not batch:
                break
            last_pk = batch[-1]
            report.subjects += len(batch)
            _rebuild_batch(batch, report, apply=apply)
    return report


def _rebuild_batch(batch: list[str], report: RebuildReport, *, apply: bool) -> None:
    last_ids = (
        ConsentEvent.objects.filter(subject_id__in=batch)
        .values("subject_id", "purpose_id")
        .annotate(last=Max("id"))
        .values_list("last", flat=True)
    )
    expected = {
        (event.subject_id, event.purpose_id): state_of_event(event)
        for event in ConsentEvent.objects.filter(id__in=list(last_ids))
    }
    actual = {
        (s.subject_id, s.purpose_id): s for s in CurrentConsent.objects.filter(subject_id__in=batch)
    }
    report.pairs += len(expected)
    fix, drop = [], []
    for pair, state in expected.items():
        current = actual.get(pair)
        if current is None:
            report.missing += 1
            _example(report, pair, "missing from the state table")
            fix.append(state)
        elif _state_tuple(current) != _state_tuple(state):
            report.mismatched += 1
            _example(
                report, pair, f"state says {_describe(current)}, ledger says {_describe(state)}"
            )
            fix.append(state)
    for pair, current in actual.items():
        if pair not in expected:
            report.extra += 1
            _example(report, pair, "in the state table but not in the ledger")
            drop.append(current.pk)
    if apply and (fix or drop):
        CurrentConsent.objects.filter(pk__in=drop).delete()
        states_apply(fix)
        consent_cache_invalidate(pseudonyms={subject for subject, _ in [*expected, *actual]})


def _describe(state: CurrentConsent) -> str:
    return f"{'granted' if state.granted else 'withdrawn'} (event {state.last_event_id})"


def _example(report: RebuildReport, pair: tuple[str, str], what: str) -> None:
    if len(report.examples) < 20:
        report.examples.append(f"subject {pair[0][:12]}… / {pair[1]}: {what}")
