"""config.jsonsafe: what JSON columns and exports may hold, whatever the ORM or numpy handed over."""

import json
import math
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np

from config.jsonsafe import json_safe


def test_plain_json_passes_unchanged():
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": False}}
    assert json_safe(value) == value


def test_what_djangos_encoder_knows_is_written_as_it_writes_it():
    moment = datetime(2026, 12, 2, 4, 5, 6, 789123, tzinfo=UTC)
    converted = json_safe(
        {"at": moment, "day": date(2026, 12, 2), "for": timedelta(hours=2), "amount": Decimal("12.50"),
         "id": uuid.UUID("6f1c1a4e-5d27-4d6f-9b8c-3f1f8c7b2a10")}
    )
    assert converted == {"at": "2026-12-02T04:05:06.789Z", "day": "2026-12-02", "for": "P0DT02H00M00S",
                         "amount": "12.50", "id": "6f1c1a4e-5d27-4d6f-9b8c-3f1f8c7b2a10"}


def test_nan_and_infinities_become_null():
    assert json_safe([math.nan, math.inf, -math.inf, 1.0]) == [None, None, None, 1.0]
    assert json_safe({"x": np.float64("nan")}) == {"x": None}


def test_tuples_become_lists_and_keys_strings_as_json_writes_them():
    assert json_safe((1, (2, 3))) == [1, [2, 3]]
    assert json_safe({3: "a", None: "b", True: "c", 2.5: "d"}) == {"3": "a", "null": "b", "true": "c", "2.5": "d"}


def test_numpy_numbers_become_python_numbers():
    converted = json_safe({"n": np.int64(7), "x": np.float32(0.5)})
    assert converted == {"n": 7, "x": 0.5}
    assert type(converted["n"]) is int and type(converted["x"]) is float


def test_anything_else_is_its_string_and_the_result_always_serialises():
    class Odd:
        def __str__(self):
            return "odd"

    converted = json_safe({"odd": Odd(), "nested": [{"at": datetime(2026, 1, 1, tzinfo=UTC)}]})
    assert converted == {"odd": "odd", "nested": [{"at": "2026-01-01T00:00:00Z"}]}
    json.dumps(converted, allow_nan=False)


def test_the_input_is_left_as_it_is():
    value = {"t": (1, 2), "x": math.nan}
    json_safe(value)
    assert value["t"] == (1, 2) and math.isnan(value["x"])


def test_numpy_scalars_become_their_python_values_booleans_included():
    assert json_safe({"flag": np.bool_(True), "n": np.int64(3), "x": np.float32(0.5), "bad": np.float64("nan")}) == {
        "flag": True, "n": 3, "x": 0.5, "bad": None,
    }
    assert type(json_safe(np.bool_(False))) is bool
