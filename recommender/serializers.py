from rest_framework import serializers

from config.api import StrictSerializer
from recommender.selectors import MAX_LIMIT, MAX_SESSION_ITEMS

MAX_SKU_LENGTH = 64


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
        help_text="The current session's product ids, comma-separated (used by session arms, with consent).",
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
            if not sku.isprintable() or sku != sku.strip():
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
    strategy = serializers.ChoiceField(choices=["full", "cohort", "dp_popularity", "dp_item_item", "popularity", "session"])
    personalized = serializers.BooleanField(help_text="Whether the subject's own data shaped the list.")
