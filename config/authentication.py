"""API-key authentication for the marketplace's services.

Kept apart from ``config.api`` because DRF imports authentication classes while
``rest_framework.views`` is still initialising.
"""

from dataclasses import dataclass

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework_api_key.models import APIKey
from rest_framework_api_key.permissions import KeyParser


@dataclass(frozen=True)
class ApiClient:
    """The caller behind a valid API key (request.user for API views)."""

    name: str
    prefix: str
    is_authenticated: bool = True
    is_staff: bool = False


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Api-Key <key>``; keys are stored hashed by djangorestframework-api-key."""

    keyword = "Api-Key"
    _parser = KeyParser()

    def authenticate(self, request):
        key = self._parser.get_from_authorization(request._request)
        if not key:
            return None
        try:
            api_key = APIKey.objects.get_from_key(key)  # revoked keys are not found
        except APIKey.DoesNotExist:
            api_key = None
        if api_key is None or api_key.has_expired:
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired API key.")
        return ApiClient(name=api_key.name, prefix=api_key.prefix), api_key

    def authenticate_header(self, request) -> str:
        return self.keyword


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    """Describes the API key to drf-spectacular, so the schema shows how to authenticate."""

    target_class = "config.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>`; `manage.py create_api_key NAME` prints a key.",
        }
