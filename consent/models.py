"""Data subjects, purposes and notices, the consent ledger and data subject requests.

Everything here is keyed by the subject's keyed-HMAC pseudonym; the raw id of
the marketplace's user never reaches a table. The ledger (``ConsentEvent``) is
append-only in Python and, on PostgreSQL, in the database itself; the only
sanctioned deletions are a subject's erasure and the retention purge, and both
go through ``ConsentEventQuerySet.sanctioned_delete``.
"""

import uuid

import pgtrigger
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from config.append_only import append_only_model, append_only_queryset
from consent.pseudonyms import PSEUDONYM_LENGTH

LEDGER_TRIGGER = "consent.ConsentEvent:append_only"


class Language(models.TextChoices):
    INDONESIAN = "id", "Bahasa Indonesia"
    ENGLISH = "en", "English"


class Subject(models.Model):
    """A data subject, known only by the keyed-HMAC pseudonym of the marketplace's id.

    Holds the few coarse attributes experiments target and segment on; never a
    name, email or phone number. ``restricted_at`` and ``objected_at`` record a
    restriction of processing (UU PDP Art. 11, GDPR Art. 18) and an objection to
    profiling (UU PDP Art. 10, GDPR Art. 21–22): either stops personalization
    for the subject across the platform, whatever the consents say.
    """

    class Platform(models.TextChoices):
        ANDROID = "android"
        IOS = "ios"
        WEB = "web"

    pseudonym = models.CharField(primary_key=True, max_length=PSEUDONYM_LENGTH)
    age_band = models.CharField(max_length=16, blank=True)
    province = models.CharField(max_length=64, blank=True)
    platform = models.CharField(max_length=16, blank=True)
    first_seen = models.DateTimeField(auto_now_add=True, db_index=True)
    restricted_at = models.DateTimeField(
        null=True, blank=True, help_text="Processing restricted at the subject's request."
    )
    objected_at = models.DateTimeField(
        null=True, blank=True, help_text="The subject objected to profiling."
    )

    class Meta:
        indexes = [
            # The few restricted subjects, found without reading every subject (the metric
            # facts leave them out on every refresh).
            models.Index(
                fields=["restricted_at"], condition=Q(restricted_at__isnull=False), name="subject_restricted"
            ),
        ]

    def __str__(self) -> str:
        return f"subject {self.pseudonym[:12]}…"


# Everything a subject's row holds: what an access request exports and the admin shows.
SUBJECT_RECORD = (
    "pseudonym",
    "age_band",
    "province",
    "platform",
    "first_seen",
    "restricted_at",
    "objected_at",
)


