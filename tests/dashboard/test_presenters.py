"""How the dashboard reads a snapshot: units, direction of good, the verdict in words, exports, charts."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from experiments.dashboard import charts, presenters
from experiments.dashboard.formatting import MetricFormat, p_value, percent, relative
from experiments.models import Guardrail, ResultSnapshot
from experiments.results import compute_results
from experiments.results.document import SnapshotDocument
from tests.dashboard.conftest import make_experiment
from tests.experiments.pipeline_kit import populate

SVG = "{http://www.w3.org/2000/svg}"
OPT_OUT = MetricFormat(key="opt_out", label="Opt-out rate", kind="proportion", higher_is_better=False)
GMV = MetricFormat(key="gmv", label="GMV per subject", kind="mean", higher_is_better=True)
ORDERS = MetricFormat(key="orders", label="Orders per subject", kind="mean", higher_is_better=True)
CTR = MetricFormat(key="ctr", label="Recommendation CTR", kind="ratio", higher_is_better=True)


# --- units ----------------------------------------------------------------------------


def test_each_metric_in_its_own_unit():
    assert OPT_OUT.value(0.052) == "5.2%" and OPT_OUT.value(0.004) == "0.40%"
    assert OPT_OUT.difference(-0.018, width=0.02) == "\u22121.8 pp"
    assert OPT_OUT.difference(0.005) == "+0.50 pp"  # a lone margin keeps two significant digits
    assert OPT_OUT.interval([-0.031, 0.004]) == "[\u22123.1, +0.4] pp"
    assert GMV.value(21053.4) == "IDR 21,053"
    assert GMV.difference(14114.19, width=13000) == "+IDR 14,114"
    assert GMV.difference(-399.2, width=11000) == "\u2212IDR 399"
    assert GMV.interval([-6351.2, 5553.9]) == "[\u22126,351, +5,554] IDR"
    assert ORDERS.difference(0.125, width=0.12) == "+0.12"
    assert CTR.unit == "percent" and CTR.value(0.1225) == "12.2%"
    assert relative(0.67040816) == "+67.0%" and relative(-0.0004, 1) == "0.0%"  # no sign on a rounded zero
    assert percent(None) == "—" and p_value(0.0004) == "< 0.001" and p_value(0.0471) == "0.047"


def _comparison(estimate: float, significant: bool) -> dict:
    return {"absolute": {"estimate": estimate, "ci": [estimate - 1, estimate + 1]}, "significant": significant}


@pytest.mark.parametrize(
    ("metric", "estimate", "significant", "tone"),
    [
        (OPT_OUT, 0.02, True, "bad"),  # more opt-outs: worse
        (OPT_OUT, -0.02, True, "good"),
        (OPT_OUT, 0.02, False, "neutral"),
        (GMV, 1500.0, True, "good"),
        (GMV, -1500.0, True, "bad"),
        (GMV, 0.0, True, "neutral"),
    ],
)
def test_colour_follows_significance_and_the_direction_of_good(metric, estimate, significant, tone):
    assert presenters.comparison_tone(_comparison(estimate, significant), metric) == tone


# --- the verdict, from documents the pipeline really produced ----------------------------


def _document(people, key, arms, *, primary="conversion", guardrail=None, **fields):
    planned = min(spec["n"] for spec in arms.values())  # the planned size is reached: the verdict is readable
    experiment = make_experiment(people["owner"], key=key, primary_metric=primary,
                                 planned_subjects_per_arm=fields.pop("planned_subjects_per_arm", planned), **fields)
    if guardrail:
        Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=guardrail)
    populate(experiment, arms, prefix=key)
    return compute_results(experiment=experiment, monitor=False).data


@pytest.mark.django_db
def test_the_verdict_is_the_stored_decision_rendered_never_re_derived(people):
    keep = _document(people, "keep", {
        "control": {"n": 200, "conversion": 0.5}, "arm-1": {"n": 200, "conversion": 0.1},
        "arm-2": {"n": 200, "conversion": 0.15},
    })
    verdict = presenters.verdict(SnapshotDocument.from_dict(keep))
    assert (verdict.outcome, verdict.tone, verdict.final) == ("keep_control", "neutral", True)
    assert verdict.text == keep["decision"]["summary"]
    assert verdict.text == "Keep the control: every treatment arm is significantly worse on Conversion."

    early = _document(people, "early", {
        "control": {"n": 100, "conversion": 0.2}, "arm-1": {"n": 100, "conversion": 0.6},
        "arm-2": {"n": 100, "conversion": 0.21},
    }, planned_subjects_per_arm=400)
    verdict = presenters.verdict(SnapshotDocument.from_dict(early))
    # arm-1 looks far better, but a fixed-horizon verdict is read only at the planned size.
    assert (verdict.outcome, verdict.tone, verdict.final) == ("continue", "neutral", False)
    assert verdict.text.startswith("Keep running: 25% of the planned subjects so far")
    assert verdict.progress == pytest.approx(0.25) and "25% of the planned subjects" in verdict.progress_text
    assert verdict.earliest_decision_date  # the date at the traffic so far

    skewed = _document(people, "skewed", {
        "control": {"n": 500, "conversion": 0.1}, "arm-1": {"n": 380, "conversion": 0.1},
        "arm-2": {"n": 500, "conversion": 0.1},
    })
    verdict = presenters.verdict(SnapshotDocument.from_dict(skewed))
    assert verdict.outcome == "invalid" and verdict.tone == "bad"
    assert verdict.text.startswith("Sample-ratio mismatch (p < 0.001)")

    blocked = _document(people, "blocked", {
        "control": {"n": 600, "conversion": 0.10, "opt_out": 0.05},
        "arm-1": {"n": 600, "conversion": 0.40, "opt_out": 0.30},
        "arm-2": {"n": 600, "conversion": 0.10, "opt_out": 0.05},
    }, guardrail=0.02)
    verdict = presenters.verdict(SnapshotDocument.from_dict(blocked))
    assert (verdict.outcome, verdict.final) == ("keep_control", True)
    rows = {(row.arm, row.question): row for row in verdict.tests}
    assert rows[("arm-1", "beats the control on Conversion")].status == "passes"
    assert rows[("arm-1", "Opt-out rate guardrail")].status == "fails"
    assert rows[("arm-1", "Opt-out rate guardrail")].limit == "+2.0 pp"
    assert any("Opt-out rate guardrail fails" in reason for reason in verdict.reasons)


@pytest.mark.django_db
def test_a_schema_1_decision_still_renders(people):
    document = {
        "schema_version": 1, "metrics": {}, "arms": [],
        "decision": {"rule": "Ship the best…", "primary_metric": "gmv", "outcome": "inconclusive", "arm": None,
                     "reasons": ["No arm differs significantly from the control on GMV per subject yet."]},
    }
    verdict = presenters.verdict(SnapshotDocument.from_dict(document))
    assert (verdict.outcome, verdict.final, verdict.rule) == ("continue", False, "Ship the best…")
    assert verdict.text == "No arm differs significantly from the control on GMV per subject yet."


@pytest.mark.django_db
def test_privacy_first_ships_the_most_private_arm_and_the_chart_draws_both_margins(people):
    experiment = make_experiment(
        people["owner"], key="privacy-first", primary_metric="gmv", decision_rule="privacy_first",
        decision_margin=0.05, planned_subjects_per_arm=800, privacy_order=["arm-2", "arm-1", "control"],
    )
    Guardrail.objects.create(experiment=experiment, metric="opt_out", margin=0.02)
    populate(experiment, {
        "control": {"n": 800, "opt_out": 0.05, "conversion": 1.0, "gmv": 100_000},
        "arm-1": {"n": 800, "opt_out": 0.05, "conversion": 1.0, "gmv": 100_000},
        "arm-2": {"n": 800, "opt_out": 0.05, "conversion": 1.0, "gmv": 100_000},
    }, prefix="pf")
    document = compute_results(experiment=experiment, monitor=False).data
    tradeoff = presenters.tradeoff(SnapshotDocument.from_dict(document))
    assert (tradeoff.verdict.outcome, tradeoff.verdict.final) == ("ship", True)
    assert document["decision"]["arm"] == "arm-2"  # the most private qualifying design
    assert tradeoff.verdict.text.startswith(
        "Ship arm-2: the most private design whose GMV per subject stays within −5.0% of the control (lower bound "
    )
    assert "its opt-out rate guardrail passes (upper bound +" in tradeoff.verdict.text
    # The GMV margin (−5% of the control's GMV, in IDR) and the opt-out guardrail are both drawn.
    control_gmv = next(c for c in document["report"]["comparisons"] if c["metric"] == "gmv")["control_mean"]
    assert tradeoff.y_limit == pytest.approx(-0.05 * control_gmv)
    assert tradeoff.x_limit == pytest.approx(0.02)
    assert tradeoff.y_limit_label.startswith("GMV margin −5.0% (−IDR ")
    svg = _parse(tradeoff.chart.wide)
    texts = {t.text for t in svg.iter(f"{SVG}text")}
    assert tradeoff.y_limit_label in texts and tradeoff.x_limit_label in texts
    shipped = [row for row in tradeoff.rows if row.point.highlighted]
    assert [row.arm for row in shipped] == ["arm-2"]


# --- charts -----------------------------------------------------------------------------


def _parse(svg) -> ET.Element:
    # Our own output, not untrusted input; well-formed XML, or this raises.
    root = ET.fromstring(str(svg))  # noqa: S314
    assert root.tag == f"{SVG}svg" and root.get("role") == "img"
    assert root.find(f"{SVG}title").text and root.find(f"{SVG}desc").text
    return root


def test_chart_text_is_escaped():
    hostile = '<script>alert("x")</script>'
    svg = charts.forest_plot(
        [charts.ForestRow(group=hostile, label=hostile, estimate=5.0, low=-1.0, high=11.0, tone="good")],
        chart_id="c", title=hostile, description=hostile, axis_label=hostile, tick_format=str,
    )
    root = _parse(svg)
    assert not list(root.iter(f"{SVG}script")) and not list(root.iter("script"))
    assert any(t.text == hostile for t in root.iter(f"{SVG}text"))


@pytest.mark.parametrize("days", [6, 13, 20, 40])
def test_a_history_of_daily_runs_gets_several_date_labels(days):
    """A two-week history once got a single 7-day tick: one date under 14 points."""
    from datetime import datetime, timedelta, timezone

    first = datetime(2026, 11, 19, 21, 48, tzinfo=timezone(timedelta(hours=7)))
    points = tuple(charts.TimePoint(at=first + timedelta(days=d), estimate=float(d), low=d - 1.0, high=d + 1.0)
                   for d in range(days + 1))
    for width in (charts.WIDE, charts.COMPACT):
        root = _parse(charts.timeline_chart(
            [charts.TimeSeries(label="arm-1", points=points)], chart_id="h", title="t", description="d",
            y_label="y", tick_format=str, width=width,
        ))
        labels = [t.text for t in root.iter(f"{SVG}text") if t.text and t.text[:2].strip().isdigit()
                  and t.text[-3:] in ("Nov", "Dec", "Jan")]
        assert len(circles := list(root.iter(f"{SVG}circle"))) == days + 1 and circles
        assert 3 <= len(labels) <= 6 if width == charts.WIDE else 2 <= len(labels) <= 4, labels


def test_the_tradeoff_chart_places_arms_where_their_effects_are():
    points = [
        charts.TradeoffPoint(label="b", x=-4.0, x_low=-6.7, x_high=-1.3, y=14_000, y_low=7_000, y_high=21_000,
                             tone="good", highlighted=True),
        charts.TradeoffPoint(label="c", x=6.0, x_low=2.0, x_high=10.0, y=-400, y_low=-6_000, y_high=5_500,
                             tone="bad"),
    ]
    for width in (charts.WIDE, charts.COMPACT):
        root = _parse(charts.tradeoff_chart(
            points, chart_id="t", title="t", description="d", x_label="x", y_label="y", x_format=str,
            y_format=str, x_limit=1.0, x_limit_label="guardrail", width=width,
        ))
        circles = list(root.iter(f"{SVG}circle"))
        control = next(c for c in circles if c.get("fill") == "#ffffff")
        b, c = (c for c in circles if c.get("class") == "tradeoff-point")
        cx, cy = float(control.get("cx")), float(control.get("cy"))
        assert float(b.get("cx")) < cx and float(b.get("cy")) < cy  # fewer opt-outs, more GMV: up-left
        assert float(c.get("cx")) > cx and float(c.get("cy")) > cy  # down-right (SVG y grows downwards)
        assert float(b.get("r")) > float(c.get("r"))  # the recommended arm stands out
        guardrail = [line for line in root.iter(f"{SVG}line") if line.get("stroke-dasharray") == "6 4"]
        assert len(guardrail) == 1 and cx < float(guardrail[0].get("x1")) < float(c.get("cx"))
        assert root.get("viewBox").split()[2] == str(width)


def _text_box(text) -> tuple[float, float, float, float]:
    """(left, right, top, bottom) of an SVG text, at the chart's own width estimate."""
    width, x, y = charts._text_width(text.text), float(text.get("x")), float(text.get("y"))
    anchor = text.get("text-anchor", "start")
    left = {"start": x, "middle": x - width / 2, "end": x - width}[anchor]
    return left, left + width, y - charts.FONT, y


