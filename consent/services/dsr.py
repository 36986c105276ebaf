"""Data subject requests: filing, cancelling and serving access, erasure, restriction and objection."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from config.task_registry import registered_task
from consent.models import DataSubjectRequest, ErasureRecord, Subject
from consent.pseudonyms import subject_id_problem, subject_pseudonym
from consent.services.cache import consent_cache_invalidate
from consent.services.subjects import subject_erase, subject_export

logger = logging.getLogger(__name__)

# consent.tasks, by name: it imports this module.
DSR_PROCESS_TASK = "consent.tasks.dsr_process"

DSR_DUE_AFTER = timedelta(hours=72)  # UU PDP Arts. 32, 40, 41: 3 × 24 hours


class CacheUnavailable(RuntimeError):
    """The shared cache does not answer; an erasure waits for it (a transient error)."""


def _subject_flag(pseudonym: str, **flags: datetime) -> None:
    Subject.objects.get_or_create(pseudonym=pseudonym)
    Subject.objects.filter(pk=pseudonym, **{f"{name}__isnull": True for name in flags}).update(
        **flags
    )
    consent_cache_invalidate(pseudonyms=[pseudonym])


def _resolve(subject_id: str | None, pseudonym: str | None) -> str:
    if (subject_id is None) == (pseudonym is None):
        raise TypeError("pass exactly one of subject_id (raw) or pseudonym")
    if subject_id is not None:
        if (issue := subject_id_problem(subject_id)) is not None:
            raise ValidationError({"subject_id": issue})
        return subject_pseudonym(subject_id)
    return pseudonym


def erasure_grace() -> timedelta:
    """How long an erasure waits, cancellable, before it runs (``ERASURE_GRACE_HOURS``)."""
    return timedelta(hours=float(settings.ERASURE_GRACE_HOURS))


def dsr_file(
    *,
    type: str,
    subject_id: str | None = None,
    pseudonym: str | None = None,
    filed_by: str = "",
    now: datetime | None = None,
) -> tuple[DataSubjectRequest, bool]:
    """File a data subject request; returns it and whether it is new.

    An open request of the same type for the subject is returned instead of a
    second one. Restriction and objection take effect at once (stopping
    processing is always safe) and so does a restriction while an erasure is
    pending. An erasure runs once its grace period (``erasure_grace()``) is
    over, and can be cancelled until it has run (``dsr_cancel``); the Celery
    task ``dsr_process`` completes every request. ``filed_by`` names the
    caller (an API key's prefix, an admin user) for the record and the log.
    """
    if type not in DataSubjectRequest.Type.values:
        raise ValidationError(
            {"type": f"{type!r} is not one of {', '.join(DataSubjectRequest.Type.values)}."}
        )
    pseudonym = _resolve(subject_id, pseudonym)
    now = now or timezone.now()
    open_requests = DataSubjectRequest.objects.filter(
        subject_pseudonym=pseudonym, type=type, status=DataSubjectRequest.Status.RECEIVED
    )
    erasure = type == DataSubjectRequest.Type.ERASURE
    try:
        with transaction.atomic():
            existing = open_requests.select_for_update().first()
            if existing is not None:
                return existing, False
            request = DataSubjectRequest.objects.create(
                subject_pseudonym=pseudonym,
                type=type,
                received_at=now,
                due_at=now + DSR_DUE_AFTER,
                not_before=now + erasure_grace() if erasure else None,
                filed_by=filed_by[:160],
            )
            if type in (DataSubjectRequest.Type.RESTRICTION, DataSubjectRequest.Type.ERASURE):
                _subject_flag(pseudonym, restricted_at=now)
            elif type == DataSubjectRequest.Type.OBJECTION:
                _subject_flag(pseudonym, objected_at=now)
            if not erasure or request.not_before <= now:
                transaction.on_commit(lambda: dsr_enqueue(request_id=request.id), robust=True)
            # An erasure in its grace period is enqueued by ``dsr_enqueue_open`` once it is over.
    except IntegrityError:  # a concurrent filing of the same request won
        return open_requests.get(), False
    logger.info(
        "data subject request %s (%s) received from %s, due %s%s",
        request.id,
        type,
        filed_by or "an internal caller",
        request.due_at.isoformat(),
        f", runs after {request.not_before.isoformat()}" if erasure else "",
    )
    return request, True


class RequestNotCancellable(ValidationError):
    """The request cannot be cancelled (not an erasure, or already completed or cancelled)."""


def dsr_cancel(
    *, request_id: uuid.UUID, pseudonym: str, cancelled_by: str = "", now: datetime | None = None
) -> DataSubjectRequest:
    """Cancel an erasure that has not run yet; the restriction it imposed is lifted.

    The restriction stays if the subject also asked for one (a restriction
    request of theirs, open or completed). Raises ``DataSubjectRequest.DoesNotExist``
    for a request that is not this subject's, ``RequestNotCancellable`` for one
    that cannot be cancelled. Serialised with ``dsr_process`` by the row lock:
    an erasure is either cancelled or carried out, never both.
    """
    now = now or timezone.now()
    with transaction.atomic():
        request = DataSubjectRequest.objects.select_for_update().get(pk=request_id, subject_pseudonym=pseudonym)
        if request.type != DataSubjectRequest.Type.ERASURE:
            raise RequestNotCancellable({"request_id": "Only an erasure request can be cancelled."})
        if request.status != DataSubjectRequest.Status.RECEIVED:
            raise RequestNotCancellable({"request_id": f"The erasure is already {request.status}."})
        request.status = DataSubjectRequest.Status.CANCELLED
        request.cancelled_at = now
        request.save(update_fields=["status", "cancelled_at"])
        asked_for_restriction = DataSubjectRequest.objects.filter(
            subject_pseudonym=pseudonym,
            type=DataSubjectRequest.Type.RESTRICTION,
            status__in=[DataSubjectRequest.Status.RECEIVED, DataSubjectRequest.Status.COMPLETED],
        ).exists()
        if not asked_for_restriction:
            Subject.objects.filter(pk=pseudonym).update(restricted_at=None)
            consent_cache_invalidate(pseudonyms=[pseudonym])
    logger.info("erasure request %s cancelled by %s", request.id, cancelled_by or "an internal caller")
    return request


def dsr_enqueue(*, request_id: uuid.UUID) -> None:
    registered_task(DSR_PROCESS_TASK).delay(str(request_id))


def dsr_enqueue_open(
    *, now: datetime | None = None, settle: timedelta = timedelta(minutes=10)
) -> int:
    """Enqueue every open request that is due to run: erasures whose grace is over, others
    older than ``settle`` (their task may have been lost)."""
    now = now or timezone.now()
    ids = list(
        DataSubjectRequest.objects.filter(status=DataSubjectRequest.Status.RECEIVED)
        .filter(
            Q(not_before__isnull=True, received_at__lte=now - settle) | Q(not_before__lte=now)
        )
        .values_list("id", flat=True)
    )
    for request_id in ids:
        dsr_enqueue(request_id=request_id)
    return len(ids)


def dsr_process(*, request_id: uuid.UUID, now: datetime | None = None) -> dict:
    """Serve one data subject request; a request already served (or erased) is left alone.

    An erasure still in its grace period is left for later (``dsr_enqueue_open``).
    Returns a summary without personal data (it lands in the task result backend).
    """
    now = now or timezone.now()
    request = DataSubjectRequest.objects.filter(pk=request_id).only("type", "status", "not_before").first()
    if request is None:
        return {"request": str(request_id), "outcome": "not_found"}
    if request.status != DataSubjectRequest.Status.RECEIVED:
        return {"request": str(request_id), "outcome": "already_done"}
    if request.type == DataSubjectRequest.Type.ERASURE:
        if request.not_before is not None and now < request.not_before:
            return {"request": str(request_id), "outcome": "in_grace_period"}
        return _dsr_erase(request_id, now)
    with transaction.atomic():
        request = DataSubjectRequest.objects.select_for_update().filter(pk=request_id).first()
        if request is None or request.status != DataSubjectRequest.Status.RECEIVED:
            return {"request": str(request_id), "outcome": "already_done"}
        request.attempts += 1
        if request.type == DataSubjectRequest.Type.ACCESS:
            request.export = subject_export(pseudonym=request.subject_pseudonym, now=now)
        elif request.type == DataSubjectRequest.Type.RESTRICTION:
            _subject_flag(request.subject_pseudonym, restricted_at=request.received_at)
        elif request.type == DataSubjectRequest.Type.OBJECTION:
            _subject_flag(request.subject_pseudonym, objected_at=request.received_at)
        request.status = DataSubjectRequest.Status.COMPLETED
        request.completed_at = now
        request.last_error = ""
        request.save()
    logger.info("data subject request %s (%s) completed", request.id, request.type)
    return {
        "request": str(request.id),
        "type": request.type,
        "outcome": "completed",
        "on_time": now <= request.due_at,
    }


def dsr_note_failure(*, request_id: uuid.UUID, error: BaseException) -> None:
    """Count a failed attempt; only the error's class is kept (messages may quote data)."""
    DataSubjectRequest.objects.filter(
        pk=request_id, status=DataSubjectRequest.Status.RECEIVED
    ).update(last_error=type(error).__name__[:500])

def _cache_answers() -> bool:
    key, token = f"consent:probe:{uuid.uuid4().hex}", uuid.uuid4().hex
    cache.set(key, token, timeout=30)
    answered = cache.get(key) == token
    cache.delete(key)
    return answered


def _dsr_erase(request_id: uuid.UUID, now: datetime) -> dict:
    if not _cache_answers():
        # Erasing the tables while cache entries survive would leave the subject
        # in the cache; the task retries (the request is due in 72 hours).
        raise CacheUnavailable("the cache does not answer; erasure postponed")
    with transaction.atomic():
        request = DataSubjectRequest.objects.select_for_update().filter(pk=request_id).first()
        if request is None or request.status != DataSubjectRequest.Status.RECEIVED:
            return {"request": str(request_id), "outcome": "already_done"}
        received_at, due_at, pseudonym = request.received_at, request.due_at, request.subject_pseudonym
        # The request's record stays, readable by its id, with nothing that names the subject.
        DataSubjectRequest.objects.filter(pk=request.pk).update(
            status=DataSubjectRequest.Status.COMPLETED,
            completed_at=now,
            subject_pseudonym="",
            attempts=request.attempts + 1,
            last_error="",
        )
        summary = subject_erase(pseudonym=pseudonym)
        record = ErasureRecord.objects.create(
            received_at=received_at,
            due_at=due_at,
            completed_at=now,
            rows_erased=summary.rows,
            rows_by_source=summary.rows_by_source,
            cache_keys_erased=summary.cache_keys,
            found_nothing=summary.found_nothing,
        )
    if summary.found_nothing:
        # The marketplace asked to erase someone it knows; finding nothing usually means the
        # data was stored under other pseudonyms (another key, another form of the id).
        logger.error(
            "ALERT erasure (record %s) found nothing held about the subject: check that "
            "PRIVACYLAB_PSEUDONYM_KEY is the key the data was stored under (docs/operations.md)",
            record.pk,
        )
    logger.info("erasure completed (record %s): %s rows", record.pk, summary.rows)
    return {
        "request": str(request_id),
        "type": "erasure",
        "outcome": "completed",
        "on_time": now <= due_at,
    }


def subject_processing_resume(
    *, pseudonym: str, restriction: bool = False, objection: bool = False
) -> None:
    """Lift a restriction of processing or an objection (the DPO, once the subject agrees)."""
    flags = {}
    if restriction:
        flags["restricted_at"] = None
    if objection:
        flags["objected_at"] = None
    if not flags:
        return
    with transaction.atomic():
        Subject.objects.filter(pk=pseudonym).update(**flags)
        consent_cache_invalidate(pseudonyms=[pseudonym])
