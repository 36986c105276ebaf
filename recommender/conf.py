"""The recommender's tunables, each overridable in Django settings (read once at import, or when used).

The ones read at import are declared, with their defaults, in ``config/settings.py``.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

TOP_N: int = settings.RECOMMENDER_TOP_N  # per subject; serving fills up to 100
FALLBACK_N: int = 100  # the non-personal list covers the largest ``limit``
NEIGHBOURS: int = settings.RECOMMENDER_NEIGHBOURS
WEIGHTING: str = settings.RECOMMENDER_WEIGHTING
DP_CLIP: int = settings.RECOMMENDER_DP_CLIP
DP_MECHANISM: str = settings.RECOMMENDER_DP_MECHANISM
DP_DELTA: float = settings.RECOMMENDER_DP_DELTA
HISTORY_DAYS: int = settings.RECOMMENDER_HISTORY_DAYS
KEEP_BUILDS: int = settings.RECOMMENDER_KEEP_BUILDS  # per arm, with their lists
CACHE_SECONDS: int = settings.RECOMMENDER_CACHE_SECONDS
MIN_INTERACTIONS: int = settings.RECOMMENDER_MIN_INTERACTIONS
ORDER_WEIGHT, CLICK_WEIGHT = 1.0, 0.5

# Read when used (``recommender_setting``), so that an override takes effect without a re-import.
SETTING_DEFAULTS: dict[str, float | int] = {
    # A similarity, or a cohort's listed item, needs at least this many distinct subjects.
    "RECOMMENDER_MIN_SUPPORT": 5,
    # The share of a full-history list given to the subject's own re-buys of repeatable items.
    "RECOMMENDER_BUY_AGAIN_SHARE": 0.5,
    "RECOMMENDER_BUY_AGAIN_HALF_LIFE_DAYS": 30.0,
    # DP item-item: the model's vocabulary (items chosen by noisy counts) and the share of ε choosing it.
    "RECOMMENDER_DP_CANDIDATES": 500,
    "RECOMMENDER_DP_SELECTION_SHARE": 0.2,
    # Per arm, over a sliding period: the ε (and δ) all its DP builds may spend together.
    "RECOMMENDER_DP_BUDGET_EPSILON": 10.0,
    "RECOMMENDER_DP_BUDGET_DELTA": 1e-5,
    "RECOMMENDER_DP_BUDGET_DAYS": 30,
}


def recommender_setting(name: str):
    """A recommender setting from Django settings, else its default (``SETTING_DEFAULTS``)."""
    return getattr(settings, name, SETTING_DEFAULTS[name])


# A build still "running" after this long was abandoned by a dead worker: take it over.
STALE_AFTER = timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT)
