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
``covariates={"gmv": ["pre_gmv", "pre_orders"]}`` (a list) selects CUPED++:
Lin's interacted regression on several covariates, for means, proportions
and ratio metrics; ``strata=["age_band", "platform"]`` post-stratifies every
metric on those assignment attributes (CUPED++ with or without covariates).
``engine="bayesian"`` (with ``prior=None | {"mean": m, "variance": v}``)
reports posteriors instead of p-values (``experiments.stats.bayesian``).
``caps={"gmv": 99}`` caps ``gmv`` at the 99th percentile of its positive values
(the buyers), all arms pooled (linear interpolation, like PostgreSQL's
``percentile_cont``), and its covariates at the same value: the basis of the
metric pipeline (docs/metrics.md, "Capping"), so that the pipeline's facts
(``experiments.metrics.metric_facts_frame``) analysed here give the
dashboard's numbers. No positive value: no cap.
``segment_by="platform"`` adds a report per value of that column.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from experiments.stats.bayesian import bayesian_report, check_engine, gaussian_prior
from experiments.stats.health import BIAS_THRESHOLD, SUSPICIOUS_UPLIFT, health_checks
from experiments.stats.heterogeneity import heterogeneity_tests
from experiments.stats.regression import CellMoments, LinAdjustedStatistic
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
    # CUPED++ (Lin): the covariate columns, possibly none when only post-stratified.
    lin_covariates: tuple[str, ...] | None = None


def _covariate_list(name: str, covariate: object) -> tuple[str, ...]:
    if isinstance(covariate, str):
        return (covariate,)
    if not isinstance(covariate, list | tuple) or not covariate:
        raise ValueError(
            f"covariates[{name!r}] must be a column name or a non-empty list of column names, "
            f"got {covariate!r}"
        )
    if any(not isinstance(column, str) or not column for column in covariate):
        raise ValueError(f"covariates[{name!r}] must list column names, got {covariate!r}")
    if len(set(covariate)) != len(covariate):
        raise ValueError(f"covariates[{name!r}] names a column twice: {list(covariate)}")
    return tuple(covariate)


