from drf_spectacular.utils import extend_schema
from rest_framework.response import Response
from rest_framework.views import APIView

from experiments.serializers import AssignmentRequestSerializer, AssignmentResponseSerializer
from experiments.services import assignments_for_subject


class AssignmentView(APIView):
    """Assign a subject to every running experiment it falls into."""

    @extend_schema(
        request=AssignmentRequestSerializer,
        responses={200: AssignmentResponseSerializer},
        operation_id="assignments_create",
    )
    def post(self, request):
        payload = AssignmentRequestSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        assignments = assignments_for_subject(
            subject_id=payload.validated_data["subject_id"],
            attributes=payload.validated_data["attributes"],
        )
        return Response(AssignmentResponseSerializer({"assignments": assignments}).data)
