"""The aggregate: every metric's sufficient statistics per arm and segment from the stored facts."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from django.db import connections

from experiments.metrics.definitions import withdrawals_among_granted
from experiments.metrics.refresh import FactsRefresh
from experiments.metrics.sql import (
    CELL_KEY,
    LIN_COVARIATES,
    LIN_OUTCOMES,
    LIN_SUMS,
    SUMS,
    lin_sum_name,
    metric_statistics_sql,
)
from experiments.models import Arm, Experiment, Metric
from experiments.stats import (
    CellMoments,
    LinAdjustedStatistic,
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
    # CUPED++'s stratum cells: per arm, per cell (CELL_KEY levels), the raw sums of SUMS + LIN_SUMS.
    # Empty when the engine that summed does not return cells (then only ``arms`` is known).
    cells: dict[str, dict[tuple[str, ...], dict[str, float]]] = field(default_factory=dict, repr=False)

    @property
    def covariates(self) -> tuple[str, ...]:
        """CUPED++'s pre-exposure covariates: none without a pre-exposure window."""
        return LIN_COVARIATES if self.pre_exposure_days > 0 else ()

    def lin_statistics(
        self, *, covariates: tuple[str, ...], strata: tuple[str, ...], segment: str | None = None
    ) -> dict[str, dict[str, LinAdjustedStatistic]]:
        """Every metric's CUPED++ statistic per arm (of one segment, ``"dimension=value"``) from the cells.

        ``covariates`` ⊆ ``LIN_COVARIATES``, ``strata`` ⊆ the assignment attributes
        (``CELL_KEY`` less ``customer``); ``{}`` without cells. The cells are added up in
        sorted order, so the same cells always give the same sums.
        """
        unknown = [name for name in covariates if name not in LIN_COVARIATES]
        unknown += [name for name in strata if name not in CELL_KEY[:-1]]
        if unknown:
            raise ValueError(f"lin_statistics: unknown covariates or strata {unknown}")
        positions = [CELL_KEY.index(name) for name in strata]
        selected: tuple[int, str] | None = None
        if segment is not None:
            dimension, _, level = segment.partition("=")
            if dimension not in CELL_KEY:
                raise ValueError(f"lin_statistics: segment {segment!r} is not 'dimension=value' of {list(CELL_KEY)}")
            selected = (CELL_KEY.index(dimension), level)
        n_column = _CELL_FIELDS.index("n")
        result: dict[str, dict[str, LinAdjustedStatistic]] = {}
        for arm, (keys, values) in self._cell_arrays.items():
            rows = [i for i, key in enumerate(keys) if selected is None or key[selected[0]] == selected[1]]
            groups: dict[tuple[str, ...], int] = {}
            index = np.array([groups.setdefault(tuple(keys[i][p] for p in positions), len(groups)) for i in rows], int)
            totals = np.zeros((len(groups), len(_CELL_FIELDS)))
            np.add.at(totals, index, values[rows])  # row by row, in the cells' sorted order
            grouped = {
                key: dict(zip(_CELL_FIELDS, totals[g].tolist(), strict=True))
                for key, g in groups.items()
                if totals[g, n_column] > 0
            }
            if not grouped:
                continue
            result[arm] = {
                metric: LinAdjustedStatistic(
                    outcomes=outcomes,
                    covariates=covariates,
                    strata=strata,
                    cells={key: _cell_moments(sums, (*outcomes, *covariates)) for key, sums in grouped.items()},
                    cap=self.gmv_cap if metric == Metric.GMV else None,
                )
                for metric, outcomes in LIN_OUTCOMES.items()
            }
        return result

    @functools.cached_property
    def _cell_arrays(self) -> dict[str, tuple[list[tuple[str, ...]], np.ndarray]]:
        """Per arm the cells' keys in sorted order and their sums as one array (read once)."""
        arrays = {}
        for arm, cells in self.cells.items():
            keys = sorted(cells)
            arrays[arm] = (keys, np.array([[cells[key][name] for name in _CELL_FIELDS] for key in keys], float))
        return arrays

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

_CELL_FIELDS = (*SUMS, *LIN_SUMS)


def _number(value) -> float:
    return 0.0 if value is None else float(value)


def _cell_moments(totals: dict[str, float], variables: tuple[str, ...]) -> CellMoments:
    return CellMoments(
        n=int(totals["n"]),
        sums=tuple(totals[lin_sum_name(name)] for name in variables),
        cross_products=tuple(
            totals[lin_sum_name(a, b)] for i, a in enumerate(variables) for b in variables[i:]
        ),
    )


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
    whichever engine summed, the same rows make the same statistics. The built-in aggregate's
    rows also carry ``LIN_SUMS``, and its ``cell`` rows (value: the CELL_KEY levels as a JSON
    array) are CUPED++'s stratum cells (``MetricStatistics.lin_statistics``).
    """
    caps: dict[str, float | None] = {"cap": None, "order_cap": None}
    overall: dict[str, dict[str, float]] = {}
    by_segment: dict[str, dict[str, dict[str, float]]] = {}
    cells: dict[str, dict[tuple[str, ...], dict[str, float]]] = {}
    for dimension, value, arm, *aggregates in rows:
        if dimension in caps:
            caps[dimension] = None if aggregates[0] is None else float(aggregates[0])
            continue
        if len(aggregates) not in (len(SUMS), len(SUMS) + len(LIN_SUMS)):
            raise ValueError(
                f"an aggregate row has {len(aggregates)} sums, expected {len(SUMS)} (SUMS) "
                f"or {len(SUMS) + len(LIN_SUMS)} (SUMS and LIN_SUMS)"
            )
        sums = {name: _number(total) for name, total in zip((*SUMS, *LIN_SUMS), aggregates, strict=False)}
        if dimension == "cell":
            cells.setdefault(arm, {})[tuple(str(level) for level in json.loads(value))] = sums
            continue
        sums = {name: sums[name] for name in SUMS}  # the legacy statistics read these only
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
        cells=cells,
    )
