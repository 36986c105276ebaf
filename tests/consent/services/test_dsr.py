"""Data subject requests: export completeness, erasure everywhere, restriction, objection, due times."""

import json
import pickle
import uuid
from datetime import timedelta

import pytest
import time_machine
from django.apps import apps
from django.core.cache import cache
from django.db import connection, models
from django.test import override_settings
from django.utils import timezone

from consent import services, tasks
from consent.models import (
    ConsentEvent,
    ConsentTally,
    CurrentConsent,
    DataSubjectRequest,
    ErasureRecord,
    Subject,
)
from consent.pseudonyms import subject_pseudonym
from consent.registry import (
    personal_cache_register,
    personal_cache_sources,
    personal_data_register,
    personal_data_sources,
    personal_data_unregister,
)
from consent.selectors import (
    TOMBSTONE,
    TOMBSTONE_SECONDS,
    consent_state,
    personalization_allowed,
    state_cache_key,
)
from experiments.services import assignments_for_subject
from tests.consent.factories import grant, raw_id, tombstone_expire, withdraw
from tests.experiments.factories import running_experiment

pytestmark = pytest.mark.django_db
CONSENT_OWN = {
    "consent.subject",
    "consent.consentevent",
    "consent.currentconsent",
    "consent.datasubjectrequest",
}
UNREACHABLE_REDIS = {
    "default": {
        "BACKEND": "django_redis.cache.RedisCache",
        "LOCATION": "redis://127.0.0.1:6390/0",  # nothing listens here
        "OPTIONS": {
            "IGNORE_EXCEPTIONS": True,
            "SOCKET_CONNECT_TIMEOUT": 0.2,
            "SOCKET_TIMEOUT": 0.2,
        },
    }
}


def rows_referencing(*needles: str) -> dict[str, set]:
    """Every row, in every model of every app, with a field that holds one of ``needles``."""
    found: dict[str, set] = {}
    tables = set(connection.introspection.table_names())
    for model in apps.get_models():
        if model._meta.db_table not in tables:  # a model still without its migration holds nothing
            continue
        manager = model._base_manager
        for field in model._meta.concrete_fields:
            if field.is_relation:
                if field.related_model is Subject:
                    hits = manager.filter(**{f"{field.attname}__in": needles})
                else:
                    continue
            elif isinstance(field, models.JSONField):
                hits = [
                    pk
                    for pk, value in manager.values_list("pk", field.attname)
                    if any(needle in json.dumps(value, default=str) for needle in needles)
                ]
                hits = manager.filter(pk__in=hits)
            elif isinstance(field, models.CharField | models.TextField):
                query = models.Q()
                for needle in needles:
                    query |= models.Q(**{f"{field.attname}__contains": needle})
                hits = manager.filter(query)
            else:
                continue
            pks = set(hits.values_list("pk", flat=True))
            if pks:
                found.setdefault(model._meta.label_lower, set()).update(pks)
    return found


def cache_entries_referencing(needle: str) -> list[str]:
    """Cache entries whose key or stored value holds ``needle`` (local memory or Redis).

    The consent state's tombstone (a marker that holds nothing and expires within
    seconds, see ``consent.selectors``) is not an entry about anyone: it is left
    out here and checked by ``tombstones_referencing``.
    """
    store = getattr(cache, "_cache", None)
    if store is not None:  # LocMemCache: keys and pickled values in a dict
        return [
            key
            for key, value in store.items()
            if (needle in key or needle.encode() in value or needle in repr(pickle.loads(value)))  # noqa: S301
            and pickle.loads(value) != TOMBSTONE  # noqa: S301
        ]
    from django_redis import get_redis_connection

    redis = get_redis_connection("default")
    hits = []
    for key in redis.scan_iter(count=1000):
        value = redis.get(key) if redis.type(key) == b"string" else b""
        if (needle.encode() in key or needle.encode() in (value or b"")) and value != json.dumps(TOMBSTONE).encode():
            hits.append(key.decode())
    return hits


