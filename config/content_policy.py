"""django-csp's middleware, with the settings' policy built once per process instead of once per response.

The stock ``CSPMiddleware`` rebuilds both policies (Content-Security-Policy and
its report-only twin) from the settings for every response: a dataclass
``asdict``, dictionary copies, a sort and a join — about a tenth of the CPU of
``GET /api/v1/config`` answered from cache. A response that no ``csp``
decorator changed and whose request took no nonce gets exactly the policy of
the settings, so that string is built once (and again when a
``CONTENT_SECURITY_POLICY*`` setting changes, as tests do). Any other response
goes through django-csp's own code, unchanged.
"""

from __future__ import annotations

import http.client

from csp.constants import HEADER, HEADER_REPORT_ONLY
from csp.middleware import CheckableLazyObject, PolicyParts
from csp.middleware import CSPMiddleware as StockCSPMiddleware
from csp.utils import build_policy
from django.conf import settings
from django.core.signals import setting_changed

_UNCHANGED = PolicyParts()  # no decorator's config, update or replace, and no nonce
_DEBUG_EXEMPT = (http.client.INTERNAL_SERVER_ERROR, http.client.NOT_FOUND)
_HEADERS = (
    (HEADER, False, "_csp_exempt", "CONTENT_SECURITY_POLICY"),
    (HEADER_REPORT_ONLY, True, "_csp_exempt_ro", "CONTENT_SECURITY_POLICY_REPORT_ONLY"),
)
_settings_policies: dict[bool, str] = {}  # report_only → the settings' policy, as build_policy writes it


def _settings_policy(report_only: bool) -> str:
    policy = _settings_policies.get(report_only)
    if policy is None:
        policy = _settings_policies[report_only] = build_policy(report_only=report_only)
    return policy


def _forget_policies(*, setting: str, **kwargs) -> None:
    if setting.startswith("CONTENT_SECURITY_POLICY"):
        _settings_policies.clear()


setting_changed.connect(_forget_policies, dispatch_uid="config.content_policy")


class CSPMiddleware(StockCSPMiddleware):
    """``csp.middleware.CSPMiddleware`` with the unchanged policy remembered (what its ``process_response`` does)."""

    def process_response(self, request, response):
        if (
            self.get_policy_parts(request=request, response=response) != _UNCHANGED
            or self.get_policy_parts(request=request, response=response, report_only=True) != _UNCHANGED
        ):
            return super().process_response(request, response)
        if response.status_code in _DEBUG_EXEMPT and settings.DEBUG:
            return response
        for header, report_only, exempt, setting in _HEADERS:
            policy = _settings_policy(report_only)
            if not policy or header in response or getattr(response, exempt, False) is not False:
                continue
            prefixes = (getattr(settings, setting, None) or {}).get("EXCLUDE_URL_PREFIXES", None) or ()
            if not request.path_info.startswith(tuple(prefixes)):
                response[header] = policy
        # As django-csp does: a nonce asked for after the header is written is an error, not a silent gap.
        if getattr(request, "_csp_nonce", None) is None:
            request.csp_nonce = CheckableLazyObject(self._csp_nonce_post_response)
        return response