def test_tradeoff_labels_do_not_overlap_at_phone_width():
    """At 390 px (the compact chart) the guardrail label that fits neither side of its line sits above the plot."""
    points = [
        charts.TradeoffPoint(label="arm-1", x=-4.0, x_low=-6.7, x_high=-1.3, y=14_000, y_low=6_000, y_high=22_000,
                             tone="good", highlighted=True),
        charts.TradeoffPoint(label="arm-2", x=9.5, x_low=2.0, x_high=10.0, y=-400, y_low=-6_000, y_high=5_500,
                             tone="bad"),
    ]
    root = _parse(charts.tradeoff_chart(
        points, chart_id="t", title="t", description="d", x_label="Δ opt-out rate (pp)", y_label="Δ GMV",
        x_format=lambda v: f"{v:+.1f}", y_format=lambda v: f"{v:+,.0f}", x_limit=1.0,
        x_limit_label="opt-out guardrail +1.0 pp", width=charts.COMPACT,
    ))
    texts = [t for t in root.iter(f"{SVG}text") if t.text]
    boxes = {id(t): _text_box(t) for t in texts}
    width = float(root.get("viewBox").split()[2])
    for text in texts:
        left, right, top, bottom = boxes[id(text)]
        if text.get("transform"):  # the rotated y-axis title
            continue
        assert left >= 0 and right <= width, text.text
        for other in texts:
            if other is text or other.get("transform"):
                continue
            o_left, o_right, o_top, o_bottom = boxes[id(other)]
            overlaps = left < o_right and o_left < right and top < o_bottom and o_top < bottom
            assert not overlaps, (text.text, other.text)
    label = next(t for t in texts if t.get("class") == "limit-label")
    grid_top = min(float(line.get("y1")) for line in root.iter(f"{SVG}line") if line.get("stroke-dasharray") == "6 4")
    assert float(label.get("y")) < grid_top  # above the plot area