def tombstones_referencing(needle: str) -> list[tuple[str, float]]:
    """Tombstones whose key holds ``needle``, with the seconds each has left to live."""
    import time

    store = getattr(cache, "_cache", None)
    if store is not None:
        return [
            (key, cache._expire_info[key] - time.time())
            for key, value in store.items()
            if needle in key and pickle.loads(value) == TOMBSTONE  # noqa: S301
        ]
    from django_redis import get_redis_connection

    redis = get_redis_connection("default")
    return [
        (key.decode(), redis.pttl(key) / 1000)
        for key in redis.scan_iter(match=f"*{needle}*", count=1000)
        if redis.get(key) == json.dumps(TOMBSTONE).encode()
    ]


@pytest.fixture
def recommendations_cache():
    """A stand-in for the recommender's cache entries, registered as an app would."""
    personal_cache_register(label="test.recommendations", keys=lambda p: [f"test:recs:{p}"])
    yield lambda p: f"test:recs:{p}"
    personal_data_unregister(label="test.recommendations")


@pytest.fixture
def subject_everywhere(recommendations_cache, django_capture_on_commit_callbacks):
    """A subject with data in every table: attributes, exposures, consents, requests, caches."""
    subject = raw_id()
    experiment = running_experiment(arms=2)
    assignments_for_subject(
        subject_id=subject, attributes={"age_band": "25-34", "province": "Bali", "platform": "ios"}
    )
    grant(subject, source={"experiment": experiment.key, "arm": "control", "prompt": "modal"})
    grant(subject, "marketing")
    withdraw(subject, "marketing")
    grant(subject, "behavioral_tracking")
    with django_capture_on_commit_callbacks(execute=True):
        services.dsr_file(type="objection", subject_id=subject)
    pseudonym = subject_pseudonym(subject)
    consent_state(pseudonym=pseudonym)  # a warm consent cache entry
    cache.set(recommendations_cache(pseudonym), ["sku-1", "sku-2"])
    # A bystander whose data must survive the erasure untouched.
    bystander = raw_id()
    assignments_for_subject(subject_id=bystander, attributes={})
    grant(bystander)
    return subject, pseudonym, experiment, bystander


def erase(subject_id, capture):
    """File an erasure and carry it out once its grace period is over."""
    with capture(execute=True):
        request, created = services.dsr_file(type="erasure", subject_id=subject_id)
    assert created
    assert services.dsr_process(request_id=request.id)["outcome"] == "in_grace_period"
    with capture(execute=True):
        assert services.dsr_process(request_id=request.id, now=request.not_before)["outcome"] == "completed"
    return request


# --- the registry -------------------------------------------------------------------------------


def test_every_model_holding_subjects_is_registered():
    """A model with a foreign key to Subject that no app registered would escape export and erasure."""
    registered = {
        source.model._meta.label_lower for source in personal_data_sources() if source.model
    }
    for model in apps.get_models():
        if any(f.is_relation and f.related_model is Subject for f in model._meta.concrete_fields):
            label = model._meta.label_lower
            assert label in registered | CONSENT_OWN, (
                f"{label} holds subjects but is not registered"
            )


def test_registration_checks_fields_at_start_up():
    with pytest.raises(Exception, match="no field named"):
        personal_data_register(label="bad", model=Subject, subject_field="nope")
    with pytest.raises(ValueError, match="timestamp_field"):
        personal_data_register(
            label="bad", model=ConsentTally, subject_field="purpose", purpose="marketing"
        )
    with pytest.raises(ValueError, match="either a model"):
        personal_data_register(label="bad", export=lambda p: [])


def test_the_raw_id_is_stored_nowhere(subject_everywhere):
    subject, pseudonym, *_ = subject_everywhere
    assert rows_referencing(pseudonym)  # the subject is held…
    assert rows_referencing(subject) == {}  # …under its pseudonym only, in every model
    assert cache_entries_referencing(subject) == []


