"""The snapshot document (docs/metrics.md; ``experiments.results.document``) as the dashboard shows it.

Pure functions over the typed form of the document ``compute_results`` stores: no database,
no requests. They decide nothing about the experiment (the pipeline's decision
rule did that); they turn numbers into table rows, chart inputs and sentences,
and say which way is good for each metric (an opt-out going up is bad).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from experiments.dashboard import charts
from experiments.dashboard.formatting import (
    MetricFormat,
    decimals_for,
    number,
    p_value,
    percent,
    relative,
    relative_interval,
)
from experiments.metric_catalog import metric_definition
from experiments.models import Metric
from experiments.results.document import SnapshotDocument
from experiments.stats import Outcome, Rule

GOOD, BAD, NEUTRAL = "good", "bad", "neutral"
TONE_WORDS = {GOOD: "better", BAD: "worse", NEUTRAL: "no significant difference"}
SEGMENT_DIMENSION_LABELS = {
    "age_band": "Age band",
    "province": "Province",
    "platform": "Platform",
    "customer": "New vs returning",
}
OPT_OUT, GMV = Metric.OPT_OUT.value, Metric.GMV.value


def metric_formats(document: SnapshotDocument) -> dict[str, MetricFormat]:
    return {
        key: MetricFormat(key=key, label=spec["label"], kind=spec["kind"], higher_is_better=spec["higher_is_better"])
        for key, spec in document.metrics.items()
    }


def confidence_percent(document: SnapshotDocument) -> str:
    """The intervals' level ("95") from the analysis' alpha."""
    return f"{(1 - document.experiment['alpha']) * 100:g}"


def control_arm(document: SnapshotDocument) -> str:
    return next(arm["key"] for arm in document.arms if arm["is_control"])


def treatment_arms(document: SnapshotDocument) -> list[str]:
    return [arm["key"] for arm in document.arms if not arm["is_control"]]


def comparison_tone(comparison: Mapping, metric: MetricFormat) -> str:
    """Good or bad when significant, judged by the metric's direction; otherwise neutral."""
    estimate = comparison["absolute"]["estimate"]
    if not comparison["significant"] or estimate is None or estimate == 0:
        return NEUTRAL
    return GOOD if (estimate > 0) == metric.higher_is_better else BAD


def comparisons_by_key(comparisons: Sequence[Mapping]) -> dict[tuple[str, str], Mapping]:
    return {(c["arm"], c["metric"]): c for c in comparisons}


def _width(ci: Sequence[float] | None) -> float | None:
    return None if not ci else ci[1] - ci[0]


# --- the results table -----------------------------------------------------------


@dataclass(frozen=True)
class ResultRow:
    arm: str
    metric: str
    metric_label: str
    is_primary: bool
    is_guardrail: bool
    cuped: bool = False
    cuped_note: str = ""
    control_mean: str = "—"
    treatment_mean: str = "—"
    # Under CUPED the treatment's mean shown is the adjusted one (the control's mean plus the
    # adjusted difference, so the lift columns follow from the two shown); this is the observed one.
    treatment_observed: str = ""
    absolute: str = "—"
    absolute_interval: str = ""
    relative: str = "—"
    relative_interval: str = ""
    p_adjusted: str = "—"
    p_raw: str = "—"
    tone: str = NEUTRAL
    tone_word: str = ""
    higher_is_better: bool = True
    skipped_reason: str = ""
    notes: tuple[str, ...] = ()
    cuped_label: str = "CUPED"


@dataclass(frozen=True)
class ArmResults:
    arm: str
    treatment: str
    subjects: int
    rows: tuple[ResultRow, ...]


def adjusted_treatment_mean(comparison: Mapping) -> float:
    """The treatment's mean the lift is computed from: the control's mean plus the estimated difference.

    Without CUPED that is the observed treatment mean; with CUPED the
    difference is the adjusted one (``Δ − θ·Δx``), so the treatment's mean
    shown beside the control's is the adjusted mean, and ``treatment − control``
    and ``(treatment − control) / control`` are the absolute and relative lifts.
    """
    return comparison["control_mean"] + comparison["absolute"]["estimate"]


COVARIATE_LABELS = {"pre_gmv": "GMV before exposure", "pre_orders": "orders before exposure"}
STRATUM_LABELS = {"age_band": "age band", "province": "province", "platform": "platform"}


def adjustment_text(adjusted_for: Mapping) -> str:
    """What a CUPED++ comparison was adjusted for, in words."""
    covariates = [COVARIATE_LABELS.get(name, name) for name in adjusted_for.get("covariates") or ()]
    strata = [STRATUM_LABELS.get(name, name) for name in adjusted_for.get("strata") or ()]
    parts = []
    if covariates:
        parts.append("regression on " + " and ".join(covariates))
    if strata:
        parts.append("post-stratified on " + ", ".join(strata))
    return "; ".join(parts) or "no regressor left (the unadjusted difference)"