def test_forest_intervals_beyond_the_axis_end_in_arrows():
    root = _parse(charts.forest_plot(
        [charts.ForestRow(group="m", label="a", estimate=150.0, low=20.0, high=400.0, tone="good"),
         charts.ForestRow(group="m", label="b", estimate=-10.0, low=-30.0, high=10.0, tone="neutral")],
        chart_id="f", title="t", description="d", axis_label="x", tick_format=str,
    ))
    assert len(list(root.iter(f"{SVG}path"))) == 1  # only a's upper bound runs off the axis


def test_the_timeline_draws_one_line_per_arm():
    from datetime import UTC, datetime, timedelta

    start = datetime(2026, 3, 1, tzinfo=UTC)
    series = [
        charts.TimeSeries(label=arm, points=tuple(
            charts.TimePoint(at=start + timedelta(hours=h), estimate=h * sign, low=h * sign - 1, high=h * sign + 1)
            for h in range(4)
        ))
        for arm, sign in (("b", 1), ("c", -1))
    ]
    root = _parse(charts.timeline_chart(series, chart_id="l", title="t", description="d", y_label="y",
                                        tick_format=str, references=[charts.ReferenceLine(2.5, "guardrail")]))
    assert len(list(root.iter(f"{SVG}polyline"))) == 2 and len(list(root.iter(f"{SVG}polygon"))) == 2
    empty = _parse(charts.timeline_chart([], chart_id="e", title="t", description="d", y_label="y", tick_format=str))
    assert any("No analysis" in (t.text or "") for t in empty.iter(f"{SVG}text"))


