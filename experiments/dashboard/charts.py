"""Server-rendered SVG charts: no JavaScript library, no CDN, nothing fetched.

Each function takes plain values already in display units (percent, pp, IDR)
and returns an inline ``<svg>`` with a ``<title>`` and ``<desc>`` that screen
readers announce; the page puts the same numbers in a data table beside it.
Every piece of text is escaped here, so labels that come from the database
(arm keys, segment values) cannot inject markup.

The drawings scale with their container (``viewBox``), and colours carry no
meaning alone: every point is also labelled, and intervals are drawn as lines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

TONE_COLOURS = {"good": "#1a7f37", "bad": "#c62828", "neutral": "#57606a"}
# Okabe–Ito: distinguishable with the common colour-vision deficiencies.
SERIES_COLOURS = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00")
GRID = "#d8dee4"
AXIS = "#57606a"
TEXT = "#1f2328"
FONT = 13
# Relative lifts beyond ±100% are drawn as arrows at the edge, so one noisy
# metric cannot squash every other interval into a dot.
FOREST_CLIP_PERCENT = 100.0


def _number(value: float) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


def _attributes(attrs: dict) -> str:
    parts = []
    for name, value in attrs.items():
        if value is None:
            continue
        if name.endswith("_"):  # class_ → class
            name = name[:-1]
        name = name.replace("_", "-")
        text = _number(value) if isinstance(value, float) else str(value)
        parts.append(f'{name}="{escape(text)}"')
    return " ".join(parts)


def _element(tag: str, text: str | None = None, **attrs) -> str:
    if text is None:
        return f"<{tag} {_attributes(attrs)}/>"
    return f"<{tag} {_attributes(attrs)}>{escape(text)}</{tag}>"


def _open(chart_id: str, width: int, height: int, title: str, description: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" {_attributes({"viewBox": f"0 0 {width} {height}"})} '
        f'role="img" class="chart" id="{escape(chart_id)}" '
        f'aria-labelledby="{escape(chart_id)}-title {escape(chart_id)}-desc" '
        f'font-family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif" font-size="{FONT}">',
        _element("title", title, id=f"{chart_id}-title"),
        _element("desc", description, id=f"{chart_id}-desc"),
    ]


def _close(parts: list[str]) -> SafeString:
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text and attribute above is escaped


# Charts are drawn twice: wide for laptops, compact for phones (CSS shows one).
# Scaling one drawing down would shrink its text below reading size.
WIDE, COMPACT = 720, 400


@dataclass(frozen=True)
class ResponsiveChart:
    wide: SafeString
    compact: SafeString


def responsive(draw: Callable[..., SafeString], *, chart_id: str, **kwargs) -> ResponsiveChart:
    """The same chart at both widths; the compact one's id ends in "-compact"."""
    return ResponsiveChart(
        wide=draw(chart_id=chart_id, width=WIDE, **kwargs),
        compact=draw(chart_id=f"{chart_id}-compact", width=COMPACT, **kwargs),
    )


def _text_width(text: str) -> float:
    return len(text) * FONT * 0.56  # close enough for system sans-serif at this size


@dataclass(frozen=True)
class LinearScale:
    """Maps the domain ``[lo, hi]`` onto the pixel range ``[start, end]``."""

    lo: float
    hi: float
    start: float
    end: float

    def __call__(self, value: float) -> float:
        return self.start + (value - self.lo) / (self.hi - self.lo) * (self.end - self.start)

    def clamp(self, value: float) -> float:
        return min(max(value, self.lo), self.hi)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering ``[lo, hi]``: steps of 1, 2 or 5 × 10^k."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError("ticks need a finite domain")
    if hi <= lo:
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(count, 1)
    exponent = math.floor(math.log10(raw))
    multiple = next(m for m in (1, 2, 5, 10) if raw <= m * 10.0**exponent * (1 + 1e-12))

    def tick(index: int) -> float:
        # Parsed from its decimal form: the double nearest the round number, at any scale.
        return float(f"{index * multiple}e{exponent}") + 0.0

    step = tick(1)
    first, last = math.floor(lo / step), math.ceil(hi / step)
    while tick(first) > lo:
        first -= 1
    while tick(last) < hi:
        last += 1
    return [tick(index) for index in range(first, last + 1)]


def _domain(
    values: Sequence[float], *, include: Sequence[float] = (0.0,), count: int = 5
) -> tuple[list[float], float, float]:
    finite = [v for v in (*values, *include) if v is not None and math.isfinite(v)]
    ticks = nice_ticks(min(finite), max(finite), count)
    return ticks, ticks[0], ticks[-1]


