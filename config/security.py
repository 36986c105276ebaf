"""The client's address for the login lockout (django-axes), past the site's own reverse proxies.

``X-Forwarded-For`` can be written by anyone; only the entries the trusted
proxies appended are believed. With ``TRUSTED_PROXIES = N`` (the number of
proxies in front of gunicorn) the client is the N-th entry from the right;
with 0 (no proxy) it is the socket's peer, ``REMOTE_ADDR``.
"""

from django.conf import settings


def client_ip(request) -> str | None:
    proxies = settings.TRUSTED_PROXIES
    if proxies > 0:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if len(forwarded) >= proxies:
            return forwarded[-proxies]
    return request.META.get("REMOTE_ADDR")
