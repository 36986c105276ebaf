"""The metric pipeline: per-arm and per-segment sufficient statistics, computed in the database.

For one experiment, a few SQL statements (PostgreSQL or SQLite) in one
transaction: the *refresh* brings the stored per-exposure facts
(``MetricFacts``: what the metrics need of each exposed subject, read from the
exposures, the outcome events and the consent ledger; and ``MetricOrderFacts``,
the amounts of the orders they count) up to the analysis time, rewriting only
the exposures whose data changed since the last run (or whose consent lapsed); the
*aggregate* returns, per arm and per segment, the counts, sums, sums of
squares and cross-products the stats engine needs (``experiments.stats``).
No per-subject row ever reaches Python: the aggregate returns one row per
(dimension, value, arm).

Per exposed subject of the current phase, counting from the subject's first
exposure up to the analysis time ``as_of`` (docs/metrics.md has the details):

============  ===========================================================  ==================
metric        per-subject value                                            statistic
============  ===========================================================  ==================
conversion    placed ≥ 1 order                                             proportion
opt_out       withdrew personalization after exposure while holding a      proportion
              grant (the previous decision is a grant, not expired then)
consent_rate  holds a valid personalization grant at ``as_of``: the last   proportion
              decision (before or after exposure) is a grant, not
              expired, under a notice version that still counts
gmv           Σ order amounts (IDR), capped at ``gmv_cap_percentile`` of   mean, CUPED with
              the buyers' GMV; covariate: GMV in ``pre_exposure_days``     the pre-exposure
              before first exposure (capped alike)                          GMV
orders        number of orders                                             mean
aov           Σ order amounts, each capped at the percentile of the        ratio (delta)
              orders' amounts, / Σ orders
ctr           Σ recommendation clicks / Σ impressions                      ratio (delta)
============  ===========================================================  ==================

Descriptive only (``DESCRIPTIVE``, never tested): withdrawals among the
subjects who held a grant after exposure, which conditions on a
post-treatment outcome.

Segments: ``age_band``, ``province`` and ``platform`` of the subject, and
``customer`` = ``returning`` when the subject ordered in the pre-exposure
window, else ``new``. Subjects with a blank attribute fall in ``unknown``.

Modules, one responsibility each:

- ``definitions``: the metrics (``METRICS``), segment dimensions, descriptive ratios, the window;
- ``sql``: the statements (refresh and aggregate), with the PostgreSQL and SQLite variants;
- ``planner``: ``refresh_form_plan``, which form of the refresh statement suits an experiment;
- ``refresh``: ``metric_facts_refresh``, the stored per-exposure facts brought up to a cutoff;
- ``aggregate``: ``metric_statistics_aggregate``, the sufficient statistics from the stored facts;
- ``attribution``: ``recommendation_gmv_attribution``, order value bought after a recommendation click;
- ``pipeline``: ``metric_statistics_compute``, the refresh then the aggregate, in one transaction;
- ``frame``: ``metric_facts_frame``, the notebook path (facts refreshed, then read as a DataFrame);
- ``exposure_days``: ``exposure_day_statistics``, per-day sums since first exposure (novelty effects).

The aggregate also returns CUPED++'s stratum cells (``MetricStatistics.cells``;
``MetricStatistics.lin_statistics`` builds every metric's ``LinAdjustedStatistic``
from them, covariates the capped pre-exposure GMV and the pre-exposure orders).

Public API::

    stats = metric_statistics_compute(experiment=experiment, as_of=now)  # refreshes, then aggregates
    stats.arms        # {arm_key: {metric: Statistic}}          overall
    stats.segments    # {"platform=ios": {arm_key: {metric: Statistic}}, ...}
    stats.gmv_cap     # the cap the database computed (None: no cap / no buyers)
    stats.order_cap   # the cap of each order in the AOV (None: no cap / no orders)
    stats.descriptive # {"withdrawals_among_granted": {arm: {granted, withdrew, ratio}}}
    frame = metric_facts_frame(experiment=experiment, as_of=now)  # the notebook path

    refresh = metric_facts_refresh(experiment=…, window_start=…, window_end=…, pre_exposure_days=…)
    stats = metric_statistics_aggregate(experiment=…, window_start=…, window_end=…, …)  # reads only
    sql, params = metric_statistics_sql(experiment=experiment)  # the aggregate over the facts

``metric_statistics`` is the former name of ``metric_statistics_compute``, kept for old callers.
"""

from experiments.metrics.aggregate import (
    MetricStatistics,
    metric_statistics_aggregate,
    metric_statistics_from_rows,
)
from experiments.metrics.attribution import (
    RECOMMENDATION_ATTRIBUTION_WINDOW,
    recommendation_gmv_attribution,
)
from experiments.metrics.definitions import (
    DESCRIPTIVE,
    METRICS,
    SEGMENT_DIMENSIONS,
    UNKNOWN_SEGMENT,
    window_for,
    withdrawals_among_granted,
)
from experiments.metrics.exposure_days import (
    EXPOSURE_DAY_METRICS,
    MAX_EXPOSURE_DAYS,
    exposure_day_statistics,
)
from experiments.metrics.frame import FRAME_COLUMNS, metric_facts_frame
from experiments.metrics.pipeline import METRICS_WORK_MEM, metric_statistics_compute
from experiments.metrics.planner import PLAN_MARKER, refresh_form_plan
from experiments.metrics.refresh import (
    LATE_MARGIN,
    FactsRefresh,
    metric_facts_refresh,
    personalization_counting_notices,
)
from experiments.metrics.sql import (
    ORDERS_MARKER,
    QUERY_MARKER,
    REFRESH_MARKER,
    metric_statistics_sql,
)

metric_statistics = metric_statistics_compute

__all__ = [
    "DESCRIPTIVE",
    "EXPOSURE_DAY_METRICS",
    "FRAME_COLUMNS",
    "LATE_MARGIN",
    "MAX_EXPOSURE_DAYS",
    "METRICS",
    "METRICS_WORK_MEM",
    "ORDERS_MARKER",
    "PLAN_MARKER",
    "QUERY_MARKER",
    "RECOMMENDATION_ATTRIBUTION_WINDOW",
    "REFRESH_MARKER",
    "SEGMENT_DIMENSIONS",
    "UNKNOWN_SEGMENT",
    "FactsRefresh",
    "MetricStatistics",
    "exposure_day_statistics",
    "metric_facts_frame",
    "metric_facts_refresh",
    "metric_statistics",
    "metric_statistics_aggregate",
    "metric_statistics_from_rows",
    "metric_statistics_compute",
    "metric_statistics_sql",
    "personalization_counting_notices",
    "recommendation_gmv_attribution",
    "refresh_form_plan",
    "window_for",
    "withdrawals_among_granted",
]
