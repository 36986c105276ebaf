"""Connecting to a data source's engine: the URL from the environment, an ibis backend (or chdb in process)."""

from __future__ import annotations

import os

from django.conf import settings

from experiments.models import DataSource
from experiments.warehouse.errors import WarehouseError, WarehouseTransientError
from experiments.warehouse.guard import error_is_transient


def data_source_url(*, source: DataSource) -> str:
    """The source's connection URL: ``PRIVACYLAB_WAREHOUSE_URLS[url_setting]``, else the environment variable."""
    url = settings.PRIVACYLAB_WAREHOUSE_URLS.get(source.url_setting) or os.environ.get(source.url_setting)
    if not url:
        raise WarehouseError(f"data source {source.name}: {source.url_setting} is not set (environment or "
                             "PRIVACYLAB_WAREHOUSE_URLS)")
    return url


class ChdbBackend:
    """The real ClickHouse engine in process (chdb) behind the two calls the engine makes of an ibis backend.

    ibis compiles for ClickHouse; chdb runs the SQL. ``url``: ``chdb://`` (memory) or
    ``chdb:///path/to/dir`` (a persistent session); tables are ``database.table`` or ``table``.
    """

    name = "chdb"
    dialect = "clickhouse"

    def __init__(self, url: str = "chdb://", session=None):
        from chdb import session as chdb_session

        path = url.removeprefix("chdb://")
        self.session = session or (chdb_session.Session(path) if path else chdb_session.Session())
        # SQL's outer joins: unmatched columns NULL, not the type's default (as ibis's ClickHouse backend sets).
        self.session.query("SET join_use_nulls = 1")

    def query(self, sql: str):
        return self.session.query(sql, "DataFrame")

    def table(self, name: str):
        import ibis
        from ibis.backends.sql.datatypes import ClickHouseType

        described = self.query(f"DESCRIBE TABLE {name}")
        schema = {row["name"]: ClickHouseType.from_string(row["type"]) for _, row in described.iterrows()}
        database, _, table = name.rpartition(".")
        return ibis.table(schema, name=table, database=database or None)

    def compile(self, expression) -> str:
        import ibis

        return ibis.to_sql(expression, dialect=self.dialect)

    def execute(self, expression):
        return self.query(self.compile(expression))


def backend_connect(*, url: str, timeout_seconds: int | None = None):
    """An engine for ``url``: ``duckdb://…``, ``postgres://…``, ``clickhouse://…``, ``chdb://…``.

    ``timeout_seconds``: each query's limit, set here where the engine enforces it itself
    (PostgreSQL's statement_timeout, and its connect_timeout; ClickHouse's max_execution_time);
    DuckDB's is a watchdog around each statement (``experiments.warehouse.guard``). A failure
    to connect is a ``WarehouseTransientError`` when another try may succeed (refused,
    unreachable), else a ``WarehouseError`` (bad credentials, an unknown database).
    """
    import ibis

    try:
        if url.startswith("chdb:"):
            backend = ChdbBackend(url)
            if timeout_seconds:
                backend.query(f"SET max_execution_time = {_seconds(timeout_seconds)}")
            return backend
        if url.startswith("postgresql://"):
            url = "postgres://" + url.removeprefix("postgresql://")
        options = {}
        if timeout_seconds and url.startswith("postgres://") and "connect_timeout" not in url:
            options["connect_timeout"] = str(max(1, round(timeout_seconds)))  # an unreachable host, bounded too
        if timeout_seconds and url.startswith("clickhouse://"):
            options["settings"] = {"max_execution_time": _seconds(timeout_seconds)}
        backend = ibis.connect(url, **options)
        if timeout_seconds and url.startswith("postgres://"):
            backend.raw_sql(f"SET statement_timeout = {max(1, round(timeout_seconds * 1000))}").close()
        return backend
    except Exception as error:  # the drivers' own kinds: refused, unknown host, bad credentials
        kind = WarehouseTransientError if error_is_transient(error) else WarehouseError
        raise kind(f"cannot connect: {type(error).__name__}: {error}") from error


def _seconds(timeout_seconds: float) -> str:
    """ClickHouse's max_execution_time: seconds, fractions allowed."""
    return f"{max(float(timeout_seconds), 0.001):g}"


def data_source_connect(*, source: DataSource | None = None, url: str | None = None):
    """The backend of a data source (by its URL setting, with its query timeout) or of a URL given directly."""
    if url is not None:
        return backend_connect(url=url)
    return backend_connect(url=data_source_url(source=source), timeout_seconds=source.query_timeout_seconds)


def data_source_probe(*, source: DataSource) -> dict:
    """A cheap look at a data source: per mapped table its row count and the columns found or missing.

    ``{"ok": bool, "summary": str, "tables": {name: {"rows", "columns", "missing"} or {"error"}}}``;
    never raises (the admin's "test connection" shows the summary).
    """
    from experiments.warehouse.engine import COLUMNS, TABLES

    try:
        backend = data_source_connect(source=source)
    except WarehouseError as error:
        return {"ok": False, "summary": str(error), "tables": {}}
    tables, ok = {}, True
    for name in TABLES:
        spec = (source.mapping or {}).get(name) or {}
        table_name = spec.get("table") or name
        renames = spec.get("columns") or {}
        try:
            table = backend.table(table_name)
            found = list(table.columns)
            expected = [renames.get(column, column) for column in COLUMNS[name]]
            rows = backend.execute(table.count())
            rows = int(rows.iloc[0, 0]) if hasattr(rows, "iloc") else int(rows)
            missing = [column for column in expected if column not in found]
            tables[name] = {"table": table_name, "rows": rows, "columns": found, "missing": missing}
            ok = ok and not missing
        except Exception as error:  # a missing table or a driver error: reported, not raised
            tables[name] = {"table": table_name, "error": f"{type(error).__name__}: {error}"}
            ok = False
    parts = []
    for name, entry in tables.items():
        if "error" in entry:
            parts.append(f"{name} ({entry['table']}): {entry['error']}")
        else:
            missing = f", missing {', '.join(entry['missing'])}" if entry["missing"] else ""
            parts.append(f"{name} ({entry['table']}): {entry['rows']} rows, {len(entry['columns'])} columns{missing}")
    return {"ok": ok, "summary": "; ".join(parts), "tables": tables}
