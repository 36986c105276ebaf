"""Warehouse-native analysis in DuckDB over Parquet files: every metric against the bare query.

At a small scale factor (the issue's target, 100M events and 10M subjects within 1.5× the bare
minimum, is not run here: it needs a machine of its own). Generated with DuckDB's own
``range``: ``SUBJECTS`` exposed subjects in 3 arms, ``EVENTS_PER_SUBJECT`` events each, a third of
them orders; consent decisions for a quarter of the subjects.

    python -m benchmarks warehouse [--quick]
"""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.table import Row, median_seconds

EVENTS_PER_SUBJECT = 10
START = datetime(2026, 1, 1, tzinfo=UTC)


def _generate(directory: Path, subjects: int) -> None:
    import duckdb

    con = duckdb.connect()
    con.execute(f"""COPY (SELECT 1 AS experiment_id, 1 AS phase, ['control','a','b'][1 + i % 3] AS arm,
        'p' || i AS subject_id, TIMESTAMPTZ '2026-01-01 00:00:00+00' + INTERVAL (i % 1000) MINUTE AS first_exposed_at
        FROM range({subjects}) t(i)) TO '{directory}/exposures.parquet' (FORMAT parquet)""")
    con.execute(f"""COPY (SELECT 'p' || (i % {subjects}) AS subject_id,
        ['order','rec_impression','rec_click'][1 + (i // {subjects}) % 3] AS type,
        TIMESTAMPTZ '2025-12-20 00:00:00+00' + INTERVAL (hash(i) % 40000) MINUTE AS occurred_at,
        CAST((hash(i) % 100000) / 100.0 AS DOUBLE) AS amount
        FROM range({subjects * EVENTS_PER_SUBJECT}) t(i)) TO '{directory}/events.parquet' (FORMAT parquet)""")
    con.execute(f"""COPY (SELECT i AS ledger_id, 'p' || (i * 4) AS subject_id, 'personalization' AS purpose,
        CASE WHEN i % 2 = 0 THEN 'grant' ELSE 'withdraw' END AS action,
        TIMESTAMPTZ '2026-01-02 00:00:00+00' + INTERVAL (i % 5000) MINUTE AS recorded_at,
        CAST(NULL AS TIMESTAMPTZ) AS expires_at, 1 AS notice_id
        FROM range({subjects // 4}) t(i)) TO '{directory}/consents.parquet' (FORMAT parquet)""")
    con.execute(f"""COPY (SELECT 'p' || i AS subject_id, ['18-24','25-34','45+',''][1 + i % 4] AS age_band,
        ['Bali','Jawa Barat'][1 + i % 2] AS province, ['android','ios','web'][1 + i % 3] AS platform,
        CAST(NULL AS TIMESTAMPTZ) AS restricted_at
        FROM range({subjects}) t(i)) TO '{directory}/subjects.parquet' (FORMAT parquet)""")
    con.close()


def run(quick: bool) -> list[Row]:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")
    import django

    django.setup()
    import ibis

    from experiments.warehouse.engine import warehouse_tables
    from experiments.warehouse.expression import WarehouseQuery, metric_statistics_expression

    subjects = 20_000 if quick else 200_000
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        _generate(directory, subjects)
        backend = ibis.duckdb.connect()
        for name in ("exposures", "events", "consents", "subjects"):
            backend.read_parquet(str(directory / f"{name}.parquet"), table_name=name)
        query = WarehouseQuery(
            experiment_id=1, phase=1, window_start=START, window_end=datetime(2026, 1, 29, tzinfo=UTC),
            pre_exposure_days=28, gmv_cap_percentile=0.99, purpose="personalization", counting_notices=(1,),
        )
        def ours():
            backend.execute(metric_statistics_expression(tables=warehouse_tables(backend=backend), query=query))

        bare_sql = (
            f"SELECT x.arm, SUM(o.amount) FROM read_parquet('{directory}/exposures.parquet') x "
            f"JOIN read_parquet('{directory}/events.parquet') o ON o.subject_id = x.subject_id "
            "WHERE o.type = 'order' GROUP BY x.arm"
        )

        def bare():
            backend.raw_sql(bare_sql).fetchall()

        repeats = 3
        mine, theirs = median_seconds(ours, repeats=repeats), median_seconds(bare, repeats=repeats)
    events = subjects * EVENTS_PER_SUBJECT
    return [
        Row(
            benchmark=f"warehouse: all metrics, DuckDB over Parquet ({events:,} events, {subjects:,} subjects)",
            ours=f"{mine:.3f} s",
            peer=f"{theirs:.3f} s (bare join + SUM GROUP BY arm)",
            ratio=f"{mine / theirs:.1f}×",
            target="≤ 1.5× at 100M events (not run at this scale)",
            passed=None,
        )
    ]
