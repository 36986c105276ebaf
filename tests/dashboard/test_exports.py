"""The dashboard's downloads and JSON endpoint (``experiments.dashboard.exports``)."""

from __future__ import annotations

import csv
import io
import json

import pytest
from django.utils import timezone

from consent.models import Subject
from experiments.dashboard import exports
from experiments.disclosure import segments_suppress
from experiments.models import ResultSnapshot
from experiments.results import compute_results
from tests.dashboard.conftest import login
from tests.dashboard.conftest import page_url as _url

pytestmark = pytest.mark.django_db


# --- exports and the JSON endpoint ----------------------------------------------------


def test_csv_export_has_every_comparison_of_the_latest_snapshot(client, analysed, people):
    # A marketplace attribute that looks like a spreadsheet formula ends up in a segment's name.
    every_third = list(analysed.exposures.order_by("id").values_list("subject_id", flat=True))[::3]
    Subject.objects.filter(pk__in=every_third).update(province="=HYPERLINK(1)")
    snapshot = compute_results(experiment=analysed, monitor=False)
    login(client, people["viewer"])
    response = client.get(_url("export-csv", analysed))
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith(f'attachment; filename="{analysed.key}-results-')
    records = list(csv.DictReader(io.StringIO(response.content.decode())))
    overall = [r for r in records if r["scope"] == "overall" and not r["skipped_reason"]]
    assert len(overall) == len(snapshot.data["report"]["comparisons"])
    segments = [r for r in records if r["scope"] == "segment" and not r["skipped_reason"]]
    assert len(segments) == sum(len(s["comparisons"]) for s in snapshot.data["report"]["segments"])
    gmv = next(r for r in overall if r["arm"] == "arm-1" and r["metric"] == "gmv")
    stored = next(c for c in snapshot.data["report"]["comparisons"] if c["arm"] == "arm-1" and c["metric"] == "gmv")
    assert float(gmv["absolute_estimate"]) == stored["absolute"]["estimate"]
    assert float(gmv["p_value_adjusted"]) == stored["p_value_adjusted"]
    assert gmv["cuped"] == "true" and gmv["adjustment"] == "holm"
    assert {r["adjustment"] for r in segments} == {"benjamini-hochberg"}
    assert any(r["metric"] == "consent_rate" and r["skipped_reason"] for r in records)
    assert any(r["segment"] == "province==HYPERLINK(1)" for r in segments)
    assert not any(value.startswith(("=", "+", "@")) for r in records for value in r.values())
    # Times are local with their offset, as on the pages (Asia/Jakarta: +07:00).
    assert gmv["window_end"] == timezone.localtime(snapshot.window_end).isoformat()
    assert gmv["window_end"].endswith("+07:00") and gmv["computed_at"].endswith("+07:00")
    # Under CUPED the adjusted treatment mean is the control's plus the adjusted difference.
    assert float(gmv["treatment_mean_adjusted"]) == pytest.approx(stored["control_mean"] + stored["absolute"]["estimate"])


def test_csv_export_carries_guardrails_the_sample_ratio_check_and_the_stored_decision(client, analysed, people):
    snapshot = ResultSnapshot.objects.filter(experiment=analysed).order_by("-window_end").first()
    login(client, people["owner"])
    records = list(csv.DictReader(io.StringIO(client.get(_url("export-csv", analysed)).content.decode())))
    guardrails = [r for r in records if r["scope"] == "guardrail"]
    stored = snapshot.data["guardrails"]
    assert [(r["arm"], r["metric"]) for r in guardrails] == [(g["arm"], g["metric"]) for g in stored]
    for row, entry in zip(guardrails, stored, strict=True):
        assert float(row["margin"]) == (-entry["margin"] if entry["higher_is_better"] else entry["margin"])
        assert float(row["bound"]) == entry["noninferiority"]["bound"]
        assert row["detail"] == entry["reason"] and row["status"] in {"non-inferior", "not yet shown", "breached"}
    (srm,) = [r for r in records if r["scope"] == "sample_ratio"]
    assert float(srm["p_value"]) == snapshot.data["srm"]["p_value"]
    assert srm["status"] == ("mismatch" if snapshot.data["srm"]["flag"] else "ok")
    (decision,) = [r for r in records if r["scope"] == "decision"]
    stored_decision = snapshot.data["decision"]
    assert decision["status"] == stored_decision["outcome"] and decision["arm"] == (stored_decision["arm"] or "")
    assert decision["final"] == ("true" if stored_decision["final"] else "false")
    assert decision["detail"].startswith(stored_decision["summary"])


def test_json_export_is_the_stored_snapshot(client, analysed, people):
    login(client, people["staff"])
    response = client.get(_url("export-json", analysed))
    assert response["Content-Disposition"].endswith('.json"')
    body = json.loads(response.content)
    snapshot = ResultSnapshot.objects.get(pk=body["snapshot"]["id"])
    # As stored, with small segment cells suppressed (experiments.disclosure; none is small here).
    assert body["data"] == segments_suppress(snapshot.data) and body["experiment"] == analysed.key
    assert body["data"]["report"]["segments"] == snapshot.data["report"]["segments"]
    assert snapshot == ResultSnapshot.objects.filter(experiment=analysed).order_by("-window_end").first()


def test_the_json_endpoint_carries_the_page_data(client, analysed, people):
    login(client, people["owner"])
    response = client.get(_url("results-json", analysed))
    assert response["Content-Type"] == "application/json"
    payload = response.json()
    snapshot = ResultSnapshot.objects.filter(experiment=analysed).order_by("-window_end").first()
    assert payload["state"] == "ok" and payload["snapshot"]["id"] == snapshot.pk
    assert payload["comparisons"] == snapshot.data["report"]["comparisons"]
    assert payload["segments"] == snapshot.data["report"]["segments"]
    assert payload["decision"]["outcome"] == "ship" and payload["verdict"]["text"].startswith("Ship arm-1:")
    assert [arm["key"] for arm in payload["experiment"]["arms"]] == ["control", "arm-1", "arm-2"]
    assert all("compliance_findings" in arm for arm in payload["experiment"]["arms"])
    quality = {row["arm"]: row for row in payload["recommendation_quality"]}
    assert quality["arm-1"]["gmv_share_from_recommendations"] == pytest.approx(200_000 / 350_000)
    assert payload["alerts"] == []


def test_csv_cells_cannot_become_spreadsheet_formulas():
    assert exports.csv_cell("=HYPERLINK(\"x\")") == "'=HYPERLINK(\"x\")"
    assert exports.csv_cell("+1") == "'+1" and exports.csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert exports.csv_cell("-cmd") == "'-cmd"
    assert exports.csv_cell(-0.25) == "-0.25"  # numbers stay numbers
    assert exports.csv_cell(float("nan")) == "" and exports.csv_cell(None) == ""
    assert exports.csv_cell(True) == "true" and exports.csv_cell("platform=ios") == "platform=ios"
