"""The recommender's writes, by sub-domain: the catalog, builds, and serving with its impressions.

- ``catalog``: categories and products imported from rows or CSV;
- ``builds``: each arm's model build under its privacy rules, its lists, publishing, pruning, the fan-out;
- ``impressions``: a recommendation answer, and what it showed recorded as outcome events.

Every public name is re-exported here so that ``from recommender.services import …`` keeps
working, including the names that moved out of services: the cache keys
(``recommender.cache_keys``), the tunables (``recommender.conf``) and the reads builds
train on (``recommender.selectors``: ``training_load``, ``catalog_arrays``, ``arms_to_build``).
New code imports those from where they live.
"""

from recommender.cache_keys import (
    KEY_PREFIX,
    arm_of_key,
    cohort_key,
    fallback_key,
    item_key,
    pointer_key,
    subject_cache_keys,
    subject_key,
)
from recommender.conf import (
    CACHE_SECONDS,
    CLICK_WEIGHT,
    DP_CLIP,
    DP_DELTA,
    DP_MECHANISM,
    FALLBACK_N,
    HISTORY_DAYS,
    KEEP_BUILDS,
    MIN_INTERACTIONS,
    NEIGHBOURS,
    ORDER_WEIGHT,
    SETTING_DEFAULTS,
    STALE_AFTER,
    TOP_N,
    WEIGHTING,
    recommender_setting,
)
from recommender.selectors import (
    PER_SUBJECT_LEVELS,
    CatalogArrays,
    Training,
    arms_to_build,
    catalog_arrays,
    training_load,
)
from recommender.services.builds import (
    BuildSummary,
    InsufficientTrainingData,
    PrivacyBudgetExhausted,
    arms_due,
    build_key_for,
    recommendations_build,
    recommendations_build_enqueue,
    recommendations_prune,
    strategy_for,
)
from recommender.services.catalog import CatalogImport, catalog_import, catalog_import_csv
from recommender.services.impressions import (
    impression_events,
    impressions_record,
    recommendations_serve,
)

__all__ = [
    "arms_due",
    "CACHE_SECONDS",
    "CLICK_WEIGHT",
    "DP_CLIP",
    "DP_DELTA",
    "DP_MECHANISM",
    "FALLBACK_N",
    "HISTORY_DAYS",
    "KEEP_BUILDS",
    "KEY_PREFIX",
    "MIN_INTERACTIONS",
    "NEIGHBOURS",
    "ORDER_WEIGHT",
    "PER_SUBJECT_LEVELS",
    "SETTING_DEFAULTS",
    "STALE_AFTER",
    "TOP_N",
    "WEIGHTING",
    "BuildSummary",
    "CatalogArrays",
    "CatalogImport",
    "InsufficientTrainingData",
    "PrivacyBudgetExhausted",
    "Training",
    "arm_of_key",
    "arms_to_build",
    "build_key_for",
    "catalog_arrays",
    "catalog_import",
    "catalog_import_csv",
    "cohort_key",
    "fallback_key",
    "impression_events",
    "impressions_record",
    "item_key",
    "pointer_key",
    "recommendations_build",
    "recommendations_build_enqueue",
    "recommendations_prune",
    "recommendations_serve",
    "recommender_setting",
    "strategy_for",
    "subject_cache_keys",
    "subject_key",
    "training_load",
]
