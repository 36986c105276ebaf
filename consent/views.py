"""The consent API: record decisions, show proof of consent, file data subject requests.

Views translate HTTP to services and back; subject ids from the path or body
are hashed by the services and selectors before any lookup or storage. Each
view names the API key scope it needs (``config.permissions``) and its
throttle (``config.throttling``); every call that files, reads or cancels a
data subject request is logged with the key's prefix, never the subject id.
"""

import logging

from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
)
from rest_framework import status
from rest_framework.exceptions import APIException, NotFound, ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from config import permissions
from config.openapi import ERROR_SCHEMA
from consent.models import DataSubjectRequest
from consent.pseudonyms import SUBJECT_ID_SCHEMA, subject_id_problem, subject_pseudonym
from consent.selectors import consent_history, consent_state, erased_request, subject_requests
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
from consent.services.dsr import RequestNotCancellable, dsr_cancel, dsr_file
from consent.services.ledger import ConsentEventsInvalid, consent_record

SUBJECT_PARAMETER = OpenApiParameter(
    "subject_id",
    SUBJECT_ID_SCHEMA,
    OpenApiParameter.PATH,
    description="The marketplace's user id (hashed on arrival).",
)


logger = logging.getLogger("consent.api")


def _pseudonym_from_path(subject_id: str) -> str:
    if (issue := subject_id_problem(subject_id)) is not None:
        raise ValidationError({"subject_id": [issue]})
    return subject_pseudonym(subject_id)


def _caller(request) -> str:
    """The API key behind the request, by its prefix (the key's public part)."""
    return f"api-key:{getattr(request.user, 'prefix', '?')}"


class Conflict(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request is in a state that does not allow this."
    default_code = "conflict"


class ConsentView(APIView):
    """Record consent decisions: one event, or a batch that is recorded all or nothing."""

    required_scope = permissions.CONSENT
    throttle_scope = "serving"

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
        "`{events: [...]}` of 1 to 1000, recorded all or nothing. The purposes and notice versions are "
        "those in the schema as fetched (data an administrator changes). Preconditions no schema can "
        "state, refused with a 400 naming the field: at most one decision per subject and purpose in a "
        "batch, and an `event_id` names one decision (a retry of the same decision is a no-op, the same "
        "id for a different one is refused).",
    )
    def post(self, request):
        batch = isinstance(request.data, dict) and "events" in request.data
        payload = (ConsentBatchInSerializer if batch else ConsentEventInSerializer)(
            data=request.data
        )
        payload.is_valid(raise_exception=True)
        events = payload.to_events() if batch else [payload.to_event()]
        try:
            recorded = consent_record(events=events)
        except ConsentEventsInvalid as exc:
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

    required_scope = permissions.CONSENT_READ
    throttle_scope = "subjects"

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

    required_scope = permissions.DSR
    throttle_scope = "subjects"

    @extend_schema(
        operation_id="subject_requests_create",
        parameters=[SUBJECT_PARAMETER],
        request=RequestInSerializer,
        responses={202: RequestOutSerializer, 200: RequestOutSerializer},
        description="Access (export), erasure, restriction of processing or objection to profiling; "
        "due 3 × 24 hours after receipt. 202 for a new request; 200 with the open request of the "
        "same type if there is one. An erasure runs after a grace period (`not_before`, 24 hours by "
        "default) during which `POST …/requests/<request_id>/cancel` cancels it; processing is "
        "restricted from filing.",
    )
    def post(self, request, subject_id: str):
        pseudonym = _pseudonym_from_path(subject_id)
        payload = RequestInSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        filed, created = dsr_file(
            type=payload.validated_data["type"], pseudonym=pseudonym, filed_by=_caller(request)
        )
        if not created:
            logger.info("data subject request %s (%s) re-filed by %s", filed.id, filed.type, _caller(request))
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
        requests = list(subject_requests(pseudonym=pseudonym))
        logger.info(
            "data subject requests listed by %s: %s", _caller(request), ", ".join(str(r.id) for r in requests) or "none"
        )
        return Response(RequestListSerializer({"requests": requests}).data)


class SubjectRequestDetailView(APIView):
    """One request, with the export once an access request is complete."""

    required_scope = permissions.DSR
    throttle_scope = "subjects"

    @extend_schema(
        operation_id="subject_requests_retrieve",
        parameters=[SUBJECT_PARAMETER],
        responses={200: RequestDetailSerializer},
        description="A completed erasure's record stays readable by its id (it no longer names the "
        "subject, so any subject id finds it): the caller can confirm the erasure was carried out.",
    )
    def get(self, request, subject_id: str, request_id):
        pseudonym = _pseudonym_from_path(subject_id)
        found = subject_requests(pseudonym=pseudonym).filter(pk=request_id).first() or erased_request(
            request_id=request_id
        )
        if found is None:
            raise NotFound("No such request for this subject.")
        logger.info("data subject request %s (%s) read by %s", found.id, found.type, _caller(request))
        return Response(RequestDetailSerializer(found).data)


class SubjectRequestCancelView(APIView):
    """Cancel an erasure during its grace period (until it has run)."""

    required_scope = permissions.DSR
    throttle_scope = "subjects"

    @extend_schema(
        operation_id="subject_requests_cancel",
        parameters=[SUBJECT_PARAMETER],
        request=None,
        responses={
            200: RequestOutSerializer,
            409: OpenApiResponse(
                response=ERROR_SCHEMA, description="Not an erasure, or it was already carried out or cancelled."
            ),
        },
        description="Only an erasure that has not run yet can be cancelled (409 otherwise); the "
        "restriction of processing it imposed is lifted, unless the subject also asked for one.",
    )
    def post(self, request, subject_id: str, request_id):
        pseudonym = _pseudonym_from_path(subject_id)
        try:
            cancelled = dsr_cancel(request_id=request_id, pseudonym=pseudonym, cancelled_by=_caller(request))
        except DataSubjectRequest.DoesNotExist:
            raise NotFound("No such request for this subject.") from None
        except RequestNotCancellable as exc:
            raise Conflict(" ".join(exc.messages)) from None
        return Response(RequestOutSerializer(cancelled).data)
