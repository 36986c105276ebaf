"""Targeting: which subjects an experiment may assign, by the attributes of the assignment request.

An experiment's ``targeting`` maps an attribute to the list of values it may
take (``experiments.assignment.targeting_matches`` evaluates it). Only the
attributes the marketplace reports and the subject row keeps can be targeted;
an attribute nobody sends would match nobody, silently, so it is refused here
with a message, as is a plain string where a list belongs. Age band and
platform take their known values only; a province is any name (the known ones
are offered), since the marketplace's list is longer than the demo's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# The subject attributes the marketplace reports with an assignment request, and their known values
# (the simulated marketplace, marketplace.population, draws its shoppers from them).
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
PROVINCES = ("DKI Jakarta", "Jawa Barat", "Jawa Timur", "Jawa Tengah", "Banten", "Sumatera Utara", "Bali")
PLATFORMS = ("android", "ios", "web")


@dataclass(frozen=True)
class TargetingAttribute:
    key: str
    label: str
    values: tuple[str, ...]
    closed: bool  # only these values; otherwise they are suggestions and any value is allowed


TARGETING_ATTRIBUTES = {
    attribute.key: attribute
    for attribute in (
        TargetingAttribute("age_band", "Age band", AGE_BANDS, closed=True),
        TargetingAttribute("platform", "Platform", PLATFORMS, closed=True),
        TargetingAttribute("province", "Province", PROVINCES, closed=False),
    )
}
MAX_VALUE_LENGTH = 64  # the subject row's column for the longest attribute (province)


def targeting_problems(*, targeting: object) -> list[str]:
    """What is wrong with a targeting rule, in sentences a product manager can act on; [] when it is valid."""
    if targeting in (None, ""):
        return []
    known = ", ".join(TARGETING_ATTRIBUTES)
    if not isinstance(targeting, dict):
        return ['Targeting maps an attribute to a list of values, e.g. {"platform": ["android", "ios"]}; '
                f"the attributes are {known}."]
    problems = []
    for attribute, values in targeting.items():
        spec = TARGETING_ATTRIBUTES.get(attribute)
        if spec is None:
            problems.append(f"Unknown attribute {attribute!r}: the marketplace reports {known}, so it would "
                            "match nobody.")
            continue
        if not isinstance(values, list):
            example = json.dumps([values] if isinstance(values, str) else list(spec.values[:1]))
            problems.append(f"{spec.label}: give a list of values, e.g. {example}, not {json.dumps(values)}.")
            continue
        if not values:
            problems.append(f"{spec.label}: choose at least one value, or remove the attribute (an empty list "
                            "matches nobody).")
            continue
        if not all(isinstance(value, str) and value.strip() for value in values):
            problems.append(f"{spec.label}: each value is a non-empty text.")
            continue
        too_long = [value for value in values if len(value) > MAX_VALUE_LENGTH]
        if too_long:
            problems.append(f"{spec.label}: a value has at most {MAX_VALUE_LENGTH} characters.")
        if spec.closed:
            unknown = [value for value in values if value not in spec.values]
            if unknown:
                problems.append(f"{spec.label}: unknown value(s) {', '.join(map(repr, unknown))}; the values are "
                                f"{', '.join(spec.values)}.")
    return problems
