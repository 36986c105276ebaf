"""Running the metric expression on a data source's engine: connect, map the tables, execute, build the statistics."""

from __future__ import annotations

from dataclasses import replace

from consent.models import Purpose
from experiments.metrics.aggregate import MetricStatistics, metric_statistics_from_rows
from experiments.metrics.definitions import window_for
from experiments.metrics.refresh import personalization_counting_notices
from experiments.models import Experiment
from experiments.warehouse.errors import WarehouseError
from experiments.warehouse.expression import (
    WarehouseQuery,
    metric_statistics_expression,
    recommendation_attribution_expression,
)
from experiments.warehouse.guard import query_run

TABLES = ("exposures", "events", "consents", "subjects")
# Optional: mapped, they give the recommendation attribution (``recommendation_gmv``);
# the events then need their ``product_id`` too (the clicked product).
ATTRIBUTION_TABLES = ("order_lines",)

# Canonical column → the columns a data source's mapping may rename (``DataSource.mapping``).
COLUMNS = {
    "exposures": ("experiment_id", "phase", "arm", "subject_id", "first_exposed_at"),
    "events": ("subject_id", "type", "occurred_at", "amount"),
    "consents": ("ledger_id", "subject_id", "purpose", "action", "recorded_at", "expires_at", "notice_id"),
    "subjects": ("subject_id", "age_band", "province", "platform", "restricted_at"),
    "order_lines": ("subject_id", "occurred_at", "product_id", "quantity", "price"),
}


def warehouse_tables(*, backend, mapping: dict | None = None) -> dict:
    """The four input tables of ``backend`` under their canonical column names.

    ``mapping``: per table ``{"table": name, "columns": {canonical: source column}}``;
    anything not named keeps its canonical name.
    """
    mapping = mapping or {}
    tables = {}
    attribution = "order_lines" in mapping  # an order-lines mapping, even {}: the attribution too
    for name in TABLES + (ATTRIBUTION_TABLES if attribution else ()):
        spec = mapping.get(name) or {}
        table = backend.table(spec.get("table") or name)
        renames = {canonical: source for canonical, source in (spec.get("columns") or {}).items() if source != canonical}
        missing = [source for source in renames.values() if source not in table.columns]
        if missing:
            raise WarehouseError(f"{name}: columns not found: {', '.join(missing)}")
        if renames:
            table = table.rename(renames)
        columns = COLUMNS[name] + (("product_id",) if attribution and name == "events" else ())
        absent = [column for column in columns if column not in table.columns]
        if absent:
            raise WarehouseError(f"{name}: columns not found: {', '.join(absent)}")
        if name == "events" and attribution:
            tables["clicks"] = table.select("subject_id", "type", "occurred_at", "product_id")
        tables[name] = table.select(*COLUMNS[name])
    return tables


def warehouse_query(
    *,
    experiment: Experiment,
    as_of=None,
    gmv_cap_percentile: float | None | type[...] = ...,
    pre_exposure_days: int | None = None,
) -> WarehouseQuery:
    """What a run over the window ending at ``as_of`` asks the engine (the experiment's settings by default)."""
    window_start, window_end = window_for(experiment, as_of)
    days = experiment.pre_exposure_days if pre_exposure_days is None else int(pre_exposure_days)
    percentile = experiment.gmv_cap_percentile if gmv_cap_percentile is ... else gmv_cap_percentile
    return WarehouseQuery(
        experiment_id=experiment.pk,
        phase=experiment.phase,
        window_start=window_start,
        window_end=window_end,
        pre_exposure_days=days,
        gmv_cap_percentile=None if percentile is None else float(percentile),
        purpose=Purpose.PERSONALIZATION,
        counting_notices=tuple(personalization_counting_notices(at=window_end)),
    )


