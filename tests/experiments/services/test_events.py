"""Outcome events: POST /api/v1/events and events_record — idempotency, all-or-nothing, bad input."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from config.text import LABEL_MESSAGE
from consent.models import Subject
from consent.pseudonyms import subject_pseudonym
from experiments.models import OrderLine, OutcomeEvent, OutcomeEventIsAppendOnly
from experiments.services.event_validation import MAX_EVENTS_PER_BATCH
from experiments.services.events import events_record

pytestmark = pytest.mark.django_db
URL = "/api/v1/events"


@pytest.fixture
def subjects(db):
    Subject.objects.bulk_create([Subject(pseudonym=subject_pseudonym(f"u-{i}")) for i in range(3)])


def order(event_id="o-1", subject="u-0", amount="150000.00", **extra):
    return {
        "event_id": event_id,
        "subject_id": subject,
        "type": "order",
        "timestamp": (timezone.now() - timedelta(hours=1)).isoformat(),
        "amount": amount,
        "lines": [
            {"product_id": "sku-1", "category": "fashion", "quantity": 1, "price": "100000"},
            {"product_id": "sku-2", "category": "health", "quantity": 2, "price": 25000},
        ],
        **extra,
    }


def impression(event_id="i-1", subject="u-0", kind="rec_impression", **extra):
    return {
        "event_id": event_id,
        "subject_id": subject,
        "type": kind,
        "timestamp": "2025-03-01T10:00:00+07:00",
        "product_id": "sku-9",
        "category": "electronics",
        "position": 3,
        **extra,
    }


def post(api, events):
    return api.post(URL, {"events": events}, format="json")


def test_a_batch_is_stored_with_its_lines(api, subjects):
    response = post(api, [order(), impression(), impression("c-1", kind="rec_click")])
    assert response.status_code == 201, response.content
    assert response.json() == {"received": 3, "recorded": 3, "duplicates": [], "withheld": []}
    stored = OutcomeEvent.objects.get(event_id="o-1")
    assert stored.subject_id == subject_pseudonym("u-0")
    assert stored.amount == Decimal("150000.00")
    assert stored.received_at >= stored.occurred_at
    lines = list(OrderLine.objects.filter(event=stored).values_list("product_id", "category", "quantity", "price"))
    assert lines == [("sku-1", "fashion", 1, Decimal("100000")), ("sku-2", "health", 2, Decimal("25000"))]
    assert set(OrderLine.objects.values_list("subject_id", flat=True)) == {stored.subject_id}
    click = OutcomeEvent.objects.get(event_id="c-1")
    assert (click.type, click.product_id, click.category, click.position, click.amount) == (
        "rec_click", "sku-9", "electronics", 3, None
    )


def test_a_replayed_batch_changes_nothing_and_reports_duplicates(api, subjects):
    batch = [order(), impression()]
    assert post(api, batch).status_code == 201
    before = (OutcomeEvent.objects.count(), OrderLine.objects.count())
    replay = post(api, [*batch, impression("i-2")])
    assert replay.status_code == 201
    assert replay.json() == {"received": 3, "recorded": 1, "duplicates": ["o-1", "i-1"], "withheld": []}
    assert (OutcomeEvent.objects.count(), OrderLine.objects.count()) == (before[0] + 1, before[1])


def test_same_id_for_a_different_event_is_refused(api, subjects):
    post(api, [order()])
    response = post(api, [impression("i-5"), order(amount="1")])
    assert response.status_code == 400
    assert response.json() == {"events[1].event_id": ["Already recorded for a different event."]}
    assert not OutcomeEvent.objects.filter(event_id="i-5").exists()


def test_one_bad_event_writes_nothing_and_is_named_by_index_and_field(api, subjects):
    response = post(api, [order(), impression(), order("o-2", amount="-5")])
    assert response.status_code == 400
    assert response.json() == {"events[2].amount": ["Must not be negative."]}
    assert not OutcomeEvent.objects.exists() and not OrderLine.objects.exists()


RFC3339 = "Must be an RFC 3339 date-time with seconds, e.g. 2025-01-31T12:00:00+07:00."
PLAIN_MONEY = "Must be written as digits with at most 2 decimal places, e.g. 150000.00."


@pytest.mark.parametrize(
    ("event", "field", "message"),
    [
        (order(amount="abc"), "events[0].amount", "Must be a number (IDR)."),
        (order(amount=True), "events[0].amount", "Must be a number (IDR)."),
        (order(amount="NaN"), "events[0].amount", "Must be a finite number."),
        (order(amount="1.234"), "events[0].amount", "At most 2 decimal places."),
        (order(amount="1e20"), "events[0].amount", "Must be less than 10,000,000,000,000 IDR."),
        ({**order(), "amount": None}, "events[0].amount", "Must be a number (IDR)."),
        ({k: v for k, v in order().items() if k != "amount"}, "events[0].amount", "An order needs its amount (IDR)."),
        ({**order(), "lines": []}, "events[0].lines", "An order needs a non-empty list of line items."),
        (
            {**order(), "lines": [{"product_id": "p", "category": "c", "quantity": 0, "price": 1}]},
            "events[0].lines[0].quantity",
            "Must be a whole number from 1 to 1,000,000.",
        ),
        (
            {**order(), "lines": [{"product_id": "p", "category": "c", "quantity": 1, "price": -1}]},
            "events[0].lines[0].price",
            "Must not be negative.",
        ),
        (
            {**order(), "lines": [{"product_id": "p", "quantity": 1, "price": 1}]},
            "events[0].lines[0].category",
            "This field is required.",
        ),
        ({**order(), "type": "refund"}, "events[0].type", "'refund' is not one of order, rec_impression, rec_click."),
        ({**order(), "type": {}}, "events[0].type", "'{}' is not one of order, rec_impression, rec_click."),
        ({**order(), "type": ["order"]}, "events[0].type", "\"['order']\" is not one of order, rec_impression, rec_click."),
        ({**order(), "colour": "red"}, "events[0].colour", "Unknown field."),
        ({**impression(), "amount": 5}, "events[0].amount", "Unknown field."),
        ({k: v for k, v in impression().items() if k != "product_id"}, "events[0].product_id", "This field is required."),
        (impression(position=-1), "events[0].position", "Must be a whole number from 0 to 32767."),
        (impression(timestamp="yesterday"), "events[0].timestamp", "Must be an ISO 8601 date-time, e.g. 2025-01-31T12:00:00+07:00."),
        (impression(timestamp="2025-03-01T10:00:00"), "events[0].timestamp", "Must include a time zone offset (e.g. +07:00 or Z)."),
        (impression(timestamp="2999-01-01T00:00:00Z"), "events[0].timestamp", "Is in the future (more than 5 minutes ahead of the server clock)."),
        (impression(timestamp=12), "events[0].timestamp", "Must be an ISO 8601 date-time string."),
        # ISO 8601 spellings that are not RFC 3339 (the schema's date-time), and a leap second.
        (impression(timestamp="2025-03-01T10:00+07:00"), "events[0].timestamp", RFC3339),
        (impression(timestamp="2025-03-01 10:00:00Z"), "events[0].timestamp", RFC3339),
        (impression(timestamp="2016-12-31T23:59:60Z"), "events[0].timestamp", "Must be an ISO 8601 date-time, e.g. 2025-01-31T12:00:00+07:00."),
        (impression(event_id=""), "events[0].event_id", "Must not be empty."),
        (impression(event_id="a b"), "events[0].event_id", "Must not contain whitespace, control or format characters."),
        # The schema's published patterns (config.text): format characters too, as the schema says.
        (impression(event_id="a\u200bb"), "events[0].event_id", "Must not contain whitespace, control or format characters."),
        (impression(product_id="   "), "events[0].product_id", LABEL_MESSAGE),
        (impression(category="home\u2028living"), "events[0].category", LABEL_MESSAGE),
        # Money as text: plain digits only, as the schema's pattern says (no exponent, sign or spaces).
        (order(amount="1e3"), "events[0].amount", PLAIN_MONEY),
        (order(amount=" 12"), "events[0].amount", PLAIN_MONEY),
        (order(amount="+5"), "events[0].amount", PLAIN_MONEY),
        (impression(subject="a/b"), "events[0].subject_id", "Must not contain whitespace, control characters or '/'."),
        (impression(subject="nobody"), "events[0].subject_id", "Unknown subject: it has no assignment or consent on record."),
        ("not an event", "events[0]", "Must be an object."),
    ],
)
def test_bad_input_is_a_400_naming_the_event_and_field(api, subjects, event, field, message):
    response = post(api, [impression("ok-1"), event] if isinstance(event, dict) else [event])
    assert response.status_code == 400, response.content
    body = response.json()
    index_shift = 1 if isinstance(event, dict) else 0
    field = field.replace("events[0]", f"events[{index_shift}]")
    assert message in body[field], body
    assert not OutcomeEvent.objects.exists()


def test_a_future_timestamp_within_clock_skew_is_accepted(api, subjects):
    soon = (timezone.now() + timedelta(minutes=2)).isoformat()
    assert post(api, [impression(timestamp=soon)]).status_code == 201


def test_every_rfc_3339_spelling_is_accepted(api, subjects):
    # Lower-case "t" and "z", a numeric offset, any number of fraction digits: all RFC 3339.
    events = [
        impression("t-1", timestamp="2025-03-01t10:00:00z"),
        impression("t-2", timestamp="2025-03-01T10:00:00.123456789-05:30"),
        impression("t-3", timestamp="2025-03-01T10:00:00.5Z"),
    ]
    response = post(api, events)
    assert response.status_code == 201, response.content
    assert OutcomeEvent.objects.get(event_id="t-1").occurred_at == datetime(2025, 3, 1, 10, tzinfo=UTC)


def test_an_id_repeated_within_a_batch_is_refused(api, subjects):
    response = post(api, [impression("x"), impression("x")])
    assert response.status_code == 400
    assert response.json() == {"events[1].event_id": ["Duplicate of events[0]."]}


@pytest.mark.parametrize(
    ("payload", "key", "message"),
    [
        ({"events": []}, "events", "Send at least one event."),
        ({"events": {"a": 1}}, "events", "Must be a list of events."),
        ({}, "events", "This field is required."),
        ({"events": [], "extra": 1}, "extra", "Unknown field."),
    ],
)
def test_malformed_envelopes_are_refused(api, payload, key, message):
    response = api.post(URL, payload, format="json")
    assert response.status_code == 400
    assert message in response.json()[key][0]


def test_an_oversize_batch_is_refused_before_anything_is_written(api, subjects):
    events = [impression(f"i-{n}") for n in range(MAX_EVENTS_PER_BATCH + 1)]
    response = post(api, events)
    assert response.status_code == 400
    assert "At most 1000 events per batch" in response.json()["events"][0]
    assert not OutcomeEvent.objects.exists()


def test_a_full_batch_is_two_bulk_inserts(subjects):
    events = [order(f"o-{n}", subject=f"u-{n % 3}") for n in range(MAX_EVENTS_PER_BATCH)]
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        result = events_record(events=events)
    assert result.recorded == MAX_EVENTS_PER_BATCH
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("INSERT")]
    # SQLite splits a bulk insert by its parameter limit; PostgreSQL does each table in one statement.
    assert len(inserts) <= (2 if connection.vendor == "postgresql" else 200)
    assert OrderLine.objects.count() == 2 * MAX_EVENTS_PER_BATCH


def test_service_accepts_datetimes_and_numbers(subjects):
    when = timezone.now() - timedelta(days=1)
    result = events_record(events=[{**order(), "timestamp": when, "amount": 150000}])
    assert result.recorded == 1
    assert OutcomeEvent.objects.get().occurred_at == when


def test_events_are_append_only(subjects):
    events_record(events=[order()])
    event = OutcomeEvent.objects.get()
    with pytest.raises(OutcomeEventIsAppendOnly):
        OutcomeEvent.objects.update(amount=0)
    with pytest.raises(OutcomeEventIsAppendOnly):
        event.save()
    with pytest.raises(OutcomeEventIsAppendOnly):
        OrderLine.objects.all().update(quantity=9)


@pytest.mark.postgres
def test_the_database_refuses_updates_too(subjects):
    from django.db import ProgrammingError, transaction

    events_record(events=[order()])
    with pytest.raises(ProgrammingError, match="Cannot update"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE experiments_outcomeevent SET amount = 0")


def test_erasing_a_subject_removes_its_events(subjects):
    events_record(events=[order(), impression()])
    Subject.objects.filter(pk=subject_pseudonym("u-0")).delete()
    assert not OutcomeEvent.objects.exists() and not OrderLine.objects.exists()


def test_service_errors_are_validation_errors(subjects):
    with pytest.raises(ValidationError) as caught:
        events_record(events=[order(amount="-1")])
    assert caught.value.message_dict == {"events[0].amount": ["Must not be negative."]}


def test_events_need_an_api_key(client):
    assert client.post(URL, {"events": []}, content_type="application/json").status_code in (401, 403)
