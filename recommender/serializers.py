"""The recommendation endpoint's query (limit, session) and response shapes."""

import re

from django.core.validators import RegexValidator
from rest_framework import serializers

from config.api import StrictSerializer
from recommender.models import ModelBuild
from recommender.selectors import MAX_LIMIT, MAX_SESSION_ITEMS

MAX_SKU_LENGTH = 64
# A session item: no control characters or non-space whitespace, no comma, no space at either end.
_SKU_BAD = "\\x00-\\x1f\\x7f-\\x9f\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
_SKU = f"[^,\\x20{_SKU_BAD}](?:[^,{_SKU_BAD}]{{0,{MAX_SKU_LENGTH - 2}}}[^,\\x20{_SKU_BAD}])?"
SKU_PATTERN = re.compile(_SKU)
# The whole parameter, as the OpenAPI schema publishes it: empty, or up to MAX_SESSION_ITEMS items.
SESSION_PATTERN = f"^(?:{_SKU}(?:,{_SKU}){{0,{MAX_SESSION_ITEMS - 1}}})?$"


class RecommendationQuerySerializer(StrictSerializer):
    limit = serializers.IntegerField(
        required=False, default=20, min_value=1, max_value=MAX_LIMIT, help_text=f"How many items, 1..{MAX_LIMIT}."
    )
    session = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        trim_whitespace=False,
        max_length=MAX_SESSION_ITEMS * (MAX_SKU_LENGTH + 1),
        validators=[RegexValidator(SESSION_PATTERN, message="Not a list of product ids (see the schema's pattern).")],
        help_text=f"The current session's product ids, comma-separated: at most {MAX_SESSION_ITEMS}, each 1 to "
        f"{MAX_SKU_LENGTH} characters without commas, control characters or surrounding spaces (used by session "
        "arms, with consent).",
    )

    def validate_session(self, value: str) -> list[str]:
        if value == "":
            return []
        skus = value.split(",")
        if len(skus) > MAX_SESSION_ITEMS:
            raise serializers.ValidationError(f"At most {MAX_SESSION_ITEMS} items.")
        for position, sku in enumerate(skus):
            if not sku.strip():
                raise serializers.ValidationError(f"Item {position + 1} is empty.")
            if len(sku) > MAX_SKU_LENGTH:
                raise serializers.ValidationError(f"Item {position + 1} is longer than {MAX_SKU_LENGTH} characters.")
            if not SKU_PATTERN.fullmatch(sku) or any("\ud800" <= char <= "\udfff" for char in sku):
                raise serializers.ValidationError(
                    f"Item {position + 1} has control characters or surrounding whitespace."
                )
        return list(dict.fromkeys(skus))


class RecommendedItemSerializer(serializers.Serializer):
    product = serializers.CharField(help_text="The product id.")
    category = serializers.CharField()
    score = serializers.FloatField()
    reason = serializers.CharField(required=False, help_text="Present when the arm shows explanations.")


class RecommendationResponseSerializer(serializers.Serializer):
    items = RecommendedItemSerializer(many=True)
    strategy = serializers.ChoiceField(choices=ModelBuild.Strategy.values)
    personalized = serializers.BooleanField(help_text="Whether the subject's own data shaped the list.")
