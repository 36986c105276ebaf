"""Plain JSON values from what the ORM and the analysis hand back (datetimes, decimals, UUIDs, numpy numbers, NaN).

JSON columns and exports hold only what ``json`` writes and PostgreSQL's
``jsonb`` accepts: no NaN or infinities (they become ``None``), no tuples,
string keys. Datetimes, dates, times, durations, decimals and UUIDs are
written as ``DjangoJSONEncoder`` writes them; other numbers (numpy's) as
Python ones; anything else as its ``str()``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

from django.core.serializers.json import DjangoJSONEncoder

_ENCODER = DjangoJSONEncoder()


def json_safe(value):
    """``value`` as plain JSON values, recursively (a new structure; ``value`` is left as it is)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {_key(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    try:
        return _ENCODER.default(value)
    except TypeError:
        pass
    if getattr(value, "shape", None) == () and callable(getattr(value, "item", None)):
        # A numpy scalar (numpy.bool_ is no numbers.Integral, and would become the string "True").
        return json_safe(value.item())
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return json_safe(float(value))
    return str(value)


def _key(key) -> str:
    """A mapping key as ``json.dumps`` writes it."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, bool):
        return {None: "null", True: "true", False: "false"}[key]
    return str(key)
