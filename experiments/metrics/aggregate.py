"""The aggregate: every metric's sufficient statistics per arm and segment from the stored facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db import connections

from experiments.metrics.definitions import withdrawals_among_granted
from experiments.metrics.refresh import FactsRefresh
from experiments.metrics.sql import SUMS, metric_statistics_sql
from experiments.models import Arm, Experiment, Metric
from experiments.stats import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    Statistic,
)


@dataclass(frozen=True)
class MetricStatistics:
    """The pipeline's answer for one experiment at one analysis time."""

    experiment_id: int
    phase: int
    window_start: datetime
    window_end: datetime
    gmv_cap_percentile: float | None
    gmv_cap: float | None
    order_cap: float | None  # the cap of each order's amount in the average order value
    pre_exposure_days: int
    arms: dict[str, dict[str, Statistic]]
    segments: dict[str, dict[str, dict[str, Statistic]]]
    sums: dict[str, dict[str, float]] = field(repr=False)  # overall raw sums per arm (for tests, the docs)
    refresh: FactsRefresh | None = field(default=None, repr=False)  # what the run did to the stored facts
    # Per arm, the order value bought after a recommendation click and all of it (``attribution``).
    recommendation_gmv: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

    @property
    def subjects(self) -> dict[str, int]:
        return {arm: int(self.sums[arm]["n"]) for arm in self.sums}

    @property
    def descriptive(self) -> dict[str, dict[str, dict]]:
        """Descriptive ratios, never tested (``DESCRIPTIVE``): per arm the counts and the ratio."""
        return {
            "withdrawals_among_granted": {
                arm: withdrawals_among_granted(granted=sums["granted"], withdrew=sums["opted_out"])
                for arm, sums in self.sums.items()
            }
        }


def _number(value) -> float:
    return 0.0 if value is None else float(value)


def _statistics(sums: dict[str, float], *, cap: float | None, cuped: bool) -> dict[str, Statistic]:
    n = int(sums["n"])
    gmv: Statistic
    if cuped:
        gmv = RegressionAdjustedStatistic(
            n=n,
            sum=sums["gmv_sum"],
            sum_squares=sums["gmv_ss"],
            covariate_sum=sums["pre_sum"],
            covariate_sum_squares=sums["pre_ss"],
            cross_product=sums["gmv_pre"],
            cap=cap,
        )
    else:
        gmv = SampleMeanStatistic(n=n, sum=sums["gmv_sum"], sum_squares=sums["gmv_ss"], cap=cap)
    return {
        Metric.CONVERSION: ProportionStatistic(n=n, successes=int(sums["converted"])),
        Metric.OPT_OUT: ProportionStatistic(n=n, successes=int(sums["opted_out"])),
        Metric.CONSENT_RATE: ProportionStatistic(n=n, successes=int(sums["consented"])),
        Metric.GMV: gmv,
        Metric.ORDERS: SampleMeanStatistic(n=n, sum=sums["orders_sum"], sum_squares=sums["orders_ss"]),
        Metric.AOV: RatioStatistic(
            n=n,
            numerator_sum=sums["aov_sum"],
            numerator_sum_squares=sums["aov_ss"],
            denominator_sum=sums["orders_sum"],
            denominator_sum_squares=sums["orders_ss"],
            cross_product=sums["aov_orders"],
        ),
        Metric.CTR: RatioStatistic(
            n=n,
            numerator_sum=sums["clicks_sum"],
            numerator_sum_squares=sums["clicks_ss"],
            denominator_sum=sums["impressions_sum"],
            denominator_sum_squares=sums["impressions_ss"],
            cross_product=sums["clicks_impressions"],
        ),
    }


def metric_statistics_aggregate(
    *,
    experiment: Experiment,
    window_start: datetime,
    window_end: datetime,
    pre_exposure_days: int,
    gmv_cap_percentile: float | None,
    refresh: FactsRefresh | None = None,
    using: str = "default",
) -> MetricStatistics:
    """Every metric's sufficient statistics per arm and per segment, aggregated from the stored facts.

    Reads the facts as they are: bring them to the window first
    (``metric_facts_refresh``; ``metric_statistics_compute`` does both in one
    transaction). Arms with no exposure in the window are absent from ``arms``
    (the caller decides what that means). ``refresh`` is what that refresh did.
    """
    sql, params = metric_statistics_sql(experiment=experiment, gmv_cap_percentile=gmv_cap_percentile, using=using)
    arm_keys = dict(Arm.objects.using(using).filter(experiment=experiment).values_list("id", "key"))
    with connections[using].cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return metric_statistics_from_rows(
        experiment=experiment,
        rows=[(dimension, value, arm_keys.get(arm_id), *aggregates) for dimension, value, arm_id, *aggregates in rows],
        window_start=window_start,
        window_end=window_end,
        pre_exposure_days=pre_exposure_days,
        gmv_cap_percentile=gmv_cap_percentile,
        refresh=refresh,
    )


def metric_statistics_from_rows(
    *,
    experiment: Experiment,
    rows,
    window_start: datetime,
    window_end: datetime,
    pre_exposure_days: int,
    gmv_cap_percentile: float | None,
    refresh: FactsRefresh | None = None,
) -> MetricStatistics:
    """The statistics from the aggregate's rows ``(dimension, value, arm key, *SUMS)`` plus the two cap rows.

    Shared by the built-in aggregate and the warehouse engines (``experiments.warehouse``):
    whichever engine summed, the same rows make the same statistics.
    """
    caps: dict[str, float | None] = {"cap": None, "order_cap": None}
    overall: dict[str, dict[str, float]] = {}
    by_segment: dict[str, dict[str, dict[str, float]]] = {}
    for dimension, value, arm, *aggregates in rows:
        if dimension in caps:
            caps[dimension] = None if aggregates[0] is None else float(aggregates[0])
            continue
        sums = {name: _number(total) for name, total in zip(SUMS, aggregates, strict=True)}
        if dimension == "all":
            overall[arm] = sums
        else:
            by_segment.setdefault(f"{dimension}={value}", {})[arm] = sums
    cuped = pre_exposure_days > 0
    cap = caps["cap"]
    return MetricStatistics(
        experiment_id=experiment.pk,
        phase=experiment.phase,
        window_start=window_start,
        window_end=window_end,
        gmv_cap_percentile=None if gmv_cap_percentile is None else float(gmv_cap_percentile),
        gmv_cap=cap,
        order_cap=caps["order_cap"],
        pre_exposure_days=pre_exposure_days,
        arms={arm: _statistics(sums, cap=cap, cuped=cuped) for arm, sums in overall.items()},
        segments={
            label: {arm: _statistics(sums, cap=cap, cuped=cuped) for arm, sums in arms.items()}
            for label, arms in sorted(by_segment.items())
        },
        sums=overall,
        refresh=refresh,
    )
