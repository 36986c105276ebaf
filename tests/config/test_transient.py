"""config.transient: what the tasks retry, and what they do not."""

from django.db import DatabaseError, IntegrityError, InterfaceError, OperationalError

from config.transient import TRANSIENT_ERRORS
from consent.services.dsr import CacheUnavailable
from consent.tasks import TRANSIENT


def test_a_briefly_unreachable_database_is_transient():
    assert issubclass(OperationalError, TRANSIENT_ERRORS)
    assert issubclass(InterfaceError, TRANSIENT_ERRORS)


def test_bad_data_and_bugs_are_not():
    for error in (IntegrityError, DatabaseError, ValueError, KeyError):
        assert not issubclass(error, TRANSIENT_ERRORS)


def test_consent_adds_the_cache_being_down_during_an_erasure():
    assert (*TRANSIENT_ERRORS, CacheUnavailable) == TRANSIENT
