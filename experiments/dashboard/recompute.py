"""The dashboard's "recompute now": an owner's request for a results run, and where it stands.

The request is remembered in the shared cache per experiment (task id and
time), so every viewer of the page sees the same progress and a second click
within a minute joins the first request instead of queueing another run. The
task itself is the pipeline's ``results_compute``, enqueued by ``results_enqueue`` after the commit
like every task here; ``recompute_status`` reads its progress back.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from experiments.models import Experiment, Exposure, ResultSnapshot
from experiments.results.enqueue import results_enqueue
from experiments.tasks import results_compute

logger = logging.getLogger(__name__)

# Longer than results_compute's 15-minute time limit: a request is tracked until it must have ended.
RECOMPUTE_TRACKED_SECONDS = 20 * 60
RECOMPUTE_JOIN_SECONDS = 60
SLOW_RECOMPUTE = timedelta(minutes=2)


def recompute_cache_key(experiment_id: int) -> str:
    return f"dashboard:recompute:{experiment_id}"


@dataclass(frozen=True)
class RecomputeRequest:
    task_id: str
    requested_at: datetime
    enqueue_failed: bool = False
    # Why the run was not started, or failed, in words for the owner ("" when unknown).
    reason: str = ""

    def as_cache(self) -> dict:
        return {
            "task_id": self.task_id,
            "requested_at": self.requested_at.isoformat(),
            "enqueue_failed": self.enqueue_failed,
            "reason": self.reason,
        }

    @classmethod
    def from_cache(cls, value: object) -> RecomputeRequest | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(
                task_id=str(value["task_id"]),
                requested_at=datetime.fromisoformat(value["requested_at"]),
                enqueue_failed=bool(value.get("enqueue_failed", False)),
                reason=str(value.get("reason", "")),
            )
        except (KeyError, TypeError, ValueError):
            return None


def recompute_request_get(*, experiment: Experiment) -> RecomputeRequest | None:
    return RecomputeRequest.from_cache(cache.get(recompute_cache_key(experiment.pk)))


def _finished_since(experiment: Experiment, moment: datetime) -> bool:
    return ResultSnapshot.objects.filter(experiment=experiment, computed_at__gte=moment).exists()


def recompute_refusal(*, experiment: Experiment) -> str:
    """Why results cannot be computed for the experiment now, in words ("" when they can).

    Checked before a run is queued, so the owner reads the reason on the page
    instead of a failed run and a line in a log.
    """
    arms = list(experiment.arms.order_by("id").values_list("key", "is_control"))
    if not arms:
        return "This experiment has no arms yet: add a control arm and a treatment arm in the admin."
    if not any(is_control for _, is_control in arms):
        return ("This experiment has no control arm, so there is nothing to compare the treatments with: "
                "mark one arm as the control in the admin.")
    if len(arms) < 2:
        return "This experiment has only its control arm: add a treatment arm to compare with it."
    if experiment.started_at is None:
        return ("This experiment has not started, so nobody has been exposed to it yet: results can be "
                "computed once it runs.")
    if not Exposure.objects.filter(experiment=experiment, phase=experiment.phase).exists():
        return (f"Nobody has been exposed to this experiment yet (phase {experiment.phase}): results can be "
                "computed once the marketplace has assigned subjects to its arms.")
    return ""


def results_recompute_request(*, experiment: Experiment, requested_by) -> RecomputeRequest:
    """Enqueue ``results_compute`` for the experiment now, once per minute at most.

    An experiment whose results cannot be computed (``recompute_refusal``) gets
    no run: the request is recorded as refused, with the reason.
    """
    now = timezone.now()
    refusal = recompute_refusal(experiment=experiment)
    if refusal:
        request = RecomputeRequest(task_id="", requested_at=now, enqueue_failed=True, reason=refusal)
        cache.set(recompute_cache_key(experiment.pk), request.as_cache(), timeout=RECOMPUTE_TRACKED_SECONDS)
        return request
    pending = recompute_request_get(experiment=experiment)
    if (
        pending is not None
        and not pending.enqueue_failed
        and (now - pending.requested_at).total_seconds() < RECOMPUTE_JOIN_SECONDS
        and not _finished_since(experiment, pending.requested_at)
    ):
        return pending
    request = RecomputeRequest(task_id=str(uuid.uuid4()), requested_at=now)
    key = recompute_cache_key(experiment.pk)
    cache.set(key, request.as_cache(), timeout=RECOMPUTE_TRACKED_SECONDS)
    experiment_id = experiment.pk

    def enqueue() -> None:
        try:
            results_enqueue(experiment_ids=[experiment_id], task_id=request.task_id, after_commit=False)
        except ValidationError as error:
            # With eager tasks the run happens here: a refusal in words goes to the page.
            logger.warning("experiment %s: the results recompute was refused: %s", experiment_id, error)
            cache.set(key, replace(request, enqueue_failed=True, reason=" ".join(error.messages)).as_cache(),
                      timeout=RECOMPUTE_TRACKED_SECONDS)
        except Exception:
            # A broker outage (or, with eager tasks, a failing run) must show up
            # as a failed request on the page, not as an error page.
            logger.exception("experiment %s: the results recompute could not be run", experiment_id)
            cache.set(key, replace(request, enqueue_failed=True).as_cache(), timeout=RECOMPUTE_TRACKED_SECONDS)

    transaction.on_commit(enqueue)
    logger.info(
        "experiment %s: results recompute requested by user %s (task %s)",
        experiment.key, requested_by.pk, request.task_id,
    )
    return request


# --- where the request stands ---------------------------------------------------------


@dataclass(frozen=True)
class RecomputeStatus:
    state: str  # idle | queued | done | failed
    message: str = ""
    requested_at: datetime | None = None
    task_id: str = ""
    task_state: str = ""
    snapshot_id: int | None = None
    computed_at: datetime | None = None

    @property
    def in_progress(self) -> bool:
        return self.state == "queued"

    def as_json(self) -> dict:
        return {
            "state": self.state,
            "message": self.message,
            "requested_at": self.requested_at.isoformat() if self.requested_at else None,
            "task_id": self.task_id or None,
            "task_state": self.task_state or None,
            "snapshot": None if self.snapshot_id is None else {
                "id": self.snapshot_id,
                "computed_at": self.computed_at.isoformat(),
                "computed_at_display": timezone.localtime(self.computed_at).strftime("%Y-%m-%d %H:%M:%S %Z"),
            },
        }


def _task_state(task_id: str) -> str:
    if results_compute.app.conf.task_always_eager:
        return ""  # eager runs finish inside the request and store no state to ask about
    try:
        return results_compute.AsyncResult(task_id).state
    except Exception:
        # The result backend is the same Redis as the broker: when it is down the
        # page says "unknown" rather than failing.
        logger.warning("results task %s: state unavailable", task_id, exc_info=True)
        return "UNKNOWN"


def _task_refusal(task_id: str) -> str:
    """A failed run's reason when the pipeline refused in words (a ValidationError), else ""."""
    try:
        error = results_compute.AsyncResult(task_id).result
    except Exception:
        return ""
    return " ".join(error.messages) if isinstance(error, ValidationError) else ""


