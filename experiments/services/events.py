"""Ingest of outcome events (orders, recommendation impressions and clicks): idempotent bulk inserts."""

from dataclasses import dataclass, field
from datetime import datetime

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from config.bulk import binary_cursor, unnest_insert
from consent.pseudonyms import subject_pseudonym
from consent.selectors import OBJECTED, RESTRICTED, subjects_processing_limits
from experiments.models import (
    OrderLine,
    OutcomeEvent,
)
from experiments.services.event_validation import BatchProblems, events_check


@dataclass(frozen=True)
class EventsRecorded:
    """What ``events_record`` did: how many events it stored, which ids it had already, and
    which it did not store because the subject restricted processing or objected."""

    received: int
    recorded: int
    duplicates: list[str]
    withheld: list[str] = field(default_factory=list)


# What is not collected about a subject who restricted processing (nothing at all) or
# objected to profiling (their behaviour: impressions and clicks). docs/privacy.md.
WITHHELD_TYPES = {
    RESTRICTED: frozenset(OutcomeEvent.Type.values),
    OBJECTED: frozenset({OutcomeEvent.Type.REC_IMPRESSION, OutcomeEvent.Type.REC_CLICK}),
}



def _same_event(row: dict, clean: dict, pseudonym: str) -> bool:
    return (
        row["subject_id"] == pseudonym
        and row["type"] == clean["type"]
        and row["occurred_at"] == clean["occurred_at"]
        and row["amount"] == clean["amount"]
        and row["product_id"] == clean["product_id"]
    )


def events_record(*, events: list[dict], now: datetime | None = None, pseudonymous: bool = False) -> EventsRecorded:
    """Record a batch of outcome events: all or nothing, idempotent by ``event_id``.

    ``events`` is a list (at most ``MAX_EVENTS_PER_BATCH``) of dicts as the API
    receives them::

        {"event_id": "o-123", "subject_id": "<marketplace id>", "type": "order",
         "timestamp": "2025-03-01T10:00:00+07:00" (or an aware datetime),
         "amount": "150000.00",
         "lines": [{"product_id": "p1", "category": "fashion", "quantity": 1, "price": 150000}]}
        {"event_id": "imp-9-0", "subject_id": "...", "type": "rec_impression" | "rec_click",
         "timestamp": ..., "product_id": "p1", "category": "fashion", "position": 0}

    The subject must already be known (an assignment or consent created it).
    Nothing is stored for a subject who restricted processing, and no
    impression or click for one who objected to profiling: those events are
    accepted and listed in ``withheld``. An event whose id is already stored is
    a duplicate: not written again, and reported in ``duplicates``; the same id with a different subject, type,
    time, amount or product is an error. Any error anywhere raises a
    ``ValidationError`` keyed ``events[i].field`` and writes nothing. Events
    and order lines go in with one bulk insert each, in one transaction.

    ``pseudonymous``: the ``subject_id`` values are already pseudonyms. For
    the platform's own callers (the recommender's impression task), so that
    no raw id has to travel through the broker to get here.
    """
    now = now or timezone.now()
    cleaned = events_check(events=events, now=now)
    try:
        return _events_insert(cleaned, now, pseudonymous=pseudonymous)
    except IntegrityError:
        # A concurrent request stored one of these ids first: the second pass
        # sees it as a duplicate (or a conflict) instead of inserting it.
        return _events_insert(cleaned, now, pseudonymous=pseudonymous)


def _existing(pseudonyms: list[str], event_ids: list[str]) -> tuple[dict[str, str], dict[str, dict]]:
    """Which subjects exist (pseudonym → "restricted", "objected" or ""), and the stored events
    with these ids (the fields a replay must match)."""
    known = subjects_processing_limits(pseudonyms=pseudonyms)
    fields = ("event_id", "subject_id", "type", "occurred_at", "amount", "product_id")
    if connection.vendor == "postgresql":
        # = ANY(array): one parameter, where IN would need a thousand for the driver to parse.
        # Binary parameters, bound server-side (see _insert_returning_ids).
        quote = connection.ops.quote_name
        with binary_cursor() as cursor:
            cursor.execute(
                f"SELECT {', '.join(fields)} FROM {quote(OutcomeEvent._meta.db_table)} "  # noqa: S608
                "WHERE event_id = ANY(%b::varchar[])",
                [event_ids],
            )
            rows = [dict(zip(fields, row, strict=True)) for row in cursor.fetchall()]
        return known, {row["event_id"]: row for row in rows}
    rows = OutcomeEvent.objects.filter(event_id__in=event_ids).values(*fields)
    return known, {row["event_id"]: row for row in rows}


