"""Writes of the consent app: the ledger, data subject requests, retention, rebuilds.

Every write that changes what ``consent_state`` answers invalidates the
subject's cache entry explicitly in the same operation, by writing a
short-lived tombstone over it (``consent.selectors``: a late fill cannot
replace it): once inside the transaction (so no reader after it is served the
old entry) and again after commit (so a reader that read the database before
the commit cannot cache what it read). The database write does not depend on
the cache: with Redis down a withdrawal is still committed before the
response, and readers then go to the database; an invalidation the cache did
not confirm is recorded in the same transaction and retried until it is.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.db.models import Exists, Max, OuterRef, Q
from django.utils import timezone

from consent.models import (
    ConsentEvent,
    ConsentTally,
    CurrentConsent,
    DataSubjectRequest,
    ErasureRecord,
    Language,
    Notice,
    NoticeText,
    PendingCacheInvalidation,
    Purpose,
    Subject,
)
from consent.pseudonyms import subject_id_problem, subject_pseudonym
from consent.registry import personal_cache_sources, personal_data_sources
from consent.selectors import (
    RULES_TOKEN_KEY,
    TOMBSTONE,
    TOMBSTONE_SECONDS,
    PurposeRule,
    consent_history,
    purpose_rules_forget,
    purpose_rules_load,
    state_cache_key,
)

logger = logging.getLogger(__name__)

MAX_BATCH_EVENTS = 1000
DSR_DUE_AFTER = timedelta(hours=72)  # UU PDP Arts. 32, 40, 41: 3 × 24 hours
EXPORT_KEPT_FOR = timedelta(days=30)  # an access request's answer, then it is cleared
DSR_RECORD_KEPT_FOR = timedelta(days=3 * 365)  # completed requests, as the record of compliance

Action = ConsentEvent.Action


# --- cache invalidation ----------------------------------------------------------


def consent_cache_invalidate(*, pseudonyms: Iterable[str]) -> list[str]:
    """Write tombstones over the subjects' cached consent state, now and again after commit.

    Each time the cache must confirm it holds the tombstones; the subjects it
    does not confirm are recorded (``PendingCacheInvalidation``: first in this
    transaction, then after commit) and retried every minute until it does.
    """
    pseudonyms = sorted(set(pseudonyms))
    keys = [state_cache_key(pseudonym) for pseudonym in pseudonyms]
    if not keys:
        return keys
    unconfirmed = _tombstones_write(pseudonyms)
    if unconfirmed:
        _pending_record(unconfirmed, timezone.now())

    def after_commit() -> None:
        failed = _tombstones_write(pseudonyms)
        if failed:
            _pending_record(failed, timezone.now())
        if unconfirmed and not failed:
            PendingCacheInvalidation.objects.filter(pseudonym__in=unconfirmed).delete()

    transaction.on_commit(after_commit, robust=True)
    return keys


def _tombstones_write(pseudonyms: Sequence[str]) -> list[str]:
    """Tombstone the subjects' state entries; the pseudonyms whose tombstone the cache did not confirm."""
    keys = {state_cache_key(pseudonym): pseudonym for pseudonym in pseudonyms}
    cache.set_many(dict.fromkeys(keys, TOMBSTONE), timeout=TOMBSTONE_SECONDS)
    held = cache.get_many(list(keys))  # {} when the cache does not answer
    return [pseudonym for key, pseudonym in keys.items() if held.get(key) != TOMBSTONE]


def _pending_record(pseudonyms: Sequence[str], now: datetime) -> None:
    PendingCacheInvalidation.objects.bulk_create(
        [PendingCacheInvalidation(pseudonym=pseudonym, since=now) for pseudonym in pseudonyms],
        ignore_conflicts=True,
    )
    logger.warning("consent cache did not confirm %d invalidation(s): recorded for retry", len(pseudonyms))


def consent_cache_invalidations_retry(*, batch_size: int = 1000) -> dict[str, int]:
    """Retry the invalidations the cache did not confirm; the confirmed ones are forgotten."""
    confirmed = 0
    pending = list(PendingCacheInvalidation.objects.order_by("since").values_list("pseudonym", flat=True)[:batch_size])
    if pending:
        failed = set(_tombstones_write(pending))
        done = [pseudonym for pseudonym in pending if pseudonym not in failed]
        confirmed, _ = PendingCacheInvalidation.objects.filter(pseudonym__in=done).delete()
    return {"confirmed": confirmed, "pending": PendingCacheInvalidation.objects.count()}


