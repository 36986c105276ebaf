from rest_framework import serializers

from config.api import StrictSerializer

MAX_ATTRIBUTES = 32


class AssignmentRequestSerializer(StrictSerializer):
    subject_id = serializers.CharField(max_length=256, allow_blank=False, trim_whitespace=True)
    attributes = serializers.DictField(
        child=serializers.CharField(max_length=128, allow_blank=True),
        required=False,
        default=dict,
        help_text="Subject attributes used for targeting, e.g. age_band, province, platform.",
    )

    def validate_attributes(self, value: dict) -> dict:
        if len(value) > MAX_ATTRIBUTES:
            raise serializers.ValidationError(f"At most {MAX_ATTRIBUTES} attributes.")
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
