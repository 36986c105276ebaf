"""The OpenAPI schema, told truthfully: every answer an operation can give, every rule it enforces.

``AutoSchema`` (the API's ``DEFAULT_SCHEMA_CLASS``) adds to each operation
the statuses every API view can answer besides its own: 400 (bad input; the
body names each field), 401 (no valid key), 403 (the key lacks the view's
scope), 404 (for paths with parameters), 413 (bodies over the size limit),
429 (the key's throttle, with ``Retry-After``). Request bodies of strict
serializers (``config.api.StrictSerializer``) refuse unknown fields
(``additionalProperties: false``), as the server does, and every POST or PUT
body is required.
"""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

_DESCRIPTIONS = {
    "400": "Bad input: nothing was written. The body names each bad field with its messages "
    '(`{"field": ["…"]}`; a batch\'s by index), or says why the JSON could not be read.',
    "401": "No API key, or an invalid, revoked or expired one.",
    "403": "The API key lacks the scope this operation needs.",
    "404": "No such resource for this subject, or no such address.",
    "413": "The request body is larger than the server accepts.",
    "429": "Too many requests with this API key; wait the seconds `Retry-After` says.",
}

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, in words."},
        "code": {"type": "string", "description": "A stable, machine-readable code."},
    },
    "required": ["detail"],
}
FIELD_ERRORS_SCHEMA = {
    "type": "object",
    "description": "Field name → messages (nested by index for a batch), or `detail` for unreadable JSON.",
    "additionalProperties": True,
}


class AutoSchema(SpectacularAutoSchema):
    def _error_statuses(self) -> list[str]:
        view = self.view
        statuses = []
        if getattr(view, "required_scope", None):
            statuses += ["400", "401", "403"]
        if "{" in self.path:
            statuses.append("404")
        if self.method in ("POST", "PUT", "PATCH"):
            statuses.append("413")
        if getattr(view, "throttle_scope", None):
            statuses.append("429")
        return statuses

    def get_override_parameters(self):
        parameters = list(super().get_override_parameters())
        if getattr(self.view, "throttle_scope", None):
            parameters.append(
                OpenApiParameter(
                    "Retry-After",
                    OpenApiTypes.INT,
                    OpenApiParameter.HEADER,
                    required=True,
                    description="Seconds until this key may send again.",
                    response=[429],
                )
            )
        return parameters

    def _get_request_body(self, direction="request"):
        # Every POST and PUT of this API needs its body: without one the server answers 400
        # (each required field named). drf-spectacular cannot tell that for a body given as
        # alternatives (the consents' PolymorphicProxySerializer) and leaves it optional.
        body = super()._get_request_body(direction)
        if body is not None and self.method in ("POST", "PUT"):
            body["required"] = True
        return body

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status in self._error_statuses():
            if status in responses:
                continue
            schema = FIELD_ERRORS_SCHEMA if status == "400" else ERROR_SCHEMA
            headers = self._get_response_headers_for_code(status, direction)
            responses[status] = {
                **({"headers": headers} if headers else {}),
                "content": {"application/json": {"schema": schema}},
                "description": _DESCRIPTIONS[status],
            }
        return responses

    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        schema = super()._map_serializer_field(field, direction, bypass_extensions)
        # A batch's bounds, which drf-spectacular leaves out for a list of serializers.
        if isinstance(field, serializers.ListSerializer) and schema.get("type") == "array":
            if field.min_length is not None:
                schema["minItems"] = field.min_length
            elif not field.allow_empty:
                schema["minItems"] = 1
            if field.max_length is not None:
                schema["maxItems"] = field.max_length
        return schema

    def _map_basic_serializer(self, serializer, direction):
        from config.api import StrictSerializer

        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(serializer, StrictSerializer):
            schema["additionalProperties"] = False
        return schema