class Purpose(models.Model):
    """A purpose of processing that a subject consents to separately."""

    PERSONALIZATION = "personalization"
    SENSITIVE_PROFILING = "sensitive_profiling"
    BEHAVIORAL_TRACKING = "behavioral_tracking"
    MARKETING = "marketing"

    key = models.SlugField(primary_key=True, max_length=32)
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    retention_days = models.PositiveIntegerField(
        help_text="Raw personal data collected for this purpose is deleted after this many days."
    )
    consent_validity_days = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="A grant expires this many days after it was given; empty: it does not expire.",
    )
    sensitive = models.BooleanField(
        default=False,
        help_text="Processes specific personal data (UU PDP Art. 4(2): health, financial data): "
        "needs its own explicit consent.",
    )
    involves_profiling = models.BooleanField(
        default=True, help_text="An objection to profiling stops this purpose."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]
        constraints = [
            models.CheckConstraint(
                condition=Q(retention_days__gte=1), name="purpose_retention_positive"
            ),
            models.CheckConstraint(
                condition=Q(consent_validity_days__isnull=True) | Q(consent_validity_days__gte=1),
                name="purpose_validity_positive",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Notice(models.Model):
    """One version of a purpose's privacy notice; its texts are per language.

    A version that ``requires_reconsent`` invalidates, from its effective date,
    every grant given under an earlier version of the purpose's notice.
    """

    purpose = models.ForeignKey(Purpose, on_delete=models.PROTECT, related_name="notices")
    version = models.CharField(max_length=32)
    effective_at = models.DateTimeField()
    requires_reconsent = models.BooleanField(
        default=False,
        help_text="Grants under earlier versions stop counting once this version is in effect.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["purpose", "effective_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["purpose", "version"], name="notice_version_unique"),
            models.CheckConstraint(condition=~Q(version=""), name="notice_version_not_empty"),
        ]

    def __str__(self) -> str:
        return f"{self.purpose_id} notice v{self.version}"


class NoticeText(models.Model):
    notice = models.ForeignKey(Notice, on_delete=models.CASCADE, related_name="texts")
    language = models.CharField(max_length=2, choices=Language.choices)
    title = models.CharField(max_length=200)
    body = models.TextField()

    class Meta:
        ordering = ["notice", "language"]
        constraints = [
            models.UniqueConstraint(
                fields=["notice", "language"], name="notice_text_unique_language"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.notice} ({self.language})"


class LedgerIsAppendOnly(RuntimeError):
    """Raised on any attempt to change or remove a recorded consent event."""


_NOT_UPDATED = "Consent events cannot be updated: record a new event instead."
_NOT_DELETED = "Consent events cannot be deleted, except by a subject's erasure or the retention purge."


@append_only_queryset(error=LedgerIsAppendOnly, update_refused=_NOT_UPDATED, delete_refused=_NOT_DELETED)
class ConsentEventQuerySet(models.QuerySet):
    def sanctioned_delete(self, *, reason: str) -> int:
        """Delete these events: only a subject's erasure and the retention purge may.

        The database trigger that protects the ledger is bypassed for this one
        statement (``pgtrigger.ignore``), in this thread only.
        """
        if reason not in ("erasure", "retention"):
            raise LedgerIsAppendOnly(
                f"{reason!r} is not a sanctioned reason to delete consent events."
            )
        with pgtrigger.ignore(LEDGER_TRIGGER):
            return self._raw_delete(self.db)


@append_only_model(error=LedgerIsAppendOnly, update_refused=_NOT_UPDATED, delete_refused=_NOT_DELETED)
class ConsentEvent(models.Model):
    """One grant or withdrawal: the ledger is the proof of consent (UU PDP Art. 24, GDPR Art. 7(1))."""

    class Action(models.TextChoices):
        GRANT = "grant"
        WITHDRAW = "withdraw"

    class Prompt(models.TextChoices):
        NONE = "none"
        BANNER = "banner"
        MODAL = "modal"
        JUST_IN_TIME = "just_in_time"
        SETTINGS = "settings", "Privacy settings page"

    class Channel(models.TextChoices):
        ANDROID = "android"
        IOS = "ios"
        WEB = "web"
        API = "api"
        SUPPORT = "support", "Customer support"

    event_id = models.UUIDField(unique=True, default=uuid.uuid4, editable=False)
    # The composite indexes below lead with subject and purpose; single-column
    # indexes as well would only slow the ledger's inserts down.
    subject = models.ForeignKey(
        Subject, on_delete=models.PROTECT, related_name="consent_events", db_index=False
    )
    purpose = models.ForeignKey(
        Purpose, on_delete=models.PROTECT, related_name="consent_events", db_index=False
    )
    action = models.CharField(max_length=8, choices=Action.choices)
    notice = models.ForeignKey(
        Notice, on_delete=models.PROTECT, null=True, blank=True, related_name="consent_events"
    )
    language = models.CharField(max_length=2, choices=Language.choices, blank=True)
    source_experiment = models.CharField(max_length=64, blank=True)
    source_arm = models.CharField(max_length=64, blank=True)
    source_prompt = models.CharField(max_length=16, choices=Prompt.choices, blank=True)
    source_channel = models.CharField(max_length=16, choices=Channel.choices, blank=True)
    recorded_at = models.DateTimeField()
    expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When this grant lapses (the purpose's validity when given).",
    )
    # When the platform stored the row (the database's clock at the writing
    # transaction's start), whatever ``recorded_at`` says: derived data that is
    # refreshed incrementally finds late or back-dated rows by it.
    stored_at = models.DateTimeField(db_default=Now(), editable=False)

    objects = ConsentEventQuerySet.as_manager()

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["subject", "purpose", "id"], name="consent_event_subject_purpose"),
            models.Index(fields=["purpose", "recorded_at"], name="consent_event_purpose_time"),
            models.Index(fields=["stored_at"], name="consent_event_stored"),
            # The grants that lapse between two metric runs (experiments.metrics: a consent
            # that expires changes the consent rate with no new record).
            models.Index(
                fields=["purpose", "expires_at"],
                condition=Q(expires_at__isnull=False),
                name="consent_event_purpose_expiry",
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(action__in=["grant", "withdraw"]), name="consent_event_action_valid"
            ),
            models.CheckConstraint(
                condition=Q(action="withdraw") | Q(notice__isnull=False),
                name="consent_event_grant_has_notice",
            ),
            models.CheckConstraint(
                condition=Q(expires_at__isnull=True)
                | (Q(action="grant") & Q(expires_at__gt=F("recorded_at"))),
                name="consent_event_expiry_only_on_grant",
            ),
        ]
        triggers = [
            pgtrigger.Protect(name="append_only", operation=pgtrigger.Update | pgtrigger.Delete),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.purpose_id} by {self.subject_id[:12]}…"


