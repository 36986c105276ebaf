"""The recommender's tunables, each overridable in Django settings (read once at import, or when used)."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings

TOP_N: int = getattr(settings, "RECOMMENDER_TOP_N", 50)  # per subject; serving fills up to 100
FALLBACK_N: int = 100  # the non-personal list covers the largest ``limit``
NEIGHBOURS: int = getattr(settings, "RECOMMENDER_NEIGHBOURS", 50)
WEIGHTING: str = getattr(settings, "RECOMMENDER_WEIGHTING", "cosine")
DP_CLIP: int = getattr(settings, "RECOMMENDER_DP_CLIP", 20)
DP_MECHANISM: str = getattr(settings, "RECOMMENDER_DP_MECHANISM", "laplace")
DP_DELTA: float = getattr(settings, "RECOMMENDER_DP_DELTA", 1e-6)
HISTORY_DAYS: int = getattr(settings, "RECOMMENDER_HISTORY_DAYS", 180)
KEEP_BUILDS: int = getattr(settings, "RECOMMENDER_KEEP_BUILDS", 24)  # per arm, with their lists
CACHE_SECONDS: int = getattr(settings, "RECOMMENDER_CACHE_SECONDS", 26 * 3600)
MIN_INTERACTIONS: int = getattr(settings, "RECOMMENDER_MIN_INTERACTIONS", 1)
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
STALE_AFTER = timedelta(seconds=getattr(settings, "CELERY_TASK_TIME_LIMIT", 1800))