# --- forest plot ------------------------------------------------------------------


@dataclass(frozen=True)
class ForestRow:
    group: str  # the metric, drawn as a heading
    label: str  # the arm
    estimate: float
    low: float | None
    high: float | None
    tone: str  # good | bad | neutral


def forest_plot(
    rows: Sequence[ForestRow],
    *,
    chart_id: str,
    title: str,
    description: str,
    axis_label: str,
    tick_format: Callable[[float], str],
    axis_label_short: str = "",
    width: int = WIDE,
) -> SafeString:
    """Intervals of many comparisons on one axis, grouped by ``group``, zero marked."""
    compact = width < 600
    if compact and axis_label_short:
        axis_label = axis_label_short
    left = 150 if compact else 230
    right, top, row_height, header_height, bottom = 24, 12, 24, 24, 52
    groups: dict[str, list[ForestRow]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    height = top + len(groups) * header_height + len(rows) * row_height + bottom
    parts = _open(chart_id, width, height, title, description)
    if not rows:
        parts.append(_element("text", "No comparison to draw yet.", x=left, y=top + 20, fill=AXIS))
        return _close(parts)
    values = [v for row in rows for v in (row.estimate, row.low, row.high) if v is not None]
    values = [max(-FOREST_CLIP_PERCENT, min(FOREST_CLIP_PERCENT, v)) for v in values]
    ticks, lo, hi = _domain(values, count=4 if compact else 6)
    x = LinearScale(lo, hi, left, width - right)
    plot_bottom = height - bottom
    y = top
    for index, (_group, members) in enumerate(groups.items()):  # bands first: the grid stays visible
        block = header_height + len(members) * row_height
        if index % 2 == 0:
            parts.append(_element("rect", x=0, y=y, width=width, height=block, fill="#f6f8fa"))
        y += block
    for tick in ticks:
        parts.append(_element("line", x1=x(tick), x2=x(tick), y1=top, y2=plot_bottom, stroke=GRID))
        parts.append(
            _element("text", tick_format(tick), x=x(tick), y=plot_bottom + 18, text_anchor="middle", fill=AXIS)
        )
    parts.append(
        _element("line", x1=x(0.0), x2=x(0.0), y1=top, y2=plot_bottom, stroke=AXIS, stroke_width=1.5,
                 stroke_dasharray="4 3")
    )
    parts.append(
        _element("text", axis_label, x=(left + width - right) / 2, y=height - 10, text_anchor="middle", fill=TEXT)
    )
    y = top
    for group, members in groups.items():
        parts.append(_element("text", group, x=8, y=y + 17, font_weight="600", fill=TEXT))
        y += header_height
        for row in members:
            centre = y + row_height / 2
            colour = TONE_COLOURS.get(row.tone, TONE_COLOURS["neutral"])
            parts.append(_element("text", row.label, x=20, y=centre + 4, fill=TEXT))
            parts.append(
                _element("text", tick_format(row.estimate), x=left - 10, y=centre + 4, text_anchor="end",
                         fill=colour, font_weight="600")
            )
            if row.low is not None and row.high is not None:
                x1, x2 = x(x.clamp(row.low)), x(x.clamp(row.high))
                parts.append(_element("line", x1=x1, x2=x2, y1=centre, y2=centre, stroke=colour, stroke_width=2.5))
                for bound, at in ((row.low, x1), (row.high, x2)):
                    if x.lo < bound < x.hi:
                        parts.append(_element("line", x1=at, x2=at, y1=centre - 5, y2=centre + 5, stroke=colour,
                                              stroke_width=2))
                    else:  # the interval runs off the axis
                        tip = -7 if at <= x.start + 0.5 else 7
                        parts.append(
                            _element("path", d=f"M{_number(at + tip)},{_number(centre)} l{-tip},-5 v10 z",
                                     fill=colour)
                        )
            parts.append(_element("circle", cx=x(x.clamp(row.estimate)), cy=centre, r=5, fill=colour))
            y += row_height
    return _close(parts)


# --- cumulative effect over time -------------------------------------------------


@dataclass(frozen=True)
class TimePoint:
    at: datetime
    estimate: float
    low: float | None
    high: float | None


@dataclass(frozen=True)
class TimeSeries:
    label: str
    points: tuple[TimePoint, ...]


@dataclass(frozen=True)
class ReferenceLine:
    value: float
    label: str


# Tick steps for time axes, in seconds: round minutes, hours and days.
# Day steps no more than 1.5× apart: with only 2, 7 and 14, a two-week history (13 days between its
# first and last run) got a single 7-day tick, one date under 14 points.
_DAY = 86400
_TIME_STEPS = (60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600,
               *(days * _DAY for days in (1, 2, 3, 4, 5, 7, 10, 14)))


def _time_ticks(first: datetime, last: datetime, count: int) -> tuple[list[datetime], str]:
    """Round moments (on the hour, at midnight, in the datetimes' own zone) inside ``[first, last]``."""
    span = (last - first).total_seconds()
    longest = _TIME_STEPS[-1]
    step = next((s for s in _TIME_STEPS if span / s <= count + 0.5), longest * math.ceil(span / count / longest))
    offset = first.utcoffset().total_seconds() if first.utcoffset() else 0.0
    start = math.ceil((first.timestamp() + offset) / step) * step - offset
    ticks = []
    moment = first + timedelta(seconds=start - first.timestamp())
    while moment <= last:
        ticks.append(moment)
        moment += timedelta(seconds=step)
    label = "%d %b" if step >= 86400 else "%d %b %H:%M"
    return ticks, label


def timeline_chart(
    series: Sequence[TimeSeries],
    *,
    chart_id: str,
    title: str,
    description: str,
    y_label: str,
    tick_format: Callable[[float], str],
    references: Sequence[ReferenceLine] = (),
    width: int = WIDE,
) -> SafeString:
    """Each arm's effect estimate (line) and interval (band) at every analysis time."""
    compact = width < 600
    height, left, right, top, bottom = (280 if compact else 320), (86 if compact else 100), 24, 40, 56
    parts = _open(chart_id, width, height, title, description)
    points = [point for s in series for point in s.points]
    if not points:
        parts.append(_element("text", "No analysis to draw yet.", x=left, y=top + 20, fill=AXIS))
        return _close(parts)
    times = [point.at for point in points]
    first, last = min(times), max(times)
    if first == last:  # one run: give the point some room
        first, last = first - timedelta(hours=1), last + timedelta(hours=1)
    values = [v for p in points for v in (p.estimate, p.low, p.high) if v is not None]
    ticks, lo, hi = _domain(values, include=[0.0, *(r.value for r in references)], count=4 if compact else 5)
    y = LinearScale(lo, hi, height - bottom, top)
    total = (last - first).total_seconds()

    def x(moment: datetime) -> float:
        return left + (moment - first).total_seconds() / total * (width - left - right)

    for tick in ticks:
        parts.append(_element("line", x1=left, x2=width - right, y1=y(tick), y2=y(tick), stroke=GRID))
        parts.append(_element("text", tick_format(tick), x=left - 8, y=y(tick) + 4, text_anchor="end", fill=AXIS))
    time_ticks, time_format = _time_ticks(first, last, 3 if compact else 5)
    plot_width = width - left - right
    for moment in time_ticks:
        # Labels near the plot's edges align with them, so they are never cut off.
        anchor = "start" if x(moment) - left < 50 else "end" if left + plot_width - x(moment) < 50 else "middle"
        parts.append(
            _element("text", moment.strftime(time_format), x=x(moment), y=height - bottom + 18,
                     text_anchor=anchor, fill=AXIS)
        )
    parts.append(_element("line", x1=left, x2=width - right, y1=y(0.0), y2=y(0.0), stroke=AXIS, stroke_width=1.5))
    for reference in references:
        parts.append(
            _element("line", x1=left, x2=width - right, y1=y(reference.value), y2=y(reference.value),
                     stroke=TONE_COLOURS["bad"], stroke_width=1.5, stroke_dasharray="6 4")
        )
        parts.append(
            _element("text", reference.label, x=width - right - 4, y=y(reference.value) - 6, text_anchor="end",
                     fill=TONE_COLOURS["bad"])
        )
    parts.append(
        _element("text", y_label, x=14, y=(top + height - bottom) / 2, text_anchor="middle", fill=TEXT,
                 transform=f"rotate(-90 14 {_number((top + height - bottom) / 2)})")
    )
    legend_x = left
    for index, s in enumerate(series):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        ordered = sorted(s.points, key=lambda p: p.at)
        banded = [p for p in ordered if p.low is not None and p.high is not None]
        if len(banded) > 1:
            outline = [f"{_number(x(p.at))},{_number(y(p.high))}" for p in banded]
            outline += [f"{_number(x(p.at))},{_number(y(p.low))}" for p in reversed(banded)]
            parts.append(_element("polygon", points=" ".join(outline), fill=colour, fill_opacity="0.15"))
        elif banded:
            p = banded[0]
            parts.append(_element("line", x1=x(p.at), x2=x(p.at), y1=y(p.low), y2=y(p.high), stroke=colour,
                                  stroke_width=2))
        if len(ordered) > 1:
            line = " ".join(f"{_number(x(p.at))},{_number(y(p.estimate))}" for p in ordered)
            parts.append(_element("polyline", points=line, fill="none", stroke=colour, stroke_width=2.5))
        for p in ordered:
            parts.append(_element("circle", cx=x(p.at), cy=y(p.estimate), r=3.5, fill=colour))
        parts.append(_element("rect", x=legend_x, y=12, width=14, height=14, rx=3, fill=colour))
        parts.append(_element("text", s.label, x=legend_x + 20, y=24, fill=TEXT))
        legend_x += 34 + 8 * len(s.label)
    return _close(parts)


# --- the privacy/revenue trade-off -----------------------------------------------


@dataclass(frozen=True)
class TradeoffPoint:
    label: str
    x: float
    x_low: float | None
    x_high: float | None
    y: float
    y_low: float | None
    y_high: float | None
    tone: str
    highlighted: bool = False


def tradeoff_chart(
    points: Sequence[TradeoffPoint],
    *,
    chart_id: str,
    title: str,
    description: str,
    x_label: str,
    y_label: str,
    x_format: Callable[[float], str],
    y_format: Callable[[float], str],
    x_limit: float | None = None,
    x_limit_label: str = "",
    y_limit: float | None = None,
    y_limit_label: str = "",
    control_label: str = "control",
    x_label_short: str = "",
    y_label_short: str = "",
    width: int = WIDE,
) -> SafeString:
    """Each arm at (Δ opt-out, Δ GMV) with cross-hair intervals; the control at the origin.

    ``x_limit`` is the largest tolerated rise in opt-outs (the guardrail
    margin) and ``y_limit`` the largest tolerated fall in GMV; the regions
    beyond them are shaded.
    """
    compact = width < 600
    if compact:
        x_label, y_label = x_label_short or x_label, y_label_short or y_label
    height, left, right, top, bottom = (400 if compact else 460), (84 if compact else 96), 20, 24, 60
    # A guardrail label that fits neither side of its line inside the plot goes above the plot,
    # in a band of its own, instead of over the y axis's tick labels.
    label_band = 0
    parts = _open(chart_id, width, height, title, description)
    xs = [v for p in points for v in (p.x, p.x_low, p.x_high) if v is not None]
    ys = [v for p in points for v in (p.y, p.y_low, p.y_high) if v is not None]
    x_ticks, x_lo, x_hi = _domain(xs, include=[0.0] + ([x_limit * 1.2] if x_limit is not None else []),
                                  count=4 if compact else 6)
    y_ticks, y_lo, y_hi = _domain(ys, include=[0.0] + ([y_limit * 1.2] if y_limit is not None else []),
                                  count=5 if compact else 6)
    x = LinearScale(x_lo, x_hi, left, width - right)
    plot_right = width - right
    if x_limit is not None:
        label_width = _text_width(x_limit_label)
        if x(x_limit) + 6 + label_width > plot_right and x(x_limit) - 6 - label_width < left:
            label_band = FONT + 8
            top += label_band
            height += label_band
            parts = _open(chart_id, width, height, title, description)
    y = LinearScale(y_lo, y_hi, height - bottom, top)
    plot_bottom = height - bottom
    bad = TONE_COLOURS["bad"]
    if x_limit is not None and x_limit < x_hi:
        parts.append(_element("rect", x=x(x_limit), y=top, width=plot_right - x(x_limit), height=plot_bottom - top,
                              fill=bad, fill_opacity="0.08"))
    if y_limit is not None and y_limit > y_lo:
        parts.append(_element("rect", x=left, y=y(y_limit), width=plot_right - left, height=plot_bottom - y(y_limit),
                              fill=bad, fill_opacity="0.08"))
    for tick in x_ticks:
        parts.append(_element("line", x1=x(tick), x2=x(tick), y1=top, y2=plot_bottom, stroke=GRID))
        parts.append(_element("text", x_format(tick), x=x(tick), y=plot_bottom + 18, text_anchor="middle", fill=AXIS))
    for tick in y_ticks:
        parts.append(_element("line", x1=left, x2=plot_right, y1=y(tick), y2=y(tick), stroke=GRID))
        parts.append(_element("text", y_format(tick), x=left - 8, y=y(tick) + 4, text_anchor="end", fill=AXIS))
    parts.append(_element("line", x1=x(0.0), x2=x(0.0), y1=top, y2=plot_bottom, stroke=AXIS, stroke_width=1.5))
    parts.append(_element("line", x1=left, x2=plot_right, y1=y(0.0), y2=y(0.0), stroke=AXIS, stroke_width=1.5))
    if x_limit is not None:
        parts.append(_element("line", x1=x(x_limit), x2=x(x_limit), y1=top, y2=plot_bottom, stroke=bad,
                              stroke_width=2, stroke_dasharray="6 4"))
        fits_right = x(x_limit) + 6 + _text_width(x_limit_label) <= plot_right
        if label_band:
            # Above the plot, right-aligned to its edge, clear of the tick labels on the left.
            parts.append(_element("text", x_limit_label, x=plot_right, y=top - 8, text_anchor="end", fill=bad,
                                  font_weight="600", class_="limit-label"))
        else:
            parts.append(_element("text", x_limit_label, x=x(x_limit) + (6 if fits_right else -6), y=top + 16,
                                  text_anchor="start" if fits_right else "end", fill=bad, font_weight="600",
                                  class_="limit-label"))
    if y_limit is not None:
        parts.append(_element("line", x1=left, x2=plot_right, y1=y(y_limit), y2=y(y_limit), stroke=bad,
                              stroke_width=2, stroke_dasharray="6 4"))
        parts.append(_element("text", y_limit_label, x=plot_right - 6, y=y(y_limit) + 16, text_anchor="end",
                              fill=bad, font_weight="600"))
    if not compact:  # on a phone the axis titles say it; the hints would cover the points
        parts.append(_element("text", "fewer opt-outs, more GMV", x=left + 8, y=top + 16, fill=TONE_COLOURS["good"]))
        parts.append(_element("text", "more opt-outs, less GMV", x=plot_right - 8, y=plot_bottom - 10,
                              text_anchor="end", fill=bad))
    parts.append(_element("text", x_label, x=(left + plot_right) / 2, y=height - 12, text_anchor="middle", fill=TEXT))
    middle = (top + plot_bottom) / 2
    parts.append(_element("text", y_label, x=16, y=middle, text_anchor="middle", fill=TEXT,
                          transform=f"rotate(-90 16 {_number(middle)})"))
    parts.append(_element("circle", cx=x(0.0), cy=y(0.0), r=6, fill="#ffffff", stroke=AXIS, stroke_width=2))
    parts.append(_element("text", control_label, x=x(0.0) + 9, y=y(0.0) + 18, fill=AXIS))
    for index, point in enumerate(points):
        colour = TONE_COLOURS.get(point.tone, TONE_COLOURS["neutral"])
        cx, cy = x(point.x), y(point.y)
        if point.x_low is not None and point.x_high is not None:
            parts.append(_element("line", x1=x(point.x_low), x2=x(point.x_high), y1=cy, y2=cy, stroke=colour,
                                  stroke_width=2))
            for bound in (point.x_low, point.x_high):
                parts.append(_element("line", x1=x(bound), x2=x(bound), y1=cy - 5, y2=cy + 5, stroke=colour,
                                      stroke_width=2))
        if point.y_low is not None and point.y_high is not None:
            parts.append(_element("line", x1=cx, x2=cx, y1=y(point.y_low), y2=y(point.y_high), stroke=colour,
                                  stroke_width=2))
            for bound in (point.y_low, point.y_high):
                parts.append(_element("line", x1=cx - 5, x2=cx + 5, y1=y(bound), y2=y(bound), stroke=colour,
                                      stroke_width=2))
        radius = 8 if point.highlighted else 6
        parts.append(_element("circle", cx=cx, cy=cy, r=radius, fill=colour, stroke="#ffffff", stroke_width=2,
                              class_="tradeoff-point"))
        # Alternate labels above and below so neighbouring arms stay legible.
        dy = -12 if index % 2 == 0 else 22
        # Right of the point, or left of it where the label would run past the chart's edge.
        fits = cx + 10 + _text_width(point.label) <= width - 2
        parts.append(_element("text", point.label, x=cx + 10 if fits else cx - 10, y=cy + dy, fill=colour,
                              font_weight="700", text_anchor="start" if fits else "end"))
    return _close(parts)
