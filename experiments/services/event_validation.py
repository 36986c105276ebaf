"""Validation of outcome event batches, before anything touches the database: limits, field rules and the clean form."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.utils import timezone

from config.text import text_problem
from consent.pseudonyms import subject_id_problem
from experiments.models import OutcomeEvent

MAX_EVENTS_PER_BATCH = 1000
MAX_LINES_PER_ORDER = 200
MAX_AMOUNT = Decimal("1e13")  # IDR; above any single order the marketplace can take
MAX_QUANTITY = 1_000_000
MAX_EVENT_ID_LENGTH = 128
# An amount or price sent as text: up to 13 digits (less than MAX_AMOUNT) and at most 2 decimals.
MONEY_PATTERN = re.compile("^[0-9]{1,13}(?:[.][0-9]{1,2})?$")
# An RFC 3339 date-time (the schema's format), without the leap second (":60") Python cannot hold.
RFC3339_PATTERN = re.compile(
    "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}:[0-5][0-9](?:[.][0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})"
)
MAX_LABEL_LENGTH = 64  # product ids and categories
FUTURE_TOLERANCE = timedelta(minutes=5)  # client clocks run a little ahead; more is a bug
EARLIEST_EVENT = datetime(2000, 1, 1, tzinfo=UTC)

_COMMON_FIELDS = frozenset({"event_id", "subject_id", "type", "timestamp"})
_FIELDS_BY_TYPE = {
    OutcomeEvent.Type.ORDER: _COMMON_FIELDS | {"amount", "lines"},
    OutcomeEvent.Type.REC_IMPRESSION: _COMMON_FIELDS | {"product_id", "category", "position"},
    OutcomeEvent.Type.REC_CLICK: _COMMON_FIELDS | {"product_id", "category", "position"},
}
_LINE_FIELDS = frozenset({"product_id", "category", "quantity", "price"})


class BatchProblems:
    """Field errors of a batch, keyed ``events[i].field`` (``events[i].lines[j].field`` for lines)."""

    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ValidationError(self.errors)


def _money(value: object, name: str, problems: BatchProblems, *, maximum: Decimal = MAX_AMOUNT) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        problems.add(name, "Must be a number (IDR).")
        return None
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        problems.add(name, "Must be a number (IDR).")
        return None
    if not amount.is_finite():
        problems.add(name, "Must be a finite number.")
    elif amount < 0:
        problems.add(name, "Must not be negative.")
    elif amount >= maximum:
        problems.add(name, f"Must be less than {maximum:,.0f} IDR.")
    elif amount.as_tuple().exponent < -2:
        problems.add(name, "At most 2 decimal places.")
    elif isinstance(value, str) and not MONEY_PATTERN.fullmatch(value):
        # Only plain decimals as text (what the schema publishes): no exponent, sign, spaces or separators.
        problems.add(name, "Must be written as digits with at most 2 decimal places, e.g. 150000.00.")
    else:
        return amount.quantize(Decimal("0.01"))
    return None


def timestamp_clean(value: object, name: str, problems: BatchProblems, now: datetime) -> datetime | None:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        rfc3339 = RFC3339_PATTERN.fullmatch(value) is not None
        try:
            # RFC 3339 lets "T" and "Z" be written in lower case; Python's parser wants them upper.
            moment = datetime.fromisoformat(value.upper() if rfc3339 else value)
        except ValueError:
            problems.add(name, "Must be an ISO 8601 date-time, e.g. 2025-01-31T12:00:00+07:00.")
            return None
    else:
        problems.add(name, "Must be an ISO 8601 date-time string.")
        return None
    if moment.tzinfo is None or moment.utcoffset() is None:
        problems.add(name, "Must include a time zone offset (e.g. +07:00 or Z).")
        return None
    if isinstance(value, str) and not rfc3339:
        # The schema's format (date-time) is RFC 3339's: other ISO 8601 spellings are refused, as it says.
        problems.add(name, "Must be an RFC 3339 date-time with seconds, e.g. 2025-01-31T12:00:00+07:00.")
        return None
    if moment > now + FUTURE_TOLERANCE:
        problems.add(name, "Is in the future (more than 5 minutes ahead of the server clock).")
        return None
    if moment < EARLIEST_EVENT:
        problems.add(name, "Is before 2000-01-01: not a plausible event time.")
        return None
    return moment


def _order_lines(value: object, prefix: str, problems: BatchProblems) -> list[dict] | None:
    if not isinstance(value, list) or not value:
        problems.add(f"{prefix}.lines", "An order needs a non-empty list of line items.")
        return None
    if len(value) > MAX_LINES_PER_ORDER:
        problems.add(f"{prefix}.lines", f"At most {MAX_LINES_PER_ORDER} line items per order.")
        return None
    lines = []
    for j, line in enumerate(value):
        name = f"{prefix}.lines[{j}]"
        if not isinstance(line, dict):
            problems.add(name, "Must be an object with product_id, category, quantity and price.")
            continue
        for unknown in sorted(set(line) - _LINE_FIELDS, key=str):
            problems.add(f"{name}.{unknown}", "Unknown field.")
        for required in sorted(_LINE_FIELDS - set(line)):
            problems.add(f"{name}.{required}", "This field is required.")
        clean = {}
        for label in ("product_id", "category"):
            if label in line and (issue := text_problem(line[label], max_length=MAX_LABEL_LENGTH, label=True)) is not None:
                problems.add(f"{name}.{label}", issue)
            clean[label] = line.get(label)
        quantity = line.get("quantity")
        if "quantity" in line and (
            isinstance(quantity, bool) or not isinstance(quantity, int) or not 1 <= quantity <= MAX_QUANTITY
        ):
            problems.add(f"{name}.quantity", f"Must be a whole number from 1 to {MAX_QUANTITY:,}.")
        clean["quantity"] = quantity
        clean["price"] = _money(line["price"], f"{name}.price", problems) if "price" in line else None
        lines.append(clean)
    return lines


def _event_clean(index: int, event: object, problems: BatchProblems, now: datetime) -> dict | None:
    """One event, checked field by field: a dict of clean values, or None (problems recorded)."""
    prefix = f"events[{index}]"
    if not isinstance(event, dict):
        problems.add(prefix, "Must be an object.")
        return None
    before = len(problems.errors)
    kind = event.get("type")
    if not isinstance(kind, str):  # a list or an object is not a type (and cannot be looked up)
        kind = repr(kind)
    if kind not in _FIELDS_BY_TYPE:
        problems.add(f"{prefix}.type", f"{kind!r} is not one of order, rec_impression, rec_click.")
        allowed = _COMMON_FIELDS | _FIELDS_BY_TYPE[OutcomeEvent.Type.ORDER] | _FIELDS_BY_TYPE[OutcomeEvent.Type.REC_CLICK]
    else:
        allowed = _FIELDS_BY_TYPE[kind]
    for unknown in sorted(set(event) - allowed, key=str):
        problems.add(f"{prefix}.{unknown}", "Unknown field.")
    for required in ("event_id", "subject_id", "timestamp"):
        if required not in event:
            problems.add(f"{prefix}.{required}", "This field is required.")
    if "event_id" in event and (issue := text_problem(event["event_id"], max_length=MAX_EVENT_ID_LENGTH)) is not None:
        problems.add(f"{prefix}.event_id", issue)
    if "subject_id" in event and (issue := subject_id_problem(event["subject_id"])) is not None:
        problems.add(f"{prefix}.subject_id", issue)
    occurred_at = timestamp_clean(event["timestamp"], f"{prefix}.timestamp", problems, now) if "timestamp" in event else None
    clean = {
        "event_id": event.get("event_id"),
        "subject_id": event.get("subject_id"),
        "type": kind,
        "occurred_at": occurred_at,
        "amount": None,
        "product_id": "",
        "category": "",
        "position": None,
        "lines": (),
    }
    if kind == OutcomeEvent.Type.ORDER:
        if "amount" not in event:
            problems.add(f"{prefix}.amount", "An order needs its amount (IDR).")
        else:
            clean["amount"] = _money(event["amount"], f"{prefix}.amount", problems)
        clean["lines"] = _order_lines(event.get("lines"), prefix, problems)
    elif kind in _FIELDS_BY_TYPE:
        if "product_id" not in event:
            problems.add(f"{prefix}.product_id", "This field is required.")
        elif (issue := text_problem(event["product_id"], max_length=MAX_LABEL_LENGTH, label=True)) is not None:
            problems.add(f"{prefix}.product_id", issue)
        else:
            clean["product_id"] = event["product_id"]
        category = event.get("category", "")
        if category != "" and (issue := text_problem(category, max_length=MAX_LABEL_LENGTH, label=True)) is not None:
            problems.add(f"{prefix}.category", issue)
        else:
            clean["category"] = category
        position = event.get("position")
        if position is not None and (
            isinstance(position, bool) or not isinstance(position, int) or not 0 <= position <= 32767
        ):
            problems.add(f"{prefix}.position", "Must be a whole number from 0 to 32767.")
        else:
            clean["position"] = position
    return clean if len(problems.errors) == before else None


def batch_envelope_check(*, field: str, batch: object, limit: int) -> None:
    """A batch is a non-empty list of at most ``limit`` items, or a ValidationError on ``field``."""
    if not isinstance(batch, list):
        raise ValidationError({field: [f"Must be a list of {field}."]})
    if not batch:
        raise ValidationError({field: [f"Send at least one {field.removesuffix('s')}."]})
    if len(batch) > limit:
        raise ValidationError({field: [f"At most {limit} {field} per batch (got {len(batch)}); split it."]})


def events_check(*, events: object, now: datetime | None = None) -> list[dict]:
    """Validate a batch without writing: the clean events, or a ValidationError naming each bad field.

    Errors are keyed ``events[i].field`` (``events[i].lines[j].field`` for order
    lines). Checks everything that can be known before touching the database,
    including an event id repeated within the batch.
    """
    now = now or timezone.now()
    batch_envelope_check(field="events", batch=events, limit=MAX_EVENTS_PER_BATCH)
    problems = BatchProblems()
    cleaned = [_event_clean(index, event, problems, now) for index, event in enumerate(events)]
    first_index: dict[str, int] = {}
    for index, clean in enumerate(cleaned):
        if clean is None:
            continue
        event_id = clean["event_id"]
        if event_id in first_index:
            problems.add(f"events[{index}].event_id", f"Duplicate of events[{first_index[event_id]}].")
        first_index.setdefault(event_id, index)
    problems.raise_if_any()
    return cleaned
