"""Reads of consent, above all ``consent_state``: the hot read of every recommendation.

``consent_state`` answers from the shared cache in one round trip (the
subject's state and the purposes' rules token, fetched together); on a miss it
reads the database and fills the cache. Writes invalidate the subject's entry
explicitly, in the same operation (``services.cache.consent_cache_invalidate``), by
writing a short-lived *tombstone* over it: a reader that read the database
just before the write committed fills the cache with ``add``, which cannot
replace the tombstone, and it fills only if its read began less than half the
tombstone's lifetime ago — so a late fill either lands before the
invalidation (which then overwrites it) or meets the tombstone, never after
it expired. Readers that meet a tombstone answer from the database without
filling. When the cache is unreachable (django-redis swallows the error),
every read is a miss: the database answers, so it stays the truth.

Whether a grant still *counts* is decided at read time against ``now``: it may
have expired, or a newer notice that requires re-consent may have come into
effect. Restriction and objection then block purposes whatever the consents say.
Callers that must not personalize without certainty use
``personalization_allowed`` / ``sensitive_allowed``, which fail closed.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Exists, OuterRef, Q, QuerySet
from django.utils import timezone

from config.bulk import binary_cursor
from config.memo import VersionedMemo
from consent.models import (
    ConsentEvent,
    CurrentConsent,
    DataSubjectRequest,
    Notice,
    Purpose,
    Subject,
)
from consent.pseudonyms import subject_pseudonym

logger = logging.getLogger(__name__)

STATE_KEY_PREFIX = "consent:state:v1:"
RULES_TOKEN_KEY = "consent:rules-token"  # noqa: S105 — a cache key, not a secret
# A lost invalidation (the cache was unreachable during a withdrawal and then
# came back) can leave a stale entry until the retry (every minute) confirms it;
# this bounds how long it may live in any case.
STATE_CACHE_SECONDS: int = settings.CONSENT_STATE_CACHE_SECONDS
# What an invalidation writes over a subject's entry, and for how long.
TOMBSTONE = "consent:invalidated"
TOMBSTONE_SECONDS: float = settings.CONSENT_STATE_TOMBSTONE_SECONDS
# Rules are reloaded at least this often even if the rules token never moves.
RULES_MAX_AGE_SECONDS = 60.0


def state_cache_key(pseudonym: str) -> str:
    return STATE_KEY_PREFIX + pseudonym


# --- purposes and notices --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NoticeRule:
    id: int
    version: str
    effective_at: datetime
    requires_reconsent: bool

    @property
    def order(self) -> tuple[datetime, int]:
        return (self.effective_at, self.id)


@dataclass(frozen=True, slots=True)
class PurposeRule:
    """What decides whether a purpose's grant counts: notices, expiry, profiling."""

    key: str
    retention_days: int
    consent_validity_days: int | None
    sensitive: bool
    involves_profiling: bool
    notices: tuple[NoticeRule, ...] = ()  # ordered by effective date

    def notice(self, version: str | None) -> NoticeRule | None:
        for notice in self.notices:
            if notice.version == version:
                return notice
        return None

    def current_notice(self, now: datetime) -> NoticeRule | None:
        """The newest notice in effect at ``now``."""
        current = None
        for notice in self.notices:
            if notice.effective_at <= now:
                current = notice
        return current

    def reconsent_notice(self, now: datetime) -> NoticeRule | None:
        """The newest notice in effect that requires re-consent: grants before it lapse."""
        cutoff = None
        for notice in self.notices:
            if notice.effective_at <= now and notice.requires_reconsent:
                cutoff = notice
        return cutoff

    def version_counts(self, version: str | None, now: datetime) -> bool:
        """Whether a grant given under ``version`` of the notice still counts at ``now``."""
        notice = self.notice(version)
        if notice is None:
            return False
        cutoff = self.reconsent_notice(now)
        return cutoff is None or notice.order >= cutoff.order

    def counting_notice_ids(self, now: datetime) -> list[int]:
        return [notice.id for notice in self.notices if self.version_counts(notice.version, now)]


