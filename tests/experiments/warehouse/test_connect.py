"""A data source's URL from its named setting; the admin's "test connection"."""

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings
from django.urls import reverse

from experiments.models import DataSource
from experiments.warehouse.connect import data_source_probe, data_source_url
from experiments.warehouse.engine import WarehouseError

pytestmark = pytest.mark.django_db


def _lake(path):
    import ibis
    import pandas as pd

    backend = ibis.duckdb.connect(str(path))
    backend.create_table(
        "exposures",
        pd.DataFrame({"experiment_id": [1, 1], "phase": [1, 1], "arm": ["a", "b"], "user": ["x", "y"],
                      "first_exposed_at": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True)}),
    )
    backend.disconnect()
    return f"duckdb:///{path}"


def test_the_url_comes_from_the_named_setting_then_the_environment(monkeypatch):
    source = DataSource(name="lake", engine="duckdb", url_setting="LAKE_URL")
    with pytest.raises(WarehouseError, match="LAKE_URL is not set"):
        data_source_url(source=source)
    monkeypatch.setenv("LAKE_URL", "duckdb:///from-env.duckdb")
    assert data_source_url(source=source) == "duckdb:///from-env.duckdb"
    with override_settings(PRIVACYLAB_WAREHOUSE_URLS={"LAKE_URL": "duckdb:///from-settings.duckdb"}):
        assert data_source_url(source=source) == "duckdb:///from-settings.duckdb"


def test_a_url_in_place_of_the_setting_name_is_refused_with_its_field():
    source = DataSource(name="lake", engine="duckdb", url_setting="postgres://user:secret@db/x")
    with pytest.raises(ValidationError) as raised:
        source.full_clean()
    assert "url_setting" in raised.value.message_dict


def test_the_probe_reports_row_counts_columns_and_what_is_missing(tmp_path):
    source = DataSource.objects.create(
        name="lake", engine="duckdb", url_setting="LAKE_URL",
        mapping={"exposures": {"columns": {"subject_id": "user"}}},
    )
    with override_settings(PRIVACYLAB_WAREHOUSE_URLS={"LAKE_URL": _lake(tmp_path / "lake.duckdb")}):
        report = data_source_probe(source=source)
    assert not report["ok"]  # three of the four tables are absent
    exposures = report["tables"]["exposures"]
    assert exposures["rows"] == 2 and exposures["missing"] == [] and "user" in exposures["columns"]
    assert "error" in report["tables"]["events"]
    assert "exposures (exposures): 2 rows, 5 columns" in report["summary"]


def test_the_admin_action_shows_the_probe(admin_client, tmp_path):
    source = DataSource.objects.create(name="lake", engine="duckdb", url_setting="LAKE_URL")
    with override_settings(PRIVACYLAB_WAREHOUSE_URLS={"LAKE_URL": _lake(tmp_path / "lake.duckdb")}):
        response = admin_client.post(
            reverse("admin:experiments_datasource_changelist"),
            {"action": "test_connection", "_selected_action": [source.pk]},
            follow=True,
        )
    assert response.status_code == 200
    shown = [str(message) for message in response.context["messages"]]
    assert any(text.startswith("lake: exposures (exposures): 2 rows") for text in shown), shown
