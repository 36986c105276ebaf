"""The dashboard's downloads and its JSON endpoint: the bodies of export.csv, export.json and results.json.

Every body is built from the latest snapshot as ``selectors.snapshot_latest``
returns it (small segment cells already suppressed); the views only wrap them
in responses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from experiments.dashboard import presenters
from experiments.dashboard.presenters import adjusted_treatment_mean
from experiments.models import Experiment, ResultSnapshot
from experiments.results.document import SnapshotDocument

if TYPE_CHECKING:
    from experiments.dashboard.pages import ResultsPage


def download_name(*, experiment: Experiment, snapshot: ResultSnapshot, extension: str) -> str:
    """The file name of a download: the experiment and the run's window end, local time."""
    stamp = timezone.localtime(snapshot.window_end).strftime("%Y%m%dT%H%M")
    return f"{experiment.key}-results-{stamp}.{extension}"


# --- export.json -------------------------------------------------------------------


def export_json_body(*, experiment: Experiment, snapshot: ResultSnapshot) -> str:
    """The snapshot as stored, in any schema version, with its run metadata."""
    body = {
        "experiment": experiment.key,
        "snapshot": {
            "id": snapshot.pk, "schema_version": snapshot.schema_version, "status": snapshot.status,
            "phase": snapshot.phase, "window_start": snapshot.window_start, "window_end": snapshot.window_end,
            "computed_at": snapshot.computed_at, "subjects": snapshot.subjects,
        },
        "data": snapshot.data,
    }
    return json.dumps(body, cls=DjangoJSONEncoder, indent=2, allow_nan=False)


# --- export.csv --------------------------------------------------------------------


CSV_COLUMNS = (
    "scope", "segment", "arm", "metric", "metric_label", "higher_is_better", "method", "cuped",
    "control_n", "treatment_n", "control_mean", "treatment_mean", "treatment_mean_adjusted",
    "absolute_estimate", "absolute_ci_low", "absolute_ci_high",
    "relative_estimate", "relative_ci_low", "relative_ci_high",
    "p_value", "p_value_adjusted", "adjustment", "significant", "skipped_reason",
    # guardrail, sample_ratio and decision rows (scope says which)
    "margin", "bound", "status", "final", "detail",
)


def _csv_comparison(scope: str, segment: str, comparison: Mapping, metric: Mapping, adjustment: str) -> dict:
    absolute, rel = comparison["absolute"], comparison["relative"]
    abs_ci, rel_ci = absolute["ci"] or (None, None), rel["ci"] or (None, None)
    return {
        "scope": scope, "segment": segment, "arm": comparison["arm"], "metric": comparison["metric"],
        "metric_label": metric["label"], "higher_is_better": metric["higher_is_better"],
        "method": comparison["method"], "cuped": comparison["cuped"],
        "control_n": comparison["control_n"], "treatment_n": comparison["treatment_n"],
        "control_mean": comparison["control_mean"], "treatment_mean": comparison["treatment_mean"],
        "treatment_mean_adjusted": adjusted_treatment_mean(comparison) if comparison["cuped"] else None,
        "absolute_estimate": absolute["estimate"], "absolute_ci_low": abs_ci[0], "absolute_ci_high": abs_ci[1],
        "relative_estimate": rel["estimate"], "relative_ci_low": rel_ci[0], "relative_ci_high": rel_ci[1],
        "p_value": absolute["p_value"], "p_value_adjusted": comparison["p_value_adjusted"],
        "adjustment": adjustment, "significant": comparison["significant"], "skipped_reason": "",
    }