def _result_row(comparison: Mapping, metric: MetricFormat, *, is_primary: bool, is_guardrail: bool) -> ResultRow:
    absolute, rel = comparison["absolute"], comparison["relative"]
    tone = comparison_tone(comparison, metric)
    cuped_note, cuped_label = "", "CUPED"
    lin = str(comparison.get("method", "")).startswith("lin_")
    if comparison["cuped"]:
        reduction = comparison.get("variance_reduction")
        if lin:  # CUPED++ (schema 5): Lin's regression, both means adjusted, no observed mean stored
            cuped_label = "CUPED++"
            cuped_note = "CUPED++: " + adjustment_text(comparison.get("adjusted_for") or {})
        else:
            cuped_note = "CUPED: adjusted with each subject's GMV before exposure"
        cuped_note += f"; variance reduced by {percent(reduction, 0)}" if reduction is not None else ""
    return ResultRow(
        arm=comparison["arm"],
        metric=metric.key,
        metric_label=metric.label,
        is_primary=is_primary,
        is_guardrail=is_guardrail,
        cuped=bool(comparison["cuped"]),
        cuped_note=cuped_note,
        cuped_label=cuped_label,
        control_mean=metric.value(comparison["control_mean"]),
        treatment_mean=metric.value(
            adjusted_treatment_mean(comparison) if comparison["cuped"] else comparison["treatment_mean"]
        ),
        treatment_observed=metric.value(comparison["treatment_mean"]) if comparison["cuped"] and not lin else "",
        absolute=metric.difference(absolute["estimate"], width=_width(absolute["ci"])),
        absolute_interval=metric.interval(absolute["ci"]),
        relative=relative(rel["estimate"], decimals_for(_width(rel["ci"]) and _width(rel["ci"]) * 100, minimum=1,
                                                        maximum=2)),
        relative_interval=relative_interval(rel["ci"]),
        p_adjusted=p_value(comparison["p_value_adjusted"]),
        p_raw=p_value(absolute["p_value"]),
        tone=tone,
        tone_word=TONE_WORDS[tone],
        higher_is_better=metric.higher_is_better,
        notes=tuple(comparison.get("notes") or ()),
    )


def results_table(document: SnapshotDocument, *, primary_metric: str) -> list[ArmResults]:
    """Per treatment arm, one row per metric; a metric that could not be compared says why."""
    formats = metric_formats(document)
    report = document.report or {}
    by_key = comparisons_by_key(report.get("comparisons", []))
    skipped = {entry["metric"]: entry["reason"] for entry in document.skipped_metrics}
    guardrail_metrics = {entry["metric"] for entry in (document.guardrails or [])}
    treatments = {arm["key"]: arm for arm in document.arms if not arm["is_control"]}
    tables = []
    for key, arm in treatments.items():
        rows = []
        for metric in formats.values():
            comparison = by_key.get((key, metric.key))
            flags = {"is_primary": metric.key == primary_metric, "is_guardrail": metric.key in guardrail_metrics}
            if comparison is None:
                rows.append(
                    ResultRow(arm=key, metric=metric.key, metric_label=metric.label,
                              higher_is_better=metric.higher_is_better,
                              skipped_reason=skipped.get(metric.key, "not compared in this run"), **flags)
                )
            else:
                rows.append(_result_row(comparison, metric, **flags))
        tables.append(ArmResults(arm=key, treatment=arm["treatment"], subjects=arm["subjects"], rows=tuple(rows)))
    return tables


# --- forest plot -----------------------------------------------------------------


def forest_rows(document: SnapshotDocument) -> list[charts.ForestRow]:
    """Every overall comparison's relative lift in percent, grouped by metric."""
    formats = metric_formats(document)
    comparisons = (document.report or {}).get("comparisons", [])
    rows = []
    for metric in formats.values():
        for comparison in comparisons:
            rel = comparison["relative"]
            if comparison["metric"] != metric.key or rel["estimate"] is None:
                continue
            low, high = rel["ci"] if rel["ci"] else (None, None)
            rows.append(
                charts.ForestRow(
                    group=metric.label + (" (CUPED)" if comparison["cuped"] else ""),
                    label=comparison["arm"],
                    estimate=rel["estimate"] * 100,
                    low=None if low is None else low * 100,
                    high=None if high is None else high * 100,
                    tone=comparison_tone(comparison, metric),
                )
            )
    return rows


def relative_tick(value: float) -> str:
    return relative(value / 100, 0)


# --- the trade-off and the verdict -----------------------------------------------


@dataclass(frozen=True)
class TradeoffRow:
    """One arm of the trade-off chart, with its numbers as the table shows them."""

    arm: str
    opt_out: str
    opt_out_interval: str
    gmv: str
    gmv_interval: str
    guardrails: str
    tone: str
    point: charts.TradeoffPoint


@dataclass(frozen=True)
class DecisionTestRow:
    """One test the decision rule read, as the decision panel lists it."""

    arm: str
    question: str  # "GMV per subject within −5.0%", "Opt-out rate guardrail", …
    estimate: str
    bound: str
    limit: str
    p_value: str
    p_adjusted: str
    status: str  # passes | not shown yet | fails | not testable yet
    tone: str
    reason: str = ""


