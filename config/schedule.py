"""Every periodic task of the platform, declared in this one place.

django-celery-beat's DatabaseScheduler copies these entries into the database
when beat starts, where PMs can see them (and pause one) in the admin. Each
entry has ``expires`` so a backlog never runs stale work twice.
"""

import os
from datetime import timedelta

MINUTE = 60
# How often every running experiment's results are recomputed (issue 5: 15 minutes).
RESULTS_EVERY_MINUTES = int(os.environ.get("PRIVACYLAB_RESULTS_EVERY_MINUTES", "15"))

BEAT_SCHEDULE = {
    "experiments-apply-schedule": {
        "task": "experiments.tasks.experiments_apply_schedule",
        "schedule": timedelta(minutes=1),
        "options": {"expires": 1 * MINUTE},
    },
    "experiments-results": {
        "task": "experiments.tasks.results_refresh_running",
        "schedule": timedelta(minutes=RESULTS_EVERY_MINUTES),
        "options": {"expires": RESULTS_EVERY_MINUTES * MINUTE * 2 // 3},
    },
    "experiments-monitor": {
        "task": "experiments.tasks.experiments_monitor_pending",
        "schedule": timedelta(minutes=5),
        "options": {"expires": 4 * MINUTE},
    },
    "experiments-rollouts-step": {
        # A shipped arm's ramp: each step whose hold is over moves on (docs/surfaces.md).
        "task": "experiments.tasks.rollouts_step_due",
        "schedule": timedelta(minutes=5),
        "options": {"expires": 4 * MINUTE},
    },
    "consent-retention-purge": {
        "task": "consent.tasks.consent_retention_purge",
        "schedule": timedelta(days=1),
        "options": {"expires": 12 * 60 * MINUTE},
    },
    "consent-cache-invalidations-retry": {
        # A withdrawal whose cache invalidation the cache did not confirm is retried until
        # it is, so an entry the cache kept through an outage is not served for long.
        "task": "consent.tasks.consent_cache_invalidations_retry",
        "schedule": timedelta(minutes=1),
        "options": {"expires": 1 * MINUTE},
    },
    "consent-dsr-requeue": {
        # Data subject requests are due within 72 hours; a request whose task was
        # lost (broker down when it was filed) is picked up again within the hour,
        # and so is an erasure whose grace period is over.
        "task": "consent.tasks.dsr_enqueue_open",
        "schedule": timedelta(hours=1),
        "options": {"expires": 50 * MINUTE},
    },
    "warehouse-export": {
        # New exposures and consent decisions to the warehouse (a no-op without
        # PRIVACYLAB_WAREHOUSE_EXPORT_URL); the target's own watermark makes a rerun add nothing.
        "task": "experiments.tasks.warehouse_export_run",
        "schedule": timedelta(minutes=15),
        "options": {"expires": 10 * MINUTE},
    },
    "recommender-build-all": {
        "task": "recommender.tasks.recommendations_build_all",
        "schedule": timedelta(hours=1),
        # A fan-out older than its hour is superseded by the next one.
        "options": {"expires": 50 * MINUTE},
    },
}