def _parse_metrics(
    metrics: Mapping[str, str],
    covariates: Mapping[str, str | Sequence[str]] | None,
    caps: Mapping[str, float] | None,
    columns: pd.Index,
    stratified: bool = False,
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
            if isinstance(covariate, str) and not stratified:
                raise ValueError(
                    f"ratio metric {name!r}: classic CUPED is for mean and proportion metrics; "
                    f"pass a list (covariates={{{name!r}: [{covariate!r}]}}) for CUPED++"
                )
            lin = None
            if covariate is not None or stratified:
                lin = () if covariate is None else _covariate_list(name, covariate)
            spec = _MetricSpec(
                name=name,
                type=metric_type,
                numerator=parts[0],
                denominator=parts[1],
                lin_covariates=lin,
            )
        else:
            lin = None
            if stratified or (covariate is not None and not isinstance(covariate, str)):
                lin = () if covariate is None else _covariate_list(name, covariate)
                covariate = None
            spec = _MetricSpec(
                name=name,
                type=metric_type,
                column=name,
                covariate=covariate,
                cap_percentile=cap,
                lin_covariates=lin,
            )
        outcome_columns = {spec.column, spec.numerator, spec.denominator}
        for column in (
            spec.column,
            spec.numerator,
            spec.denominator,
            spec.covariate,
            *(spec.lin_covariates or ()),
        ):
            if column is not None and column not in columns:
                what = "covariates" if column not in outcome_columns else "metric"
                raise ValueError(f"{what}: metric {name!r}: column {column!r} is not in the data")
        if set(spec.lin_covariates or ()) & outcome_columns:
            raise ValueError(
                f"covariates: metric {name!r} lists its own column as a covariate; covariates "
                "must be measured before exposure"
            )
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


def _parse_strata(strata: Sequence[str] | None, columns: pd.Index) -> tuple[str, ...]:
    if strata is None:
        return ()
    if isinstance(strata, str) or not isinstance(strata, Sequence):
        raise ValueError(f"strata must be a list of column names, got {strata!r}")
    names = tuple(strata)
    for name in names:
        if not isinstance(name, str) or name not in columns:
            raise ValueError(f"strata: column {name!r} is not in the data")
        if name == ARM_COLUMN:
            raise ValueError("strata: cannot stratify on the arm column")
    if len(set(names)) != len(names):
        raise ValueError(f"strata names a column twice: {list(names)}")
    return names


def _stratum_cells(
    df: pd.DataFrame,
    strata: tuple[str, ...],
    arm_codes: np.ndarray,
    arm_labels: list[str],
) -> tuple[np.ndarray, list[tuple[str, ...]]]:
    """Each row's stratum cell (a combination of the strata's levels) and the cells' keys.

    Raises ``ValueError`` naming ``strata`` for a column with a single level or
    a level with no subjects in some arm: post-stratification needs every
    level in every arm.
    """
    if not strata:
        return np.zeros(len(df), dtype=np.int64), [()]
    combined = np.zeros(len(df), dtype=np.int64)
    all_labels = []
    for column in strata:
        codes, labels = _codes(df, column)
        if len(labels) < 2:
            raise ValueError(
                f"strata: column {column!r} has a single level ({labels[0]!r}); "
                "there is nothing to stratify on"
            )
        present = np.zeros((len(arm_labels), len(labels)), dtype=bool)
        present[arm_codes, codes] = True
        for arm_index, level_index in zip(*np.nonzero(~present), strict=True):
            raise ValueError(
                f"strata: level {labels[level_index]!r} of {column!r} has no subjects in arm "
                f"{arm_labels[arm_index]!r}; merge it with another level or drop the column"
            )
        combined = combined * len(labels) + codes
        all_labels.append(labels)
    cell_codes, uniques = pd.factorize(combined, sort=True)
    keys = []
    for value in uniques.tolist():
        key = []
        for labels in reversed(all_labels):
            value, index = divmod(value, len(labels))
            key.append(labels[index])
        keys.append(tuple(reversed(key)))
    return cell_codes.astype(np.int64), keys


def statistics_from_frame(
    df: pd.DataFrame,
    *,
    metrics: Mapping[str, str],
    covariates: Mapping[str, str | Sequence[str]] | None = None,
    caps: Mapping[str, float] | None = None,
    segment_by: str | None = None,
    strata: Sequence[str] | None = None,
) -> tuple[dict[str, dict[str, Statistic]], dict[str, dict[str, dict[str, Statistic]]]]:
    """Sufficient statistics per arm (and per segment) from per-subject rows.

    Returns ``(statistics, segments)`` in the shapes ``analyze_statistics``
    takes; ``segments`` is empty without ``segment_by``. Arms (and segments)
    with no rows are absent. CUPED++ metrics get ``LinAdjustedStatistic``s
    whose cells are the combinations of the ``strata`` columns' values.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError("df must be a pandas DataFrame")
    if ARM_COLUMN not in df.columns:
        raise ValueError(f"the data has no {ARM_COLUMN!r} column")
    if len(df) == 0:
        raise ValueError("the data has no rows")
    strata_columns = _parse_strata(strata, df.columns)
    specs = _parse_metrics(metrics, covariates, caps, df.columns, stratified=bool(strata_columns))
    arm_codes, arm_labels = _codes(df, ARM_COLUMN)
    arm_count = len(arm_labels)
    stratum_codes, stratum_keys = _stratum_cells(df, strata_columns, arm_codes, arm_labels)

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
    capped: dict[tuple[str, float], np.ndarray] = {}

    def column_values(column: str, cap: float | None = None) -> np.ndarray:
        """The column's values, capped at the value ``cap`` (not a percentile)."""
        if column not in raw:
            raw[column] = _numeric_column(df, column)
        if cap is None:
            return raw[column]
        if (column, cap) not in capped:
            capped[(column, cap)] = np.minimum(raw[column], cap)
        return capped[(column, cap)]

    caps_used: dict[str, float] = {}
    for spec in specs:
        if spec.type == "proportion":
            values = column_values(spec.column)
            if not np.all((values == 0) | (values == 1)):
                raise ValueError(
                    f"proportion metric {spec.name!r}: column {spec.column!r} must be 0/1"
                )
        if spec.cap_percentile is not None:
            # Pooled over all arms (a cap computed per arm would depend on the treatment),
            # over the positive values: with few buyers, a percentile over everyone would
            # put the cap at zero.
            values = column_values(spec.column)
            positive = values[values > 0]
            if positive.size:
                caps_used[spec.name] = float(np.percentile(positive, spec.cap_percentile))

    sums: dict[tuple, np.ndarray] = {}

    def bincount(codes: np.ndarray, length: int, key: tuple, weights_fn) -> np.ndarray:
        full_key = (length, *key)
        if full_key not in sums:
            sums[full_key] = np.bincount(codes, weights=weights_fn(), minlength=length)
        return sums[full_key]

    def lin_statistics(codes: np.ndarray, length: int, spec: _MetricSpec) -> list:
        """Per group (arm, or segment × arm): the CUPED++ statistic from stratum-cell sums."""
        cap = caps_used.get(spec.name)
        outcomes = (spec.column,) if spec.type != "ratio" else (spec.numerator, spec.denominator)
        columns = [(column, cap) for column in outcomes] + [
            (column, cap) for column in spec.lin_covariates
        ]
        width = len(stratum_keys)
        joint = codes * width + stratum_codes
        size = length * width
        counts = np.bincount(joint, minlength=size).reshape(length, width)
        first = [
            bincount(joint, size, ("sum", c, p), lambda c=c, p=p: column_values(c, p)).reshape(
                length, width
            )
            for c, p in columns
        ]
        second = []
        for i, (a, a_cap) in enumerate(columns):
            for b, b_cap in columns[i:]:
                key = (
                    ("sq", a, a_cap) if (a, a_cap) == (b, b_cap) else ("cross", a, a_cap, b, b_cap)
                )
                second.append(
                    bincount(
                        joint,
                        size,
                        key,
                        lambda a=a, a_cap=a_cap, b=b, b_cap=b_cap: (
                            column_values(a, a_cap) * column_values(b, b_cap)
                        ),
                    ).reshape(length, width)
                )
        result = []
        count_rows = counts.tolist()
        first_rows = np.stack(first, axis=2).tolist()  # (group, cell, variable)
        second_rows = np.stack(second, axis=2).tolist()
        for group in range(length):
            cells = {
                stratum_keys[k]: CellMoments(
                    n=count_rows[group][k],
                    sums=tuple(first_rows[group][k]),
                    cross_products=tuple(second_rows[group][k]),
                )
                for k, n in enumerate(count_rows[group])
                if n
            }
            result.append(
                LinAdjustedStatistic(
                    outcomes=outcomes,
                    covariates=spec.lin_covariates,
                    strata=strata_columns,
                    cells=cells,
                    cap=caps_used.get(spec.name),
                )
                if cells
                else None
            )
        return result

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
            cap = caps_used.get(spec.name)  # the outcome's cap, for its covariate too
            lin = lin_statistics(codes, length, spec) if spec.lin_covariates is not None else None
            for cell in range(length):
                n = int(counts[cell])
                if n == 0:
                    continue
                if lin is not None:
                    statistic: Statistic = lin[cell]
                elif spec.type == "ratio":
                    statistic = RatioStatistic(
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


def _without_multiple_exposures(df: pd.DataFrame, subject_column: str) -> tuple[pd.DataFrame, int]:
    """The rows of subjects seen in one arm only, and how many subjects were seen in several."""
    if subject_column not in df.columns:
        raise ValueError(f"subject_column: column {subject_column!r} is not in the data")
    if df[subject_column].isna().any():
        raise ValueError(f"subject_column: column {subject_column!r} has missing values")
    pairs = df[[subject_column, ARM_COLUMN]]
    repeated = pairs.duplicated()
    if repeated.any():
        subject, arm = pairs[repeated].iloc[0].tolist()
        raise ValueError(
            f"subject_column: subject {subject!r} has two rows in arm {arm!r}; the data must "
            "have one row per exposed subject and arm"
        )
    arms_per_subject = pairs.groupby(subject_column, sort=False)[ARM_COLUMN].transform("nunique")
    several = arms_per_subject.to_numpy() > 1
    if not several.any():
        return df, 0
    return df.loc[~several], int(pairs.loc[several, subject_column].nunique())


def analyze(
    df: pd.DataFrame,
    *,
    control: str,
    weights: Mapping[str, float],
    metrics: Mapping[str, str],
    covariates: Mapping[str, str | Sequence[str]] | None = None,
    alpha: float = 0.05,
    segment_by: str | None = None,
    caps: Mapping[str, float] | None = None,
    srm_threshold: float = SRM_THRESHOLD,
    strata: Sequence[str] | None = None,
    engine: str = "frequentist",
    prior: Mapping[str, float] | None = None,
    lower_is_better: Sequence[str] = (),
    subject_column: str | None = None,
    suspicious_uplift: float = SUSPICIOUS_UPLIFT,
    bias_threshold: float = BIAS_THRESHOLD,
    primary: str | None = None,
) -> dict:
    """The experiment report, as a JSON-serialisable dict, from per-subject rows.

    ``df`` has one row per exposed subject, an ``arm`` column and one column
    per metric (see the module docstring for ``metrics``, ``covariates``,
    ``strata``, ``caps`` and ``segment_by``). ``engine="bayesian"`` reports
    posteriors (``prior`` on the relative effect; ``lower_is_better`` names
    the metrics whose chance to win is a decrease). The report's ``health``
    holds the health checks; ``subject_column`` (a subject id column) turns
    on the multiple-exposure check, whose subjects are left out. ``primary``
    (frequentist) makes that metric × arms the confirmatory family and the
    other metrics exploratory, as the results job does.

    Raises ``ValueError`` with a message naming the argument for bad input:
    unknown or missing columns, non-numeric or non-finite values, arms without
    weights, a missing control, empty or one-subject arms, zero variance, bad
    weights, alpha, engine, prior, strata or thresholds.
    """
    engine = check_engine(engine)
    checked_prior = gaussian_prior(prior)
    if checked_prior is not None and engine != "bayesian":
        raise ValueError("prior: a prior is only used by engine='bayesian'")
    if isinstance(lower_is_better, str) or not isinstance(lower_is_better, Sequence):
        raise ValueError(f"lower_is_better must be a list of metric names, got {lower_is_better!r}")
    unknown = sorted(set(lower_is_better) - set(metrics or {}))
    if unknown:
        raise ValueError(f"lower_is_better names metrics {unknown} that are not in metrics")
    if lower_is_better and engine != "bayesian":
        raise ValueError("lower_is_better: only engine='bayesian' reports a chance to win")
    if primary is not None and engine != "frequentist":
        raise ValueError("primary: only engine='frequentist' has a confirmatory family")
    multiple_exposures = None
    if subject_column is not None:
        if not isinstance(df, pd.DataFrame) or ARM_COLUMN not in df.columns:
            raise ValueError(f"df must be a pandas DataFrame with an {ARM_COLUMN!r} column")
        df, multiple_exposures = _without_multiple_exposures(df, subject_column)
    statistics, segments = statistics_from_frame(
        df,
        metrics=metrics,
        covariates=covariates,
        caps=caps,
        segment_by=segment_by,
        strata=strata,
    )
    if engine == "bayesian":
        report = bayesian_report(
            statistics,
            control=control,
            weights=weights,
            prior=checked_prior,
            alpha=alpha,
            segments=segments or None,
            srm_threshold=srm_threshold,
            lower_is_better=lower_is_better,
        )
    else:
        report = analyze_statistics(
            statistics,
            control=control,
            weights=weights,
            alpha=alpha,
            segments=segments or None,
            srm_threshold=srm_threshold,
            primary=primary,
        )
    result = {"engine": engine, **report.to_dict()}
    if segments:
        frequentist = report if engine == "frequentist" else None
        if frequentist is None:
            frequentist = analyze_statistics(
                statistics,
                control=control,
                weights=weights,
                alpha=alpha,
                segments=segments,
                srm_threshold=srm_threshold,
            )
        result["heterogeneity"] = [test.to_dict() for test in heterogeneity_tests(frequentist)]
    result["health"] = health_checks(
        statistics,
        control=control,
        comparisons=report.comparisons,
        multiple_exposures=multiple_exposures,
        suspicious_uplift=suspicious_uplift,
        bias_threshold=bias_threshold,
    ).to_dict()
    return result