@dataclass(frozen=True)
class Verdict:
    """The decision engine's verdict as the pages show it (rendered, never re-derived)."""

    text: str
    tone: str
    outcome: str
    rule: str = ""
    reasons: tuple[str, ...] = ()
    final: bool = False
    mode: str = ""
    progress: float | None = None  # the least-advanced arm's share of its planned subjects
    progress_text: str = ""
    earliest_decision_date: str = ""  # ISO 8601
    expected_date: str = ""
    final_since: str = ""  # ISO 8601: an earlier run made this verdict final
    tests: tuple[DecisionTestRow, ...] = ()
    latest_text: str = ""  # a frozen verdict: what this run's numbers would say


# "none": no decision stored yet (not an engine outcome).
OUTCOME_TONES = {Outcome.SHIP: GOOD, Outcome.KEEP_CONTROL: NEUTRAL, Outcome.CONTINUE: NEUTRAL, Outcome.INVALID: BAD,
                 "none": NEUTRAL}
QUESTION_WORDS = {Rule.SUPERIORITY: "beats the control on", Rule.NONINFERIORITY: "stays within the margin on"}


def _decision_test_row(test: Mapping, formats: Mapping[str, MetricFormat]) -> DecisionTestRow:
    fmt = formats.get(test["metric"])
    label = fmt.label if fmt else test["metric"]

    def show(value: float | None) -> str:
        if value is None:
            return "—"
        if test.get("relative"):
            return relative(value)
        return fmt.difference(value) if fmt else f"{value:+.4g}"

    higher = test.get("higher_is_better", True)
    if test["kind"] == "guardrail":
        question = f"{label} guardrail"
    else:
        question = f"{QUESTION_WORDS.get(test['kind'], test['kind'])} {label}"
    margin = test.get("margin")
    limit = "0" if margin is None else show(-margin if higher else margin)
    if test.get("p_value") is None:
        status, tone = "not testable yet", NEUTRAL
    elif test.get("passed"):
        status, tone = "passes", GOOD
    elif test.get("ruled_out"):
        status, tone = "fails", BAD
    else:
        status, tone = "not shown yet", NEUTRAL
    return DecisionTestRow(
        arm=test["arm"], question=question, estimate=show(test.get("estimate")), bound=show(test.get("bound")),
        limit=limit, p_value=p_value(test.get("p_value")), p_adjusted=p_value(test.get("p_value_adjusted")),
        status=status, tone=tone, reason=test.get("reason", ""),
    )


def _progress_text(progress: Mapping | None, mode: str) -> str:
    if not progress:
        return ""
    parts = []
    targets = progress.get("targets")
    if targets:
        smallest = min(targets.values())
        parts.append(f"{percent(min(progress.get('share') or 0.0, 1.0), 0)} of the planned subjects "
                     f"(target {number(smallest)} per arm)")
    elif mode == "fixed":
        parts.append("no planned sample size yet")
    runtime, minimum = progress.get("runtime_days"), progress.get("minimum_runtime_days")
    if runtime is not None and minimum:
        parts.append(f"day {min(runtime, 9_999):.0f} of at least {minimum:g}")
    return "; ".join(parts)


def verdict(document: SnapshotDocument, **_ignored) -> Verdict:
    """The stored decision in words, with the numbers behind it (schema 2, or schema 1's shape)."""
    from experiments.stats.decide import Decision

    raw = document.decision
    if not raw:
        return Verdict(text=document.message or "No decision yet.", tone=NEUTRAL, outcome="none")
    formats = metric_formats(document)
    decision = Decision.from_dict(raw)
    progress = raw.get("progress") or {}
    latest = raw.get("latest") or {}
    return Verdict(
        text=decision.summary or "No decision yet.",
        tone=OUTCOME_TONES.get(decision.outcome, NEUTRAL),
        outcome=decision.outcome,
        rule=decision.rule_text,
        reasons=decision.reasons,
        final=decision.final,
        mode=decision.mode,
        progress=progress.get("share"),
        progress_text=_progress_text(progress, decision.mode),
        earliest_decision_date=raw.get("earliest_decision_date") or "",
        expected_date=raw.get("expected_date") or "",
        final_since=raw.get("final_since") or "",
        tests=tuple(_decision_test_row(test, formats) for test in raw.get("tests") or ()),
        latest_text=latest.get("summary", "") if raw.get("frozen") else "",
    )


def primary_margin_limit(document: SnapshotDocument, metric: str) -> float | None:
    """The primary metric's non-inferiority margin in the metric's unit (−5% of the control's GMV → IDR)."""
    decision = document.decision or {}
    margin = decision.get("margin")
    if margin is None or decision.get("primary_metric") != metric:
        return None
    comparison = next(
        (c for c in (document.report or {}).get("comparisons", []) if c["metric"] == metric), None
    )
    if comparison is None or not comparison.get("control_mean"):
        return None
    loss = margin * abs(comparison["control_mean"])
    return -loss if decision.get("primary_higher_is_better", True) else loss


@dataclass(frozen=True)
class Tradeoff:
    rows: tuple[TradeoffRow, ...]
    missing: tuple[str, ...]  # arms that cannot be placed, with why
    x_limit: float | None  # opt-out guardrail, pp
    y_limit: float | None  # GMV guardrail, IDR
    x_limit_label: str
    y_limit_label: str
    verdict: Verdict
    chart: charts.ResponsiveChart | None = None