def _csv_guardrail(entry: Mapping, metrics: Mapping) -> dict:
    ni = entry.get("noninferiority") or {}
    if entry["breached"]:
        status = "breached"
    elif not ni:
        status = "not testable yet"
    else:
        status = "non-inferior" if ni["noninferior"] else "not yet shown"
    return {
        "scope": "guardrail", "arm": entry["arm"], "metric": entry["metric"],
        "metric_label": metrics.get(entry["metric"], {}).get("label", entry["metric"]),
        "higher_is_better": entry["higher_is_better"],
        # The tolerated harm in the metric's unit, signed to the harmful side, as on the page.
        "margin": -entry["margin"] if entry["higher_is_better"] else entry["margin"],
        "absolute_estimate": ni.get("estimate"), "bound": ni.get("bound"), "p_value": ni.get("p_value"),
        "status": status, "detail": entry.get("reason", ""),
    }


def _csv_sample_ratio(srm: Mapping) -> dict:
    observed, expected = srm.get("observed", {}), srm.get("expected", {})
    return {
        "scope": "sample_ratio", "p_value": srm["p_value"], "bound": srm["threshold"],
        "status": "mismatch" if srm["flag"] else "ok",
        "detail": f"chi2 = {srm['chi2']:.4g}; observed / expected: "
        + ", ".join(f"{arm} {observed[arm]} / {expected.get(arm, 0):.1f}" for arm in observed),
    }


def _csv_decision(decision: Mapping) -> dict:
    """The decision as results.py stored it in the snapshot: never re-derived here."""
    return {
        "scope": "decision", "arm": decision.get("arm") or "", "metric": decision.get("primary_metric") or "",
        "status": decision.get("outcome", ""), "final": bool(decision.get("final")),
        "detail": " ".join(part for part in (decision.get("summary"), decision.get("rule_text")) if part),
    }


def csv_records(document: SnapshotDocument) -> Iterator[dict]:
    """One record per comparison (overall, then every segment), then the skipped ones with why,
    then each guardrail test, the sample-ratio check and the stored decision."""
    report = document.report or {}
    metrics = document.metrics
    adjustment = report.get("adjustment", {})
    for comparison in report.get("comparisons", []):
        # Schema 2 names each comparison's family; schema 1 had one family for them all.
        family = comparison.get("family")
        yield _csv_comparison("overall", "", comparison, metrics[comparison["metric"]],
                              adjustment.get(family, "") if family else adjustment.get("comparisons", ""))
    for entry in document.skipped_metrics:
        yield {"scope": "overall", "metric": entry["metric"], "metric_label": metrics[entry["metric"]]["label"],
               "skipped_reason": entry["reason"]}
    for segment in report.get("segments", []):
        for comparison in segment["comparisons"]:
            yield _csv_comparison("segment", segment["segment"], comparison, metrics[comparison["metric"]],
                                  adjustment.get("segments", ""))
        for entry in segment.get("skipped", []):
            yield {"scope": "segment", "segment": segment["segment"], "arm": entry.get("arm") or "",
                   "metric": entry.get("metric") or "", "skipped_reason": entry["reason"]}
    for entry in document.guardrails or []:
        yield _csv_guardrail(entry, metrics)
    if document.srm:
        yield _csv_sample_ratio(document.srm)
    if document.decision:
        yield _csv_decision(document.decision)


_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value) -> object:
    """A cell a spreadsheet shows as text: text starting like a formula is defused with a quote.

    Segment values come from the marketplace's subject attributes, so an export
    opened in a spreadsheet must not run them (OWASP "CSV injection").
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def export_csv_rows(*, experiment: Experiment, snapshot: ResultSnapshot) -> Iterator[list]:
    """The header, then every record of ``csv_records`` as cells, with the experiment and the run's times."""
    header = ("experiment", "window_start", "window_end", "computed_at", *CSV_COLUMNS)
    yield list(header)
    # Local times with their offset, as the pages show them (2026-12-01T14:00:00+07:00).
    times = {
        name: timezone.localtime(getattr(snapshot, name)).isoformat()
        for name in ("window_start", "window_end", "computed_at")
    }
    for record in csv_records(SnapshotDocument.from_dict(snapshot.data)):
        values = {"experiment": experiment.key, **times, **record}
        yield [csv_cell(values.get(column)) for column in header]


