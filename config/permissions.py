"""API key scopes: which operations a marketplace service's key may call.

Each API view names the one scope it needs (``required_scope``); the DRF
permission ``ScopeRequired`` (the default for every view) lets a request
through only if its key carries that scope. A view that names no scope is
refused to every key: forgetting to declare one fails closed.

The scopes (DESIGN.md, "Public contracts"):

- ``assign``: ``POST /api/v1/assignments``, and for local evaluation ``GET /api/v1/config`` and
  ``POST /api/v1/exposures``
- ``recommend``: ``GET /api/v1/recommendations/<subject_id>``
- ``events``: ``POST /api/v1/events``
- ``consent``: ``POST /api/v1/consents``
- ``consent:read``: ``GET /api/v1/subjects/<subject_id>/consents`` (a subject's consent history)
- ``dsr``: ``/api/v1/subjects/<subject_id>/requests…`` (file, read and cancel data subject
  requests: an access request's answer is everything held about the subject)

A key created without naming scopes gets ``DEFAULT_SCOPES``: what a
marketplace's serving path needs, never ``consent:read`` or ``dsr``.
"""

from rest_framework.permissions import BasePermission

ASSIGN = "assign"
RECOMMEND = "recommend"
EVENTS = "events"
CONSENT = "consent"
CONSENT_READ = "consent:read"
DSR = "dsr"

SCOPES: tuple[str, ...] = (ASSIGN, RECOMMEND, EVENTS, CONSENT, CONSENT_READ, DSR)
DEFAULT_SCOPES: frozenset[str] = frozenset({ASSIGN, RECOMMEND, EVENTS, CONSENT})

SCOPE_DESCRIPTIONS: dict[str, str] = {
    ASSIGN: "assign subjects to experiments",
    RECOMMEND: "fetch recommendations",
    EVENTS: "record outcome events",
    CONSENT: "record consent decisions",
    CONSENT_READ: "read a subject's consent history",
    DSR: "file, read and cancel data subject requests (exports hold everything about a subject)",
}


def scopes_parse(text: str) -> frozenset[str]:
    """``"assign,recommend"`` → the scopes; a ValueError naming any unknown one."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; the scopes are {', '.join(SCOPES)}")
    if not names:
        raise ValueError(f"name at least one scope of {', '.join(SCOPES)}")
    return frozenset(names)


class ScopeRequired(BasePermission):
    """The request's API key carries the scope the view declares in ``required_scope``."""

    def has_permission(self, request, view) -> bool:
        client = request.user
        if client is None or not getattr(client, "is_authenticated", False):
            return False  # DRF answers 401: no (valid) key was given
        scope = getattr(view, "required_scope", None)
        if scope is None or scope not in SCOPES:
            self.message = "This operation is not open to API keys."
            return False
        if scope not in getattr(client, "scopes", ()):
            self.message = f"This API key lacks the {scope!r} scope."
            return False
        return True