# --- access ---------------------------------------------------------------------------------------


def test_access_export_holds_everything_about_the_subject(
    api, subject_everywhere, django_capture_on_commit_callbacks
):
    subject, pseudonym, experiment, _ = subject_everywhere
    held = rows_referencing(pseudonym)
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/api/v1/subjects/{subject}/requests", {"type": "access"}, format="json"
        )
    request_id = response.json()["request_id"]
    export = api.get(f"/api/v1/subjects/{subject}/requests/{request_id}").json()["export"]

    assert export["subject"]["pseudonym"] == pseudonym
    assert (export["subject"]["province"], export["subject"]["platform"]) == ("Bali", "ios")
    assert export["subject"]["objected_at"] is not None
    history_ids = {h["event_id"] for h in export["consent"]["history"]}
    assert history_ids == {
        str(e)
        for e in ConsentEvent.objects.filter(subject_id=pseudonym).values_list(
            "event_id", flat=True
        )
    }
    assert (
        len(export["consent"]["current"])
        == CurrentConsent.objects.filter(subject_id=pseudonym).count()
        == 3
    )
    assert {r["type"] for r in export["requests"]} == {"objection", "access"}
    exposures = export["sources"]["experiments.exposure"]
    assert [(e["experiment_id"], e["subject_id"]) for e in exposures] == [
        (experiment.pk, pseudonym)
    ]

    # Completeness: every table that holds a row about the subject is in the export, row for row.
    exported = {
        "consent.subject": {export["subject"]["pseudonym"]},
        "consent.consentevent": set(
            ConsentEvent.objects.filter(event_id__in=history_ids).values_list("pk", flat=True)
        ),
        "consent.currentconsent": set(
            CurrentConsent.objects.filter(subject_id=pseudonym).values_list("pk", flat=True)
        ),
        "consent.datasubjectrequest": {uuid.UUID(r["id"]) for r in export["requests"]},
        **{label: {row["id"] for row in rows} for label, rows in export["sources"].items()},
    }
    for label, pks in held.items():
        assert pks <= exported.get(label, set()), f"{label} rows missing from the export"
    json.dumps(export)  # a plain JSON document


