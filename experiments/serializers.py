"""Request and response shapes of the experiments API (assignments, outcome events), strict about unknown fields."""

from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers

from config.api import StrictCharField, StrictSerializer
from config.text import text_schema
from consent.pseudonyms import SUBJECT_ID_MAX_LENGTH, subject_id_problem
from consent.serializers import SubjectIdField, subject_id_validator
from experiments.models import OutcomeEvent
from experiments.services import (
    EARLIEST_EVENT,
    FUTURE_TOLERANCE,
    MAX_AMOUNT,
    MAX_EVENT_ID_LENGTH,
    MAX_EVENTS_PER_BATCH,
    MAX_EXPOSURES_PER_BATCH,
    MAX_LABEL_LENGTH,
    MAX_LINES_PER_ORDER,
    MAX_QUANTITY,
    MONEY_PATTERN,
)

# The attributes' limits are the services' (the exposure ingest applies the same).
from experiments.services.assignment import MAX_ATTRIBUTE_LENGTH, MAX_ATTRIBUTES, STORED_ATTRIBUTES
from privacylab_client.surfaces import SOURCES as SURFACE_SOURCES


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


class SurfaceTreatmentSerializer(serializers.Serializer):
    treatment = TreatmentSerializer()
    source = serializers.ChoiceField(
        choices=SURFACE_SOURCES,
        help_text="Why the subject gets this treatment: an experiment's arm, a rollout of a shipped arm, the "
        "surface's default, or the built-in non-personal fallback (a subject who restricted processing or "
        "objected, on a surface whose default is personal). docs/surfaces.md.",
    )
    experiment = serializers.CharField(allow_null=True, help_text="The experiment's key (source experiment or rollout).")
    arm = serializers.CharField(allow_null=True, help_text="The arm's key (source experiment or rollout).")


class AssignmentResponseSerializer(serializers.Serializer):
    assignments = AssignmentSerializer(many=True)
    treatments = serializers.DictField(
        child=SurfaceTreatmentSerializer(),
        help_text="Per surface key (e.g. product-recommendations), the treatment the subject gets there and why.",
    )


# --- outcome events (documentation of the contract; events_record validates) -----
#
# Each rule below is the one ``experiments.services.events_check`` enforces, stated
# so that what the schema allows the server accepts and what it forbids the server
# refuses. What no schema can state (a known subject, a time in range, an id not
# used for another event, ids unique within the batch) is in the operation's
# description and in docs/operations.md ("The API contract").


@extend_schema_field(text_schema(max_length=MAX_EVENT_ID_LENGTH))
class EventIdField(serializers.CharField):
    pass


@extend_schema_field(text_schema(max_length=MAX_LABEL_LENGTH, label=True))
class LabelField(serializers.CharField):
    pass


@extend_schema_field(
    {
        "oneOf": [
            text_schema(max_length=MAX_LABEL_LENGTH, label=True),
            {"type": "string", "enum": [""], "description": "No category."},
        ]
    }
)
class OptionalLabelField(serializers.CharField):
    pass


@extend_schema_field(
    {
        "description": "IDR, at least 0 and less than 10,000,000,000,000, with at most 2 decimals: "
        "as text (digits only, e.g. 150000.00) or as a JSON number.",
        "oneOf": [
            {"type": "string", "pattern": MONEY_PATTERN.pattern},
            {"type": "number", "minimum": 0, "maximum": float(MAX_AMOUNT), "exclusiveMaximum": True, "multipleOf": 0.01},
        ],
    }
)
class MoneyField(serializers.DecimalField):
    pass


@extend_schema_field(
    {
        "type": "string",
        "format": "date-time",
        # RFC 3339 allows a leap second (":60"); the server cannot hold one.
        "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-5][0-9]",
        "description": "When it happened: an RFC 3339 date-time with a time zone offset (e.g. "
        "2025-03-01T10:00:00+07:00; no leap second), from 2000-01-01T00:00:00Z to at most 5 minutes "
        "after the server's clock (bounds no JSON Schema keyword can state for a date-time: they are "
        "in x-earliest and x-latest).",
        "x-earliest": EARLIEST_EVENT.isoformat().replace("+00:00", "Z"),
        "x-latest": f"server time + {int(FUTURE_TOLERANCE.total_seconds() // 60)} minutes",
    }
)
class EventTimeField(serializers.DateTimeField):
    pass


@extend_schema_field({"type": "string", "enum": [OutcomeEvent.Type.ORDER.value]})
class OrderTypeField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=[OutcomeEvent.Type.ORDER], **kwargs)


@extend_schema_field(
    {"type": "string", "enum": [OutcomeEvent.Type.REC_IMPRESSION.value, OutcomeEvent.Type.REC_CLICK.value]}
)
class RecommendationTypeField(serializers.ChoiceField):
    def __init__(self, **kwargs):
        super().__init__(choices=[OutcomeEvent.Type.REC_IMPRESSION, OutcomeEvent.Type.REC_CLICK], **kwargs)


class OrderLineSerializer(StrictSerializer):
    product_id = LabelField()
    category = LabelField()
    quantity = serializers.IntegerField(min_value=1, max_value=MAX_QUANTITY)
    price = MoneyField(max_digits=15, decimal_places=2, help_text="Unit price, IDR.")


class _EventIn(StrictSerializer):
    event_id = EventIdField(
        help_text="Chosen by the client; names one event: a replay of the same event is a no-op, "
        "the same id for a different event is refused."
    )
    subject_id = SubjectIdField(help_text="The marketplace's user id; the subject must be known (an assignment or consent).")
    timestamp = EventTimeField()


