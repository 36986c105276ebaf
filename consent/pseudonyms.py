"""Keyed-HMAC pseudonyms for the marketplace's subject ids.

The raw id never reaches the database or a log: everything stored is keyed by
``subject_pseudonym(raw_id)``. Without the key (``PRIVACYLAB_PSEUDONYM_KEY``)
the pseudonym cannot be linked back to the marketplace's user; with it, the
DPO can still find a subject's rows when the subject files a request.
"""

import hashlib
import hmac
import re
import unicodedata
from functools import lru_cache

from django.conf import settings

PSEUDONYM_LENGTH = 64  # hex digits of HMAC-SHA256


@lru_cache(maxsize=1)
def _key(secret: str) -> bytes:
    return secret.encode()


def subject_pseudonym(subject_id: str) -> str:
    """``HMAC-SHA256(key, NFC(subject_id))`` in hex.

    Unicode-normalised (NFC) first: the same id typed or stored in another
    normal form ("é" as one code point or as "e" + a combining accent) is the
    same person and must get the same pseudonym. docs/operations.md has the
    note for data stored before normalisation.
    """
    if not settings.PSEUDONYM_KEY:
        raise RuntimeError("PRIVACYLAB_PSEUDONYM_KEY is not set")
    if not subject_id.isascii():  # ASCII is already NFC: the hot path skips the normalisation
        subject_id = unicodedata.normalize("NFC", subject_id)
    return hmac.new(_key(settings.PSEUDONYM_KEY), subject_id.encode(), hashlib.sha256).hexdigest()


SUBJECT_ID_MAX_LENGTH = 256
# The characters a subject id may not hold: control characters, every kind of
# whitespace (what ``str.isspace`` calls so) and '/' (ids travel in URL paths).
# The same rule, as this pattern, is published in the OpenAPI schema, so clients
# and the server agree exactly. (Lone surrogates, which no UTF-8 client can send
# and a JSON pattern cannot name, are refused too.)
_FORBIDDEN = "\\x00-\\x20\\x7f-\\x9f/\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
SUBJECT_ID_PATTERN = f"^[^{_FORBIDDEN}]+$"
_SUBJECT_ID = re.compile(SUBJECT_ID_PATTERN)
_SURROGATE = re.compile("[\\ud800-\\udfff]")
# For path parameters in the OpenAPI schema.
SUBJECT_ID_SCHEMA = {"type": "string", "minLength": 1, "maxLength": SUBJECT_ID_MAX_LENGTH, "pattern": SUBJECT_ID_PATTERN}


def subject_id_problem(value: object) -> str | None:
    """Why ``value`` is not a usable marketplace subject id, or None if it is.

    Ids travel in URL paths (``/api/v1/subjects/<id>/…``), so besides being a
    non-empty string of bounded length they may hold no whitespace, control
    characters or slashes (``SUBJECT_ID_PATTERN``).
    """
    if not isinstance(value, str):
        return "Must be a string."
    if not value:
        return "Must not be empty."
    if len(value) > SUBJECT_ID_MAX_LENGTH:
        return f"At most {SUBJECT_ID_MAX_LENGTH} characters."
    if not _SUBJECT_ID.fullmatch(value) or _SURROGATE.search(value):
        return "Must not contain whitespace, control characters or '/'."
    return None
