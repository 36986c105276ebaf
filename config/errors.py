"""Site-wide 404 and 500 answers: JSON under ``/api/`` (what an API client parses), pages elsewhere.

DRF answers its own views' errors; these catch what never reaches a view, such
as an unknown ``/api/v1/...`` address or an error in a middleware.
"""

from django.http import JsonResponse
from django.views import defaults


def _is_api(request) -> bool:
    return request.path.startswith("/api/")


def page_not_found(request, exception=None):
    if _is_api(request):
        return JsonResponse({"detail": "Not found.", "code": "not_found"}, status=404)
    return defaults.page_not_found(request, exception)


def server_error(request):
    if _is_api(request):
        return JsonResponse({"detail": "Server error.", "code": "server_error"}, status=500)
    # Rendered without a request context: the page must not depend on the database or the user.
    return defaults.server_error(request)
