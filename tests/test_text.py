"""config.text: the published text patterns say exactly which characters the server refuses."""

import re
import unicodedata

import pytest

from config.text import ID_PATTERN, LABEL_PATTERN, text_problem, text_schema

FORBIDDEN = {"Cc", "Cf", "Zl", "Zp", "Zs"}


def test_every_bmp_character_is_judged_by_its_unicode_category():
    # Independent of how the classes are built: each character, by its category alone.
    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        refused = unicodedata.category(char) in FORBIDDEN
        assert (text_problem(f"a{char}b", max_length=8) is not None) == refused, hex(code)
        refused_in_label = refused and char != " "
        assert (text_problem(f"a{char}b", max_length=8, label=True) is not None) == refused_in_label, hex(code)


@pytest.mark.parametrize(
    ("value", "label", "ok"),
    [
        ("order-1001", False, True),
        ("a b", False, False),
        ("home & living", True, True),
        (" padded ", True, True),
        ("   ", True, False),
        ("", True, False),
        ("x" * 65, True, False),
        ("a\u00adb", True, False),  # soft hyphen: a format character
        ("a\ud800b", False, False),  # a lone surrogate
        ("私の商品", True, True),
        (7, False, False),
    ],
)
def test_text_problem(value, label, ok):
    assert (text_problem(value, max_length=64, label=label) is None) == ok


def test_the_schema_publishes_the_patterns_the_server_matches():
    assert text_schema(max_length=128)["pattern"] == ID_PATTERN
    assert text_schema(max_length=64, label=True) == {
        "type": "string", "minLength": 1, "maxLength": 64, "pattern": LABEL_PATTERN,
    }
    # The patterns are plain ECMA 262 (BMP escapes only), which every schema reader can compile.
    assert re.fullmatch(r"[\^\[\]\\u0-9a-f\-*+$]+", ID_PATTERN), "only \\uXXXX escapes and class syntax"
