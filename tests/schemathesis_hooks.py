"""schemathesis hooks: the preconditions of the API that no OpenAPI schema can state.

Loaded by ``tests/test_api_schema.py`` (``SCHEMATHESIS_HOOKS=tests.schemathesis_hooks``).
Every rule a schema *can* state is in the schema, and schemathesis checks it
both ways (data it allows is accepted, data it forbids refused). What is left
depends on the server's state or relates several values to each other, and is
written in each operation's description and in docs/operations.md ("The API
contract"). For positive (schema-valid) cases only, these hooks make the
generated data meet exactly those preconditions, and touch nothing else:

``events_create``
  * the subject must be known (an assignment or a consent created it): every
    event names ``KNOWN_SUBJECT``, which the test creates before the run;
  * the time lies from 2000-01-01T00:00:00Z to at most 5 minutes after the
    server's clock (the schema's ``x-earliest``/``x-latest``): a generated time
    outside is moved into 2001-2025, keeping its month, day, time and offset;
  * an event id names one event (the same id for a different event is refused,
    in this batch or an earlier one): the id gets a suffix derived from the
    event's content and its place in the batch, so the same id always means
    the same event.

``consents_create``
  * at most one decision per subject and purpose in a batch: a repeated pair
    gets another subject id (the generated one plus ``~<index>``);
  * an event id names one decision (the same id for a different decision is
    refused): the id is derived from the decision's content and place.

``exposures_create``
  * the experiment is a running one and the arm the one the documented
    algorithm assigns the subject: every exposure names the experiment of the
    configuration the test passes (``PRIVACYLAB_SCHEMATHESIS_CONFIG``, the
    document of ``GET /api/v1/config``) and the arm ``privacylab_client``
    computes for its subject (no rollout ramps in the run: a generated rollout
    exposure is made an experiment exposure);
  * the time is not before the experiment started (just before the run) nor
    more than 5 minutes after the server's clock: it is the current time.

Negative cases are left as generated: they must be refused whatever the state.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import uuid
from datetime import UTC, datetime

import schemathesis

KNOWN_SUBJECT = os.environ.get("PRIVACYLAB_SCHEMATHESIS_SUBJECT", "user-42")
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)  # experiments.services.EARLIEST_EVENT
_ID_NAMESPACE = uuid.UUID("5f0c2b7e-7d1a-4c36-9a56-2f7f5a0e1d12")


def _operation_id(case) -> str | None:
    return case.operation.definition.raw.get("operationId")


def _digest(value: object, index: int) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(f"{index}:{text}".encode()).hexdigest()


def _time_in_range(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        moment = datetime.fromisoformat(value.upper())  # RFC 3339 allows a lower-case t and z
    except ValueError:
        return value  # the server must take every RFC 3339 date-time: let it say so
    if moment.tzinfo is None or EARLIEST <= moment <= datetime.now(UTC):
        return value
    year = 2001 + moment.year % 25
    try:
        moment = moment.replace(year=year)
    except ValueError:  # 29 February
        moment = moment.replace(year=year, day=28)
    return moment.isoformat()


def _events_prepared(body: dict) -> dict:
    for index, event in enumerate(body.get("events") or []):
        if not isinstance(event, dict):
            continue
        event["subject_id"] = KNOWN_SUBJECT
        if "timestamp" in event:
            event["timestamp"] = _time_in_range(event["timestamp"])
        if isinstance(event.get("event_id"), str):
            content = {name: value for name, value in event.items() if name != "event_id"}
            event["event_id"] = f"{event['event_id'][:106]}~{_digest(content, index)[:21]}"
    return body


def _consents_prepared(body: dict) -> dict:
    events = body["events"] if isinstance(body.get("events"), list) else [body]
    pairs: set[tuple[object, object]] = set()
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            continue
        subject = event.get("subject_id")
        while isinstance(subject, str) and (subject, event.get("purpose")) in pairs:
            subject = f"{subject[:240]}~{index}"
        event["subject_id"] = subject
        pairs.add((subject, event.get("purpose")))
        if "event_id" in event:
            content = {name: value for name, value in event.items() if name != "event_id"}
            event["event_id"] = str(uuid.uuid5(_ID_NAMESPACE, _digest(content, index)))
    return body


def _exposures_prepared(body: dict) -> dict:
    from privacylab_client import assign, config_parse

    config = config_parse(json.loads(os.environ["PRIVACYLAB_SCHEMATHESIS_CONFIG"]))
    experiment = config.experiments[0]
    for exposure in body.get("exposures") or []:
        if not isinstance(exposure, dict):
            continue
        # No rollout ramps in the run: every exposure is made the experiment's (docs/assignment.md, "Exposures").
        exposure.pop("rollout", None)
        exposure["experiment"] = experiment.key
        if isinstance(exposure.get("subject_id"), str):
            exposure["arm"] = assign(experiment.spec, exposure["subject_id"]) or exposure.get("arm")
        if isinstance(exposure.get("timestamp"), str):
            # The only times both after the test's experiment started and at most 5 minutes ahead.
            exposure["timestamp"] = datetime.now(UTC).isoformat()
    return body


_PREPARE = {
    "events_create": _events_prepared,
    "consents_create": _consents_prepared,
    "exposures_create": _exposures_prepared,
}


@schemathesis.hook
def map_case(context, case):
    prepare = _PREPARE.get(_operation_id(case))
    meta = case.meta
    if prepare is None or meta is None or not meta.generation.mode.is_positive or not isinstance(case.body, dict):
        return case
    case.body = prepare(copy.deepcopy(case.body))
    return case
