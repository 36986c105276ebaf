"""config.bulk: rows as column arrays, bound in binary on the server, in the caller's transaction."""

import uuid
from datetime import UTC, datetime

import pytest
from django.db import connection, transaction

from config.bulk import binary_cursor, column_arrays, unnest_casts, unnest_insert
from consent.models import ConsentEvent, Subject


def test_rows_become_one_list_per_column():
    assert column_arrays([(1, "a", None), (2, "b", 3.5)]) == [[1, 2], ["a", "b"], [None, 3.5]]
    assert column_arrays([]) == []
    with pytest.raises(ValueError):
        column_arrays([(1, 2), (3,)])  # a short row is a bug, never silently dropped


def test_no_rows_insert_nothing_without_touching_the_database():
    # No django_db mark: any database access would fail the test.
    assert unnest_insert(model=Subject, columns=["pseudonym"], rows=[]) == []


@pytest.mark.postgres
@pytest.mark.django_db
def test_casts_follow_the_fields_postgres_types():
    casts = unnest_casts(ConsentEvent, ["event_id", "subject", "notice", "recorded_at"])
    assert casts == "%b::uuid[], %b::varchar[], %b::bigint[], %b::timestamp with time zone[]"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_unnest_insert_writes_and_returns_in_the_callers_transaction():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    pseudonyms = [uuid.uuid4().hex + uuid.uuid4().hex for _ in range(3)]
    rows = [(p, "25-34", "Bali", "web", now) for p in pseudonyms]
    columns = ["pseudonym", "age_band", "province", "platform", "first_seen"]
    with transaction.atomic():
        returned = unnest_insert(model=Subject, columns=columns, rows=rows, suffix=" RETURNING pseudonym")
        assert sorted(p for (p,) in returned) == sorted(pseudonyms)
        # Django's own connection sees the rows: it is the same transaction.
        assert Subject.objects.filter(pk__in=pseudonyms, province="Bali").count() == 3
        transaction.set_rollback(True)
    assert not Subject.objects.filter(pk__in=pseudonyms).exists()
    # Without RETURNING nothing comes back; a conflict clause goes in the suffix.
    assert unnest_insert(model=Subject, columns=columns, rows=rows) == []
    again = unnest_insert(model=Subject, columns=columns, rows=rows, suffix=" ON CONFLICT DO NOTHING")
    assert again == [] and Subject.objects.filter(pk__in=pseudonyms).count() == 3
    Subject.objects.filter(pk__in=pseudonyms).delete()


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_binary_cursor_binds_a_whole_list_as_one_parameter():
    with binary_cursor() as cursor:
        cursor.execute("SELECT cardinality(%b::int[])", [list(range(5000))])
        assert cursor.fetchone() == (5000,)
    assert connection.connection is not None
