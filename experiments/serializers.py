from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.api import StrictCharField, StrictSerializer
from consent.models import Subject
from consent.pseudonyms import SUBJECT_ID_MAX_LENGTH, subject_id_problem
from consent.serializers import SubjectIdField, subject_id_validator

MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_LENGTH = 128
# The attributes the Subject row keeps: at most their column's length.
STORED_ATTRIBUTES = {name: Subject._meta.get_field(name).max_length for name in ("age_band", "province", "platform")}


@extend_schema_field(
    {
        "type": "object",
        "description": "Subject attributes used for targeting, e.g. age_band, province, platform "
        f"(stored on the subject, so at most {', '.join(f'{n} {m}' for n, m in STORED_ATTRIBUTES.items())} "
        f"characters); any other attribute at most {MAX_ATTRIBUTE_LENGTH} characters.",
        # (DRF refuses NUL characters in any text.)
        "properties": {
            name: {"type": "string", "maxLength": length, "pattern": "^[^\\x00]*$"}
            for name, length in STORED_ATTRIBUTES.items()
        },
        "additionalProperties": {"type": "string", "maxLength": MAX_ATTRIBUTE_LENGTH, "pattern": "^[^\\x00]*$"},
        "maxProperties": MAX_ATTRIBUTES,
    }
)
class AttributesField(serializers.DictField):
    def __init__(self, **kwargs):
        super().__init__(child=StrictCharField(max_length=MAX_ATTRIBUTE_LENGTH, allow_blank=True, trim_whitespace=False), **kwargs)


class AssignmentRequestSerializer(StrictSerializer):
    subject_id = StrictCharField(
        max_length=SUBJECT_ID_MAX_LENGTH,
        min_length=1,
        trim_whitespace=False,
        validators=[subject_id_validator],
        help_text="The marketplace's own id; no whitespace, control characters or '/'.",
    )
    attributes = AttributesField(required=False, default=dict)

    def validate_subject_id(self, value: str) -> str:
        # One rule for every API that takes a subject id (consent's, used in URL paths too).
        problem = subject_id_problem(value)
        if problem:
            raise serializers.ValidationError(problem)
        return value

    def validate_attributes(self, value: dict) -> dict:
        if len(value) > MAX_ATTRIBUTES:
            raise serializers.ValidationError(f"At most {MAX_ATTRIBUTES} attributes.")
        too_long = {
            name: [f"At most {length} characters."]
            for name, length in STORED_ATTRIBUTES.items()
            if len(value.get(name) or "") > length
        }
        if too_long:
            raise serializers.ValidationError(too_long)
        return value


class TreatmentSerializer(serializers.Serializer):
    name = serializers.CharField()
    consent_prompt = serializers.CharField()
    default_personalization_consent = serializers.BooleanField()
    personalization_level = serializers.CharField()
    sensitive_category_policy = serializers.CharField()
    cohort_k = serializers.IntegerField()
    dp_epsilon = serializers.FloatField(allow_null=True)
    retention_days = serializers.IntegerField()
    show_explanations = serializers.BooleanField()


class AssignmentSerializer(serializers.Serializer):
    experiment = serializers.CharField()
    arm = serializers.CharField()
    treatment = TreatmentSerializer()


class AssignmentResponseSerializer(serializers.Serializer):
    assignments = AssignmentSerializer(many=True)


# --- outcome events (documentation of the contract; events_record validates) -----


class OrderLineSerializer(StrictSerializer):
    product_id = serializers.CharField(max_length=64)
    category = serializers.CharField(max_length=64)
    quantity = serializers.IntegerField(min_value=1, max_value=1_000_000)
    price = serializers.DecimalField(max_digits=15, decimal_places=2, min_value=0, help_text="Unit price, IDR.")


class OutcomeEventInSerializer(StrictSerializer):
    event_id = serializers.CharField(max_length=128, help_text="Chosen by the client; unique. A replay is a no-op.")
    subject_id = SubjectIdField()
    type = serializers.ChoiceField(choices=["order", "rec_impression", "rec_click"])
    timestamp = serializers.DateTimeField(help_text="When it happened, ISO 8601 with a time zone offset.")
    amount = serializers.DecimalField(
        max_digits=15, decimal_places=2, min_value=0, required=False, help_text="Orders: GMV in IDR."
    )
    lines = OrderLineSerializer(many=True, required=False, help_text="Orders: the line items.")
    product_id = serializers.CharField(max_length=64, required=False, help_text="Impressions and clicks.")
    category = serializers.CharField(max_length=64, required=False, help_text="Impressions and clicks.")
    position = serializers.IntegerField(
        min_value=0, max_value=32767, required=False, help_text="Impressions and clicks: 0-based slot."
    )


class EventsRequestSerializer(StrictSerializer):
    events = OutcomeEventInSerializer(many=True, help_text="1 to 1000 events, recorded all or nothing.")


class EventsResponseSerializer(serializers.Serializer):
    received = serializers.IntegerField()
    recorded = serializers.IntegerField(help_text="Events stored by this request.")
    duplicates = serializers.ListField(
        child=serializers.CharField(), help_text="Event ids that were already stored: not written again."
    )
    withheld = serializers.ListField(
        child=serializers.CharField(),
        help_text="Event ids not stored because the subject restricted processing (every event) or "
        "objected to profiling (impressions and clicks).",
    )