def purpose_rules_load(*, using: str = "default") -> dict[str, PurposeRule]:
    """Purposes and their notices, fresh from the database (writes validate against these)."""
    notices: dict[str, list[NoticeRule]] = {}
    for row in Notice.objects.using(using).order_by("effective_at", "id").values_list(
        "purpose_id", "id", "version", "effective_at", "requires_reconsent"
    ):
        notices.setdefault(row[0], []).append(NoticeRule(*row[1:]))
    return {
        key: PurposeRule(
            key=key,
            retention_days=retention,
            consent_validity_days=validity,
            sensitive=sensitive,
            involves_profiling=profiling,
            notices=tuple(notices.get(key, ())),
        )
        for key, retention, validity, sensitive, profiling in Purpose.objects.using(using).values_list(
            "key", "retention_days", "consent_validity_days", "sensitive", "involves_profiling"
        )
    }


_rules_memo: VersionedMemo[Mapping[str, PurposeRule]] = VersionedMemo(max_age_seconds=RULES_MAX_AGE_SECONDS)
_FETCH = object()


def purpose_rules(*, token: object = _FETCH) -> Mapping[str, PurposeRule]:
    """The purposes' rules, held in-process and reloaded when the rules token moves.

    ``token`` is the value of ``RULES_TOKEN_KEY`` if the caller already fetched
    it (``consent_state`` does, in the same round trip as the subject's state).
    """
    if token is _FETCH:
        token = cache.get(RULES_TOKEN_KEY)
    return _rules_memo.get(
        token, lambda: MappingProxyType(purpose_rules_load()), held_as=_rules_token_after_load
    )


def _rules_token_after_load(token: object) -> object:
    if token is not None:
        return token
    fresh = uuid.uuid4().hex
    # ``add``: a token another process set meanwhile wins; ours is then unknown
    # and the next read reloads once more. With the cache down, ``None`` stays
    # the token and the memo is reused until it is RULES_MAX_AGE_SECONDS old.
    return fresh if cache.add(RULES_TOKEN_KEY, fresh, timeout=None) else None


def purpose_rules_forget() -> None:
    """Drop this process's rules; other processes follow the rules token."""
    _rules_memo.forget()


def purpose_retention_limits() -> dict[str, int]:
    """Retention period in days per purpose key (for the treatment compliance review)."""
    return dict(Purpose.objects.values_list("key", "retention_days"))


# --- consent state ---------------------------------------------------------------


class Status(StrEnum):
    """A purpose's consent status, as the consent API reports it."""

    GRANTED = "granted"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    RECONSENT_REQUIRED = "reconsent_required"
    NOT_SET = "not_set"


@dataclass(frozen=True, slots=True)
class PurposeConsent:
    """One purpose's consent for a subject, as of the read.

    ``granted``: a grant that counts now (not withdrawn, expired or lapsed by a
    newer notice). ``allowed``: granted, and not blocked by a restriction of
    processing or an objection to profiling.
    """

    purpose: str
    status: str
    allowed: bool
    notice_version: str | None = None
    changed_at: datetime | None = None
    expires_at: datetime | None = None

    @property
    def granted(self) -> bool:
        return self.status == Status.GRANTED


_NOT_SET = PurposeConsent(purpose="", status=Status.NOT_SET, allowed=False)


@dataclass(frozen=True, slots=True)
class ConsentState:
    """A subject's consent, built to fail closed: anything unknown is not allowed.

    ``confirmed`` is False only for ``ConsentState.unconfirmed()``, the answer
    callers substitute when the state cannot be read at all.
    """

    purposes: Mapping[str, PurposeConsent] = field(default_factory=lambda: MappingProxyType({}))
    restricted: bool = False
    objected: bool = False
    confirmed: bool = True

    @classmethod
    def unconfirmed(cls) -> ConsentState:
        return cls(confirmed=False)

    def get(self, purpose: str) -> PurposeConsent:
        return self.purposes.get(purpose, _NOT_SET)

    def granted(self, purpose: str) -> bool:
        return self.confirmed and self.get(purpose).granted

    def allowed(self, purpose: str) -> bool:
        return self.confirmed and self.get(purpose).allowed

    @property
    def personalization_allowed(self) -> bool:
        return self.allowed(Purpose.PERSONALIZATION)

    @property
    def sensitive_allowed(self) -> bool:
        """Sensitive categories need their own explicit consent on top of personalization."""
        return self.personalization_allowed and self.allowed(Purpose.SENSITIVE_PROFILING)


