"""What one query to a data source may cost, and what to do when it fails.

- ``query_run``: one statement under the source's per-query timeout and cost guard, its
  failure sorted into transient (worth another try) or not;
- ``scanned_rows_estimate``: how many rows the engine expects the statement to read,
  where the engine can tell (DuckDB, PostgreSQL, ClickHouse);
- ``transient_retry``: a run tried again with exponential backoff, a bounded number of times.

docs/warehouse.md, "Timeouts, retries and the cost guard", says which engine enforces what.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from experiments.warehouse.errors import WarehouseCostError, WarehouseError, WarehouseTransientError

Result = TypeVar("Result")

# PostgreSQL error classes that say the server could not take the query now (SQLSTATE
# class 08 connection exception, 53 insufficient resources such as too many connections,
# 57 operator intervention such as a restart or a cancelled statement). A refused TCP
# connection has no SQLSTATE at all. A wrong password (28) or an unknown table (42) are not
# transient: another try would fail the same way.
_PG_TRANSIENT_CLASSES = {"08", "53", "57"}


def backend_kind(backend) -> str:
    """``duckdb``, ``postgres``, ``clickhouse``, ``chdb``, ``pyspark`` (ibis's backend names)."""
    return getattr(backend, "name", "") or type(backend).__name__.lower()


def error_is_timeout(error: BaseException) -> bool:
    """The engine stopped the statement at its own limit (statement_timeout, max_execution_time)."""
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a base dependency
        psycopg = None
    if psycopg is not None and isinstance(error, psycopg.errors.QueryCanceled):
        return True
    return "TIMEOUT_EXCEEDED" in str(error)  # ClickHouse's code 159, from chdb or a server


def error_is_transient(error: BaseException) -> bool:
    """A failure another try may not meet: a refused, dropped or timed-out connection, a query past its limit."""
    if isinstance(error, WarehouseTransientError) or error_is_timeout(error):
        return True
    if isinstance(error, ConnectionError | TimeoutError):  # the socket's own: refused, reset, timed out
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover
        psycopg = None
    if psycopg is not None and isinstance(error, psycopg.OperationalError):
        sqlstate = getattr(error, "sqlstate", None)
        return sqlstate is None or sqlstate[:2] in _PG_TRANSIENT_CLASSES
    # clickhouse-connect's OperationalError: the HTTP connection failed (its query errors are DatabaseError).
    if type(error).__module__.startswith("clickhouse_connect") and type(error).__name__ == "OperationalError":
        return True
    # Another process holds a DuckDB file's write lock for the moment.
    return "Could not set lock on file" in str(error)


class _Watchdog:
    """Interrupts the engine's running statement after ``seconds``, for engines without a server-side limit.

    DuckDB: ``connection.interrupt()``; Spark: the statement's job group cancelled. PostgreSQL
    and ClickHouse enforce their own limit (set when connecting: ``statement_timeout``,
    ``max_execution_time``), so no thread is started for them.
    """

    def __init__(self, backend, seconds: float | None):
        self.seconds = seconds
        self.fired = False
        self._lock = threading.Lock()
        self._running = False
        self._timer = None
        self._cancel = None
        self._group = None
        kind = backend_kind(backend)
        if not seconds:
            return
        if kind == "duckdb":
            self._cancel = backend.con.interrupt
        elif kind == "pyspark":
            context = backend._session.sparkContext
            self._group = f"privacylab-{threading.get_ident()}-{time.monotonic_ns()}"
            self._context = context
            self._cancel = lambda: context.cancelJobGroup(self._group)

    def __enter__(self):
        if self._cancel is None:
            return self
        if self._group is not None:
            self._context.setJobGroup(self._group, "PrivacyLab metrics", interruptOnCancel=True)
        self._running = True
        self._timer = threading.Timer(self.seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()
        return self

    def _fire(self):
        # Under the lock, and only while the call runs: an interrupt landing after it
        # finished must not cancel the next statement.
        with self._lock:
            if not self._running:
                return
            self.fired = True
            self._cancel()
            # Again until the call returns: an interrupt that lands while the engine is still
            # preparing the statement (or between two of its statements) is cleared when the
            # execution begins (DuckDB resets the flag per query).
            self._timer = threading.Timer(0.1, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def __exit__(self, *exc):
        if self._timer is None:
            return False
        with self._lock:
            self._running = False
            self._timer.cancel()
        if self._group is not None:
            self._context.setLocalProperty("spark.jobGroup.id", None)
        return False


def query_run(
    *,
    backend,
    run: Callable[[], Result],
    timeout_seconds: float | None = None,
    max_scanned_rows: int | None = None,
    sql: Callable[[], str] | None = None,
    what: str = "query",
) -> Result:
    """``run()`` (one statement on ``backend``) under the timeout and the cost guard.

    ``sql``: the statement's text for the engine (asked only when ``max_scanned_rows`` is
    set): the guard explains it first and refuses it (``WarehouseCostError``, nothing run)
    when the engine estimates more scanned rows than the limit. A failure is a
    ``WarehouseTransientError`` when another try may succeed (a timeout, a refused or
    dropped connection), else a ``WarehouseError``.
    """
    watchdog = None
    try:
        if max_scanned_rows is not None and sql is not None:
            with _Watchdog(backend, timeout_seconds) as watchdog:
                estimate = scanned_rows_estimate(backend=backend, sql=sql())
            if estimate is not None and estimate > max_scanned_rows:
                raise WarehouseCostError(
                    f"cost guard: the {what} would scan about {estimate:,} rows, over the source's limit of "
                    f"{max_scanned_rows:,} (max_scanned_rows); it was not run"
                )
        with _Watchdog(backend, timeout_seconds) as watchdog:
            return run()
    except WarehouseError:
        raise
    except Exception as error:  # the engines' drivers raise their own kinds: sorted here
        if (watchdog is not None and watchdog.fired) or error_is_timeout(error):
            raise WarehouseTransientError(
                f"the {what} timed out after {timeout_seconds:g} s (the source's query timeout): "
                f"{type(error).__name__}: {error}"
            ) from error
        kind = WarehouseTransientError if error_is_transient(error) else WarehouseError
        raise kind(f"{type(error).__name__}: {error}") from error


def scanned_rows_estimate(*, backend, sql: str) -> int | None:
    """The rows the engine expects ``sql`` to read from its tables, or None where it cannot tell.

    DuckDB: its plan's scans (``EXPLAIN (FORMAT JSON)``, tables and Parquet files);
    PostgreSQL: the same from ``EXPLAIN (FORMAT JSON)`` with ``reltuples``; ClickHouse:
    ``EXPLAIN ESTIMATE`` (MergeTree tables only: a Memory table is not counted, and a
    statement reading none gives None). Spark: None (its row counts need table statistics).
    """
    kind = backend_kind(backend)
    if kind == "duckdb":
        return _duckdb_scanned_rows(backend, sql)
    if kind == "postgres":
        return _postgres_scanned_rows(backend, sql)
    if kind in ("chdb", "clickhouse"):
        return _clickhouse_scanned_rows(backend, sql)
    return None


def _plan_nodes(node, children: str):
    yield node
    for child in node.get(children) or ():
        yield from _plan_nodes(child, children)


def _duckdb_scanned_rows(backend, sql: str) -> int:
    # Planned without filter pushdown, each scan's estimate is the rows it reads (a table's
    # size, a Parquet file's row count), not the fewer a filter pushed into it keeps: an upper
    # bound (the real run may skip row groups by their min/max).
    (previous,) = backend.con.execute("SELECT current_setting('disabled_optimizers')").fetchone()
    backend.con.execute("SET disabled_optimizers = 'filter_pushdown'")
    try:
        rows = backend.con.execute(f"EXPLAIN (FORMAT JSON) {sql}").fetchall()
    finally:
        backend.con.execute("SET disabled_optimizers = $1", [previous or ""])
    # A filter the planner still puts into a table's scan lowers its estimate, not what it reads.
    sizes = dict(backend.con.execute(
        "SELECT database_name || '.' || schema_name || '.' || table_name, estimated_size FROM duckdb_tables()"
    ).fetchall())
    total = 0
    for plan in json.loads(rows[0][1]):
        for node in _plan_nodes(plan, "children"):
            name, info = node.get("name", ""), node.get("extra_info") or {}
            # Scans of stored rows (a table, a table function such as read_parquet), not of an
            # intermediate result (a CTE, a delim join's chunk).
            if ("SCAN" in name or name.startswith("READ_")) and ("Table" in info or "Function" in info):
                total += max(int(info.get("Estimated Cardinality") or 0), int(sizes.get(info.get("Table")) or 0))
    return total


_PG_SCANS = {"Seq Scan", "Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Tid Scan", "Sample Scan"}


def _postgres_scanned_rows(backend, sql: str) -> int:
    with backend.raw_sql(f"EXPLAIN (FORMAT JSON, VERBOSE) {sql}") as cursor:
        (plan,) = cursor.fetchone()
    plan = json.loads(plan) if isinstance(plan, str) else plan
    scans = [node for node in _plan_nodes(plan[0]["Plan"], "Plans") if node.get("Node Type") in _PG_SCANS]
    total = 0
    for node in scans:
        estimate = int(node.get("Plan Rows") or 0)
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name"):
            # The whole table is read; its filter lowers only the rows the plan keeps.
            with backend.raw_sql(
                "SELECT c.reltuples FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.relname = %(name)s AND n.nspname = %(schema)s",
                params={"name": node["Relation Name"], "schema": node.get("Schema") or "public"},
            ) as cursor:
                found = cursor.fetchone()
            estimate = max(estimate, int(found[0]) if found and found[0] > 0 else 0)
        total += estimate
    return total


def _clickhouse_scanned_rows(backend, sql: str) -> int | None:
    if backend_kind(backend) == "chdb":
        frame = backend.query(f"EXPLAIN ESTIMATE {sql}")
        counts = [int(value) for value in frame["rows"]]
    else:  # a server through clickhouse-connect
        result = backend.raw_sql(f"EXPLAIN ESTIMATE {sql}")
        column = list(result.column_names).index("rows")
        counts = [int(row[column]) for row in result.result_rows]
    return sum(counts) if counts else None


def transient_retry(
    *,
    run: Callable[[], Result],
    attempts: int,
    backoff_seconds: float,
    backoff_max_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Result:
    """``run()``, tried up to ``attempts`` times while it fails transiently, with exponential backoff.

    Waits ``backoff_seconds`` × 2^(try − 1), at most ``backoff_max_seconds``, with jitter
    (half to all of it), as the Celery tasks' retries do (``experiments.tasks.RETRY``). The
    last failure is raised with the number of attempts; any other error at once.
    """
    attempts = max(1, int(attempts))
    for attempt in range(1, attempts + 1):
        try:
            return run()
        except WarehouseTransientError as error:
            if attempt == attempts:
                if attempts == 1:
                    raise
                raise WarehouseTransientError(f"{error} (gave up after {attempts} attempts)") from error
            delay = min(backoff_max_seconds, backoff_seconds * 2 ** (attempt - 1))
            sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 (jitter, not a secret)
    raise AssertionError("unreachable")
