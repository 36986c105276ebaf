"""How the dashboard writes numbers: each metric in its own unit, effects with a sign.

Proportions (conversion, opt-out, consent rate) and the recommendation CTR are
shown in percent and their differences in percentage points (pp), because
"+1.8 pp" cannot be misread as a relative change; GMV and order value in IDR;
orders per subject as a plain number. A row's estimate and interval share one
number of decimals, chosen from the interval's width, so "+0.0 [−0.3, +0.4]"
never hides an effect and "IDR 1,234.5678" never fakes precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from experiments.metric_catalog import metric_definition

MINUS = "\u2212"  # a real minus sign: the same width as "+", read as negative at a glance


def _signed(text: str, value: float) -> str:
    if value > 0:
        return "+" + text
    if value < 0:
        return MINUS + text
    return text


def decimals_for(width: float | None, *, minimum: int = 0, maximum: int = 4) -> int:
    """Decimals that show a span of ``width`` with two significant digits."""
    if width is None or not math.isfinite(width) or width <= 0:
        return minimum + 1
    return max(minimum, min(maximum, 1 - math.floor(math.log10(width))))


def number(value: float, decimals: int = 0) -> str:
    text = f"{abs(value):,.{decimals}f}"
    return (MINUS + text) if value < 0 and float(text.replace(",", "")) != 0 else text


def p_value(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 0.001:
        return "< 0.001"
    return f"{value:.3f}"


def percent(value: float | None, decimals: int = 1) -> str:
    """A share (0.052) as "5.2%"."""
    if value is None:
        return "—"
    return number(value * 100, decimals) + "%"


def relative(value: float | None, decimals: int = 1) -> str:
    """A relative change (0.052) as "+5.2%"."""
    if value is None:
        return "—"
    return _signed(f"{abs(value) * 100:.{decimals}f}%", round(value * 100, decimals))


@dataclass(frozen=True)
class MetricFormat:
    """One metric's unit and direction of good, from the snapshot's metric catalog."""

    key: str
    label: str
    kind: str  # proportion | mean | ratio
    higher_is_better: bool

    @property
    def unit(self) -> str:
        """percent | idr | number: the catalog's unit; a key it does not know (an older snapshot's
        metric) reads by its kind, proportions in percent and the rest as plain numbers."""
        try:
            return metric_definition(self.key).unit.value
        except KeyError:
            return "percent" if self.kind == "proportion" else "number"

    @property
    def scale(self) -> float:
        """Display units per stored unit: proportions are drawn in percent / pp."""
        return 100.0 if self.unit == "percent" else 1.0

    @property
    def difference_unit(self) -> str:
        return {"percent": "pp", "idr": "IDR", "number": ""}[self.unit]

    def value(self, value: float | None) -> str:
        """A mean or rate: "5.2%", "IDR 21,312", "0.214"."""
        if value is None:
            return "—"
        if self.unit == "percent":
            return percent(value, 2 if abs(value) < 0.01 else 1)
        if self.unit == "idr":
            return "IDR " + number(value, 0)
        return number(value, 3)

    def _decimals(self, width: float | None) -> int:
        # Percentage points keep one decimal at least: "+12.0 pp" next to "+4.9 pp" reads as one column.
        return decimals_for(
            None if width is None else width * self.scale,
            minimum=1 if self.unit == "percent" else 0,
            maximum=2 if self.unit == "idr" else 4,
        )

    def difference(self, value: float | None, *, width: float | None = None) -> str:
        """An absolute difference with its sign and unit: "+1.8 pp", "−IDR 1,234", "+0.021"."""
        if value is None:
            return "—"
        # A lone value (a guardrail margin) is shown to two significant digits of itself.
        decimals = self._decimals(abs(value) if width is None else width)
        magnitude = number(abs(value) * self.scale, decimals)
        if self.unit == "idr":
            text = f"IDR {magnitude}"
        elif self.unit == "percent":
            text = f"{magnitude} pp"
        else:
            text = magnitude
        return _signed(text, round(value * self.scale, decimals))

    def interval(self, ci: Sequence[float] | None) -> str:
        """An interval in the difference's unit: "[−0.3, +3.9] pp"."""
        if not ci or ci[0] is None or ci[1] is None:
            return ""
        decimals = self._decimals(ci[1] - ci[0])
        low, high = (
            _signed(number(abs(bound) * self.scale, decimals), round(bound * self.scale, decimals))
            for bound in ci
        )
        unit = {"percent": " pp", "idr": " IDR", "number": ""}[self.unit]
        return f"[{low}, {high}]{unit}"

    def axis(self, value: float) -> str:
        """A tick label on a chart of differences (already in display units)."""
        decimals = 0 if self.unit == "idr" else 1 if abs(value) >= 1 or value == 0 else 2
        return _signed(number(abs(value), decimals), value)


def relative_interval(ci: Sequence[float] | None) -> str:
    if not ci or ci[0] is None or ci[1] is None:
        return ""
    decimals = decimals_for((ci[1] - ci[0]) * 100, minimum=1, maximum=2)
    return f"[{relative(ci[0], decimals)}, {relative(ci[1], decimals)}]"


def age(moment, now) -> str:
    """How long ago ``moment`` was, for a reader: "just now" under a minute, else "3 minutes ago"."""
    from django.utils.timesince import timesince

    if (now - moment).total_seconds() < 60:
        return "just now"
    return f"{timesince(moment, now)} ago"


def targeting_text(rules: object) -> str:
    """An experiment's targeting in words: "everyone", or each attribute with the values it may take."""
    if not rules:
        return "everyone"
    if not isinstance(rules, dict):
        return f"unreadable rules ({rules!r})"
    parts = []
    for attribute, allowed in rules.items():
        values = [allowed] if isinstance(allowed, str) else list(allowed or [])
        shown = ", ".join(str(value) for value in values) or "no value (matches nobody)"
        parts.append(f"{attribute.replace('_', ' ')} is {'one of ' if len(values) > 1 else ''}{shown}")
    return "subjects whose " + "; and whose ".join(parts)