class OrderEventInSerializer(_EventIn):
    type = OrderTypeField()
    amount = MoneyField(max_digits=15, decimal_places=2, help_text="GMV in IDR.")
    lines = OrderLineSerializer(many=True, min_length=1, max_length=MAX_LINES_PER_ORDER, help_text="The line items.")


class RecommendationEventInSerializer(_EventIn):
    type = RecommendationTypeField()
    product_id = LabelField()
    category = OptionalLabelField(required=False)
    position = serializers.IntegerField(
        min_value=0, max_value=32767, required=False, allow_null=True, help_text="0-based slot."
    )


OutcomeEventInSerializer = PolymorphicProxySerializer(
    component_name="OutcomeEventIn",
    serializers=[OrderEventInSerializer, RecommendationEventInSerializer],
    resource_type_field_name=None,
    many=True,
    min_length=1,
    max_length=MAX_EVENTS_PER_BATCH,
)


class EventsRequestSerializer(StrictSerializer):
    events = OutcomeEventInSerializer


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


# --- local evaluation: the published configuration and client exposures -----------
#
# ``GET /api/v1/config`` is rendered by ``experiments.selectors.assignment_config_document``
# (these serializers document it); ``POST /api/v1/exposures`` is validated by
# ``experiments.services.exposures_record`` (these state its rules for the schema).


class ConfigArmSerializer(serializers.Serializer):
    key = serializers.CharField()
    weight = serializers.FloatField(help_text="Positive; shares are weight / math.fsum(weights).")
    treatment = TreatmentSerializer()


class ConfigHoldoutSerializer(serializers.Serializer):
    salt = serializers.CharField()
    share = serializers.FloatField(help_text="In [0, 1): the share of subjects in no experiment.")


class ConfigExperimentSerializer(serializers.Serializer):
    key = serializers.CharField()
    salt = serializers.CharField(help_text="The current phase's salt.")
    phase = serializers.IntegerField()
    coverage = serializers.FloatField()
    layer_salt = serializers.CharField()
    layer_range = serializers.ListField(
        child=serializers.FloatField(), min_length=2, max_length=2, help_text="[low, high): the layer buckets it owns."
    )
    targeting = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Attribute → the values it may take (compared as text); {} targets everyone.",
    )
    arms = ConfigArmSerializer(many=True, help_text="In the algorithm's order (cumulative weights).")
    thresholds = serializers.ListField(
        child=serializers.FloatField(),
        help_text="Each arm's cumulative share as the server computes it (the last is 1.0): use these "
        "rather than summing the weights again.",
    )


class ConfigResponseSerializer(serializers.Serializer):
    format = serializers.IntegerField(help_text="The document's format (1); a client refuses one it does not read.")
    version = serializers.CharField(help_text="The content's hash: the ETag, unquoted.")
    algorithm = serializers.CharField()
    holdout = ConfigHoldoutSerializer(allow_null=True, help_text="The global holdout; null when none applies.")
    experiments = ConfigExperimentSerializer(many=True, help_text="The running experiments, by id.")


@extend_schema_field(text_schema(max_length=64))
class ConfigKeyField(serializers.CharField):
    pass


class RolloutExposureInSerializer(StrictSerializer):
    surface = ConfigKeyField(help_text="The surface of a ramping rollout (the configuration's rollouts[].surface).")
    salt = ConfigKeyField(help_text="That rollout's salt, as the configuration published it.")
    percent = serializers.FloatField(
        min_value=0, max_value=100,
        help_text="The rollout's percent in the configuration the client assigned with (above 0): the step "
        "the exposure belongs to, a step already served (a client a poll behind reports the step it saw).",
    )
    group = serializers.ChoiceField(
        choices=["rollout", "default"],
        help_text="The subject's side of the ramp: rollout (source rollout) or default (the previous default); "
        "the one the documented algorithm gives at that percent.",
    )


class ExposureInSerializer(StrictSerializer):
    """An experiment exposure (``experiment`` and ``arm``) or a rollout exposure (``rollout``): one or the other."""

    subject_id = SubjectIdField(help_text="The marketplace's own id, as the client assigned it.")
    experiment = ConfigKeyField(
        required=False, help_text="A running experiment's key (required unless this is a rollout exposure)."
    )
    arm = ConfigKeyField(
        required=False, help_text="The arm the documented algorithm assigns this subject (with experiment)."
    )
    rollout = RolloutExposureInSerializer(
        required=False,
        help_text="A rollout exposure instead of an experiment's: the side of a ramping rollout a subject the "
        "rollout compares was on (its targeting matches, no experiment on the surface assigned them); sent "
        "once per subject and step. Without experiment and arm. docs/assignment.md, \"Exposures\".",
    )
    timestamp = EventTimeField(
        help_text="When the client first exposed the subject; not before the experiment (or rollout) started."
    )
    attributes = AttributesField(
        required=False, help_text="The subject's attributes as the client used them: the targeted ones must match."
    )


class ExposuresRequestSerializer(StrictSerializer):
    exposures = ExposureInSerializer(many=True, min_length=1, max_length=MAX_EXPOSURES_PER_BATCH)


class ExposuresResponseSerializer(serializers.Serializer):
    received = serializers.IntegerField()
    recorded = serializers.IntegerField(help_text="New exposures stored by this request.")
    duplicates = serializers.IntegerField(
        help_text="Exposures already stored: not written again (the earlier time is kept)."
    )
    withheld = serializers.IntegerField(
        help_text="Exposures not stored because the subject restricted processing or objected, as the "
        "server's assignment gives them no experiment."
    )