class CurrentConsent(models.Model):
    """The current consent per subject and purpose: the last ledger event, kept in step.

    Written in the same transaction as the event it derives from; the command
    ``consent_rebuild_state`` replays the ledger and reports any difference.
    Whether a grant still *counts* (expiry, a newer notice that requires
    re-consent, a restriction) is decided when it is read.
    """

    # Covered by the unique (subject, purpose) and the (purpose, granted) indexes.
    subject = models.ForeignKey(
        Subject, on_delete=models.CASCADE, related_name="current_consents", db_index=False
    )
    purpose = models.ForeignKey(Purpose, on_delete=models.PROTECT, related_name="+", db_index=False)
    granted = models.BooleanField()
    notice = models.ForeignKey(
        Notice, on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    last_event_id = models.BigIntegerField(help_text="The ledger event this state derives from.")
    changed_at = models.DateTimeField()
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["subject", "purpose"], name="current_consent_unique"),
            models.CheckConstraint(
                condition=Q(granted=False) | Q(notice__isnull=False),
                name="current_consent_grant_has_notice",
            ),
            models.CheckConstraint(
                condition=Q(expires_at__isnull=True) | Q(expires_at__gt=F("changed_at")),
                name="current_consent_expiry_after_change",
            ),
        ]
        indexes = [models.Index(fields=["purpose", "granted"], name="current_consent_purpose_gr")]

    def __str__(self) -> str:
        return f"{self.purpose_id}: {'granted' if self.granted else 'withdrawn'}"