def _guardrail_entries(document: SnapshotDocument) -> list[Mapping]:
    return list(document.guardrails or [])


def _guardrails_of(document: SnapshotDocument, arm: str) -> list[Mapping]:
    return [entry for entry in _guardrail_entries(document) if entry["arm"] == arm]


def _guardrail_passes(entry: Mapping) -> bool:
    ni = entry.get("noninferiority")
    return bool(ni and ni["noninferior"] and not entry["breached"])


def guardrail_limit(document: SnapshotDocument, metric: str) -> float | None:
    """The harmful-side boundary of a guardrail in stored units (+margin for opt-out, −margin for GMV)."""
    for entry in _guardrail_entries(document):
        if entry["metric"] == metric:
            return -entry["margin"] if entry["higher_is_better"] else entry["margin"]
    return None


def _metric_phrase(metric: MetricFormat) -> str:
    """How the metric reads inside a sentence: the catalog's phrase, else (an older snapshot's
    metric) its label in lower case."""
    try:
        return metric_definition(metric.key).phrase
    except KeyError:
        return metric.label.lower()


def _effect_phrase(comparison: Mapping, metric: MetricFormat) -> str:
    """"cuts opt-outs by 1.8 pp" / "raises GMV per subject by IDR 1,234 (+5.2%)"."""
    estimate = comparison["absolute"]["estimate"]
    phrase = _metric_phrase(metric)
    verb = "raises" if estimate > 0 else "cuts" if estimate < 0 else "leaves unchanged"
    magnitude = metric.difference(abs(estimate), width=_width(comparison["absolute"]["ci"])).lstrip("+")
    text = f"{verb} {phrase} by {magnitude}"
    rel = comparison["relative"]["estimate"]
    if metric.unit != "percent" and rel is not None:
        text += f" ({relative(rel)})"
    if not comparison["significant"]:
        text += " (not significant)"
    return text


def _guardrail_phrase(entry: Mapping, metric: MetricFormat, comparison: Mapping | None = None) -> str:
    """What the arm does to a guardrail metric, and whether that is within the tolerated harm."""
    phrase = _metric_phrase(metric)
    bound = metric.difference(-entry["margin"] if entry["higher_is_better"] else entry["margin"])
    effect = _effect_phrase(comparison, metric) if comparison is not None else ""
    if entry["breached"]:
        return f"{effect}, breaching the {bound} guardrail" if effect else f"breaches the {phrase} guardrail of {bound}"
    if _guardrail_passes(entry):
        if comparison is not None and comparison_tone(comparison, metric) == GOOD:
            return f"{effect} (within the {bound} guardrail)"
        return f"keeps {phrase} within {bound} of the control (non-inferior)"
    if entry.get("noninferiority") is None:
        return f"cannot be tested on {phrase} yet"
    return f"{effect}; staying within the {bound} guardrail is not shown yet" if effect else (
        f"has not yet shown {phrase} stays within {bound} of the control"
    )


def _axis_limit(document: SnapshotDocument, metric: str, fmt: MetricFormat | None, name: str) -> tuple[float | None, str]:
    """The line an axis draws: the primary metric's margin if it is the primary, else its guardrail."""
    if fmt is None:
        return None, ""
    margin = primary_margin_limit(document, metric)
    if margin is not None:
        relative_margin = (document.decision or {}).get("margin")
        return margin, f"{name} margin {relative(-relative_margin)} ({fmt.difference(margin)})"
    limit = guardrail_limit(document, metric)
    return limit, "" if limit is None else f"{name} guardrail {fmt.difference(limit)}"


