"""The recommendation endpoint: validates the request, then hands it to the serving service."""

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from config import permissions
from consent.pseudonyms import SUBJECT_ID_SCHEMA, subject_id_problem
from recommender.serializers import RecommendationQuerySerializer, RecommendationResponseSerializer
from recommender.services.impressions import recommendations_serve


class RecommendationView(APIView):
    """Recommendations for a subject, under their arm's privacy rules and current consent."""

    required_scope = permissions.RECOMMEND
    throttle_scope = "serving"

    @extend_schema(
        operation_id="recommendations_retrieve",
        parameters=[
            OpenApiParameter(
                "subject_id", SUBJECT_ID_SCHEMA, OpenApiParameter.PATH, description="The marketplace's subject id."
            ),
            RecommendationQuerySerializer,  # limit (1..100) and session, with the server's own bounds
        ],
        responses={
            200: RecommendationResponseSerializer,
            400: OpenApiResponse(description="A bad limit, session or subject id; the body names the field."),
            401: OpenApiResponse(description="No valid API key."),
        },
    )
    def get(self, request, subject_id: str):
        if (problem := subject_id_problem(subject_id)) is not None:
            raise serializers.ValidationError({"subject_id": [problem]})
        query = RecommendationQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        served = recommendations_serve(
            subject_id=subject_id, limit=query.validated_data["limit"], session=query.validated_data["session"]
        )
        # The items are already in the response's shape (``selectors._as_items``); the serializer
        # describes that shape in the schema, and instantiating it per request cost ~0.2 ms of CPU.
        return Response({"items": served.items, "strategy": served.strategy, "personalized": served.personalized})
