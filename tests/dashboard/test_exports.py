"""The dashboard's downloads and JSON endpoint (``experiments.dashboard.exports``)."""

from __future__ import annotations

from experiments.dashboard import exports


def test_csv_cells_cannot_become_spreadsheet_formulas():
    assert exports.csv_cell("=HYPERLINK(\"x\")") == "'=HYPERLINK(\"x\")"
    assert exports.csv_cell("+1") == "'+1" and exports.csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert exports.csv_cell("-cmd") == "'-cmd"
    assert exports.csv_cell(-0.25) == "-0.25"  # numbers stay numbers
    assert exports.csv_cell(float("nan")) == "" and exports.csv_cell(None) == ""
    assert exports.csv_cell(True) == "true" and exports.csv_cell("platform=ios") == "platform=ios"