def tradeoff(document: SnapshotDocument, *, chart_id: str = "tradeoff-chart", **_ignored) -> Tradeoff:
    """Each treatment arm's Δ opt-out (pp) against Δ GMV per subject (IDR), and the verdict."""
    formats = metric_formats(document)
    by_key = comparisons_by_key((document.report or {}).get("comparisons", []))
    decision = document.decision or {}
    shipped = decision.get("arm") if decision.get("outcome") == Outcome.SHIP else None
    opt_out, gmv = formats.get(OPT_OUT), formats.get(GMV)
    rows, missing = [], []
    for arm in treatment_arms(document):
        x_cmp, y_cmp = by_key.get((arm, OPT_OUT)), by_key.get((arm, GMV))
        if x_cmp is None or y_cmp is None or opt_out is None or gmv is None:
            absent = [label for label, cmp in (("opt-out rate", x_cmp), ("GMV per subject", y_cmp)) if cmp is None]
            missing.append(f"Arm {arm}: {' and '.join(absent)} cannot be compared yet.")
            continue
        entries = _guardrails_of(document, arm)
        fails = any(entry["breached"] or not _guardrail_passes(entry) for entry in entries)
        tone = GOOD if arm == shipped else BAD if fails else NEUTRAL
        x_ci, y_ci = x_cmp["absolute"]["ci"] or (None, None), y_cmp["absolute"]["ci"] or (None, None)
        guardrail_text = "; ".join(
            _guardrail_phrase(entry, formats[entry["metric"]], by_key.get((arm, entry["metric"])))
            for entry in entries
            if entry["metric"] in formats
        )
        rows.append(
            TradeoffRow(
                arm=arm,
                opt_out=opt_out.difference(x_cmp["absolute"]["estimate"], width=_width(x_cmp["absolute"]["ci"])),
                opt_out_interval=opt_out.interval(x_cmp["absolute"]["ci"]),
                gmv=gmv.difference(y_cmp["absolute"]["estimate"], width=_width(y_cmp["absolute"]["ci"])),
                gmv_interval=gmv.interval(y_cmp["absolute"]["ci"]),
                guardrails=guardrail_text or "no guardrail",
                tone=tone,
                point=charts.TradeoffPoint(
                    label=arm,
                    x=x_cmp["absolute"]["estimate"] * 100,
                    x_low=None if x_ci[0] is None else x_ci[0] * 100,
                    x_high=None if x_ci[1] is None else x_ci[1] * 100,
                    y=y_cmp["absolute"]["estimate"],
                    y_low=y_ci[0],
                    y_high=y_ci[1],
                    tone=tone,
                    highlighted=arm == shipped,
                ),
            )
        )
    x_limit, x_limit_label = _axis_limit(document, OPT_OUT, opt_out, "opt-out")
    y_limit, y_limit_label = _axis_limit(document, GMV, gmv, "GMV")
    result_verdict = verdict(document)
    chart = None
    if rows:
        description = (
            "Each treatment arm is a point: its change in opt-out rate against the control (percentage points, "
            "left is better for privacy) and its change in GMV per subject (IDR, up is better for revenue), with "
            f"{confidence_percent(document)}% interval cross-hairs; the control sits at the origin. "
            + (f"The shaded band right of {x_limit * 100:+.2g} pp is beyond the {x_limit_label}. "
               if x_limit is not None else "")
            + (f"The shaded band below {gmv.difference(y_limit)} is beyond the {y_limit_label}. "
               if y_limit is not None else "")
            + " ".join(f"Arm {row.arm}: opt-out {row.opt_out} {row.opt_out_interval}, GMV {row.gmv} "
                       f"{row.gmv_interval}." for row in rows)
            + " Verdict: " + result_verdict.text
        )
        chart = charts.responsive(
            charts.tradeoff_chart,
            points=[row.point for row in rows],
            chart_id=chart_id,
            title="Privacy/revenue trade-off: change in opt-out rate against change in GMV per subject",
            description=description,
            x_label="Δ opt-out rate vs control (pp) — left is better for privacy",
            y_label="Δ GMV per subject vs control (IDR) — up is better",
            x_format=opt_out.axis,
            y_format=gmv.axis,
            x_limit=None if x_limit is None else x_limit * 100,
            x_limit_label=x_limit_label,
            y_limit=y_limit,
            y_limit_label=y_limit_label,
            control_label="control" if control_arm(document) == "control" else f"control: {control_arm(document)}",
            x_label_short="Δ opt-out rate (pp) — left is better",
            y_label_short="Δ GMV per subject (IDR)",
        )
    return Tradeoff(
        rows=tuple(rows), missing=tuple(missing), x_limit=x_limit, y_limit=y_limit, x_limit_label=x_limit_label,
        y_limit_label=y_limit_label, verdict=result_verdict, chart=chart,
    )


# --- segments --------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentCell:
    arm: str
    subjects: str  # "control n / arm n"
    effect: str = "—"
    interval: str = ""
    p_adjusted: str = "—"
    tone: str = NEUTRAL
    tone_word: str = ""
    skipped_reason: str = ""


@dataclass(frozen=True)
class SegmentRow:
    value: str
    cells: tuple[SegmentCell, ...]
    srm_flag: bool = False


@dataclass(frozen=True)
class SegmentTable:
    dimension: str
    label: str
    rows: tuple[SegmentRow, ...]
    interaction: tuple = ()  # InteractionSummary per arm (schema 5): read it before any cell


def _cell_size(segment: Mapping, arm: str) -> str:
    """A segment cell's subject count, or what stands for it when small cells are suppressed."""
    if arm in (segment.get("suppressed") or {}):
        return "suppressed"
    return number(segment.get("arms", {}).get(arm, 0))