@given(
    st.floats(min_value=-1e7, max_value=1e7, allow_nan=False),
    st.floats(min_value=0, max_value=1e7, allow_nan=False),
    st.integers(min_value=2, max_value=8),
)
def test_nice_ticks_cover_the_domain_with_round_even_steps(lo, span, count):
    # Spans below a millionth of the values are beyond what doubles can space evenly (and any chart).
    assume(span >= 1e-6 * max(1.0, abs(lo)))
    hi = lo + span
    ticks = charts.nice_ticks(lo, hi, count)
    assert ticks[0] <= lo and ticks[-1] >= hi
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(ticks) >= 2 and len(ticks) <= 2 * count + 3
    step = ticks[1] - ticks[0]
    assert all(math.isclose(s, step, rel_tol=1e-6, abs_tol=1e-9) for s in steps)
    mantissa = step / 10 ** math.floor(math.log10(step))
    assert any(math.isclose(mantissa, m, rel_tol=1e-6) for m in (1, 2, 5, 10))


def test_the_gmv_means_shown_are_the_ones_the_lift_is_computed_from(analysed):
    """Under CUPED the treatment mean shown is adjusted: the two means give the absolute and relative lifts."""
    document = ResultSnapshot.objects.filter(experiment=analysed).order_by("-window_end").first().data
    assert document["settings"]["cuped"]
    fmt = presenters.metric_formats(SnapshotDocument.from_dict(document))["gmv"]
    stored = next(c for c in document["report"]["comparisons"] if c["arm"] == "arm-1" and c["metric"] == "gmv")
    assert stored["cuped"]
    row = next(r for a in presenters.results_table(SnapshotDocument.from_dict(document), primary_metric="gmv") for r in a.rows
               if r.arm == "arm-1" and r.metric == "gmv")
    adjusted = stored["control_mean"] + stored["absolute"]["estimate"]
    assert row.control_mean == fmt.value(stored["control_mean"])
    assert row.treatment_mean == fmt.value(adjusted)
    if stored["method"].startswith("lin_"):  # CUPED++: both means are the adjusted ones, no observed one stored
        assert row.cuped_label == "CUPED++" and row.treatment_observed == ""
        assert stored["treatment_mean"] == pytest.approx(adjusted)
    else:
        assert row.cuped_label == "CUPED" and row.treatment_observed == fmt.value(stored["treatment_mean"])
    # The relative lift is (adjusted − control) / |control|, exactly as stored.
    assert (adjusted - stored["control_mean"]) / abs(stored["control_mean"]) == pytest.approx(stored["relative"]["estimate"])
    conversion = next(r for a in presenters.results_table(SnapshotDocument.from_dict(document), primary_metric="gmv") for r in a.rows
                      if r.arm == "arm-1" and r.metric == "conversion")
    stored_conversion = next(c for c in document["report"]["comparisons"]
                             if c["arm"] == "arm-1" and c["metric"] == "conversion")
    # Conversion is adjusted only by CUPED++ (schema 5); never an observed mean beside it.
    assert conversion.cuped == bool(stored_conversion["cuped"]) and conversion.treatment_observed == ""
