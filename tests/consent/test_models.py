"""The ledger is append-only: in Python, and on PostgreSQL in the database itself."""

import pytest
from django.db import DatabaseError, connection, transaction
from django.db.models.deletion import ProtectedError

from consent.models import ConsentEvent, LedgerIsAppendOnly, Subject
from consent.pseudonyms import subject_pseudonym
from tests.consent.factories import grant, raw_id

pytestmark = pytest.mark.django_db


@pytest.fixture
def event():
    subject = raw_id()
    grant(subject)
    return ConsentEvent.objects.get(subject_id=subject_pseudonym(subject))


def test_saving_an_existing_event_is_refused(event):
    event.action = ConsentEvent.Action.WITHDRAW
    with pytest.raises(LedgerIsAppendOnly):
        event.save()
    assert ConsentEvent.objects.get(pk=event.pk).action == "grant"


def test_deleting_an_event_is_refused(event):
    with pytest.raises(LedgerIsAppendOnly):
        event.delete()
    assert ConsentEvent.objects.filter(pk=event.pk).exists()


def test_queryset_update_and_delete_are_refused(event):
    with pytest.raises(LedgerIsAppendOnly):
        ConsentEvent.objects.filter(pk=event.pk).update(action="withdraw")
    with pytest.raises(LedgerIsAppendOnly):
        ConsentEvent.objects.all().delete()
    with pytest.raises(LedgerIsAppendOnly):
        ConsentEvent.objects.bulk_update([event], ["action"])
    with pytest.raises(LedgerIsAppendOnly):
        ConsentEvent.objects.update_or_create(pk=event.pk, defaults={"action": "withdraw"})
    assert ConsentEvent.objects.get(pk=event.pk).action == "grant"


def test_only_erasure_and_retention_may_delete(event):
    with pytest.raises(LedgerIsAppendOnly):
        ConsentEvent.objects.filter(pk=event.pk).sanctioned_delete(reason="cleanup")
    assert ConsentEvent.objects.filter(pk=event.pk).exists()


def test_a_subject_with_a_ledger_cannot_be_deleted_around_it(event):
    with pytest.raises(ProtectedError):
        Subject.objects.filter(pk=event.subject_id).delete()
    assert ConsentEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.postgres
def test_postgres_refuses_update_and_delete_of_the_ledger(event):
    statements = (
        "UPDATE consent_consentevent SET action = 'withdraw' WHERE id = %s",
        "DELETE FROM consent_consentevent WHERE id = %s",
    )
    for statement in statements:
        with (
            pytest.raises(DatabaseError, match="Cannot update or delete rows"),
            transaction.atomic(),
            connection.cursor() as cursor,
        ):
            cursor.execute(statement, [event.pk])
    # Bypassing the Python layer does not help either.
    with pytest.raises(DatabaseError), transaction.atomic():
        ConsentEvent.objects.filter(pk=event.pk)._raw_delete(connection.alias)
    with pytest.raises(DatabaseError), transaction.atomic():
        models_update = ConsentEvent.objects.filter(pk=event.pk)
        super(type(models_update), models_update).update(action="withdraw")
    assert ConsentEvent.objects.get(pk=event.pk).action == "grant"


@pytest.mark.postgres
def test_postgres_allows_the_sanctioned_deletion_only(event):
    with transaction.atomic():
        assert ConsentEvent.objects.filter(pk=event.pk).sanctioned_delete(reason="erasure") == 1
    assert not ConsentEvent.objects.filter(pk=event.pk).exists()
    # The exemption ends with the statement: the next raw delete is refused again.
    other = raw_id()
    grant(other)
    with pytest.raises(DatabaseError), transaction.atomic():
        ConsentEvent.objects.filter(subject_id=subject_pseudonym(other))._raw_delete(
            connection.alias
        )


@pytest.mark.postgres
def test_postgres_trigger_is_installed():
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
            [ConsentEvent._meta.db_table],
        )
        names = [row[0] for row in cursor.fetchall()]
    assert any("append_only" in name for name in names)