# What the cache holds per subject: (restricted, objected, rows), each row
# (purpose, granted, notice_version, changed_at_ts, expires_at_ts | None).
CachedState = tuple[bool, bool, tuple[tuple[str, bool, str | None, float, float | None], ...]]


def _state_from_db(pseudonym: str) -> CachedState:
    flags = Subject.objects.filter(pk=pseudonym).values_list("restricted_at", "objected_at").first()
    restricted, objected = (flags[0] is not None, flags[1] is not None) if flags else (False, False)
    rows = tuple(
        (
            purpose,
            granted,
            version,
            changed_at.timestamp(),
            expires_at.timestamp() if expires_at else None,
        )
        for purpose, granted, version, changed_at, expires_at in CurrentConsent.objects.filter(
            subject_id=pseudonym
        )
        .order_by("purpose_id")
        .values_list("purpose_id", "granted", "notice__version", "changed_at", "expires_at")
    )
    return (restricted, objected, rows)


def _evaluate(raw: CachedState, rules: Mapping[str, PurposeRule], now: datetime) -> ConsentState:
    restricted, objected, rows = raw
    now_ts = now.timestamp()
    purposes: dict[str, PurposeConsent] = {}
    for purpose, granted, version, changed_ts, expires_ts in rows:
        rule = rules.get(purpose)
        if not granted:
            status = Status.WITHDRAWN
        elif expires_ts is not None and now_ts >= expires_ts:
            status = Status.EXPIRED
        elif rule is None or not rule.version_counts(version, now):
            status = Status.RECONSENT_REQUIRED
        else:
            status = Status.GRANTED
        blocked = restricted or (objected and (rule is None or rule.involves_profiling))
        purposes[purpose] = PurposeConsent(
            purpose=purpose,
            status=status,
            allowed=status == Status.GRANTED and not blocked,
            notice_version=version,
            changed_at=datetime.fromtimestamp(changed_ts, UTC),
            expires_at=datetime.fromtimestamp(expires_ts, UTC) if expires_ts is not None else None,
        )
    for key in rules:
        if key not in purposes:
            purposes[key] = PurposeConsent(purpose=key, status=Status.NOT_SET, allowed=False)
    return ConsentState(
        purposes=MappingProxyType(purposes), restricted=restricted, objected=objected
    )


def _pseudonym(subject_id: str | None, pseudonym: str | None) -> str:
    if (subject_id is None) == (pseudonym is None):
        raise TypeError("pass exactly one of subject_id (raw) or pseudonym")
    return pseudonym if pseudonym is not None else subject_pseudonym(subject_id)


def consent_state(
    *, subject_id: str | None = None, pseudonym: str | None = None, now: datetime | None = None
) -> ConsentState:
    """The subject's current consent per purpose, with restriction and objection.

    Pass the marketplace's raw ``subject_id`` (hashed here) or the stored
    ``pseudonym``. Raises if neither the cache nor the database can answer;
    use ``personalization_allowed`` / ``sensitive_allowed`` to fail closed instead.
    """
    pseudonym = _pseudonym(subject_id, pseudonym)
    key = state_cache_key(pseudonym)
    cached = cache.get_many([key, RULES_TOKEN_KEY])
    rules = purpose_rules(token=cached.get(RULES_TOKEN_KEY))
    raw = cached.get(key)
    if raw is None or raw == TOMBSTONE:
        read_began = time.monotonic()
        fresh = _state_from_db(pseudonym)
        if raw is None:
            state_cache_fill(key=key, raw=fresh, read_began=read_began)
        raw = fresh
    return _evaluate(raw, rules, now or timezone.now())


def state_cache_fill(*, key: str, raw: CachedState, read_began: float) -> bool:
    """Offer a state just read from the database to the cache; whether it was taken.

    ``add``, never ``set``: it cannot replace a tombstone (an invalidation that
    happened while we read) or a fresher reader's value. And only while the
    read is young: a tombstone lives ``TOMBSTONE_SECONDS``, so a fill within
    half of that after the read began cannot land after the tombstone of a
    write that committed during the read has expired.
    """
    if time.monotonic() - read_began >= TOMBSTONE_SECONDS / 2:
        return False
    return bool(cache.add(key, raw, timeout=STATE_CACHE_SECONDS))


