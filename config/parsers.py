"""The API's JSON parser: DRF's, with a bound on nesting.

Kept apart from ``config.api`` because DRF imports parser classes while
``rest_framework.views`` is still initialising.
"""

from rest_framework import parsers
from rest_framework.exceptions import ParseError

# Every request body of the API is at most four levels deep ({"events": [{"lines": [{…}]}]});
# far deeper JSON is an attack on the parser or on code that walks it, not a request.
MAX_JSON_DEPTH = 20


def json_depth_exceeds(data: object, limit: int) -> bool:
    """Whether ``data`` nests lists and objects more than ``limit`` deep (without recursing)."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, with a bound on nesting: deep JSON is a 400, never a RecursionError."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - nested more than {MAX_JSON_DEPTH} levels deep.") from None
        if isinstance(data, dict | list) and json_depth_exceeds(data, MAX_JSON_DEPTH):
            raise ParseError(f"JSON parse error - nested more than {MAX_JSON_DEPTH} levels deep.")
        return data