def segment_tables(document: SnapshotDocument, *, metric: str) -> list[SegmentTable]:
    """One table per segment dimension for one metric; p-values BH-adjusted across all segments."""
    formats = metric_formats(document)
    if metric not in formats:
        return []
    fmt = formats[metric]
    control = control_arm(document)
    treatments = treatment_arms(document)
    grouped: dict[str, list[SegmentRow]] = {}
    for segment in (document.report or {}).get("segments", []):
        dimension, _, value = segment["segment"].partition("=")
        by_arm = {c["arm"]: c for c in segment["comparisons"] if c["metric"] == metric}
        skipped = {s["arm"]: s["reason"] for s in segment.get("skipped", []) if s.get("metric") == metric}
        cells = []
        for arm in treatments:
            subjects = f"{_cell_size(segment, control)} / {_cell_size(segment, arm)}"
            comparison = by_arm.get(arm)
            if comparison is None:
                cells.append(SegmentCell(arm=arm, subjects=subjects,
                                         skipped_reason=skipped.get(arm, "not compared")))
                continue
            tone = comparison_tone(comparison, fmt)
            absolute = comparison["absolute"]
            cells.append(
                SegmentCell(
                    arm=arm,
                    subjects=subjects,
                    effect=fmt.difference(absolute["estimate"], width=_width(absolute["ci"])),
                    interval=fmt.interval(absolute["ci"]),
                    p_adjusted=p_value(comparison["p_value_adjusted"]),
                    tone=tone,
                    tone_word=TONE_WORDS[tone],
                )
            )
        srm = segment.get("srm") or {}
        grouped.setdefault(dimension, []).append(
            SegmentRow(value=value, cells=tuple(cells), srm_flag=bool(srm.get("flag")))
        )
    order = list((document.settings or {}).get("segment_dimensions") or SEGMENT_DIMENSION_LABELS)
    order += [dimension for dimension in grouped if dimension not in order]
    interactions = interaction_summaries(document, metric=metric)
    return [
        SegmentTable(dimension=dimension, label=SEGMENT_DIMENSION_LABELS.get(dimension, dimension),
                     rows=tuple(grouped[dimension]), interaction=tuple(interactions.get(dimension, ())))
        for dimension in order
        if dimension in grouped
    ]


# --- recommendation quality ------------------------------------------------------


@dataclass(frozen=True)
class RecommendationGmvShare:
    """GMV attributed to recommendations: bought after a click on the same product (selectors)."""

    attributed: float
    total: float

    @property
    def share(self) -> float | None:
        return self.attributed / self.total if self.total > 0 else None


@dataclass(frozen=True)
class RecommendationRow:
    arm: str
    is_control: bool
    impressions: str
    clicks: str
    impressions_per_subject: str
    ctr: str
    ctr_lift: str = ""
    ctr_interval: str = ""
    ctr_p_adjusted: str = ""
    tone: str = NEUTRAL
    tone_word: str = ""
    gmv_share: str = "—"
    gmv_attributed: str = "—"


def recommendation_rows(
    document: SnapshotDocument, *, gmv_shares: Mapping[str, RecommendationGmvShare] | None = None
) -> list[RecommendationRow]:
    """CTR per arm from the stored click and impression sums, its lift, and the share of GMV."""
    formats = metric_formats(document)
    by_key = comparisons_by_key((document.report or {}).get("comparisons", []))
    gmv_shares = gmv_shares or {}
    rows = []
    for arm in document.arms:
        key = arm["key"]
        ctr = (document.statistics or {}).get(key, {}).get("ctr")
        if ctr is None:
            continue
        impressions, clicks, n = ctr["denominator_sum"], ctr["numerator_sum"], ctr["n"]
        comparison = by_key.get((key, "ctr"))
        share = gmv_shares.get(key)
        row = {
            "arm": key,
            "is_control": arm["is_control"],
            "impressions": number(impressions),
            "clicks": number(clicks),
            "impressions_per_subject": number(impressions / n, 2) if n else "—",
            "ctr": percent(clicks / impressions, 2) if impressions else "—",
            "gmv_share": "—" if share is None or share.share is None else percent(share.share, 1),
            "gmv_attributed": "—" if share is None else "IDR " + number(share.attributed),
        }
        if comparison is not None and "ctr" in formats:
            tone = comparison_tone(comparison, formats["ctr"])
            absolute = comparison["absolute"]
            row.update(
                ctr_lift=formats["ctr"].difference(absolute["estimate"], width=_width(absolute["ci"])),
                ctr_interval=formats["ctr"].interval(absolute["ci"]),
                ctr_p_adjusted=p_value(comparison["p_value_adjusted"]),
                tone=tone,
                tone_word=TONE_WORDS[tone],
            )
        rows.append(RecommendationRow(**row))
    return rows


# --- guardrails and the sample-ratio test -----------------------------------------


@dataclass(frozen=True)
class GuardrailRow:
    arm: str
    metric_label: str
    margin: str
    estimate: str
    bound: str
    p_value: str
    status: str
    tone: str
    sequential_interval: str
    reason: str


def guardrail_rows(document: SnapshotDocument) -> list[GuardrailRow]:
    formats = metric_formats(document)
    rows = []
    for entry in _guardrail_entries(document):
        fmt = formats.get(entry["metric"])
        if fmt is None:
            continue
        ni, seq = entry.get("noninferiority"), entry.get("sequential")
        if entry["breached"]:
            status, tone = "breached", BAD
        elif ni and ni["noninferior"]:
            status, tone = "non-inferior", GOOD
        elif ni is None:
            status, tone = "not testable yet", NEUTRAL
        else:
            status, tone = "not yet shown", NEUTRAL
        limit = -entry["margin"] if entry["higher_is_better"] else entry["margin"]
        # A relative guardrail's test is on the relative lift; its limit is shown both ways.
        show = relative if entry.get("relative") else fmt.difference
        margin_text = fmt.difference(limit)
        if entry.get("relative"):
            relative_limit = entry["relative_margin"] * (-1 if entry["higher_is_better"] else 1)
            margin_text = f"{relative(relative_limit)} ({margin_text})"
        rows.append(
            GuardrailRow(
                arm=entry["arm"],
                metric_label=fmt.label,
                margin=margin_text,
                estimate="—" if ni is None else show(ni["estimate"]),
                bound="—" if ni is None else show(ni["bound"]),
                p_value="—" if ni is None else p_value(ni["p_value"]),
                status=status,
                tone=tone,
                sequential_interval="" if not seq else fmt.interval(seq["confidence_sequence"]),
                reason=entry.get("reason", ""),
            )
        )
    return rows


