"""API-key authentication for the marketplace's services.

Kept apart from ``config.api`` because DRF imports authentication classes while
``rest_framework.views`` is still initialising.
"""

import hashlib
import threading
import time
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


# Verified keys are remembered in-process for a few seconds, so that the hot
# endpoints do not query the key table on every request. A revoked or expired
# key therefore stops working within VERIFIED_KEY_TTL seconds.
VERIFIED_KEY_TTL = 5.0
_verified: dict[str, tuple[float, "ApiClient", APIKey]] = {}
_verified_lock = threading.Lock()


def verified_keys_clear() -> None:
    with _verified_lock:
        _verified.clear()


class ApiKeyAuthentication(BaseAuthentication):
    """``Authorization: Api-Key <key>``; keys are stored hashed by djangorestframework-api-key."""

    keyword = "Api-Key"
    _parser = KeyParser()

    def authenticate(self, request):
        key = self._parser.get_from_authorization(request._request)
        if not key:
            return None
        fingerprint = hashlib.sha256(key.encode()).hexdigest()
        now = time.time()
        remembered = _verified.get(fingerprint)
        if remembered is not None and remembered[0] > now:
            return remembered[1], remembered[2]
        try:
            api_key = APIKey.objects.get_from_key(key)  # revoked keys are not found
        except APIKey.DoesNotExist:
            api_key = None
        if api_key is None or api_key.has_expired:
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired API key.")
        client = ApiClient(name=api_key.name, prefix=api_key.prefix)
        with _verified_lock:
            if len(_verified) > 10_000:  # bounded: keys are few, garbage is not
                _verified.clear()
            _verified[fingerprint] = (now + VERIFIED_KEY_TTL, client, api_key)
        return client, api_key

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