def purpose_rules_changed() -> None:
    """Tell every process that purposes or notices changed (now, and after commit)."""

    def bump() -> None:
        cache.set(RULES_TOKEN_KEY, uuid.uuid4().hex, timeout=None)
        purpose_rules_forget()

    bump()
    transaction.on_commit(bump, robust=True)


# --- the ledger --------------------------------------------------------------------


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


class _Row(NamedTuple):
    """A ledger row about to be written, in ``LEDGER_COLUMNS`` order."""

    event_id: uuid.UUID
    subject_id: str
    purpose_id: str
    action: str
    notice_id: int | None
    language: str
    source_experiment: str
    source_arm: str
    source_prompt: str
    source_channel: str
    recorded_at: datetime
    expires_at: datetime | None


LEDGER_COLUMNS = _Row._fields


def _record(
    events: Sequence[ConsentEventInput], rules: Mapping[str, PurposeRule], now: datetime
) -> list[RecordedConsent]:
    pseudonyms = [subject_pseudonym(event.subject_id) for event in events]
    subjects = sorted(set(pseudonyms))
    results: list[RecordedConsent | None] = [None] * len(events)
    with transaction.atomic():
        _subjects_ensure(subjects, now)
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
        fresh: list[tuple[int, _Row]] = []
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
                    _Row(
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
        _write_events(rows)
        for index, row in fresh:
            results[index] = _recorded(row, rules[row.purpose_id], replayed=False)
        _tally(rows, now)
        consent_cache_invalidate(pseudonyms={row.subject_id for row in rows})
    return [result for result in results if result is not None]


def _subjects_ensure(pseudonyms: Sequence[str], now: datetime) -> None:
    """Create the subjects not yet known (attributes blank), leaving known ones as they are."""
    if connection.vendor != "postgresql":
        Subject.objects.bulk_create([Subject(pseudonym=p) for p in pseudonyms], ignore_conflicts=True)
        return
    import psycopg

    connection.ensure_connection()
    table = connection.ops.quote_name(Subject._meta.db_table)
    # The ORM's bulk_create prepares every row through its fields: 15 ms per 250 subjects.
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(
            f"INSERT INTO {table} (pseudonym, age_band, province, platform, first_seen) "  # noqa: S608 — our table
            "SELECT p, '', '', '', %b FROM unnest(%b::varchar[]) AS p ON CONFLICT DO NOTHING",
            [now, list(pseudonyms)],
        )


def _write_events(rows: Sequence[_Row]) -> list[int]:
    """Append the rows to the ledger and move the derived state in step; returns their ids."""
    if not rows:
        return []
    if connection.vendor == "postgresql":
        return _write_events_postgres(rows)
    created = ConsentEvent.objects.bulk_create([ConsentEvent(**row._asdict()) for row in rows])
    _apply_to_state(created)
    return [event.id for event in created]


# Ledger rows and their derived state in one statement, with the values bound as
# arrays on the server: the hot path of batch ingestion (10,000 events/s is the
# target). ``ON CONFLICT`` moves a subject's state to its newest event.
_WRITE_EVENTS_SQL = """
WITH written AS (
    INSERT INTO {ledger} ({columns})
    SELECT * FROM unnest(
        %b::uuid[], %b::varchar[], %b::varchar[], %b::varchar[], %b::bigint[], %b::varchar[],
        %b::varchar[], %b::varchar[], %b::varchar[], %b::varchar[], %b::timestamptz[], %b::timestamptz[]
    )
    RETURNING id, event_id, subject_id, purpose_id, action, notice_id, recorded_at, expires_at
), derived AS (
    INSERT INTO {state}
        (subject_id, purpose_id, granted, notice_id, last_event_id, changed_at, expires_at)
    SELECT subject_id, purpose_id, action = 'grant', notice_id, id, recorded_at, expires_at
    FROM written
    ON CONFLICT (subject_id, purpose_id) DO UPDATE SET
        granted = EXCLUDED.granted,
        notice_id = EXCLUDED.notice_id,
        last_event_id = EXCLUDED.last_event_id,
        changed_at = EXCLUDED.changed_at,
        expires_at = EXCLUDED.expires_at
    -- Never move a state back to an older event, whatever the commit order.
    WHERE {state}.last_event_id < EXCLUDED.last_event_id
)
SELECT event_id, id FROM written
""".format(  # noqa: S608 — our own table and column names
    ledger=ConsentEvent._meta.db_table,
    state=CurrentConsent._meta.db_table,
    columns=", ".join(LEDGER_COLUMNS),
)


def _write_events_postgres(rows: Sequence[_Row]) -> list[int]:
    import psycopg

    connection.ensure_connection()
    # A server-binding cursor on Django's connection (same transaction): the
    # arrays travel as parameters instead of being quoted into the SQL text.
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(_WRITE_EVENTS_SQL, [list(column) for column in zip(*rows, strict=True)])
        ids = dict(cursor.fetchall())
    return [ids[row.event_id] for row in rows]


def _recorded(row: ConsentEvent | _Row, rule: PurposeRule, *, replayed: bool) -> RecordedConsent:
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


def _state_of(event: ConsentEvent) -> CurrentConsent:
    return CurrentConsent(
        subject_id=event.subject_id,
        purpose_id=event.purpose_id,
        granted=event.action == Action.GRANT,
        notice_id=event.notice_id,
        last_event_id=event.id,
        changed_at=event.recorded_at,
        expires_at=event.expires_at,
    )


STATE_FIELDS = ["granted", "notice", "last_event_id", "changed_at", "expires_at"]


def _apply_to_state(events: Sequence[ConsentEvent]) -> None:
    if events:
        CurrentConsent.objects.bulk_create(
            [_state_of(event) for event in events],
            update_conflicts=True,
            unique_fields=["subject", "purpose"],
            update_fields=STATE_FIELDS,
        )


def _tally(events: Sequence[_Row], now: datetime) -> None:
    """Add the events to the daily tallies: one upsert, the last statement of the write.

    Last, because the tally rows are shared by every writer: taking their locks
    just before commit keeps concurrent writers from queueing behind each other.
    """
    counts: dict[tuple, int] = {}
    day = timezone.localdate(now)
    for event in events:
        key = (day, event.purpose_id, event.action)
        counts[key] = counts.get(key, 0) + 1
    if not counts:
        return
    table = connection.ops.quote_name(ConsentTally._meta.db_table)
    count = connection.ops.quote_name("count")
    rows = sorted(counts.items())
    placeholders = ", ".join(["(%s, %s, %s, %s)"] * len(rows))
    params: list = []
    for (day_, purpose, action), n in rows:
        params.extend([connection.ops.adapt_datefield_value(day_), purpose, action, n])
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (day, purpose_id, action, {count}) VALUES {placeholders} "  # noqa: S608 — identifiers are ours
            f"ON CONFLICT (day, purpose_id, action) DO UPDATE SET {count} = {table}.{count} + EXCLUDED.{count}",
            params,
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
    event = ConsentEventInput(
        subject_id=subject_id,
        purpose=purpose,
        action=Action.GRANT,
        notice_version=notice_version,
        source=ConsentSource.of(source),
        event_id=event_id,
    )
    return consent_record(events=[event], now=now)[0]


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
    event = ConsentEventInput(
        subject_id=subject_id,
        purpose=purpose,
        action=Action.WITHDRAW,
        notice_version=notice_version,
        source=ConsentSource.of(source),
        event_id=event_id,
    )
    return consent_record(events=[event], now=now)[0]


# --- rebuilding the derived state --------------------------------------------------


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
        (event.subject_id, event.purpose_id): _state_of(event)
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
        _apply_to_state_rows(fix)
        consent_cache_invalidate(pseudonyms={subject for subject, _ in [*expected, *actual]})


def _apply_to_state_rows(states: list[CurrentConsent]) -> None:
    if states:
        CurrentConsent.objects.bulk_create(
            states,
            update_conflicts=True,
            unique_fields=["subject", "purpose"],
            update_fields=STATE_FIELDS,
        )


def _describe(state: CurrentConsent) -> str:
    return f"{'granted' if state.granted else 'withdrawn'} (event {state.last_event_id})"


def _example(report: RebuildReport, pair: tuple[str, str], what: str) -> None:
    if len(report.examples) < 20:
        report.examples.append(f"subject {pair[0][:12]}… / {pair[1]}: {what}")


# --- purposes and notices ----------------------------------------------------------


def purpose_save(*, purpose: Purpose) -> Purpose:
    purpose.full_clean()
    with transaction.atomic():
        purpose.save()
        purpose_rules_changed()
    return purpose


def notice_in_use(*, notice: Notice) -> bool:
    return notice.pk is not None and ConsentEvent.objects.filter(notice_id=notice.pk).exists()


def notice_save(*, notice: Notice) -> Notice:
    """Create or change a notice version; one that consents rest on is frozen.

    The ledger proves what the subject was shown, so once a grant or withdrawal
    refers to a notice its purpose, version and effective date stay as they were.
    """
    notice.full_clean()
    with transaction.atomic():
        if notice.pk is not None and notice_in_use(notice=notice):
            stored = Notice.objects.get(pk=notice.pk)
            changed = [
                name
                for name in ("purpose_id", "version", "effective_at")
                if getattr(stored, name) != getattr(notice, name)
            ]
            if changed:
                raise ValidationError(
                    {
                        name.removesuffix(
                            "_id"
                        ): "Consents rest on this notice; publish a new version instead."
                        for name in changed
                    }
                )
        notice.save()
        purpose_rules_changed()
    return notice


def notice_text_save(*, text: NoticeText) -> NoticeText:
    text.full_clean()
    with transaction.atomic():
        if text.pk is not None and notice_in_use(notice=text.notice):
            stored = NoticeText.objects.get(pk=text.pk)
            if (stored.language, stored.title, stored.body) != (
                text.language,
                text.title,
                text.body,
            ):
                raise ValidationError(
                    "Consents rest on this notice's text; publish a new version instead."
                )
        text.save()
    return text


# --- data subject requests ---------------------------------------------------------


class CacheUnavailable(RuntimeError):
    """The shared cache does not answer; an erasure waits for it (a transient error)."""


def _subject_flag(pseudonym: str, **flags: datetime) -> None:
    Subject.objects.get_or_create(pseudonym=pseudonym)
    Subject.objects.filter(pk=pseudonym, **{f"{name}__isnull": True for name in flags}).update(
        **flags
    )
    consent_cache_invalidate(pseudonyms=[pseudonym])


def _resolve(subject_id: str | None, pseudonym: str | None) -> str:
    if (subject_id is None) == (pseudonym is None):
        raise TypeError("pass exactly one of subject_id (raw) or pseudonym")
    if subject_id is not None:
        if (issue := subject_id_problem(subject_id)) is not None:
            raise ValidationError({"subject_id": issue})
        return subject_pseudonym(subject_id)
    return pseudonym


def erasure_grace() -> timedelta:
    """How long an erasure waits, cancellable, before it runs (``ERASURE_GRACE_HOURS``)."""
    return timedelta(hours=float(getattr(settings, "ERASURE_GRACE_HOURS", 24.0)))


def dsr_file(
    *,
    type: str,
    subject_id: str | None = None,
    pseudonym: str | None = None,
    filed_by: str = "",
    now: datetime | None = None,
) -> tuple[DataSubjectRequest, bool]:
    """File a data subject request; returns it and whether it is new.

    An open request of the same type for the subject is returned instead of a
    second one. Restriction and objection take effect at once (stopping
    processing is always safe) and so does a restriction while an erasure is
    pending. An erasure runs once its grace period (``erasure_grace()``) is
    over, and can be cancelled until it has run (``dsr_cancel``); the Celery
    task ``dsr_process`` completes every request. ``filed_by`` names the
    caller (an API key's prefix, an admin user) for the record and the log.
    """
    if type not in DataSubjectRequest.Type.values:
        raise ValidationError(
            {"type": f"{type!r} is not one of {', '.join(DataSubjectRequest.Type.values)}."}
        )
    pseudonym = _resolve(subject_id, pseudonym)
    now = now or timezone.now()
    open_requests = DataSubjectRequest.objects.filter(
        subject_pseudonym=pseudonym, type=type, status=DataSubjectRequest.Status.RECEIVED
    )
    erasure = type == DataSubjectRequest.Type.ERASURE
    try:
        with transaction.atomic():
            existing = open_requests.select_for_update().first()
            if existing is not None:
                return existing, False
            request = DataSubjectRequest.objects.create(
                subject_pseudonym=pseudonym,
                type=type,
                received_at=now,
                due_at=now + DSR_DUE_AFTER,
                not_before=now + erasure_grace() if erasure else None,
                filed_by=filed_by[:160],
            )
            if type in (DataSubjectRequest.Type.RESTRICTION, DataSubjectRequest.Type.ERASURE):
                _subject_flag(pseudonym, restricted_at=now)
            elif type == DataSubjectRequest.Type.OBJECTION:
                _subject_flag(pseudonym, objected_at=now)
            if not erasure or request.not_before <= now:
                transaction.on_commit(lambda: dsr_enqueue(request_id=request.id), robust=True)
            # An erasure in its grace period is enqueued by ``dsr_enqueue_open`` once it is over.
    except IntegrityError:  # a concurrent filing of the same request won
        return open_requests.get(), False
    logger.info(
        "data subject request %s (%s) received from %s, due %s%s",
        request.id,
        type,
        filed_by or "an internal caller",
        request.due_at.isoformat(),
        f", runs after {request.not_before.isoformat()}" if erasure else "",
    )
    return request, True


class RequestNotCancellable(ValidationError):
    """The request cannot be cancelled (not an erasure, or already completed or cancelled)."""


def dsr_cancel(
    *, request_id: uuid.UUID, pseudonym: str, cancelled_by: str = "", now: datetime | None = None
) -> DataSubjectRequest:
    """Cancel an erasure that has not run yet; the restriction it imposed is lifted.

    The restriction stays if the subject also asked for one (a restriction
    request of theirs, open or completed). Raises ``DataSubjectRequest.DoesNotExist``
    for a request that is not this subject's, ``RequestNotCancellable`` for one
    that cannot be cancelled. Serialised with ``dsr_process`` by the row lock:
    an erasure is either cancelled or carried out, never both.
    """
    now = now or timezone.now()
    with transaction.atomic():
        request = DataSubjectRequest.objects.select_for_update().get(pk=request_id, subject_pseudonym=pseudonym)
        if request.type != DataSubjectRequest.Type.ERASURE:
            raise RequestNotCancellable({"request_id": "Only an erasure request can be cancelled."})
        if request.status != DataSubjectRequest.Status.RECEIVED:
            raise RequestNotCancellable({"request_id": f"The erasure is already {request.status}."})
        request.status = DataSubjectRequest.Status.CANCELLED
        request.cancelled_at = now
        request.save(update_fields=["status", "cancelled_at"])
        asked_for_restriction = DataSubjectRequest.objects.filter(
            subject_pseudonym=pseudonym,
            type=DataSubjectRequest.Type.RESTRICTION,
            status__in=[DataSubjectRequest.Status.RECEIVED, DataSubjectRequest.Status.COMPLETED],
        ).exists()
        if not asked_for_restriction:
            Subject.objects.filter(pk=pseudonym).update(restricted_at=None)
            consent_cache_invalidate(pseudonyms=[pseudonym])
    logger.info("erasure request %s cancelled by %s", request.id, cancelled_by or "an internal caller")
    return request


def dsr_enqueue(*, request_id: uuid.UUID) -> None:
    from consent.tasks import dsr_process

    dsr_process.delay(str(request_id))


def dsr_enqueue_open(
    *, now: datetime | None = None, settle: timedelta = timedelta(minutes=10)
) -> int:
    """Enqueue every open request that is due to run: erasures whose grace is over, others
    older than ``settle`` (their task may have been lost)."""
    now = now or timezone.now()
    ids = list(
        DataSubjectRequest.objects.filter(status=DataSubjectRequest.Status.RECEIVED)
        .filter(
            Q(not_before__isnull=True, received_at__lte=now - settle) | Q(not_before__lte=now)
        )
        .values_list("id", flat=True)
    )
    for request_id in ids:
        dsr_enqueue(request_id=request_id)
    return len(ids)


def dsr_process(*, request_id: uuid.UUID, now: datetime | None = None) -> dict:
    """Serve one data subject request; a request already served (or erased) is left alone.

    An erasure still in its grace period is left for later (``dsr_enqueue_open``).
    Returns a summary without personal data (it lands in the task result backend).
    """
    now = now or timezone.now()
    request = DataSubjectRequest.objects.filter(pk=request_id).only("type", "status", "not_before").first()
    if request is None:
        return {"request": str(request_id), "outcome": "not_found"}
    if request.status != DataSubjectRequest.Status.RECEIVED:
        return {"request": str(request_id), "outcome": "already_done"}
    if request.type == DataSubjectRequest.Type.ERASURE:
        if request.not_before is not None and now < request.not_before:
            return {"request": str(request_id), "outcome": "in_grace_period"}
        return _dsr_erase(request_id, now)
    with transaction.atomic():
        request = DataSubjectRequest.objects.select_for_update().filter(pk=request_id).first()
        if request is None or request.status != DataSubjectRequest.Status.RECEIVED:
            return {"request": str(request_id), "outcome": "already_done"}
        request.attempts += 1
        if request.type == DataSubjectRequest.Type.ACCESS:
            request.export = subject_export(pseudonym=request.subject_pseudonym, now=now)
        elif request.type == DataSubjectRequest.Type.RESTRICTION:
            _subject_flag(request.subject_pseudonym, restricted_at=request.received_at)
        elif request.type == DataSubjectRequest.Type.OBJECTION:
            _subject_flag(request.subject_pseudonym, objected_at=request.received_at)
        request.status = DataSubjectRequest.Status.COMPLETED
        request.completed_at = now
        request.last_error = ""
        request.save()
    logger.info("data subject request %s (%s) completed", request.id, request.type)
    return {
        "request": str(request.id),
        "type": request.type,
        "outcome": "completed",
        "on_time": now <= request.due_at,
    }


def dsr_note_failure(*, request_id: uuid.UUID, error: BaseException) -> None:
    """Count a failed attempt; only the error's class is kept (messages may quote data)."""
    DataSubjectRequest.objects.filter(
        pk=request_id, status=DataSubjectRequest.Status.RECEIVED
    ).update(last_error=type(error).__name__[:500])


def subject_export(*, pseudonym: str, now: datetime | None = None) -> dict:
    """Everything held about the subject, from this app and every registered one."""
    now = now or timezone.now()
    subject = (
        Subject.objects.filter(pk=pseudonym)
        .values(
            "pseudonym",
            "age_band",
            "province",
            "platform",
            "first_seen",
            "restricted_at",
            "objected_at",
        )
        .first()
    )
    states = CurrentConsent.objects.filter(subject_id=pseudonym).order_by("purpose_id")
    return _jsonable(
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


def _jsonable(value):
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def _cache_answers() -> bool:
    key, token = f"consent:probe:{uuid.uuid4().hex}", uuid.uuid4().hex
    cache.set(key, token, timeout=30)
    answered = cache.get(key) == token
    cache.delete(key)
    return answered


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


def _dsr_erase(request_id: uuid.UUID, now: datetime) -> dict:
    if not _cache_answers():
        # Erasing the tables while cache entries survive would leave the subject
        # in the cache; the task retries (the request is due in 72 hours).
        raise CacheUnavailable("the cache does not answer; erasure postponed")
    with transaction.atomic():
        request = DataSubjectRequest.objects.select_for_update().filter(pk=request_id).first()
        if request is None or request.status != DataSubjectRequest.Status.RECEIVED:
            return {"request": str(request_id), "outcome": "already_done"}
        received_at, due_at, pseudonym = request.received_at, request.due_at, request.subject_pseudonym
        # The request's record stays, readable by its id, with nothing that names the subject.
        DataSubjectRequest.objects.filter(pk=request.pk).update(
            status=DataSubjectRequest.Status.COMPLETED,
            completed_at=now,
            subject_pseudonym="",
            attempts=request.attempts + 1,
            last_error="",
        )
        summary = subject_erase(pseudonym=pseudonym)
        record = ErasureRecord.objects.create(
            received_at=received_at,
            due_at=due_at,
            completed_at=now,
            rows_erased=summary.rows,
            rows_by_source=summary.rows_by_source,
            cache_keys_erased=summary.cache_keys,
            found_nothing=summary.found_nothing,
        )
    if summary.found_nothing:
        # The marketplace asked to erase someone it knows; finding nothing usually means the
        # data was stored under other pseudonyms (another key, another form of the id).
        logger.error(
            "ALERT erasure (record %s) found nothing held about the subject: check that "
            "PRIVACYLAB_PSEUDONYM_KEY is the key the data was stored under (docs/operations.md)",
            record.pk,
        )
    logger.info("erasure completed (record %s): %s rows", record.pk, summary.rows)
    return {
        "request": str(request_id),
        "type": "erasure",
        "outcome": "completed",
        "on_time": now <= due_at,
    }


def subject_processing_resume(
    *, pseudonym: str, restriction: bool = False, objection: bool = False
) -> None:
    """Lift a restriction of processing or an objection (the DPO, once the subject agrees)."""
    flags = {}
    if restriction:
        flags["restricted_at"] = None
    if objection:
        flags["objected_at"] = None
    if not flags:
        return
    with transaction.atomic():
        Subject.objects.filter(pk=pseudonym).update(**flags)
        consent_cache_invalidate(pseudonyms=[pseudonym])


# --- retention ---------------------------------------------------------------------


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