@dataclass(frozen=True)
class DescriptiveRatio:
    """A ratio shown per arm without a test (schema 3's ``descriptive``): what, why not tested, the numbers."""

    key: str
    label: str
    caveat: str
    numerator: str
    denominator: str
    arms: tuple[tuple[str, str, str, str], ...]  # (arm, numerator, denominator, ratio)


def descriptive_ratios(document: SnapshotDocument) -> list[DescriptiveRatio]:
    """The document's descriptive ratios; none in schema 1–2 documents, which did not have them."""
    ratios = []
    for key, entry in (document.descriptive or {}).items():
        ratios.append(
            DescriptiveRatio(
                key=key,
                label=entry.get("label", key),
                caveat=entry.get("caveat", ""),
                numerator=entry.get("numerator", ""),
                denominator=entry.get("denominator", ""),
                arms=tuple(
                    (
                        arm,
                        number(values.get("withdrew") or 0),
                        number(values.get("granted") or 0),
                        "—" if values.get("ratio") is None else percent(values["ratio"]),
                    )
                    for arm, values in (entry.get("arms") or {}).items()
                ),
            )
        )
    return ratios


@dataclass(frozen=True)
class BayesianRow:
    """One arm × metric of schema 4's ``bayesian_report``: the posterior read as GrowthBook does."""

    arm: str
    metric: str
    label: str
    chance_to_win: str
    risk: str  # the expected loss of shipping the treatment, relative
    interval: str  # the credible interval of the relative effect


def bayesian_rows(document: SnapshotDocument) -> list[BayesianRow]:
    """The Bayesian engine's posteriors; none for the frequentist engine or schema 1–3 documents."""
    report = document.bayesian_report or {}
    formats = metric_formats(document)
    rows = []
    for comparison in report.get("comparisons", []):
        # The relative effect when defined (a zero control mean has none), else the absolute one.
        effect = comparison["relative"] if comparison["relative"].get("chance_to_win") is not None else (
            comparison["absolute"]
        )
        risk = (effect.get("risk") or {}).get("treatment")
        ci = effect.get("ci")
        fmt = formats.get(comparison["metric"])
        rows.append(
            BayesianRow(
                arm=comparison["arm"],
                metric=comparison["metric"],
                label=fmt.label if fmt else comparison["metric"],
                chance_to_win="—" if effect.get("chance_to_win") is None else percent(effect["chance_to_win"]),
                risk="—" if risk is None else percent(risk, 2),
                interval="—" if ci is None else relative_interval(ci),
            )
        )
    return rows


# --- schema 5: adjustment, health, heterogeneity -----------------------------------

ADJUSTMENT_METHOD_LABELS = {
    "cuped++": "CUPED++",
    "stratification": "Post-stratification",
    "cuped": "CUPED",
    "none": "None",
}


@dataclass(frozen=True)
class AdjustmentRow:
    """One metric's variance adjustment (schema 5 ``adjustment``)."""

    metric: str
    label: str
    method: str
    used: str  # the covariates and strata, in words
    removed: str  # per treatment arm the share of the variance removed
    fallback_reason: str = ""


def adjustment_rows(document: SnapshotDocument) -> list[AdjustmentRow]:
    """Which adjustment each metric used and the variance it removed; none before schema 5."""
    formats = metric_formats(document)
    rows = []
    for metric, entry in (document.adjustment or {}).items():
        fmt = formats.get(metric)
        method = entry.get("method", "none")
        if method == "cuped":
            used = "regression on GMV before exposure"
        elif method == "none":
            used = "—"
        else:
            used = adjustment_text(entry)
        removed = ", ".join(
            f"{arm}: {'—' if share is None else percent(share, 0)}"
            for arm, share in (entry.get("variance_reduction") or {}).items()
        )
        rows.append(
            AdjustmentRow(
                metric=metric,
                label=fmt.label if fmt else metric,
                method=ADJUSTMENT_METHOD_LABELS.get(method, method),
                used=used,
                removed=removed if method != "none" else "—",
                fallback_reason=entry.get("fallback_reason") or "",
            )
        )
    return rows


HEALTH_CHECK_LABELS = {
    "multiple_exposures": "Multiple exposures",
    "pre_exposure_bias": "Pre-exposure bias",
    "suspicious_uplift": "Suspicious uplift",
}


@dataclass(frozen=True)
class HealthFlagRow:
    check: str
    label: str
    where: str  # "arm-1 · GMV" or "—"
    reason: str


@dataclass(frozen=True)
class HealthSummary:
    healthy: bool
    flags: tuple[HealthFlagRow, ...]
    checked: str  # what was checked, in words


