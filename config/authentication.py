"""API-key authentication for the marketplace's services.

Kept apart from ``config.api`` because DRF imports authentication classes while
``rest_framework.views`` is still initialising.
"""

import hashlib
import threading
import time
from dataclasses import dataclass

from django.core.exceptions import ObjectDoesNotExist
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
    scopes: frozenset[str] = frozenset()
    is_authenticated: bool = True
    is_staff: bool = False


def key_scopes(api_key: APIKey) -> frozenset[str]:
    """The key's scopes: its ``ApiKeyScopes`` row, or the defaults if it has none."""
    from config.permissions import DEFAULT_SCOPES

    try:
        return api_key.scopes.scope_names
    except ObjectDoesNotExist:
        return DEFAULT_SCOPES


def key_verify(key: str) -> APIKey | None:
    """The usable (not revoked, not expired) key that ``key`` is, with its scopes; None if none is."""
    prefix, _, _ = key.partition(".")
    api_key = APIKey.objects.get_usable_keys().select_related("scopes").filter(prefix=prefix).first()
    if api_key is None or not api_key.is_valid(key) or api_key.has_expired:
        return None
    return api_key


# Verified keys are remembered in-process for a few seconds, so that the hot
# endpoints do not query the key table on every request. A revoked or expired
# key therefore stops working, and a change of its scopes takes effect, within
# VERIFIED_KEY_TTL seconds.
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
        api_key = key_verify(key)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Invalid, revoked or expired API key.")
        client = ApiClient(name=api_key.name, prefix=api_key.prefix, scopes=key_scopes(api_key))
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
            "description": "`Api-Key <key>`; `manage.py create_api_key NAME --scopes assign,recommend` prints a key. "
            "Each operation needs one scope of the key (403 without it).",
        }
