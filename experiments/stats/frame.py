"""From per-subject rows (a pandas DataFrame) to sufficient statistics and a report.

This is the notebook / CLI path. The production path computes the same
statistics in one SQL aggregate and calls ``analyze_statistics`` directly, so
nothing here may do statistics the core does not: it only sums.

Metric specifications (``metrics``), ``{name: type}``:

- ``"converted": "proportion"`` — a 0/1 (or boolean) column;
- ``"gmv": "mean"`` — any numeric column;
- ``"gmv/orders": "ratio"`` — the ratio of two columns' sums (average order
  value), analysed with the delta method; the name is ``numerator/denominator``.

``covariates={"gmv": "pre_gmv"}`` reports ``gmv`` CUPED-adjusted with the
pre-exposure column ``pre_gmv`` (mean and proportion metrics).
``caps={"gmv": 99}`` caps ``gmv`` at its 99th percentile over all arms pooled
(linear interpolation, like PostgreSQL's ``percentile_cont``), and its
covariate at the covariate's own 99th percentile.
``segment_by="platform"`` adds a report per value of that column.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from experiments.stats.report import analyze_statistics
from experiments.stats.srm import SRM_THRESHOLD
from experiments.stats.statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    Statistic,
)

ARM_COLUMN = "arm"
METRIC_TYPES = ("proportion", "mean", "ratio")


@dataclass(frozen=True, slots=True)
class _MetricSpec:
    name: str
    type: str
    column: str | None = None  # proportion and mean
    numerator: str | None = None  # ratio
    denominator: str | None = None
    covariate: str | None = None
    cap_percentile: float | None = None


def _parse_metrics(
    metrics: Mapping[str, str],
    covariates: Mapping[str, str] | None,
    caps: Mapping[str, float] | None,
    columns: pd.Index,
) -> list[_MetricSpec]:
    if not metrics:
        raise ValueError("no metrics given: pass e.g. metrics={'converted': 'proportion'}")
    covariates = dict(covariates or {})
    caps = dict(caps or {})
    for mapping, what in ((covariates, "covariate"), (caps, "cap")):
        orphans = [name for name in mapping if name not in metrics]
        if orphans:
            raise ValueError(f"{what} given for metrics {orphans} that are not in metrics")
    specs = []
    for name, metric_type in metrics.items():
        if metric_type not in METRIC_TYPES:
            raise ValueError(
                f"metric {name!r}: type must be one of {METRIC_TYPES}, got {metric_type!r}"
            )
        covariate = covariates.get(name)
        cap = caps.get(name)
        if cap is not None:
            if metric_type != "mean":
                raise ValueError(f"metric {name!r}: only mean metrics can be capped")
            if isinstance(cap, bool) or not isinstance(cap, numbers.Real) or not 0 < cap <= 100:
                raise ValueError(
                    f"metric {name!r}: the cap percentile must be in (0, 100], got {cap!r}"
                )
        if metric_type == "ratio":
            parts = name.split("/")
            if len(parts) != 2 or not all(parts):
                raise ValueError(
                    f"ratio metric {name!r} must be named 'numerator/denominator' (e.g. 'gmv/orders')"
                )
            if covariate is not None:
                raise ValueError(
                    f"ratio metric {name!r}: CUPED is supported for mean and proportion metrics only"
                )
            spec = _MetricSpec(
                name=name, type=metric_type, numerator=parts[0], denominator=parts[1]
            )
        else:
            spec = _MetricSpec(
                name=name, type=metric_type, column=name, covariate=covariate, cap_percentile=cap
            )
        for column in (spec.column, spec.numerator, spec.denominator, spec.covariate):
            if column is not None and column not in columns:
                raise ValueError(f"metric {name!r}: column {column!r} is not in the data")
        specs.append(spec)
    return specs


def _numeric_column(df: pd.DataFrame, column: str) -> np.ndarray:
    series = df[column]
    if not (
        pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)
    ):
        raise ValueError(f"column {column!r} is not numeric (dtype {series.dtype})")
    values = series.to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(
            f"column {column!r} has {int(bad.sum())} missing or infinite values; "
            "fill or drop them before the analysis"
        )
    return values


def _codes(df: pd.DataFrame, column: str) -> tuple[np.ndarray, list[str]]:
    try:
        codes, uniques = pd.factorize(df[column], sort=True)
    except TypeError:  # labels of mixed types (1 and "b") cannot be sorted
        codes, uniques = pd.factorize(df[column], sort=False)
    if (codes < 0).any():
        raise ValueError(f"column {column!r} has {int((codes < 0).sum())} missing values")
    labels = [str(value) for value in uniques]
    if len(set(labels)) != len(labels):
        raise ValueError(f"column {column!r} has values that coincide as text: {labels}")
    return codes, labels


def statistics_from_frame(
    df: pd.DataFrame,
    *,
    metrics: Mapping[str, str],
    covariates: Mapping[str, str] | None = None,
    caps: Mapping[str, float] | None = None,
    segment_by: str | None = None,
) -> tuple[dict[str, dict[str, Statistic]], dict[str, dict[str, dict[str, Statistic]]]]:
    """Sufficient statistics per arm (and per segment) from per-subject rows.

    Returns ``(statistics, segments)`` in the shapes ``analyze_statistics``
    takes; ``segments`` is empty without ``segment_by``. Arms (and segments)
    with no rows are absent.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError("df must be a pandas DataFrame")
    if ARM_COLUMN not in df.columns:
        raise ValueError(f"the data has no {ARM_COLUMN!r} column")
    if len(df) == 0:
        raise ValueError("the data has no rows")
    specs = _parse_metrics(metrics, covariates, caps, df.columns)
    arm_codes, arm_labels = _codes(df, ARM_COLUMN)
    arm_count = len(arm_labels)

    if segment_by is not None:
        if segment_by not in df.columns:
            raise ValueError(f"the segment column {segment_by!r} is not in the data")
        if segment_by == ARM_COLUMN:
            raise ValueError("cannot segment by the arm column")
        segment_codes, segment_labels = _codes(df, segment_by)
        # One bincount over arm × segment cells gives every segment at once.
        cells = segment_codes * arm_count + arm_codes
        cell_count = arm_count * len(segment_labels)
    else:
        segment_labels = []
        cells = None
        cell_count = 0

    raw: dict[str, np.ndarray] = {}
    capped: dict[tuple[str, float], tuple[np.ndarray, float]] = {}

    def column_values(column: str, cap_percentile: float | None = None) -> np.ndarray:
        if column not in raw:
            raw[column] = _numeric_column(df, column)
        if cap_percentile is None:
            return raw[column]
        if (column, cap_percentile) not in capped:
            # Pooled over all arms: a cap computed per arm would depend on the treatment.
            cap = float(np.percentile(raw[column], cap_percentile))
            capped[(column, cap_percentile)] = (np.minimum(raw[column], cap), cap)
        return capped[(column, cap_percentile)][0]

    caps_used: dict[str, float] = {}
    for spec in specs:
        if spec.type == "proportion":
            values = column_values(spec.column)
            if not np.all((values == 0) | (values == 1)):
                raise ValueError(
                    f"proportion metric {spec.name!r}: column {spec.column!r} must be 0/1"
                )
        if spec.cap_percentile is not None:
            column_values(spec.column, spec.cap_percentile)
            caps_used[spec.name] = capped[(spec.column, spec.cap_percentile)][1]

    sums: dict[tuple, np.ndarray] = {}

    def bincount(codes: np.ndarray, length: int, key: tuple, weights_fn) -> np.ndarray:
        full_key = (length, *key)
        if full_key not in sums:
            sums[full_key] = np.bincount(codes, weights=weights_fn(), minlength=length)
        return sums[full_key]

    def cell_statistics(codes: np.ndarray, length: int) -> list[dict[str, Statistic]]:
        counts = np.bincount(codes, minlength=length)
        result: list[dict[str, Statistic]] = [{} for _ in range(length)]

        def total(column: str, cap: float | None) -> np.ndarray:
            return bincount(codes, length, ("sum", column, cap), lambda: column_values(column, cap))

        def squares(column: str, cap: float | None) -> np.ndarray:
            return bincount(
                codes, length, ("sq", column, cap), lambda: np.square(column_values(column, cap))
            )

        def cross(a: str, a_cap: float | None, b: str, b_cap: float | None) -> np.ndarray:
            return bincount(
                codes,
                length,
                ("cross", a, a_cap, b, b_cap),
                lambda: column_values(a, a_cap) * column_values(b, b_cap),
            )

        for spec in specs:
            cap = spec.cap_percentile
            for cell in range(length):
                n = int(counts[cell])
                if n == 0:
                    continue
                if spec.type == "ratio":
                    statistic: Statistic = RatioStatistic(
                        n=n,
                        numerator_sum=float(total(spec.numerator, None)[cell]),
                        numerator_sum_squares=float(squares(spec.numerator, None)[cell]),
                        denominator_sum=float(total(spec.denominator, None)[cell]),
                        denominator_sum_squares=float(squares(spec.denominator, None)[cell]),
                        cross_product=float(
                            cross(spec.numerator, None, spec.denominator, None)[cell]
                        ),
                    )
                elif spec.covariate is not None:
                    statistic = RegressionAdjustedStatistic(
                        n=n,
                        sum=float(total(spec.column, cap)[cell]),
                        sum_squares=float(squares(spec.column, cap)[cell]),
                        covariate_sum=float(total(spec.covariate, cap)[cell]),
                        covariate_sum_squares=float(squares(spec.covariate, cap)[cell]),
                        cross_product=float(cross(spec.column, cap, spec.covariate, cap)[cell]),
                        cap=caps_used.get(spec.name),
                    )
                elif spec.type == "proportion":
                    statistic = ProportionStatistic(
                        n=n, successes=int(round(total(spec.column, None)[cell]))
                    )
                else:
                    statistic = SampleMeanStatistic(
                        n=n,
                        sum=float(total(spec.column, cap)[cell]),
                        sum_squares=float(squares(spec.column, cap)[cell]),
                        cap=caps_used.get(spec.name),
                    )
                result[cell][spec.name] = statistic
        return result

    by_arm = cell_statistics(arm_codes, arm_count)
    statistics = {arm_labels[i]: by_arm[i] for i in range(arm_count) if by_arm[i]}
    segments: dict[str, dict[str, dict[str, Statistic]]] = {}
    if cells is not None:
        by_cell = cell_statistics(cells, cell_count)
        for s, segment in enumerate(segment_labels):
            segments[segment] = {
                arm_labels[a]: by_cell[s * arm_count + a]
                for a in range(arm_count)
                if by_cell[s * arm_count + a]
            }
    return statistics, segments


def analyze(
    df: pd.DataFrame,
    *,
    control: str,
    weights: Mapping[str, float],
    metrics: Mapping[str, str],
    covariates: Mapping[str, str] | None = None,
    alpha: float = 0.05,
    segment_by: str | None = None,
    caps: Mapping[str, float] | None = None,
    srm_threshold: float = SRM_THRESHOLD,
) -> dict:
    """The experiment report, as a JSON-serialisable dict, from per-subject rows.

    ``df`` has one row per exposed subject, an ``arm`` column and one column
    per metric (see the module docstring for ``metrics``, ``covariates``,
    ``caps`` and ``segment_by``). Raises ``ValueError`` with a message for bad
    input: unknown or missing columns, non-numeric or non-finite values, arms
    without weights, a missing control, empty or one-subject arms, zero
    variance, bad weights or alpha.
    """
    statistics, segments = statistics_from_frame(
        df, metrics=metrics, covariates=covariates, caps=caps, segment_by=segment_by
    )
    report = analyze_statistics(
        statistics,
        control=control,
        weights=weights,
        alpha=alpha,
        segments=segments or None,
        srm_threshold=srm_threshold,
    )
    return report.to_dict()