def warehouse_statistics_compute(
    *,
    experiment: Experiment,
    backend,
    mapping: dict | None = None,
    as_of=None,
    gmv_cap_percentile: float | None | type[...] = ...,
    pre_exposure_days: int | None = None,
    timeout_seconds: float | None = None,
    max_scanned_rows: int | None = None,
) -> MetricStatistics:
    """Every metric's sufficient statistics for ``experiment`` computed in ``backend`` (an ibis backend).

    The same ``MetricStatistics`` as ``metric_statistics_compute`` on the same data: only
    the per (segment, arm) sums and the two caps come back from the engine.
    ``timeout_seconds`` and ``max_scanned_rows``: each statement's limits
    (``experiments.warehouse.guard.query_run``); a failure is a ``WarehouseError``,
    a ``WarehouseTransientError`` when another try may succeed.
    """
    query = warehouse_query(experiment=experiment, as_of=as_of, gmv_cap_percentile=gmv_cap_percentile,
                            pre_exposure_days=pre_exposure_days)
    window_start, window_end = query.window_start, query.window_end
    days = query.pre_exposure_days
    percentile = experiment.gmv_cap_percentile if gmv_cap_percentile is ... else gmv_cap_percentile
    limits = {"backend": backend, "timeout_seconds": timeout_seconds, "max_scanned_rows": max_scanned_rows}
    tables = query_run(run=lambda: warehouse_tables(backend=backend, mapping=mapping), what="table lookup",
                       backend=backend, timeout_seconds=timeout_seconds)
    expression = metric_statistics_expression(tables=tables, query=query, engine=getattr(backend, "name", None))
    frame = query_run(run=lambda: backend.execute(expression), sql=lambda: backend.compile(expression),
                      what="metrics query", **limits)
    attribution = {}
    if "order_lines" in tables:
        attributed = recommendation_attribution_expression(tables=tables, query=query)
        lines = query_run(run=lambda: backend.execute(attributed), sql=lambda: backend.compile(attributed),
                          what="attribution query", **limits)
        attribution = {
            str(row.arm): {"attributed": float(row.attributed or 0), "total": float(row.total or 0)}
            for row in lines.itertuples(index=False)
        }
    try:
        cap = _scalar(frame[["cap"]]) if len(frame) else None
        order_cap = _scalar(frame[["order_cap"]]) if len(frame) else None
        rows = [tuple(row) for row in frame.drop(columns=["cap", "order_cap"]).itertuples(index=False)]
    except Exception as error:  # an engine's frame not in the shape asked for
        raise WarehouseError(f"{type(error).__name__}: {error}") from error
    rows += [("cap", "", None, cap), ("order_cap", "", None, order_cap)]
    statistics = metric_statistics_from_rows(
        experiment=experiment,
        rows=rows,
        window_start=window_start,
        window_end=window_end,
        pre_exposure_days=days,
        gmv_cap_percentile=percentile,
    )
    return replace(statistics, recommendation_gmv=attribution) if attribution else statistics


def _scalar(frame) -> float | None:
    value = frame.iloc[0, 0] if len(frame) else None
    return None if value is None or value != value else float(value)


# The canonical tables' types, for compiling without a connection (``compiled_sql``).
SCHEMAS = {
    "exposures": {"experiment_id": "int64", "phase": "int64", "arm": "string", "subject_id": "string",
                  "first_exposed_at": "timestamp('UTC')"},
    "events": {"subject_id": "string", "type": "string", "occurred_at": "timestamp('UTC')", "amount": "float64"},
    "consents": {"ledger_id": "int64", "subject_id": "string", "purpose": "string", "action": "string",
                 "recorded_at": "timestamp('UTC')", "expires_at": "timestamp('UTC')", "notice_id": "int64"},
    "subjects": {"subject_id": "string", "age_band": "string", "province": "string", "platform": "string",
                 "restricted_at": "timestamp('UTC')"},
}


def compiled_sql(*, query: WarehouseQuery, dialect: str, mapping: dict | None = None) -> str:
    """The aggregate statement compiled for ``dialect`` without connecting.

    For engines PrivacyLab does not run itself (BigQuery, Snowflake, Trino, Spark SQL): what
    would be sent, to review or to run by hand. The tables are the canonical ones, named as
    ``mapping`` names them.
    """
    import ibis

    mapping = mapping or {}
    tables = {}
    for name, schema in SCHEMAS.items():
        spec = mapping.get(name) or {}
        renames = spec.get("columns") or {}
        source_schema = {renames.get(column, column): kind for column, kind in schema.items()}
        table = ibis.table(source_schema, name=spec.get("table") or name)
        inverse = {canonical: source for canonical, source in renames.items() if source != canonical}
        tables[name] = table.rename(inverse) if inverse else table
    return ibis.to_sql(metric_statistics_expression(tables=tables, query=query), dialect=dialect)
