"""The effect by day since first exposure (novelty and learning effects): per-day sufficient statistics.

For each day ``d`` since a subject's first exposure (day 0 is the first 24 hours), per arm:
the subjects who have reached that day by the analysis time (``n``: their first exposure
is less than ``d`` whole days before it) and the sums of what they did on that day only —
orders, GMV (each subject-day capped at the run's subject GMV cap) and whether they ordered.
One statement over the stored facts (the exposures of the window, restricted subjects
already left out) and the orders; no per-subject row reaches Python. The last day a subject
reached is partly observed, in every arm alike. ``experiments.stats.effect_by_exposure_day``
turns these into per-day effects and a trend test.
"""

from __future__ import annotations

from datetime import datetime

from django.db import connections

from experiments.metrics.sql import _named_to_positional, table_name
from experiments.models import Arm, Experiment, Exposure, Metric, MetricFacts, OutcomeEvent
from experiments.stats import ProportionStatistic, SampleMeanStatistic, Statistic

EXPOSURE_DAYS_MARKER = "privacylab:metric-exposure-days"
# The metrics followed day by day, and how many days (the first two weeks carry the novelty).
EXPOSURE_DAY_METRICS = (Metric.CONVERSION, Metric.ORDERS, Metric.GMV)
MAX_EXPOSURE_DAYS = 14

_DAY = {
    "postgresql": "CAST(floor(extract(epoch FROM ({later} - {earlier})) / 86400) AS integer)",
    "sqlite": "CAST(julianday({later}) - julianday({earlier}) AS INTEGER)",
}

_SQL = """/* {marker} */
WITH exposures AS (
    SELECT f.exposure_id, f.arm_id, e.subject_id, e.first_exposed_at AS fe
    FROM {facts} f JOIN {exposure} e ON e.id = f.exposure_id
    WHERE f.experiment_id = %(experiment_id)s
),
subject_days AS (
    SELECT x.arm_id, x.exposure_id, {order_day} AS day, COUNT(*) AS orders, SUM(CAST(o.amount AS {float})) AS gmv
    FROM exposures x JOIN {event} o ON o.subject_id = x.subject_id
    WHERE o.type = 'order' AND o.occurred_at >= x.fe AND o.occurred_at < %(window_end)s
    GROUP BY x.arm_id, x.exposure_id, {order_day}
),
capped AS (
    SELECT arm_id, day, orders,
        CASE WHEN CAST(%(cap)s AS {float}) IS NULL OR gmv <= CAST(%(cap)s AS {float}) THEN gmv
             ELSE CAST(%(cap)s AS {float}) END AS gmv
    FROM subject_days WHERE day < %(days)s
)
SELECT 'day', arm_id, day, SUM(orders), SUM(orders * orders), SUM(gmv), SUM(gmv * gmv), COUNT(*)
FROM capped GROUP BY arm_id, day
UNION ALL
SELECT 'reached', arm_id, {reached_day}, COUNT(*), 0, 0, 0, 0
FROM exposures GROUP BY arm_id, {reached_day}
"""


def exposure_day_statistics(
    *,
    experiment: Experiment,
    window_end: datetime,
    gmv_cap: float | None,
    days: int = MAX_EXPOSURE_DAYS,
    using: str = "default",
) -> dict[int, dict[str, dict[str, Statistic]]]:
    """``{day: {arm key: {metric: statistic}}}`` for the days every arm has subjects on (≥ 2 each).

    Reads the stored facts as they are: run it after the results run's refresh.
    """
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ValueError(f"days must be a whole number ≥ 1, got {days!r}")
    connection = connections[using]
    vendor = connection.vendor
    if vendor not in _DAY:
        raise NotImplementedError(f"the exposure-day statistics support PostgreSQL and SQLite, not {vendor}")
    float_type = "double precision" if vendor == "postgresql" else "REAL"
    window = "CAST(%(window_end)s AS timestamp with time zone)" if vendor == "postgresql" else "%(window_end)s"
    sql = _SQL.format(
        marker=EXPOSURE_DAYS_MARKER,
        facts=table_name(connection, MetricFacts),
        exposure=table_name(connection, Exposure),
        event=table_name(connection, OutcomeEvent),
        float=float_type,
        order_day=_DAY[vendor].format(later="o.occurred_at", earlier="x.fe"),
        reached_day=_DAY[vendor].format(later=window, earlier="fe"),
    )
    params = {
        "experiment_id": experiment.pk,
        "window_end": connection.ops.adapt_datetimefield_value(window_end),
        "cap": None if gmv_cap is None else float(gmv_cap),
        "days": days,
    }
    arm_keys = dict(Arm.objects.using(using).filter(experiment=experiment).values_list("id", "key"))
    with connection.cursor() as cursor:
        cursor.execute(*_named_to_positional(sql, params))
        rows = cursor.fetchall()
    reached: dict[str, dict[int, int]] = {}
    sums: dict[tuple[int, str], tuple[float, ...]] = {}
    for kind, arm_id, day, *values in rows:
        arm = arm_keys[arm_id]
        if kind == "reached":
            reached.setdefault(arm, {})[int(day)] = int(values[0])
        else:
            sums[(int(day), arm)] = tuple(0.0 if value is None else float(value) for value in values)
    result: dict[int, dict[str, dict[str, Statistic]]] = {}
    for day in range(days):
        by_arm: dict[str, dict[str, Statistic]] = {}
        for arm, histogram in reached.items():
            n = sum(count for last_day, count in histogram.items() if last_day >= day)
            orders, orders_ss, gmv, gmv_ss, buyers = sums.get((day, arm), (0.0, 0.0, 0.0, 0.0, 0.0))
            by_arm[arm] = {
                Metric.CONVERSION: ProportionStatistic(n=n, successes=int(buyers)),
                Metric.ORDERS: SampleMeanStatistic(n=n, sum=orders, sum_squares=orders_ss),
                Metric.GMV: SampleMeanStatistic(n=n, sum=gmv, sum_squares=gmv_ss, cap=gmv_cap),
            }
        if len(by_arm) == len(arm_keys) and all(
            next(iter(metrics.values())).n >= 2 for metrics in by_arm.values()
        ):
            result[day] = by_arm
    return result