def recompute_status(*, experiment: Experiment, now: datetime | None = None) -> RecomputeStatus:
    """Where the last "recompute now" stands: queued, done (a run finished after it) or failed."""
    now = now or timezone.now()
    request: RecomputeRequest | None = recompute_request_get(experiment=experiment)
    latest = (
        ResultSnapshot.objects.filter(experiment=experiment)
        .order_by("-computed_at")
        .values_list("pk", "computed_at")
        .first()
    )
    snapshot_id, computed_at = latest if latest else (None, None)
    common = {"snapshot_id": snapshot_id, "computed_at": computed_at}
    if request is None:
        return RecomputeStatus(state="idle", **common)
    common.update(requested_at=request.requested_at, task_id=request.task_id)
    if computed_at is not None and computed_at >= request.requested_at:
        return RecomputeStatus(state="done", message="Results recomputed.", **common)
    if request.enqueue_failed:
        if request.reason:
            return RecomputeStatus(state="failed", message="Not computed: " + request.reason, **common)
        return RecomputeStatus(state="failed", message="The results run could not be started or failed; "
                               "the server log has the error.", **common)
    task_state = _task_state(request.task_id)
    if task_state in ("FAILURE", "REVOKED"):
        reason = _task_refusal(request.task_id) if task_state == "FAILURE" else ""
        return RecomputeStatus(state="failed", task_state=task_state,
                               message=("Not computed: " + reason) if reason else
                               "The results run failed; the worker log has the error.", **common)
    message = "Queued: waiting for a worker to compute the results."
    if now - request.requested_at > SLOW_RECOMPUTE:
        message = "Still waiting after two minutes: is a Celery worker running?"
    return RecomputeStatus(state="queued", task_state=task_state, message=message, **common)
