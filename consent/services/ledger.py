"""Recording consent: the decisions' inputs, their checks, and the batch that writes them to the ledger."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from consent.models import ConsentEvent, Language, Subject
from consent.pseudonyms import subject_id_problem, subject_pseudonym
from consent.selectors import PurposeRule, purpose_rules_load
from consent.services.cache import consent_cache_invalidate
from consent.services.ledger_writes import (
    LedgerRow,
    ledger_rows_write,
    subjects_ensure,
    tallies_add,
)

MAX_BATCH_EVENTS = 1000

Action = ConsentEvent.Action


@dataclass(frozen=True)
class ConsentSource:
    """Where a consent decision was taken: the experiment and arm, the prompt, the channel."""

    experiment: str = ""
    arm: str = ""
    prompt: str = ""
    channel: str = ""
    language: str = ""

    @classmethod
    def of(cls, value: ConsentSource | Mapping[str, str] | None) -> ConsentSource:
        if value is None:
            return cls()
        if isinstance(value, ConsentSource):
            return value
        unknown = sorted(set(value) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise ValidationError({"source": f"Unknown fields: {', '.join(unknown)}."})
        return cls(**{name: value[name] or "" for name in value})


@dataclass(frozen=True)
class ConsentEventInput:
    """One decision to record. ``subject_id`` is the marketplace's raw id (hashed on entry)."""

    subject_id: str
    purpose: str
    action: str
    notice_version: str | None = None
    source: ConsentSource = field(default_factory=ConsentSource)
    event_id: uuid.UUID | None = None


@dataclass(frozen=True)
class RecordedConsent:
    event_id: uuid.UUID
    purpose: str
    action: str
    notice_version: str | None
    recorded_at: datetime
    expires_at: datetime | None
    replayed: bool = False  # the event id was recorded before: nothing new was written


_SOURCE_CHOICES = {
    "prompt": set(ConsentEvent.Prompt.values),
    "channel": set(ConsentEvent.Channel.values),
    "language": set(Language.values),
}


def _source_problems(source: ConsentSource) -> list[str]:
    problems = []
    for name in ("experiment", "arm"):
        value = getattr(source, name)
        if not isinstance(value, str) or len(value) > 64:
            problems.append(f"{name}: at most 64 characters.")
    for name, allowed in _SOURCE_CHOICES.items():
        value = getattr(source, name)
        if value and value not in allowed:
            problems.append(f"{name}: {value!r} is not one of {', '.join(sorted(allowed))}.")
    return problems


_ACTIONS = frozenset(Action.values)  # (``Action.values`` builds a new list on every access)