class ConsentTally(models.Model):
    """Grants and withdrawals per day and purpose: an aggregate that identifies nobody.

    It survives erasures and the retention purge, so long-run consent rates stay
    measurable after the subjects behind them are gone.
    """

    day = models.DateField()
    purpose = models.ForeignKey(Purpose, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=8, choices=ConsentEvent.Action.choices)
    count = models.PositiveBigIntegerField(default=0)

    class Meta:
        ordering = ["-day", "purpose", "action"]
        verbose_name_plural = "consent tallies"
        constraints = [
            models.UniqueConstraint(
                fields=["day", "purpose", "action"], name="consent_tally_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.purpose_id} {self.action}: {self.count}"


class DataSubjectRequest(models.Model):
    """A request to exercise a data-protection right; due 3×24 hours after receipt.

    The subject is held as a plain pseudonym (not a foreign key): a request may
    concern someone the platform holds nothing about, and the answer is then an
    empty export. An erasure waits for a grace period (``not_before``) during
    which it can be cancelled; once it ran, its record stays without the
    pseudonym (``subject_pseudonym`` empty), so the caller can still confirm by
    the request's id that it was completed, while nothing in it links back to
    the subject.
    """

    class Type(models.TextChoices):
        ACCESS = "access", "Access (export)"
        ERASURE = "erasure", "Erasure"
        RESTRICTION = "restriction", "Restriction of processing"
        OBJECTION = "objection", "Objection to profiling"

    class Status(models.TextChoices):
        RECEIVED = "received"
        COMPLETED = "completed"
        CANCELLED = "cancelled"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    subject_pseudonym = models.CharField(
        max_length=PSEUDONYM_LENGTH, db_index=True, help_text="Empty once the subject was erased."
    )
    type = models.CharField(max_length=16, choices=Type.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    received_at = models.DateTimeField(db_index=True)
    due_at = models.DateTimeField(db_index=True)
    not_before = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Erasures: the end of the grace period, during which the request can be cancelled.",
    )
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    filed_by = models.CharField(
        max_length=160, blank=True, help_text="The API key (its prefix) or the admin user that filed it."
    )
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    export = models.JSONField(null=True, blank=True, help_text="The access request's answer.")
    export_cleared_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["due_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(due_at__gt=F("received_at")),
                name="dsr_due_after_receipt",
                violation_error_message="A request is due after it was received.",
            ),
            models.CheckConstraint(
                condition=~Q(status="completed") | Q(completed_at__isnull=False),
                name="dsr_completed_has_time",
                violation_error_message="A completed request records when it was completed.",
            ),
            models.CheckConstraint(
                condition=~Q(status="cancelled") | Q(cancelled_at__isnull=False),
                name="dsr_cancelled_has_time",
                violation_error_message="A cancelled request records when it was cancelled.",
            ),
            models.CheckConstraint(
                condition=Q(status__in=["received", "completed", "cancelled"]),
                name="dsr_status_valid",
                violation_error_message="A request is received, completed or cancelled.",
            ),
            models.CheckConstraint(
                condition=Q(type__in=["access", "erasure", "restriction", "objection"]),
                name="dsr_type_valid",
                violation_error_message="A request is for access, erasure, restriction or objection.",
            ),
            models.CheckConstraint(
                condition=Q(not_before__isnull=True)
                | (Q(type="erasure") & Q(not_before__gte=F("received_at")) & Q(not_before__lt=F("due_at"))),
                name="dsr_grace_within_due_time",
                violation_error_message="Only an erasure has a grace period, and it ends before the due time.",
            ),
            models.CheckConstraint(
                condition=~Q(subject_pseudonym="") | (Q(type="erasure") & Q(status="completed")),
                name="dsr_only_completed_erasure_forgets_subject",
                violation_error_message="Only a completed erasure's record drops the subject's pseudonym.",
            ),
            models.UniqueConstraint(
                fields=["subject_pseudonym", "type"],
                condition=Q(status="received"),
                name="dsr_one_open_per_type",
                violation_error_message="The subject already has an open request of this type.",
            ),
        ]
        indexes = [models.Index(fields=["status", "due_at"], name="dsr_status_due")]

    def __str__(self) -> str:
        return f"{self.get_type_display()} request {str(self.id)[:8]}"


class ErasureRecord(models.Model):
    """What is left of a completed erasure: when, and how much, but not whose.

    No pseudonym and no request id: nothing here links back to the subject.
    """

    received_at = models.DateTimeField()
    due_at = models.DateTimeField()
    completed_at = models.DateTimeField()
    rows_erased = models.PositiveIntegerField()
    rows_by_source = models.JSONField(default=dict, help_text="Source label → rows erased.")
    cache_keys_erased = models.PositiveIntegerField(default=0)
    found_nothing = models.BooleanField(
        default=False,
        help_text="Nothing was held beyond the subject record: an alert (was the data stored under "
        "another pseudonym key?).",
    )

    class Meta:
        ordering = ["-completed_at"]

    def __str__(self) -> str:
        return f"erasure completed {self.completed_at:%Y-%m-%d %H:%M}"

    @property
    def on_time(self) -> bool:
        return self.completed_at <= self.due_at


class PendingCacheInvalidation(models.Model):
    """A subject whose cached consent state could not be invalidated: the cache did not answer.

    Written when a write's invalidation is not confirmed (in the write's own
    transaction, so it cannot be lost), and retried every minute by
    ``consent_cache_invalidations_retry`` until the cache confirms it; then
    deleted. Without it, a cache that was unreachable from one process while a
    withdrawal committed could keep serving the old "granted" once it answers
    again. A technical record: erased with the subject.
    """

    pseudonym = models.CharField(primary_key=True, max_length=PSEUDONYM_LENGTH)
    since = models.DateTimeField(help_text="The first invalidation that was not confirmed.")

    class Meta:
        ordering = ["since"]

    def __str__(self) -> str:
        return f"pending cache invalidation of {self.pseudonym[:12]}…"
