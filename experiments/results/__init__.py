"""Results: the metric pipeline fed to the stats engine, stored as a ``ResultSnapshot`` per run.

``compute_results(experiment=…, as_of=…)`` is the one entry point (the Celery
task ``experiments.tasks.results_compute`` calls it). It

1. computes every metric's sufficient statistics per arm and segment in one
   SQL statement (``experiments.metrics``);
2. runs the stats engine: Welch / CUPED / delta-method comparisons of each
   treatment arm with the control, the primary metric × arms Holm-adjusted as
   the confirmatory family, the other metrics and the segments
   Benjamini–Hochberg-adjusted as exploration, and the sample-ratio test;
3. watches every guardrail with the always-valid mSPRT against its margin
   (the monitor pauses on a breach: safe to look at every 15 minutes);
4. applies the experiment's decision rule with the decision engine
   (``experiments.stats.decide``): superiority, do no harm or privacy first,
   fixed-horizon or sequential, and whether the verdict is final; a final
   verdict is recorded once (``ExperimentDecision``) and carried unchanged
   by every later run of the phase;
5. stores the JSON document (schema in docs/metrics.md) as the snapshot of the
   window ``[experiment start, as_of)``.

Idempotent: a run is identified by its window, so running it again over the
same data (a redelivered task) rewrites the same row with the same numbers.

``experiment_monitor(snapshot=…)`` acts on a stored run once: an alert for a
sample-ratio mismatch, and for a breached guardrail an alert and a pause.

Modules: ``document`` (``SnapshotDocument``, the stored JSON as a versioned dataclass),
``analysis`` (the document of one run: ``results_document``),
``snapshots`` (storing it: ``compute_results``), ``monitor`` (acting on a
stored run, and alerts) and ``enqueue`` (``results_enqueue``, the one way a
results run is queued, and ``monitor_enqueue``). This package re-exports
their public names.
"""

from experiments.results.analysis import (
    DEFAULT_TUNING_SAMPLE_SIZE,
    SCHEMA_VERSION,
    UNITS,
    results_document,
)
from experiments.results.document import SnapshotDocument, UnreadableDocument
from experiments.results.enqueue import monitor_enqueue, results_enqueue, results_enqueue_running
from experiments.results.monitor import (
    alerts_acknowledge,
    experiment_monitor,
    experiments_monitor_pending,
)
from experiments.results.snapshots import compute_results

__all__ = [
    "DEFAULT_TUNING_SAMPLE_SIZE",
    "SCHEMA_VERSION",
    "UNITS",
    "SnapshotDocument",
    "UnreadableDocument",
    "alerts_acknowledge",
    "compute_results",
    "experiment_monitor",
    "experiments_monitor_pending",
    "monitor_enqueue",
    "results_document",
    "results_enqueue",
    "results_enqueue_running",
]
