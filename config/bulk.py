"""Bulk SQL on PostgreSQL with binary arrays bound on the server (``INSERT … SELECT FROM unnest(…)``).

The ingestion hot paths write thousands of rows per request. Django's cursor
quotes every value into the statement's text on the client, and the ORM's
``bulk_create`` prepares every value through its field; both cost more than
the insert itself. Here the rows travel as one binary array parameter per
column (``%b`` placeholders), through a psycopg cursor on Django's own
connection, so the statement runs in the caller's transaction. PostgreSQL
only: callers keep their portable path for SQLite.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

from django.db import connection, models

if TYPE_CHECKING:
    import psycopg


@contextmanager
def binary_cursor() -> Iterator[psycopg.Cursor]:
    """A server-binding psycopg cursor on Django's default connection (the same transaction)."""
    import psycopg

    connection.ensure_connection()
    with psycopg.Cursor(connection.connection) as cursor:
        yield cursor


def column_arrays(rows: Sequence[Sequence]) -> list[list]:
    """The rows as one list per column: the parameters of ``unnest(%b::type[], …)``."""
    return [list(column) for column in zip(*rows, strict=True)]


def unnest_casts(model: type[models.Model], columns: Sequence[str]) -> str:
    """``%b::type[], …`` for the model's fields, in order (their PostgreSQL types, without a length)."""
    return ", ".join(
        f"%b::{model._meta.get_field(name).db_type(connection).split('(')[0]}[]" for name in columns
    )


def unnest_insert(
    *, model: type[models.Model], columns: Sequence[str], rows: Sequence[Sequence], suffix: str = ""
) -> list[tuple]:
    """Insert plain, already-validated rows (``columns`` order) in one statement.

    ``suffix`` follows the ``SELECT`` (``" ON CONFLICT DO NOTHING"``,
    ``" RETURNING id, event_id"``); the rows it returns are returned, else ``[]``.
    Values go as they are: datetimes must be aware, decimals quantized.
    """
    if not rows:
        return []
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    column_list = ", ".join(quote(model._meta.get_field(name).column) for name in columns)
    with binary_cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({column_list}) SELECT * FROM unnest({unnest_casts(model, columns)}){suffix}",  # noqa: S608 — our identifiers
            column_arrays(rows),
        )
        return cursor.fetchall() if cursor.description is not None else []
