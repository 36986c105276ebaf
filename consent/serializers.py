"""The consent API's request and response shapes (contracts in DESIGN.md).

Shape errors come from these serializers; everything that needs the purposes
and notices (unknown purpose or notice version, duplicates in a batch) comes
from ``services.ledger.consent_events_check``, reported in the same nested shape:
``{"events": {"1": {"purpose": ["…"]}}}`` for a batch (failing events by index), ``{"purpose": ["…"]}``
for a single event.
"""

from django.core.validators import RegexValidator
from rest_framework import serializers

from config.api import StrictCharField, StrictSerializer, StrictUUIDField
from consent.models import ConsentEvent, DataSubjectRequest, Language
from consent.pseudonyms import SUBJECT_ID_MAX_LENGTH, SUBJECT_ID_PATTERN, subject_id_problem
from consent.selectors import Status as ConsentStatus
from consent.services.ledger import MAX_BATCH_EVENTS, ConsentEventInput, ConsentSource

subject_id_validator = RegexValidator(
    SUBJECT_ID_PATTERN, message="Must not contain whitespace, control characters or '/'."
)


class SubjectIdField(serializers.CharField):
    """The marketplace's raw subject id: a string, never stored (hashed on entry)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("max_length", SUBJECT_ID_MAX_LENGTH)
        kwargs.setdefault("min_length", 1)
        kwargs.setdefault("trim_whitespace", False)
        # The schema states the server's rule exactly (consent.pseudonyms.SUBJECT_ID_PATTERN).
        kwargs.setdefault("validators", [subject_id_validator])
        kwargs.setdefault(
            "help_text", "The marketplace's user id; stored only as a keyed-HMAC pseudonym."
        )
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be a string.")
        value = super().to_internal_value(data)
        if (issue := subject_id_problem(value)) is not None:
            raise serializers.ValidationError(issue)
        return value


class ConsentSourceSerializer(StrictSerializer):
    # Strict: a number is not a name (DRF's CharField would turn 0 into "0").
    experiment = StrictCharField(max_length=64, required=False, allow_blank=True, default="")
    arm = StrictCharField(max_length=64, required=False, allow_blank=True, default="")
    prompt = serializers.ChoiceField(
        choices=ConsentEvent.Prompt.values, required=False, allow_blank=True, default=""
    )
    channel = serializers.ChoiceField(
        choices=ConsentEvent.Channel.values, required=False, allow_blank=True, default=""
    )
    language = serializers.ChoiceField(
        choices=Language.values,
        required=False,
        allow_blank=True,
        default="",
        help_text="Language of the notice the subject saw (default: id, Bahasa Indonesia).",
    )


class ConsentEventInSerializer(StrictSerializer):
    event_id = StrictUUIDField(
        required=False,
        help_text="Client's id for the decision: a retry with the same id is not recorded twice.",
    )
    subject_id = SubjectIdField()
    purpose = StrictCharField(
        max_length=32,
        help_text="personalization, sensitive_profiling, behavioral_tracking or marketing.",
    )
    action = serializers.ChoiceField(choices=ConsentEvent.Action.values)
    notice_version = StrictCharField(
        max_length=32,
        required=False,
        help_text="Version of the purpose's notice the subject saw; required for a grant.",
    )
    source = ConsentSourceSerializer(required=False)

    def to_event(self) -> ConsentEventInput:
        return _event(self.validated_data)


def _event(data: dict) -> ConsentEventInput:
    return ConsentEventInput(
        subject_id=data["subject_id"],
        purpose=data["purpose"],
        action=data["action"],
        notice_version=data.get("notice_version"),
        source=ConsentSource(**data.get("source", {})),
        event_id=data.get("event_id"),
    )


class ConsentBatchInSerializer(StrictSerializer):
    events = ConsentEventInSerializer(many=True, allow_empty=False, max_length=MAX_BATCH_EVENTS)

    def to_events(self) -> list[ConsentEventInput]:
        return [_event(item) for item in self.validated_data["events"]]


class ConsentEventOutSerializer(serializers.Serializer):
    event_id = serializers.UUIDField()
    purpose = serializers.CharField()
    action = serializers.CharField()
    notice_version = serializers.CharField(allow_null=True)
    recorded_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    replayed = serializers.BooleanField(
        help_text="True when this event id had been recorded before."
    )


class ConsentBatchOutSerializer(serializers.Serializer):
    events = ConsentEventOutSerializer(many=True)


class PurposeConsentSerializer(serializers.Serializer):
    purpose = serializers.CharField()
    status = serializers.ChoiceField(
        choices=[status.value for status in ConsentStatus]
    )
    granted = serializers.BooleanField(help_text="A grant that counts now.")
    allowed = serializers.BooleanField(
        help_text="Granted, and not blocked by a restriction or objection."
    )
    notice_version = serializers.CharField(allow_null=True)
    changed_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)


class ConsentHistorySerializer(serializers.Serializer):
    event_id = serializers.UUIDField()
    purpose = serializers.CharField()
    action = serializers.CharField()
    notice_version = serializers.CharField(allow_null=True)
    language = serializers.CharField()
    source = serializers.DictField(child=serializers.CharField())
    recorded_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)


class SubjectConsentsSerializer(serializers.Serializer):
    restricted = serializers.BooleanField(
        help_text="Processing restricted at the subject's request."
    )
    objected = serializers.BooleanField(help_text="The subject objected to profiling.")
    purposes = PurposeConsentSerializer(many=True)
    history = ConsentHistorySerializer(
        many=True, help_text="Every recorded decision, oldest first."
    )


class RequestInSerializer(StrictSerializer):
    type = serializers.ChoiceField(choices=DataSubjectRequest.Type.values)


class RequestOutSerializer(serializers.Serializer):
    request_id = serializers.UUIDField(source="id")
    type = serializers.ChoiceField(choices=DataSubjectRequest.Type.values)
    status = serializers.ChoiceField(choices=DataSubjectRequest.Status.values)
    received_at = serializers.DateTimeField()
    due_at = serializers.DateTimeField(
        help_text="3 × 24 hours after receipt (UU PDP Arts. 32, 41)."
    )
    not_before = serializers.DateTimeField(
        allow_null=True, help_text="Erasures: runs after this; cancellable until it has run."
    )
    completed_at = serializers.DateTimeField(allow_null=True)
    cancelled_at = serializers.DateTimeField(allow_null=True)


class RequestDetailSerializer(RequestOutSerializer):
    export = serializers.JSONField(
        allow_null=True,
        help_text="For a completed access request: everything held about the subject.",
    )


class RequestListSerializer(serializers.Serializer):
    requests = RequestOutSerializer(many=True)