def _fail_closed(check: str, subject_id: str | None, pseudonym: str | None) -> bool:
    if (subject_id is None) == (pseudonym is None):
        raise TypeError("pass exactly one of subject_id (raw) or pseudonym")
    try:
        return getattr(consent_state(subject_id=subject_id, pseudonym=pseudonym), check)
    except Exception as exc:  # any failure to confirm consent means "no"
        logger.warning("consent state unavailable (%s): failing closed", type(exc).__name__)
        return False


def personalization_allowed(*, subject_id: str | None = None, pseudonym: str | None = None) -> bool:
    """May this subject's personal data personalize what they see? False when unsure."""
    return _fail_closed("personalization_allowed", subject_id, pseudonym)


def sensitive_allowed(*, subject_id: str | None = None, pseudonym: str | None = None) -> bool:
    """May sensitive categories (financial products, health) be personalized? False when unsure."""
    return _fail_closed("sensitive_allowed", subject_id, pseudonym)


def consenting_subject_ids(*, purposes: Sequence[str], now: datetime | None = None) -> QuerySet:
    """Pseudonyms of subjects whose data may be used for *all* of ``purposes`` at ``now`` (default: now).

    A lazy ``values_list`` queryset, for subqueries such as
    ``Interaction.objects.filter(subject_id__in=consenting_subject_ids(purposes=["personalization"]))``
    when building models from consenting subjects' data only.

    The state is ``CurrentConsent``'s (the last ledger event per subject and
    purpose) unless the ledger holds a decision on these purposes recorded
    after ``now`` — a build run for a moment in the past, as the simulator's
    are: then it is the ledger's as of ``now`` (``consenting_subject_ids_as_of``),
    so a grant given later is not used and a withdrawal before ``now`` is
    honoured. The two agree whenever nothing was recorded after ``now``; the
    check is one probe of the (purpose, recorded_at) index.
    """
    rules = _rules_for(purposes)
    now = now or timezone.now()
    if ConsentEvent.objects.filter(purpose_id__in=list(purposes), recorded_at__gt=now).exists():
        return _consenting_as_of(purposes=purposes, as_of=now, rules=rules)
    subjects = _unrestricted_subjects(purposes, rules)
    for key in purposes:
        granted = CurrentConsent.objects.filter(
            subject_id=OuterRef("pk"),
            purpose_id=key,
            granted=True,
            notice_id__in=rules[key].counting_notice_ids(now),
        ).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        subjects = subjects.filter(Exists(granted))
    return subjects.values_list("pseudonym", flat=True)


def consenting_subject_ids_as_of(*, purposes: Sequence[str], as_of: datetime) -> QuerySet:
    """Pseudonyms of subjects whose data could be used for *all* of ``purposes`` at ``as_of``, from the ledger.

    A subject's decision on a purpose as of ``as_of`` is the last ledger event
    (in ledger order, as ``CurrentConsent`` keeps it) among those recorded at or
    before ``as_of``; it counts if it is a grant under a notice that counts at
    ``as_of`` and not expired by then. One query: per purpose, a grant with no
    later event on it up to ``as_of`` (an anti-join on the ledger's
    (subject, purpose, id) index). A restriction or objection in force *now*
    excludes the subject whatever the date (it limits processing now, and the
    processing is now), so this fails closed.
    """
    return _consenting_as_of(purposes=purposes, as_of=as_of, rules=_rules_for(purposes))


def _rules_for(purposes: Sequence[str]) -> dict[str, PurposeRule]:
    if not purposes:
        raise ValueError("name at least one purpose")
    rules = purpose_rules_load()
    unknown = sorted(set(purposes) - set(rules))
    if unknown:
        raise ValueError(f"unknown purposes: {', '.join(unknown)}")
    return rules


def _unrestricted_subjects(purposes: Sequence[str], rules: Mapping[str, PurposeRule]) -> QuerySet:
    subjects = Subject.objects.filter(restricted_at__isnull=True)
    if any(rules[key].involves_profiling for key in purposes):
        subjects = subjects.filter(objected_at__isnull=True)
    return subjects