def _events_insert(cleaned: list[dict], now: datetime, *, pseudonymous: bool) -> EventsRecorded:
    pseudonyms = [
        clean["subject_id"] if pseudonymous else subject_pseudonym(clean["subject_id"]) for clean in cleaned
    ]
    problems = BatchProblems()
    with transaction.atomic():
        known, existing = _existing(sorted(set(pseudonyms)), [clean["event_id"] for clean in cleaned])
        duplicates: list[str] = []
        withheld: list[str] = []
        fresh: list[tuple[dict, str]] = []
        for index, (clean, pseudonym) in enumerate(zip(cleaned, pseudonyms, strict=True)):
            if pseudonym not in known:
                problems.add(
                    f"events[{index}].subject_id",
                    "Unknown subject: it has no assignment or consent on record.",
                )
                continue
            if known[pseudonym] and clean["type"] in WITHHELD_TYPES[known[pseudonym]]:
                withheld.append(clean["event_id"])
                continue
            row = existing.get(clean["event_id"])
            if row is not None:
                if _same_event(row, clean, pseudonym):
                    duplicates.append(clean["event_id"])
                else:
                    problems.add(f"events[{index}].event_id", "Already recorded for a different event.")
                continue
            fresh.append((clean, pseudonym))
        problems.raise_if_any()
        adapt = connection.ops.adapt_datetimefield_value
        received = adapt(now)
        ids = _insert_returning_ids(
            OutcomeEvent,
            ["event_id", "subject_id", "type", "occurred_at", "received_at", "amount", "product_id", "category", "position"],
            [
                (
                    clean["event_id"], pseudonym, clean["type"], adapt(clean["occurred_at"]), received,
                    clean["amount"], clean["product_id"], clean["category"], clean["position"],
                )
                for clean, pseudonym in fresh
            ],
        )
        _insert_returning_ids(
            OrderLine,
            ["event_id", "subject_id", "occurred_at", "product_id", "category", "quantity", "price"],
            [
                (
                    ids[clean["event_id"]], pseudonym, adapt(clean["occurred_at"]), line["product_id"],
                    line["category"], line["quantity"], line["price"],
                )
                for clean, pseudonym in fresh
                for line in clean["lines"]
            ],
            returning=False,
        )
    return EventsRecorded(received=len(cleaned), recorded=len(ids), duplicates=duplicates, withheld=withheld)


# Rows per INSERT statement: within SQLite's 32,766 and PostgreSQL's 65,535 parameters.
_INSERT_PARAMETERS = 30_000


def _insert_returning_ids(model, columns: list[str], rows: list[tuple], *, returning: bool = True) -> dict:
    """Insert plain, already-validated values; ``{event_id: id}`` of the new rows when ``returning``.

    The ingestion hot path. The ORM's bulk_create prepares every value through
    its field and PostgreSQL's driver parses a statement with one placeholder
    per value; both cost more than the insert itself. On PostgreSQL the rows go
    as one array per column (``config.bulk.unnest_insert``: a fixed, small
    statement); on SQLite as multi-row VALUES. Datetimes must already be
    adapted by the caller.
    """
    if not rows:
        return {}
    suffix = " RETURNING id, event_id" if returning else ""
    if connection.vendor == "postgresql":
        returned = unnest_insert(model=model, columns=columns, rows=rows, suffix=suffix)
        return {event_id: pk for pk, event_id in returned}
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    column_list = ", ".join(quote(model._meta.get_field(name).column) for name in columns)
    ids: dict = {}
    with connection.cursor() as cursor:
        per_statement = max(1, _INSERT_PARAMETERS // len(columns))
        placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            cursor.execute(
                f"INSERT INTO {table} ({column_list}) VALUES {', '.join([placeholder] * len(chunk))}{suffix}",  # noqa: S608
                [value for row in chunk for value in row],
            )
            if returning:
                ids.update((event_id, pk) for pk, event_id in cursor.fetchall())
    return ids
