"""Storing a run: the analysis saved as the window's ResultSnapshot, and a final verdict recorded once."""

import logging
import time
from datetime import datetime

from django.db import IntegrityError, transaction
from django.utils import timezone

from experiments.models import (
    Experiment,
    ExperimentDecision,
    ResultSnapshot,
)
from experiments.results.analysis import SCHEMA_VERSION, results_document
from experiments.results.document import SnapshotDocument
from experiments.results.enqueue import monitor_enqueue
from experiments.stats import FINAL_OUTCOMES

logger = logging.getLogger(__name__)

Status = ResultSnapshot.Status


def compute_results(
    *,
    experiment: Experiment,
    as_of: datetime | None = None,
    monitor: bool = True,
    source: str | None = None,
    raise_source_errors: bool = False,
) -> ResultSnapshot | None:
    """Analyse the experiment over ``[start, as_of)`` and store the run; idempotent per window.

    ``as_of`` defaults to now (the task passes the time it was scheduled for,
    so a redelivered task analyses the same window). With ``monitor`` the
    monitor task is enqueued once the snapshot is committed. ``source``: a data
    source's name or a URL (default: the experiment's data source, else the
    built-in database). A source that cannot answer (down, refused, timed out)
    writes nothing: an alert is raised and the latest snapshot (or None) returned
    (with ``raise_source_errors``, the ``WarehouseError`` raised after the alert).
    """
    from experiments.results.monitor import data_source_alert_open
    from experiments.warehouse import WarehouseError, source_resolve

    started = time.perf_counter()
    as_of = as_of or timezone.now()
    experiment = Experiment.objects.get(pk=experiment.pk)
    resolved = None
    try:
        resolved = source_resolve(experiment=experiment, source=source)
        status, data, statistics = results_document(experiment=experiment, as_of=as_of, source=resolved)
    except WarehouseError as error:
        name = resolved.name if resolved is not None else (source or str(experiment.data_source))
        data_source_alert_open(experiment=experiment, source=name, error=str(error))
        if raise_source_errors:
            raise
        return ResultSnapshot.objects.filter(experiment=experiment).order_by("-window_end").first()
    document = SnapshotDocument.from_dict(data)
    fields = {
        "schema_version": SCHEMA_VERSION,
        "status": status,
        "window_start": statistics.window_start,
        "computed_at": timezone.now(),
        "compute_seconds": time.perf_counter() - started,
        "subjects": document.subjects,
        "srm_flag": document.srm_flag,
        "guardrail_breached": document.guardrail_breached,
        "data": data,
    }
    snapshot = _snapshot_upsert(experiment, statistics.phase, statistics.window_end, fields)
    if status == Status.OK:
        _decision_record(experiment, snapshot)
    if monitor:
        monitor_enqueue(snapshot_id=snapshot.pk)
    logger.info(
        "experiment %s: results over %d subjects in %.2fs (%s)",
        experiment.key, fields["subjects"], fields["compute_seconds"], status,
    )
    return snapshot


def _snapshot_upsert(experiment: Experiment, phase: int, window_end: datetime, fields: dict) -> ResultSnapshot:
    for attempt in range(2):
        try:
            with transaction.atomic():
                snapshot = (
                    ResultSnapshot.objects.select_for_update()
                    .filter(experiment=experiment, phase=phase, window_end=window_end)
                    .first()
                )
                if snapshot is None:
                    return ResultSnapshot.objects.create(
                        experiment=experiment, phase=phase, window_end=window_end, **fields
                    )
                if snapshot.data != fields["data"]:
                    snapshot.monitored_at = None  # new numbers: the monitor looks again
                for name, value in fields.items():
                    setattr(snapshot, name, value)
                snapshot.save()
                return snapshot
        except IntegrityError:
            if attempt:
                raise
    raise AssertionError("unreachable")


def _decision_record(experiment: Experiment, snapshot: ResultSnapshot) -> None:
    """Record the phase's verdict the first time a run makes it final (idempotent)."""
    decision = snapshot.data.get("decision") or {}
    if not decision.get("final") or decision.get("frozen") or decision.get("outcome") not in FINAL_OUTCOMES:
        return
    try:
        with transaction.atomic():
            ExperimentDecision.objects.get_or_create(
                experiment=experiment,
                phase=snapshot.phase,
                defaults={
                    "outcome": decision["outcome"],
                    "arm": decision.get("arm") or "",
                    "window_end": snapshot.window_end,
                    "snapshot": snapshot,
                    "document": decision,
                    "decided_at": snapshot.computed_at,
                },
            )
    except IntegrityError:  # a concurrent run recorded it first
        pass
    else:
        logger.info("experiment %s phase %d: final verdict %s", experiment.key, snapshot.phase, decision["outcome"])