def _consenting_as_of(*, purposes: Sequence[str], as_of: datetime, rules: Mapping[str, PurposeRule]) -> QuerySet:
    subjects = _unrestricted_subjects(purposes, rules)
    for key in purposes:
        later = ConsentEvent.objects.filter(
            subject_id=OuterRef("subject_id"), purpose_id=key, id__gt=OuterRef("id"), recorded_at__lte=as_of
        )
        # Driven from the purpose's grants (not correlated per subject): an order of magnitude
        # faster on SQLite, where the correlated form is a scan per subject.
        granted = (
            ConsentEvent.objects.filter(
                purpose_id=key,
                action=ConsentEvent.Action.GRANT,
                recorded_at__lte=as_of,
                notice_id__in=rules[key].counting_notice_ids(as_of),
            )
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=as_of))
            .filter(~Exists(later))
            .values("subject_id")
        )
        subjects = subjects.filter(pk__in=granted)
    return subjects.values_list("pseudonym", flat=True)


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """One ledger event as shown to the subject (proof of consent)."""

    event_id: uuid.UUID
    purpose: str
    action: str
    notice_version: str | None
    language: str
    source: Mapping[str, str]
    recorded_at: datetime
    expires_at: datetime | None


def consent_history(*, pseudonym: str) -> list[ConsentRecord]:
    rows = (
        ConsentEvent.objects.filter(subject_id=pseudonym)
        .order_by("id")
        .values_list(
            "event_id",
            "purpose_id",
            "action",
            "notice__version",
            "language",
            "source_experiment",
            "source_arm",
            "source_prompt",
            "source_channel",
            "recorded_at",
            "expires_at",
        )
    )
    return [
        ConsentRecord(
            event_id=event_id,
            purpose=purpose,
            action=action,
            notice_version=version,
            language=language,
            source={
                name: value
                for name, value in (
                    ("experiment", experiment),
                    ("arm", arm),
                    ("prompt", prompt),
                    ("channel", channel),
                )
                if value
            },
            recorded_at=recorded_at,
            expires_at=expires_at,
        )
        for (
            event_id,
            purpose,
            action,
            version,
            language,
            experiment,
            arm,
            prompt,
            channel,
            recorded_at,
            expires_at,
        ) in rows
    ]


def subject_requests(*, pseudonym: str) -> QuerySet:
    return DataSubjectRequest.objects.filter(subject_pseudonym=pseudonym).order_by("received_at")


def erased_request(*, request_id: uuid.UUID) -> DataSubjectRequest | None:
    """A completed erasure's record, found by its id alone: it no longer names its subject."""
    return DataSubjectRequest.objects.filter(
        pk=request_id,
        subject_pseudonym="",
        type=DataSubjectRequest.Type.ERASURE,
        status=DataSubjectRequest.Status.COMPLETED,
    ).first()


# What a subject limited (docs/privacy.md): processing restricted (UU PDP Art. 11, GDPR Art. 18)
# or profiling objected to (GDPR Art. 21); the restriction wins when both are recorded.
RESTRICTED, OBJECTED = "restricted", "objected"


def subjects_processing_limits(*, pseudonyms: Sequence[str]) -> dict[str, str]:
    """The known subjects among these: pseudonym → ``RESTRICTED``, ``OBJECTED`` or "" (no limit).

    A pseudonym absent from the answer is no subject on record. Ingest asks it for every batch.
    """
    pseudonyms = list(pseudonyms)
    if not pseudonyms:
        return {}
    if connection.vendor == "postgresql":
        quote = connection.ops.quote_name
        column = quote(Subject._meta.pk.column)
        with binary_cursor() as cursor:
            # = ANY(array): one parameter, where IN would need a thousand for the driver to parse.
            cursor.execute(
                f"SELECT {column}, CASE WHEN restricted_at IS NOT NULL THEN '{RESTRICTED}' "  # noqa: S608
                f"WHEN objected_at IS NOT NULL THEN '{OBJECTED}' ELSE '' END "
                f"FROM {quote(Subject._meta.db_table)} WHERE {column} = ANY(%b::varchar[])",
                [pseudonyms],
            )
            return dict(cursor.fetchall())
    return {
        pseudonym: RESTRICTED if restricted else OBJECTED if objected else ""
        for pseudonym, restricted, objected in Subject.objects.filter(pk__in=pseudonyms).values_list(
            "pk", "restricted_at", "objected_at"
        )
    }