def consent_events_check(
    *,
    events: Sequence[ConsentEventInput],
    rules: Mapping[str, PurposeRule] | None = None,
    now: datetime | None = None,
) -> list[dict[str, list[str]]]:
    """Per event, the problems by field name (an empty dict when the event is fine).

    Checks everything that can be known before writing: the id's shape, the
    purpose, the action, the notice version (a grant needs one in effect and
    not superseded by a notice that requires re-consent; a withdrawal may name
    any version of the purpose's notice, or none), the source, and duplicates
    within the batch (an event id twice, or two decisions for one subject and
    purpose: the batch would not say which comes last).
    """
    rules = purpose_rules_load() if rules is None else rules
    now = now or timezone.now()
    results: list[dict[str, list[str]]] = []
    seen_ids: dict[uuid.UUID, int] = {}
    seen_pairs: dict[tuple[str, str], int] = {}
    for index, event in enumerate(events):
        errors: dict[str, list[str]] = {}

        def problem(name: str, message: str, errors=errors) -> None:
            errors.setdefault(name, []).append(message)

        if (issue := subject_id_problem(event.subject_id)) is not None:
            problem("subject_id", issue)
        rule = rules.get(event.purpose)
        if rule is None:
            problem(
                "purpose",
                f"Unknown purpose {event.purpose!r}; expected one of {', '.join(sorted(rules))}.",
            )
        if event.action not in _ACTIONS:
            problem("action", f"{event.action!r} is not one of grant, withdraw.")
        if rule is not None and event.action in _ACTIONS:
            version = event.notice_version
            notice = rule.notice(version)
            if event.action == Action.GRANT and not version:
                problem("notice_version", "A grant must name the notice version the subject saw.")
            elif version and notice is None:
                known = ", ".join(n.version for n in rule.notices) or "none"
                problem(
                    "notice_version",
                    f"Unknown notice version {version!r} for {rule.key} (known: {known}).",
                )
            elif event.action == Action.GRANT and notice is not None:
                if notice.effective_at > now:
                    problem("notice_version", f"Notice version {version!r} is not in effect yet.")
                elif not rule.version_counts(version, now):
                    newer = rule.reconsent_notice(now)
                    problem(
                        "notice_version",
                        f"Notice version {version!r} was superseded by version {newer.version!r}, "
                        "which requires re-consent.",
                    )
        for message in _source_problems(event.source):
            problem("source", message)
        if event.event_id is not None:
            if event.event_id in seen_ids:
                problem("event_id", f"Duplicate of events[{seen_ids[event.event_id]}].")
            seen_ids.setdefault(event.event_id, index)
        if "subject_id" not in errors:
            pair = (event.subject_id, event.purpose)
            if pair in seen_pairs:
                problem(
                    "purpose",
                    f"events[{seen_pairs[pair]}] already records a decision for this subject and "
                    "purpose; send at most one per batch.",
                )
            seen_pairs.setdefault(pair, index)
        results.append(errors)
    return results


class ConsentEventsInvalid(ValidationError):
    """Some events of a batch are invalid; ``problems`` holds, per event, its problems by field."""

    def __init__(self, problems: list[dict[str, list[str]]]):
        self.problems = problems
        if len(problems) == 1:
            super().__init__(problems[0])
        else:
            super().__init__(
                {
                    f"events[{index}].{name}": messages
                    for index, errors in enumerate(problems)
                    for name, messages in errors.items()
                }
            )


def consent_record(
    *, events: Sequence[ConsentEventInput], now: datetime | None = None
) -> list[RecordedConsent]:
    """Record a batch of grants and withdrawals, all or nothing.

    Each event goes to the ledger; each subject's derived state and the daily
    tallies are updated in the same transaction; the subjects' cached state is
    invalidated. An event whose ``event_id`` was already recorded is not
    written again (a retried request is harmless); reusing an id for a
    different decision is an error. Invalid events raise ``ConsentEventsInvalid``
    and nothing is written.
    """
    if not events:
        raise ValidationError({"events": "Send at least one event."})
    if len(events) > MAX_BATCH_EVENTS:
        raise ValidationError({"events": f"At most {MAX_BATCH_EVENTS} events per batch."})
    now = now or timezone.now()
    rules = purpose_rules_load()
    problems = consent_events_check(events=events, rules=rules, now=now)
    if any(problems):
        raise ConsentEventsInvalid(problems)
    try:
        return _record(events, rules, now)
    except IntegrityError:
        # A concurrent request recorded one of these event ids first; the
        # second attempt finds it and replays it instead of inserting.
        return _record(events, rules, now)