def health_summary(document: SnapshotDocument) -> HealthSummary | None:
    """The health checks' flags with their reasons; None before schema 5 (or before any comparison)."""
    health = document.health
    if not health:
        return None
    formats = metric_formats(document)
    flags = []
    for flag in health.get("flags", []):
        metric = flag.get("metric")
        name = formats[metric].label if metric in formats else metric
        where = " · ".join(part for part in (flag.get("arm"), name) if part) or "—"
        flags.append(
            HealthFlagRow(
                check=flag["check"],
                label=HEALTH_CHECK_LABELS.get(flag["check"], flag["check"]),
                where=where,
                reason=flag["reason"],
            )
        )
    bias = health.get("pre_exposure_bias") or {}
    exposures = health.get("multiple_exposures")
    checked = (
        f"multiple exposures ({'not checked for this source' if exposures is None else number(exposures) + ' subjects'}); "
        f"{len(bias.get('tests') or [])} pre-exposure balance tests at p < {bias.get('threshold', 0.001):g}; "
        f"relative effects beyond ±{percent((health.get('suspicious_uplift') or {}).get('bound', 0.5), 0)}"
    )
    return HealthSummary(healthy=bool(health.get("healthy")), flags=tuple(flags), checked=checked)


@dataclass(frozen=True)
class InteractionSummary:
    """The treatment × segment interaction test of one dimension, arm and metric."""

    arm: str
    text: str
    differs: bool  # BH-adjusted p below alpha: the segments' effects differ


def interaction_summaries(document: SnapshotDocument, *, metric: str) -> dict[str, list[InteractionSummary]]:
    """Per segment dimension, the interaction test of each arm for one metric (schema 5)."""
    alpha = float(document.experiment.get("alpha", 0.05))
    result: dict[str, list[InteractionSummary]] = {}
    for test in (document.heterogeneity or {}).get("interaction_tests", []):
        if test.get("metric") != metric:
            continue
        adjusted = test.get("p_value_adjusted")
        differs = adjusted is not None and adjusted < alpha
        text = (
            f"{test['arm']}: χ²({test['degrees_of_freedom']}) = {test['q']:.2f}, p = {p_value(test['p_value'])}"
            + (f" (BH-adjusted {p_value(adjusted)})" if adjusted is not None else "")
            + (" — the segments' effects differ" if differs else " — no evidence that the segments differ")
        )
        result.setdefault(test.get("dimension") or "", []).append(
            InteractionSummary(arm=test["arm"], text=text, differs=differs)
        )
    return result


@dataclass(frozen=True)
class ExposureDayRow:
    day: int
    cells: tuple[tuple[str, str, str], ...]  # (arm, effect, interval)


@dataclass(frozen=True)
class ExposureDays:
    metric: str
    label: str
    rows: tuple[ExposureDayRow, ...]
    trends: tuple[str, ...]  # per arm, the trend test in words


def exposure_days(document: SnapshotDocument, *, metric: str) -> ExposureDays | None:
    """The effect by day since first exposure for one metric, with the trend tests (schema 5)."""
    days = (document.heterogeneity or {}).get("exposure_days")
    formats = metric_formats(document)
    if not days or metric not in formats:
        return None
    fmt = formats[metric]
    rows = []
    for entry in days.get("days", []):
        cells = tuple(
            (
                c["arm"],
                fmt.difference(c["absolute"]["estimate"], width=_width(c["absolute"]["ci"])),
                fmt.interval(c["absolute"]["ci"]),
            )
            for c in entry.get("comparisons", [])
            if c["metric"] == metric
        )
        if cells:
            rows.append(ExposureDayRow(day=int(entry["day"]), cells=cells))
    if not rows:
        return None
    trends = tuple(
        f"{trend['arm']}: the effect changes by {fmt.difference(trend['slope'])} per day "
        f"(p ≤ {p_value(trend['p_value_bound'])}, conservative) — "
        + ("a novelty or learning effect" if trend["significant"] else "no evidence of a trend")
        for trend in days.get("trends", [])
        if trend["metric"] == metric
    )
    return ExposureDays(metric=metric, label=fmt.label, rows=tuple(rows), trends=trends)


@dataclass(frozen=True)
class SrmSummary:
    flag: bool | None
    p_value: str
    chi2: str
    arms: tuple[tuple[str, str, str], ...]  # (arm, observed, expected)


def srm_summary(document: SnapshotDocument) -> SrmSummary | None:
    srm = document.srm
    if not srm:
        return None
    return SrmSummary(
        flag=srm.get("flag"),
        p_value=p_value(srm.get("p_value")),
        chi2=number(srm.get("chi2") or 0.0, 2),
        arms=tuple(
            (arm, number(observed), number(srm.get("expected", {}).get(arm, 0.0), 1))
            for arm, observed in srm.get("observed", {}).items()
        ),
    )


@dataclass(frozen=True)
class PageState:
    """What the detail page can show for the latest snapshot."""

    kind: str  # none | old_schema | unreadable | no_exposures | arm_without_exposures | ok
    message: str = ""
    details: dict = field(default_factory=dict)
