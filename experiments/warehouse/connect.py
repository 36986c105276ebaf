"""Connecting to a data source's engine: the URL from the environment, an ibis backend (or chdb in process)."""

from __future__ import annotations

import os

from django.conf import settings

from experiments.models import DataSource
from experiments.warehouse.engine import WarehouseError


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

    def execute(self, expression):
        import ibis

        frame = self.query(ibis.to_sql(expression, dialect=self.dialect))
        return frame


def backend_connect(*, url: str):
    """An engine for ``url``: ``duckdb://…``, ``postgres://…``, ``clickhouse://…``, ``chdb://…``."""
    import ibis

    try:
        if url.startswith("chdb:"):
            return ChdbBackend(url)
        if url.startswith("postgresql://"):
            url = "postgres://" + url.removeprefix("postgresql://")
        return ibis.connect(url)
    except Exception as error:  # the drivers' own kinds: refused, unknown host, bad credentials
        raise WarehouseError(f"cannot connect: {type(error).__name__}: {error}") from error


def data_source_connect(*, source: DataSource | None = None, url: str | None = None):
    """The backend of a data source (by its URL setting) or of a URL given directly."""
    return backend_connect(url=url if url is not None else data_source_url(source=source))
