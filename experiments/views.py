"""The experiments JSON API (``/api/v1/``): assignments and outcome events, thin over the services."""

from dataclasses import asdict

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from config import permissions
from experiments.selectors import assignment_config_document
from experiments.serializers import (
    AssignmentRequestSerializer,
    AssignmentResponseSerializer,
    ConfigResponseSerializer,
    EventsRequestSerializer,
    EventsResponseSerializer,
    ExposuresRequestSerializer,
    ExposuresResponseSerializer,
)
from experiments.services import events_record, exposures_record, subject_assign


class AssignmentView(APIView):
    """Assign a subject to every running experiment it falls into."""

    required_scope = permissions.ASSIGN
    throttle_scope = "serving"

    @extend_schema(
        request=AssignmentRequestSerializer,
        responses={200: AssignmentResponseSerializer},
        operation_id="assignments_create",
    )
    def post(self, request):
        payload = AssignmentRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        decided = subject_assign(
            subject_id=payload.validated_data["subject_id"],
            attributes=payload.validated_data["attributes"],
        )
        # The response is built directly (the serializer documents it): this is the hot path.
        return Response(
            {
                "assignments": [
                    {"experiment": a.experiment, "arm": a.arm, "treatment": a.treatment.to_dict()}
                    for a in decided.assignments
                ],
                "treatments": decided.treatments,
            }
        )


class EventsView(APIView):
    """Record outcome events: orders, recommendation impressions and clicks."""

    required_scope = permissions.EVENTS
    throttle_scope = "serving"

    @extend_schema(
        request=EventsRequestSerializer,
        responses={
            201: EventsResponseSerializer,
            400: OpenApiResponse(
                description="Nothing was recorded. Each bad field is named `events[i].field` "
                "(`events[i].lines[j].field` for order lines)."
            ),
        },
        operation_id="events_create",
        description="A batch of 1 to 1000 events, recorded all or nothing and idempotent by "
        "`event_id`: a replayed batch records nothing and lists the ids in `duplicates`. Preconditions "
        "no schema can state, refused with a 400 naming `events[i].field`: the subject is known (an "
        "assignment or a consent created it); the `timestamp` is from 2000-01-01T00:00:00Z to at most 5 "
        "minutes after the server's clock; an `event_id` is not repeated in the batch and names one "
        "event (the same id for a different subject, type, time, amount or product is refused).",
        examples=[
            OpenApiExample(
                "An order and an impression",
                request_only=True,
                value={
                    "events": [
                        {
                            "event_id": "order-1001",
                            "subject_id": "user-42",
                            "type": "order",
                            "timestamp": "2025-03-01T10:00:00+07:00",
                            "amount": "250000.00",
                            "lines": [
                                {"product_id": "sku-1", "category": "fashion", "quantity": 2, "price": "125000"}
                            ],
                        },
                        {
                            "event_id": "imp-77-0",
                            "subject_id": "user-42",
                            "type": "rec_impression",
                            "timestamp": "2025-03-01T09:58:00+07:00",
                            "product_id": "sku-1",
                            "category": "fashion",
                            "position": 0,
                        },
                    ]
                },
            )
        ],
    )
    def post(self, request):
        # The batch is validated by the service in one pass (a DRF serializer per
        # event would cost more than the insert); only the envelope is checked here.
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["Expected an object {\"events\": [...]}."]})
        unknown = sorted(set(request.data) - {"events"})
        if unknown:
            raise ValidationError({name: ["Unknown field."] for name in unknown})
        if "events" not in request.data:
            raise ValidationError({"events": ["This field is required."]})
        result = events_record(events=request.data["events"])
        return Response(asdict(result), status=status.HTTP_201_CREATED)


# --- local evaluation --------------------------------------------------------------