def test_export_of_an_unknown_subject_is_empty(django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        request, _ = services.dsr_file(type="access", subject_id=raw_id())
    request.refresh_from_db()
    assert request.status == "completed"
    assert request.export["subject"] is None and request.export["consent"]["history"] == []


# --- erasure --------------------------------------------------------------------------------------


def test_erasure_leaves_no_row_and_no_cache_entry(
    subject_everywhere, recommendations_cache, django_capture_on_commit_callbacks
):
    subject, pseudonym, experiment, bystander = subject_everywhere
    tallies = list(
        ConsentTally.objects.order_by("pk").values_list("day", "purpose", "action", "count")
    )
    assert rows_referencing(pseudonym)  # the scan does find the subject before…
    assert cache_entries_referencing(pseudonym)

    erase(subject, django_capture_on_commit_callbacks)

    assert rows_referencing(pseudonym, subject) == {}  # …and nothing after, in any model of any app
    assert cache_entries_referencing(pseudonym) == []
    # Only the consent state's tombstone names the subject's key, holding nothing, for seconds.
    assert [ttl <= TOMBSTONE_SECONDS for _, ttl in tombstones_referencing(pseudonym)] == [True]
    assert cache.get(recommendations_cache(pseudonym)) is None
    # The erasure record holds counts and times, nothing that leads back to the subject.
    record = ErasureRecord.objects.get()
    assert record.rows_by_source["consent.consentevent"] == 4
    assert record.rows_by_source["experiments.exposure"] == 1
    assert record.rows_erased == sum(record.rows_by_source.values())
    registered_keys = sum(len(list(source.keys(pseudonym))) for source in personal_cache_sources())
    assert record.on_time and record.cache_keys_erased == 1 + registered_keys  # the consent state's own
    # Aggregates that identify nobody stay; the bystander is untouched.
    assert (
        list(ConsentTally.objects.order_by("pk").values_list("day", "purpose", "action", "count"))
        == tallies
    )
    assert experiment.exposures.filter(subject_id=subject_pseudonym(bystander)).exists()
    assert personalization_allowed(subject_id=bystander)
    # What the platform now knows of the subject: nothing.
    assert not consent_state(subject_id=subject).personalization_allowed
    assert not DataSubjectRequest.objects.filter(subject_pseudonym=pseudonym).exists()
    assert not record.found_nothing


def test_erasure_is_idempotent(subject_everywhere, django_capture_on_commit_callbacks):
    subject, pseudonym, *_ = subject_everywhere
    request = erase(subject, django_capture_on_commit_callbacks)
    assert tasks.dsr_process.delay(str(request.id)).get()["outcome"] == "already_done"
    assert services.dsr_process(request_id=request.id, now=request.due_at)["outcome"] == "already_done"
    assert ErasureRecord.objects.count() == 1


def test_pending_erasure_restricts_processing_until_done(django_capture_on_commit_callbacks):
    subject = raw_id()
    grant(subject)
    with django_capture_on_commit_callbacks(execute=False):  # the task is not run yet
        request, _ = services.dsr_file(type="erasure", subject_id=subject)
    assert DataSubjectRequest.objects.get(pk=request.id).status == "received"
    assert personalization_allowed(subject_id=subject) is False  # before the task has run
    assert ConsentEvent.objects.filter(subject_id=subject_pseudonym(subject)).exists()
    services.dsr_process(request_id=request.id, now=request.not_before)
    assert not Subject.objects.filter(pk=subject_pseudonym(subject)).exists()


def test_erasure_waits_for_the_cache(django_capture_on_commit_callbacks):
    subject = raw_id()
    grant(subject)
    with override_settings(CACHES=UNREACHABLE_REDIS):
        with django_capture_on_commit_callbacks(execute=False):
            request, _ = services.dsr_file(type="erasure", subject_id=subject)
        with pytest.raises(services.CacheUnavailable):
            services.dsr_process(request_id=request.id, now=request.not_before)
    # Nothing was erased, the request is still open, and the next attempt completes it.
    assert ConsentEvent.objects.filter(subject_id=subject_pseudonym(subject)).exists()
    assert DataSubjectRequest.objects.get(pk=request.id).status == "received"
    assert services.dsr_process(request_id=request.id, now=request.not_before)["outcome"] == "completed"
    assert not ConsentEvent.objects.filter(subject_id=subject_pseudonym(subject)).exists()


def test_the_task_notes_a_failed_attempt_without_personal_data(
    django_capture_on_commit_callbacks, monkeypatch
):
    subject = raw_id()
    with django_capture_on_commit_callbacks(execute=False):
        request, _ = services.dsr_file(type="access", subject_id=subject)

    def broken(**kwargs):
        raise RuntimeError(f"something about {subject}")

    monkeypatch.setattr("consent.services.dsr.subject_export", broken)
    with pytest.raises(RuntimeError):
        tasks.dsr_process.delay(str(request.id))
    request.refresh_from_db()
    assert request.status == "received" and request.last_error == "RuntimeError"


@pytest.mark.redis
def test_erasure_leaves_no_key_in_redis(
    subject_everywhere, recommendations_cache, django_capture_on_commit_callbacks
):
    from django_redis import get_redis_connection

    subject, pseudonym, *_ = subject_everywhere
    redis = get_redis_connection("default")
    assert list(redis.scan_iter(match=f"*{pseudonym}*"))  # the state and the recommendations
    erase(subject, django_capture_on_commit_callbacks)
    # Only the consent state's tombstone is left: it holds nothing and expires within seconds.
    left = list(redis.scan_iter(match=f"*{pseudonym}*"))
    assert [redis.get(key) for key in left] == [json.dumps(TOMBSTONE).encode()]
    assert 0 < redis.pttl(left[0]) <= TOMBSTONE_SECONDS * 1000
    assert list(redis.scan_iter(match=f"*{subject}*")) == []
    assert rows_referencing(pseudonym, subject) == {}


# --- restriction, objection, due times ---------------------------------------------------------------


def test_requests_are_due_in_72_hours_and_processed(django_capture_on_commit_callbacks):
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        request, created = services.dsr_file(type="restriction", subject_id=raw_id(), now=now)
    assert created and request.due_at - request.received_at == timedelta(hours=72)
    request.refresh_from_db()
    assert request.status == "completed" and request.completed_at >= request.received_at


def test_lost_tasks_are_enqueued_again(django_capture_on_commit_callbacks):
    subject = raw_id()
    with django_capture_on_commit_callbacks(execute=False):  # the broker never got the task
        request, _ = services.dsr_file(type="access", subject_id=subject)
    assert services.dsr_enqueue_open() == 0  # too fresh: its own task may still be on the way
    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        assert tasks.dsr_enqueue_open.delay().get() == 1
    request.refresh_from_db()
    assert request.status == "completed"
    assert services.dsr_enqueue_open() == 0


def test_lifting_a_restriction_or_objection(django_capture_on_commit_callbacks):
    subject = raw_id()
    grant(subject)
    with django_capture_on_commit_callbacks(execute=True):
        services.dsr_file(type="restriction", subject_id=subject)
        services.dsr_file(type="objection", subject_id=subject)
    assert personalization_allowed(subject_id=subject) is False
    pseudonym = subject_pseudonym(subject)
    services.subject_processing_resume(pseudonym=pseudonym, restriction=True)
    assert personalization_allowed(subject_id=subject) is False  # the objection still holds
    services.subject_processing_resume(pseudonym=pseudonym, objection=True)
    assert personalization_allowed(subject_id=subject) is True


# --- consent with Redis unreachable -----------------------------------------------------------------


def test_consent_with_redis_unreachable(api):
    subject = raw_id()
    with override_settings(CACHES=UNREACHABLE_REDIS):
        assert cache.get("anything") is None  # the cache is really down, and swallowed
        response = api.post(
            "/api/v1/consents",
            {
                "subject_id": subject,
                "purpose": "personalization",
                "action": "grant",
                "notice_version": "1",
            },
            format="json",
        )
        assert response.status_code == 201
        assert personalization_allowed(subject_id=subject) is True  # read from the database
        response = api.post(
            "/api/v1/consents",
            {"subject_id": subject, "purpose": "personalization", "action": "withdraw"},
            format="json",
        )
        assert response.status_code == 201
        # The withdrawal is committed before the response…
        state = CurrentConsent.objects.get(
            subject_id=subject_pseudonym(subject), purpose="personalization"
        )
        assert state.granted is False
        assert (
            ConsentEvent.objects.filter(
                subject_id=subject_pseudonym(subject), action="withdraw"
            ).count()
            == 1
        )
        # …and the next read, with no cache to consult, answers from the database.
        assert personalization_allowed(subject_id=subject) is False
        purposes = api.get(f"/api/v1/subjects/{subject}/consents").json()["purposes"]
        assert {p["purpose"]: p["status"] for p in purposes}["personalization"] == "withdrawn"
    assert cache.get(state_cache_key(subject_pseudonym(subject))) is None


@pytest.mark.redis
def test_withdrawal_with_the_real_redis_cache_warm(django_assert_num_queries):
    from django_redis import get_redis_connection

    subject = raw_id()
    grant(subject)
    tombstone_expire(subject)
    assert personalization_allowed(subject_id=subject)
    redis = get_redis_connection("default")
    assert list(redis.scan_iter(match=f"*{state_cache_key(subject_pseudonym(subject))}"))
    with django_assert_num_queries(0):
        assert personalization_allowed(subject_id=subject)
    withdraw(subject)
    assert personalization_allowed(subject_id=subject) is False
