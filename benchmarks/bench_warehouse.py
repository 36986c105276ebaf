"""Warehouse-native analysis in DuckDB over Parquet files: every metric against the bare query.

Generated with DuckDB's own ``range``: ``subjects`` exposed subjects in 3 arms,
``EVENTS_PER_SUBJECT`` events each, a third of them orders; consent decisions for a quarter
of the subjects. Each size runs in a fresh worker process (its peak RSS is the worker's),
our statement and the bare one alternated in the same DuckDB connection, medians.

    python -m benchmarks warehouse [--quick]

Environment (all optional):

- ``BENCH_WAREHOUSE_SUBJECTS``: comma-separated sizes in subjects (default 200000,1000000;
  the issue's target size is 10000000, i.e. 100M events);
- ``BENCH_WAREHOUSE_DIR``: where the Parquet files are written and reused (one folder per
  size; default a temporary folder removed afterwards);
- ``BENCH_WAREHOUSE_MEMORY``: DuckDB's ``memory_limit`` in the worker (default 600MB: the
  worker stays under 1 GB with Django and the libraries; DuckDB spills beyond it);
- ``BENCH_WAREHOUSE_REPEATS``: timed runs of each statement (default 3).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.table import Row

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


QUERY_END = datetime(2026, 1, 29, tzinfo=UTC)


def _bare_sql(directory: Path) -> str:
    return (
        f"SELECT x.arm, SUM(o.amount) FROM read_parquet('{directory}/exposures.parquet') x "
        f"JOIN read_parquet('{directory}/events.parquet') o ON o.subject_id = x.subject_id "
        "WHERE o.type = 'order' GROUP BY x.arm"
    )


def _worker(directory: Path, repeats: int, memory: str) -> dict:
    """In a fresh process: ours and the bare statement alternated; medians, peak RSS."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.test_settings")
    import django

    django.setup()
    import statistics

    import ibis

    from experiments.warehouse.engine import warehouse_tables
    from experiments.warehouse.expression import WarehouseQuery, metric_statistics_expression

    backend = ibis.duckdb.connect()
    backend.raw_sql(f"SET memory_limit = '{memory}'")
    backend.raw_sql(f"SET temp_directory = '{directory}/spill'")
    for name in ("exposures", "events", "consents", "subjects"):
        backend.read_parquet(str(directory / f"{name}.parquet"), table_name=name)
    query = WarehouseQuery(
        experiment_id=1, phase=1, window_start=START, window_end=QUERY_END,
        pre_exposure_days=28, gmv_cap_percentile=0.99, purpose="personalization", counting_notices=(1,),
    )

    def ours():
        # Compiling the expression is part of every run, as in warehouse_statistics_compute.
        expression = metric_statistics_expression(
            tables=warehouse_tables(backend=backend), query=query, engine=backend.name
        )
        return backend.execute(expression)

    bare_sql = _bare_sql(directory)

    def bare():
        return backend.raw_sql(bare_sql).fetchall()

    rows = len(ours())  # warm-up of both (file metadata, the compiler's imports)
    bare()
    mine, theirs = [], []
    for _ in range(repeats):
        for fn, samples in ((ours, mine), (bare, theirs)):
            started = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - started)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"ours": statistics.median(mine), "bare": statistics.median(theirs), "rows": rows,
            "ours_all": mine, "bare_all": theirs, "peak_mb": peak_kb / 1024}


def run(quick: bool) -> list[Row]:
    sizes = [20_000] if quick else [
        int(size) for size in os.environ.get("BENCH_WAREHOUSE_SUBJECTS", "200000,1000000").split(",")
    ]
    repeats = int(os.environ.get("BENCH_WAREHOUSE_REPEATS", "3"))
    memory = os.environ.get("BENCH_WAREHOUSE_MEMORY", "600MB")
    keep = os.environ.get("BENCH_WAREHOUSE_DIR")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(keep or tmp)
        for subjects in sizes:
            directory = root / f"subjects-{subjects}"
            if not (directory / "subjects.parquet").exists():
                directory.mkdir(parents=True, exist_ok=True)
                _generate(directory, subjects)
            (directory / "spill").mkdir(exist_ok=True)
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.bench_warehouse", str(directory), str(repeats), memory],
                capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1],
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            events = subjects * EVENTS_PER_SUBJECT
            ratio = result["ours"] / result["bare"]
            at_target = events >= 100_000_000
            rows.append(
                Row(
                    benchmark=(
                        f"warehouse: all metrics, DuckDB over Parquet ({events:,} events, {subjects:,} subjects; "
                        f"worker peak RSS {result['peak_mb']:.0f} MB, memory_limit {memory})"
                    ),
                    ours=f"{result['ours']:.3f} s",
                    peer=f"{result['bare']:.3f} s (bare join + SUM GROUP BY arm)",
                    ratio=f"{ratio:.1f}×",
                    target="≤ 1.5× at 100M events, worker < 1 GB" + ("" if at_target else " (not this size)"),
                    passed=(ratio <= 1.5 and result["peak_mb"] < 1024) if at_target else None,
                )
            )
    return rows


if __name__ == "__main__":
    print(json.dumps(_worker(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3])))