def _record(
    events: Sequence[ConsentEventInput], rules: Mapping[str, PurposeRule], now: datetime
) -> list[RecordedConsent]:
    pseudonyms = [subject_pseudonym(event.subject_id) for event in events]
    subjects = sorted(set(pseudonyms))
    results: list[RecordedConsent | None] = [None] * len(events)
    with transaction.atomic():
        subjects_ensure(subjects, now)
        # One writer per subject at a time, so the ledger's id order is each
        # subject's commit order and the derived state follows its last event.
        # (NO KEY: other apps may still insert rows that refer to the subject.)
        list(
            Subject.objects.select_for_update(no_key=True)
            .filter(pk__in=subjects)
            .order_by("pk")
            .values_list("pk")
        )
        given = [event.event_id for event in events if event.event_id is not None]
        existing = (
            {
                row.event_id: row
                for row in ConsentEvent.objects.filter(event_id__in=given).select_related("notice")
            }
            if given
            else {}
        )
        fresh: list[tuple[int, LedgerRow]] = []
        conflicts: list[dict[str, list[str]]] = [{} for _ in events]
        for index, (event, pseudonym) in enumerate(zip(events, pseudonyms, strict=True)):
            rule = rules[event.purpose]
            if event.event_id in existing:
                stored = existing[event.event_id]
                same = (stored.subject_id, stored.purpose_id, stored.action) == (
                    pseudonym,
                    event.purpose,
                    event.action,
                ) and (
                    event.notice_version is None
                    or (stored.notice and stored.notice.version) == event.notice_version
                )
                if not same:
                    conflicts[index]["event_id"] = ["Already recorded for a different decision."]
                    continue
                results[index] = _recorded(stored, rule, replayed=True)
                continue
            notice = (
                rule.notice(event.notice_version)
                if event.notice_version
                else rule.current_notice(now)
            )
            grant = event.action == Action.GRANT
            fresh.append(
                (
                    index,
                    LedgerRow(
                        event_id=event.event_id or uuid.uuid4(),
                        subject_id=pseudonym,
                        purpose_id=event.purpose,
                        action=str(event.action),
                        notice_id=notice.id if notice else None,
                        language=event.source.language or (Language.INDONESIAN if grant else ""),
                        source_experiment=event.source.experiment,
                        source_arm=event.source.arm,
                        source_prompt=event.source.prompt,
                        source_channel=event.source.channel,
                        recorded_at=now,
                        expires_at=now + timedelta(days=rule.consent_validity_days)
                        if grant and rule.consent_validity_days
                        else None,
                    ),
                )
            )
        if any(conflicts):
            raise ConsentEventsInvalid(conflicts)
        rows = [row for _, row in fresh]
        ledger_rows_write(rows)
        for index, row in fresh:
            results[index] = _recorded(row, rules[row.purpose_id], replayed=False)
        tallies_add(rows, now)
        consent_cache_invalidate(pseudonyms={row.subject_id for row in rows})
    return [result for result in results if result is not None]


def _recorded(row: ConsentEvent | LedgerRow, rule: PurposeRule, *, replayed: bool) -> RecordedConsent:
    notice = next((n for n in rule.notices if n.id == row.notice_id), None)
    return RecordedConsent(
        event_id=row.event_id,
        purpose=row.purpose_id,
        action=row.action,
        notice_version=notice.version if notice else None,
        recorded_at=row.recorded_at,
        expires_at=row.expires_at,
        replayed=replayed,
    )


def consent_grant(
    *,
    subject_id: str,
    purpose: str,
    notice_version: str,
    source: ConsentSource | Mapping[str, str] | None = None,
    event_id: uuid.UUID | None = None,
    now: datetime | None = None,
) -> RecordedConsent:
    """Record that the subject consented to ``purpose`` under the notice they saw."""
    return _decision_record(Action.GRANT, subject_id, purpose, notice_version, source, event_id, now)


def consent_withdraw(
    *,
    subject_id: str,
    purpose: str,
    notice_version: str | None = None,
    source: ConsentSource | Mapping[str, str] | None = None,
    event_id: uuid.UUID | None = None,
    now: datetime | None = None,
) -> RecordedConsent:
    """Record a withdrawal; it is committed before this returns and counts from the next read."""
    return _decision_record(Action.WITHDRAW, subject_id, purpose, notice_version, source, event_id, now)


def _decision_record(
    action: str,
    subject_id: str,
    purpose: str,
    notice_version: str | None,
    source: ConsentSource | Mapping[str, str] | None,
    event_id: uuid.UUID | None,
    now: datetime | None,
) -> RecordedConsent:
    event = ConsentEventInput(
        subject_id=subject_id,
        purpose=purpose,
        action=action,
        notice_version=notice_version,
        source=ConsentSource.of(source),
        event_id=event_id,
    )
    return consent_record(events=[event], now=now)[0]
