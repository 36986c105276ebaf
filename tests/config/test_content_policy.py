"""config.content_policy: the remembered policy is the one django-csp builds, and a changed policy is not remembered."""

from csp.constants import HEADER, HEADER_REPORT_ONLY, NONCE
from csp.decorators import csp_exempt, csp_update
from csp.middleware import CSPMiddleware as StockCSPMiddleware
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from config.content_policy import CSPMiddleware


def _headers(middleware_class, view, path="/somewhere", *, nonce: bool = False) -> dict[str, str | None]:
    request = RequestFactory().get(path)
    middleware = middleware_class(lambda request: view(request))
    middleware.process_request(request)
    if nonce:
        str(request.csp_nonce)
    response = middleware.process_response(request, view(request))
    return {header: response.get(header) for header in (HEADER, HEADER_REPORT_ONLY)}


def _plain(request):
    return HttpResponse("ok")


@csp_update({"img-src": ["https://images.example"]})
def _updated(request):
    return HttpResponse("ok")


@csp_exempt()
def _exempt(request):
    return HttpResponse("ok")


def test_the_policy_is_django_csps_for_every_kind_of_response():
    for view in (_plain, _updated, _exempt):
        assert _headers(CSPMiddleware, view) == _headers(StockCSPMiddleware, view)
        assert _headers(CSPMiddleware, view) == _headers(CSPMiddleware, view)  # remembered, still the same
    assert "default-src 'self'" in _headers(CSPMiddleware, _plain)[HEADER].split("; ")
    assert "https://images.example" in _headers(CSPMiddleware, _updated)[HEADER]
    assert _headers(CSPMiddleware, _exempt)[HEADER] is None


def test_a_nonce_goes_into_that_response_only():
    policy = {"DIRECTIVES": {"default-src": ["'self'"], "script-src": ["'self'", NONCE]}}
    with override_settings(CONTENT_SECURITY_POLICY=policy):
        with_nonce = _headers(CSPMiddleware, _plain, nonce=True)[HEADER]
        assert "'nonce-" in with_nonce
        assert _headers(CSPMiddleware, _plain)[HEADER] == _headers(StockCSPMiddleware, _plain)[HEADER]
        assert "'nonce-" not in _headers(CSPMiddleware, _plain)[HEADER]


def test_a_changed_setting_is_read_again():
    before = _headers(CSPMiddleware, _plain)
    policy = {"DIRECTIVES": {"default-src": ["'none'"]}, "EXCLUDE_URL_PREFIXES": ["/excluded"]}
    with override_settings(CONTENT_SECURITY_POLICY=policy, CONTENT_SECURITY_POLICY_REPORT_ONLY=policy):
        changed = _headers(CSPMiddleware, _plain)
        assert changed == _headers(StockCSPMiddleware, _plain)
        assert changed[HEADER] == changed[HEADER_REPORT_ONLY] == "default-src 'none'"
        assert _headers(CSPMiddleware, _plain, "/excluded/page") == {HEADER: None, HEADER_REPORT_ONLY: None}
    assert _headers(CSPMiddleware, _plain) == before
