"""The dashboard's pages and exports show no segment cell of fewer than k subjects (experiments.disclosure)."""

import csv
import io
import json

import pytest
from django.test import override_settings

from tests.dashboard.conftest import login

pytestmark = pytest.mark.django_db


def test_pages_and_exports_never_show_a_small_cell(client, analysed, people):
    login(client, people["owner"])
    with override_settings(MIN_CELL_SUBJECTS=10_000):  # every cell of the fixture is "small"
        page = client.get(f"/experiments/{analysed.key}/")
        assert page.status_code == 200
        tables = page.context["page"].segments
        cells = [cell for table in tables for row in table.rows for cell in row.cells]
        assert cells and all(
            cell.subjects == "suppressed / suppressed" and "fewer than 10000" in cell.skipped_reason for cell in cells
        )
        assert b"fewer than 10000 subjects" in page.content
        exported = json.loads(client.get(f"/experiments/{analysed.key}/export.json").content)
        assert exported["data"]["settings"]["min_cell_subjects"] == 10_000
        assert all(segment["comparisons"] == [] for segment in exported["data"]["report"]["segments"])
        text = client.get(f"/experiments/{analysed.key}/export.csv").content.decode()
        segment_rows = [row for row in csv.DictReader(io.StringIO(text)) if row["scope"] == "segment"]
        assert segment_rows
        assert all(row["control_n"] == "" and "fewer than 10000" in row["skipped_reason"] for row in segment_rows)
        results = client.get(f"/experiments/{analysed.key}/results.json").json()
        assert all(segment["comparisons"] == [] for segment in results["segments"])


def test_with_the_default_k_large_cells_are_shown(client, analysed, people):
    login(client, people["owner"])
    page = client.get(f"/experiments/{analysed.key}/")
    shown = [cell for table in page.context["page"].segments for row in table.rows for cell in row.cells]
    assert any(cell.subjects != "suppressed / suppressed" and cell.effect != "—" for cell in shown)
