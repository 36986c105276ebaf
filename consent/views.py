"""The consent API: record decisions, show proof of consent, file data subject requests.

Views translate HTTP to services and back; subject ids from the path or body
are hashed by the services and selectors before any lookup or storage.
"""

from drf_spectacular.utils import OpenApiParameter, PolymorphicProxySerializer, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from consent import services
from consent.pseudonyms import subject_id_problem, subject_pseudonym
from consent.selectors import consent_history, consent_state, subject_requests
from consent.serializers import (
    ConsentBatchInSerializer,
    ConsentBatchOutSerializer,
    ConsentEventInSerializer,
    ConsentEventOutSerializer,
    RequestDetailSerializer,
    RequestInSerializer,
    RequestListSerializer,
    RequestOutSerializer,
    SubjectConsentsSerializer,
)

SUBJECT_PARAMETER = OpenApiParameter(
    "subject_id",
    str,
    OpenApiParameter.PATH,
    description="The marketplace's user id (hashed on arrival).",
)


def _pseudonym_from_path(subject_id: str) -> str:
    if (issue := subject_id_problem(subject_id)) is not None:
        raise ValidationError({"subject_id": [issue]})
    return subject_pseudonym(subject_id)


class ConsentView(APIView):
    """Record consent decisions: one event, or a batch that is recorded all or nothing."""

    @extend_schema(
        operation_id="consents_create",
        request=PolymorphicProxySerializer(
            component_name="ConsentRequest",
            serializers=[ConsentEventInSerializer, ConsentBatchInSerializer],
            resource_type_field_name=None,
        ),
        responses={
            201: PolymorphicProxySerializer(
                component_name="ConsentResponse",
                serializers=[ConsentEventOutSerializer, ConsentBatchOutSerializer],
                resource_type_field_name=None,
            )
        },
        description="A single event `{subject_id, purpose, action, notice_version, source}` or a batch "
        "`{events: [...]}` (at most 1000, at most one per subject and purpose).",
    )
    def post(self, request):
        batch = isinstance(request.data, dict) and "events" in request.data
        payload = (ConsentBatchInSerializer if batch else ConsentEventInSerializer)(
            data=request.data
        )
        payload.is_valid(raise_exception=True)
        events = payload.to_events() if batch else [payload.to_event()]
        try:
            recorded = services.consent_record(events=events)
        except services.ConsentEventsInvalid as exc:
            # The same shape DRF gives nested shape errors: only the failing events, by index.
            raise ValidationError(
                {"events": {index: errors for index, errors in enumerate(exc.problems) if errors}}
                if batch
                else exc.problems[0]
            ) from None
        if batch:
            body = ConsentBatchOutSerializer({"events": recorded}).data
        else:
            body = ConsentEventOutSerializer(recorded[0]).data
        return Response(body, status=status.HTTP_201_CREATED)


class SubjectConsentsView(APIView):
    """The subject's current consent per purpose and the full history: proof of consent."""

    @extend_schema(
        operation_id="subject_consents_retrieve",
        parameters=[SUBJECT_PARAMETER],
        responses={200: SubjectConsentsSerializer},
    )
    def get(self, request, subject_id: str):
        pseudonym = _pseudonym_from_path(subject_id)
        state = consent_state(pseudonym=pseudonym)
        body = {
            "restricted": state.restricted,
            "objected": state.objected,
            "purposes": [
                {
                    "purpose": key,
                    "status": purpose.status,
                    "granted": purpose.granted,
                    "allowed": purpose.allowed,
                    "notice_version": purpose.notice_version,
                    "changed_at": purpose.changed_at,
                    "expires_at": purpose.expires_at,
                }
                for key, purpose in sorted(state.purposes.items())
            ],
            "history": consent_history(pseudonym=pseudonym),
        }
        return Response(SubjectConsentsSerializer(body).data)


class SubjectRequestsView(APIView):
    """File a data subject request, or list the subject's requests."""

    @extend_schema(
        operation_id="subject_requests_create",
        parameters=[SUBJECT_PARAMETER],
        request=RequestInSerializer,
        responses={202: RequestOutSerializer, 200: RequestOutSerializer},
        description="Access (export), erasure, restriction of processing or objection to profiling; "
        "due 3 × 24 hours after receipt. 202 for a new request; 200 with the open request of the "
        "same type if there is one.",
    )
    def post(self, request, subject_id: str):
        pseudonym = _pseudonym_from_path(subject_id)
        payload = RequestInSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        filed, created = services.dsr_file(type=payload.validated_data["type"], pseudonym=pseudonym)
        return Response(
            RequestOutSerializer(filed).data,
            status=status.HTTP_202_ACCEPTED if created else status.HTTP_200_OK,
        )

    @extend_schema(
        operation_id="subject_requests_list",
        parameters=[SUBJECT_PARAMETER],
        responses={200: RequestListSerializer},
    )
    def get(self, request, subject_id: str):
        pseudonym = _pseudonym_from_path(subject_id)
        return Response(
            RequestListSerializer({"requests": subject_requests(pseudonym=pseudonym)}).data
        )


class SubjectRequestDetailView(APIView):
    """One request, with the export once an access request is complete."""

    @extend_schema(
        operation_id="subject_requests_retrieve",
        parameters=[SUBJECT_PARAMETER],
        responses={200: RequestDetailSerializer},
    )
    def get(self, request, subject_id: str, request_id):
        pseudonym = _pseudonym_from_path(subject_id)
        found = subject_requests(pseudonym=pseudonym).filter(pk=request_id).first()
        if found is None:
            raise NotFound("No such request for this subject.")
        return Response(RequestDetailSerializer(found).data)
