"""Keyed-HMAC pseudonyms for the marketplace's subject ids.

The raw id never reaches the database or a log: everything stored is keyed by
``subject_pseudonym(raw_id)``. Without the key (``PRIVACYLAB_PSEUDONYM_KEY``)
the pseudonym cannot be linked back to the marketplace's user; with it, the
DPO can still find a subject's rows when the subject files a request.
"""

import hashlib
import hmac
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


def subject_id_problem(value: object) -> str | None:
    """Why ``value`` is not a usable marketplace subject id, or None if it is.

    Ids travel in URL paths (``/api/v1/subjects/<id>/…``), so besides being a
    non-empty string of bounded length they may hold no whitespace, control
    characters or slashes.
    """
    if not isinstance(value, str):
        return "Must be a string."
    if not value:
        return "Must not be empty."
    if len(value) > SUBJECT_ID_MAX_LENGTH:
        return f"At most {SUBJECT_ID_MAX_LENGTH} characters."
    # isprintable() is False for control characters and every space but " ".
    if not value.isprintable() or " " in value or "/" in value:
        return "Must not contain whitespace, control characters or '/'."
    return None