# --- results.json ------------------------------------------------------------------


def results_payload(page: ResultsPage) -> dict:
    """The detail page's data for scripts: raw numbers from the snapshot, plus what the page adds."""
    experiment, snapshot, document = page.experiment, page.snapshot, page.document
    payload: dict = {
        "experiment": {
            "key": experiment.key,
            "name": experiment.name,
            "status": experiment.status,
            "owner": experiment.owner.get_username(),
            "primary_metric": experiment.primary_metric,
            "alpha": experiment.alpha,
            "planned_subjects_per_arm": experiment.planned_subjects_per_arm,
            "started_at": experiment.started_at,
            "ended_at": experiment.ended_at,
            "arms": [
                {
                    "key": arm.key,
                    "is_control": arm.is_control,
                    "weight": arm.weight,
                    "treatment": arm.treatment.as_contract().to_dict(),
                    "compliance_findings": [
                        {"severity": f.severity, "code": f.code, "message": f.message, "reference": f.reference}
                        for f in arm.findings
                    ],
                }
                for arm in page.arms
            ],
        },
        "state": page.state.kind,
        "message": page.state.message,
        "snapshot": None,
        "alerts": [
            {
                "kind": alert.kind, "arm": alert.arm, "metric": alert.metric, "message": alert.message,
                "action": alert.action, "created_at": alert.created_at, "acknowledged_at": alert.acknowledged_at,
            }
            for alert in page.alerts
        ],
        "recompute": page.recompute.as_json() if page.recompute else None,
    }
    if snapshot is not None:
        payload["snapshot"] = {
            "id": snapshot.pk, "schema_version": snapshot.schema_version, "status": snapshot.status,
            "phase": snapshot.phase, "window_start": snapshot.window_start, "window_end": snapshot.window_end,
            "computed_at": snapshot.computed_at, "subjects": snapshot.subjects, "srm_flag": snapshot.srm_flag,
            "guardrail_breached": snapshot.guardrail_breached, "stale": page.freshness.stale,
        }
    if page.state.kind in ("ok", "no_exposures", "arm_without_exposures"):
        report = document.get("report") or {}
        verdict = page.tradeoff.verdict if page.tradeoff else presenters.verdict(SnapshotDocument.from_dict(document))
        payload.update(
            {
                "arms": document["arms"],
                "metrics": document["metrics"],
                "settings": document.get("settings"),
                "decision": document.get("decision"),
                "verdict": {"text": verdict.text, "outcome": verdict.outcome, "rule": verdict.rule},
                "comparisons": report.get("comparisons", []),
                "skipped_metrics": document.get("skipped_metrics", []),
                "guardrails": document.get("guardrails", []),
                "srm": document.get("srm"),
                "segments": report.get("segments", []),
                "segment_adjustment": report.get("adjustment", {}).get("segments"),
                "recommendation_quality": [
                    {
                        "arm": arm["key"],
                        "impressions": stats["ctr"]["denominator_sum"],
                        "clicks": stats["ctr"]["numerator_sum"],
                        "ctr": (stats["ctr"]["numerator_sum"] / stats["ctr"]["denominator_sum"]
                                if stats["ctr"]["denominator_sum"] else None),
                        "gmv_from_recommendations": page.gmv_shares[arm["key"]].attributed
                        if arm["key"] in page.gmv_shares else None,
                        "gmv_total": page.gmv_shares[arm["key"]].total if arm["key"] in page.gmv_shares else None,
                        "gmv_share_from_recommendations": page.gmv_shares[arm["key"]].share
                        if arm["key"] in page.gmv_shares else None,
                    }
                    for arm in document["arms"]
                    if (stats := (document.get("statistics") or {}).get(arm["key"])) and "ctr" in stats
                ],
            }
        )
    return payload
