"""Serving with its impressions: answer a request, and record what it showed as outcome events, off the request path."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.utils import timezone

from config.task_registry import registered_task
from consent.pseudonyms import subject_pseudonym
from experiments.models import OutcomeEvent
from recommender.selectors import Served, recommendations_for_subject

logger = logging.getLogger(__name__)

# recommender.tasks, by name: it imports this module.
IMPRESSIONS_RECORD_TASK = "recommender.tasks.recommendations_impressions_record"


def recommendations_serve(*, subject_id: str, limit: int = 20, session: Iterable[str] = ()) -> Served:
    """Answer a recommendation request, and have what was shown recorded as impression events.

    Impressions are recorded only for subjects in an experiment (they are its
    outcome data), by a Celery task, off the request path: the answer never
    waits for, or fails because of, the events table. Their event ids are
    fixed here, so a redelivered task records nothing twice.
    """
    served = recommendations_for_subject(subject_id=subject_id, limit=limit, session=tuple(session))
    if served.arm is not None and served.items:
        _impressions_enqueue(subject_id=subject_id, items=served.items)
    return served


def impression_events(*, pseudonym: str, request_id: str, shown_at: str, items: list[list[str]]) -> list[dict]:
    """One ``rec_impression`` event per item shown, ids fixed by the answer's ``request_id``."""
    return [
        {
            "event_id": f"imp-{request_id}-{position}",
            "subject_id": pseudonym,
            "type": OutcomeEvent.Type.REC_IMPRESSION.value,
            "timestamp": shown_at,
            "product_id": sku,
            "category": category,
            "position": position,
        }
        for position, (sku, category) in enumerate(items)
    ]


def _impressions_enqueue(*, subject_id: str, items: list[dict]) -> None:
    recommendations_impressions_record = registered_task(IMPRESSIONS_RECORD_TASK)
    shown = [[item["product"], item["category"]] for item in items]
    try:
        recommendations_impressions_record.apply_async(
            # The pseudonym, never the raw id: the message is stored in the broker.
            args=[subject_pseudonym(subject_id), uuid.uuid4().hex, timezone.now().isoformat(), shown],
            argsrepr=f"(<subject>, {len(shown)} items)",
            # Nobody reads the count it returns: without a result to wait for, the result
            # backend is not subscribed to (and unsubscribed from) on every request.
            ignore_result=True,
        )
    except Exception as exc:  # the broker is down: the answer still goes out
        logger.warning("recommendation impressions not queued (%s)", type(exc).__name__)


def impressions_record(*, pseudonym: str, request_id: str, shown_at: str, items: list[list[str]]) -> int:
    """Record what one answer showed through the outcome-events service; returns how many were new."""
    from experiments.services import events_record

    events = impression_events(pseudonym=pseudonym, request_id=request_id, shown_at=shown_at, items=items)
    try:
        return events_record(events=events, pseudonymous=True).recorded
    except ValidationError as exc:
        # E.g. the subject was erased meanwhile: nothing to attribute them to. Not retried.
        logger.warning("recommendation impressions not recorded (%s)", "; ".join(sorted(exc.message_dict)))
        return 0
