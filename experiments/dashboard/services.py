"""The dashboard's one write: an owner asks for the results to be recomputed now.

The request is remembered in the shared cache per experiment (task id and
time), so every viewer of the page sees the same progress and a second click
within a minute joins the first request instead of queueing another run. The
task itself is the pipeline's ``results_compute``, enqueued after the commit
like every task here; progress is read back by ``selectors.recompute_status``.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from experiments.models import Experiment, Exposure, ResultSnapshot
from experiments.results.enqueue import results_enqueue

logger = logging.getLogger(__name__)

# Longer than results_compute's 15-minute time limit: a request is tracked until it must have ended.
RECOMPUTE_TRACKED_SECONDS = 20 * 60
RECOMPUTE_JOIN_SECONDS = 60


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