def _etag_matches(header: str, etag: str) -> bool:
    """Whether ``If-None-Match`` names this ETag (weak comparison, as RFC 9110 asks for a GET), or is ``*``."""
    candidates = [candidate.strip() for candidate in header.split(",")]
    return "*" in candidates or any(candidate.removeprefix("W/") == etag for candidate in candidates)


class ConfigView(APIView):
    """The configuration a client needs to assign locally, with the algorithm of docs/assignment.md."""

    required_scope = permissions.ASSIGN
    throttle_scope = "serving"

    @extend_schema(
        responses={
            200: ConfigResponseSerializer,
            304: OpenApiResponse(description="Not modified: the `If-None-Match` ETag is the current one."),
        },
        parameters=[
            OpenApiParameter(
                "If-None-Match", str, OpenApiParameter.HEADER, required=False,
                description="The ETag of the copy the client holds: 304 if it is still current.",
            ),
            OpenApiParameter(
                "ETag", str, OpenApiParameter.HEADER, required=True, response=[200, 304],
                description="The configuration's version, quoted.",
            ),
        ],
        operation_id="config_retrieve",
        description="Everything a client needs to assign subjects locally (docs/assignment.md, \"Local "
        "evaluation\"): the running experiments with their salts, arms, weights, thresholds, treatments, "
        "coverage, layer ranges and targeting, and the global holdout. Answered from the server's cache; "
        "poll with `If-None-Match`. New kinds of entries (e.g. surfaces) come as new top-level keys: a "
        "client ignores keys it does not know.",
    )
    def get(self, request):
        config = assignment_config_document()
        if _etag_matches(request.headers.get("If-None-Match", ""), config.etag):
            response = HttpResponse(status=status.HTTP_304_NOT_MODIFIED)
        else:
            # The rendered bytes, as cached: no serializer on the polling path.
            response = HttpResponse(config.body, content_type="application/json")
        response["ETag"] = config.etag
        response["Cache-Control"] = "private, no-cache"
        return response


class ExposuresView(APIView):
    """Record first exposures of subjects that a client assigned locally."""

    required_scope = permissions.ASSIGN
    throttle_scope = "serving"

    @extend_schema(
        request=ExposuresRequestSerializer,
        responses={
            201: ExposuresResponseSerializer,
            400: OpenApiResponse(description="Nothing was recorded. Each bad field is named `exposures[i].field`."),
        },
        operation_id="exposures_create",
        description="A batch of 1 to 1000 first exposures, recorded all or nothing and idempotent per "
        "experiment and subject: an exposure already stored is not written again, and the earlier of "
        "the two times is kept. Preconditions no schema can state, refused with a 400 naming "
        "`exposures[i].field`: `experiment` is a running experiment's key and `arm` one of its arms; `arm` "
        "is the arm the documented algorithm assigns the subject (a subject the holdout, layer or "
        "coverage leaves out has none); the targeted `attributes` match the experiment's targeting; the "
        "`timestamp` is not before the experiment started nor more than 5 minutes after the server's "
        "clock. Subjects who restricted processing or objected get no exposure (`withheld`).",
        examples=[
            OpenApiExample(
                "One exposure",
                request_only=True,
                value={
                    "exposures": [
                        {
                            "subject_id": "user-42",
                            "experiment": "checkout-consent",
                            "arm": "banner",
                            "timestamp": "2026-06-01T10:00:00Z",
                            "attributes": {"platform": "android"},
                        }
                    ]
                },
            )
        ],
    )
    def post(self, request):
        if not isinstance(request.data, dict):
            raise ValidationError({"non_field_errors": ["Expected an object {\"exposures\": [...]}."]})
        unknown = sorted(set(request.data) - {"exposures"})
        if unknown:
            raise ValidationError({name: ["Unknown field."] for name in unknown})
        if "exposures" not in request.data:
            raise ValidationError({"exposures": ["This field is required."]})
        result = exposures_record(exposures=request.data["exposures"])
        return Response(asdict(result), status=status.HTTP_201_CREATED)
