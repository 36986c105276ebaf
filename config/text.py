"""The text rules of the API's free-text fields, as one pattern each for the server and the schema.

An outcome event's id, product id and category may hold no control or format
character of the Basic Multilingual Plane (Unicode categories Cc, Cf) and no
line, paragraph or non-space separator (Zl, Zp, Zs other than " "); an id
holds no space either, and a label is not spaces only. (The few format
characters beyond the BMP, such as the U+E0000 tags, are allowed: the
generators and regex engines that read the schema's patterns (ECMA 262) cannot
name a character outside the BMP in a character class.) Each rule is published in the OpenAPI schema as the
very pattern the server matches (``text_problem``), so that a client, the
schema and the server agree on every character. The classes are computed from
the server's own Unicode database, so they cannot drift from it. (Lone
surrogates, which no UTF-8 client can send and a pattern cannot name, are
refused too.)
"""

import re
import unicodedata

_FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Zs"})
_SURROGATE = re.compile("[\\ud800-\\udfff]")


def _escaped(code: int) -> str:
    return f"\\u{code:04x}"


def _character_class(*, allow_space: bool) -> str:
    """The body of a [^…] class: every forbidden character, as ranges."""
    forbidden = [
        code
        for code in range(0x10000)  # the Basic Multilingual Plane (see above)
        if not 0xD800 <= code <= 0xDFFF
        and unicodedata.category(chr(code)) in _FORBIDDEN_CATEGORIES
        and not (allow_space and code == 0x20)
    ]
    ranges: list[tuple[int, int]] = []
    for code in forbidden:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1] = (ranges[-1][0], code)
        else:
            ranges.append((code, code))
    return "".join(_escaped(a) if a == b else f"{_escaped(a)}-{_escaped(b)}" for a, b in ranges)


_NO_SPACE = _character_class(allow_space=False)
_WITH_SPACE = _character_class(allow_space=True)
# An id: one or more characters, none forbidden, no space.
ID_PATTERN = f"^[^{_NO_SPACE}]+$"
# A label (product id, category): allowed characters, spaces among them, at least one that is not a space.
LABEL_PATTERN = f"^[^{_WITH_SPACE}]*[^{_NO_SPACE}][^{_WITH_SPACE}]*$"
_ID = re.compile(ID_PATTERN)
_LABEL = re.compile(LABEL_PATTERN)

ID_MESSAGE = "Must not contain whitespace, control or format characters."
LABEL_MESSAGE = "Must not be blank, nor contain control or format characters or whitespace other than spaces."


def text_problem(value: object, *, max_length: int, label: bool = False) -> str | None:
    """Why ``value`` is not a usable id (or, ``label``, product id or category); None if it is."""
    if not isinstance(value, str):
        return "Must be a string."
    if not value:
        return "Must not be empty."
    if len(value) > max_length:
        return f"At most {max_length} characters."
    if not (_LABEL if label else _ID).fullmatch(value) or _SURROGATE.search(value):
        return LABEL_MESSAGE if label else ID_MESSAGE
    return None


def text_schema(*, max_length: int, label: bool = False, **extra) -> dict:
    """The OpenAPI schema of a field ``text_problem`` checks."""
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
        "pattern": LABEL_PATTERN if label else ID_PATTERN,
        **extra,
    }
