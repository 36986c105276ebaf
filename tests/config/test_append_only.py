"""config.append_only: the refusals are the decorated class's own methods, with the app's error."""

import pytest
from django.db import models

from config.append_only import append_only_model, append_only_queryset
from consent.models import ConsentEvent, LedgerIsAppendOnly


class Refused(RuntimeError):
    pass


@append_only_queryset(error=Refused, update_refused="no update", delete_refused="no delete")
class LockedQuerySet(models.QuerySet):
    pass


@append_only_queryset(error=Refused, update_refused="no update")
class DeletableQuerySet(models.QuerySet):
    pass


def test_a_queryset_refuses_updates_with_the_apps_error():
    queryset = LockedQuerySet(model=ConsentEvent)
    with pytest.raises(Refused, match="no update"):
        queryset.update(action="withdraw")
    with pytest.raises(Refused, match="no update"):
        queryset.bulk_update([], ["action"])
    with pytest.raises(Refused, match="no delete"):
        queryset.delete()


def test_deletes_stay_allowed_unless_refused():
    assert DeletableQuerySet.delete is models.QuerySet.delete
    with pytest.raises(Refused):
        DeletableQuerySet(model=ConsentEvent).update(action="withdraw")


def test_the_refusals_are_the_classs_own_so_super_reaches_django():
    # (How the ledger's PostgreSQL test proves the trigger holds past the Python layer.)
    queryset = LockedQuerySet(model=ConsentEvent)
    assert super(LockedQuerySet, queryset).update.__func__ is models.QuerySet.update


def test_the_manager_refuses_a_delete_too_instead_of_lacking_one():
    manager = LockedQuerySet.as_manager()
    manager.model = ConsentEvent
    with pytest.raises(Refused, match="no delete"):
        manager.delete()
    assert not hasattr(DeletableQuerySet.as_manager(), "delete")  # Django's: queryset only


class _State:
    def __init__(self, adding):
        self.adding = adding


class Row:
    saved = 0

    def __init__(self, adding):
        self._state = _State(adding)

    def save(self, *args, **kwargs):
        Row.saved += 1

    def delete(self, *args, **kwargs):
        return "deleted"


Locked = append_only_model(error=Refused, update_refused="no update", delete_refused="no delete")(
    type("Locked", (Row,), {})
)
Deletable = append_only_model(error=Refused, update_refused="no update")(type("Deletable", (Row,), {}))


def test_a_new_row_saves_and_a_stored_one_is_refused():
    before = Row.saved
    Locked(adding=True).save()
    assert Row.saved == before + 1
    with pytest.raises(Refused, match="no update"):
        Locked(adding=False).save()
    assert Row.saved == before + 1


def test_a_row_delete_is_refused_only_when_asked():
    with pytest.raises(Refused, match="no delete"):
        Locked(adding=False).delete()
    assert Deletable(adding=False).delete() == "deleted"


def test_the_ledger_refuses_with_its_own_error():
    with pytest.raises(LedgerIsAppendOnly, match="record a new event instead"):
        ConsentEvent.objects.none().update(action="withdraw")
    with pytest.raises(LedgerIsAppendOnly, match="erasure or the retention purge"):
        ConsentEvent.objects.delete()
