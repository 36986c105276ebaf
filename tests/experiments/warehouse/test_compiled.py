"""Golden tests of the SQL compiled for engines not run here (BigQuery, Snowflake, Trino).

The golden files are what ibis/sqlglot (pinned in pyproject) write for a fixed query; a
change to the expression or to the pins shows up as a diff to review. Regenerate with
``PRIVACYLAB_GOLDEN_UPDATE=1``.
"""

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlglot

from experiments.warehouse.engine import compiled_sql
from experiments.warehouse.expression import WarehouseQuery

GOLDEN = Path(__file__).parent / "golden"
QUERY = WarehouseQuery(
    experiment_id=7,
    phase=2,
    window_start=datetime(2026, 11, 1, tzinfo=UTC),
    window_end=datetime(2026, 11, 29, 12, 30, tzinfo=UTC),
    pre_exposure_days=28,
    gmv_cap_percentile=0.99,
    purpose="personalization",
    counting_notices=(3, 5),
)
MAPPING = {"exposures": {"table": "assignments", "columns": {"subject_id": "user_pseudonym"}}}


@pytest.mark.parametrize("dialect", ["bigquery", "snowflake", "trino"])
def test_the_compiled_sql_matches_its_golden_file(dialect):
    statistics = compiled_sql(query=QUERY, dialect=dialect, mapping=MAPPING)
    text = statistics + "\n"
    golden = GOLDEN / f"{dialect}.sql"
    if os.environ.get("PRIVACYLAB_GOLDEN_UPDATE"):
        golden.write_text(text)
    assert text == golden.read_text()
    sqlglot.parse_one(statistics, read=dialect)  # valid in the dialect's own grammar
    # The mapping and the query reached the SQL: the source's table and column names, the experiment.
    assert "assignments" in statistics and "user_pseudonym" in statistics
    assert "= 7" in statistics and "= 2" in statistics


def test_no_cap_compiles_no_percentile():
    from dataclasses import replace

    capped = compiled_sql(query=QUERY, dialect="trino")
    uncapped = compiled_sql(query=replace(QUERY, gmv_cap_percentile=None), dialect="trino")
    assert "ROW_NUMBER" in capped.upper() and "ROW_NUMBER" not in uncapped.upper()
