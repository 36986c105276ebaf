"""CUPED++ (Lin's interacted regression) against statsmodels OLS with HC2, and by simulation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from experiments.stats import (
    CellMoments,
    LinAdjustedStatistic,
    SampleMeanStatistic,
    analyze,
    compare,
    compare_many,
    lin_difference,
)
from experiments.stats.statistics import InsufficientDataError

from .stats_testkit import binomial_error


def lin_statistic(outcomes, covariates, strata_rows, names=None) -> LinAdjustedStatistic:
    """The statistic from one arm's rows: outcomes (n, m), covariates (n, k), strata (n, s) labels."""
    count = len(strata_rows)
    outcomes = np.asarray(outcomes, float).reshape(count, -1)
    covariates = np.asarray(covariates, float).reshape(count, -1)
    values = np.column_stack([outcomes, covariates])
    upper = np.triu_indices(values.shape[1])
    codes, keys = pd.factorize(pd.Series([tuple(str(v) for v in row) for row in strata_rows]))
    size = len(keys)
    counts = np.bincount(codes, minlength=size)
    sums = np.stack([np.bincount(codes, values[:, j], size) for j in range(values.shape[1])], 1)
    products = np.stack(
        [
            np.bincount(codes, values[:, a] * values[:, b], size)
            for a, b in zip(*upper, strict=True)
        ],
        1,
    )
    cells = {
        keys[c]: CellMoments(
            n=int(counts[c]), sums=tuple(sums[c]), cross_products=tuple(products[c])
        )
        for c in range(size)
    }
    s = len(strata_rows[0]) if count else 0
    return LinAdjustedStatistic(
        outcomes=tuple(f"y{j}" for j in range(outcomes.shape[1])) if names is None else names,
        covariates=tuple(f"x{j}" for j in range(covariates.shape[1])),
        strata=tuple(f"s{j}" for j in range(s)),
        cells=cells,
    )


def _data(rng, n, *, covariates=2, strata=True, heteroskedastic=True, binary=False):
    treated = (rng.random(n) < 0.4).astype(int)  # unequal allocation on purpose
    age = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    platform = rng.choice(["x", "y"], n)
    x = rng.gamma(1.5, 2.0, (n, covariates))
    signal = 1.0 + x @ (0.5 * np.arange(1, covariates + 1)) + 2.0 * (age == "b") + (platform == "y")
    signal = signal + treated * (0.3 + 0.2 * x[:, 0]) if covariates else signal + 0.3 * treated
    noise = rng.normal(0, 1.0 + (0.5 * x[:, 0] if heteroskedastic and covariates else 0.0), n)
    y = signal + noise
    if binary:
        y = (rng.random(n) < 1 / (1 + np.exp(-(y - y.mean()) / y.std()))).astype(float)
    strata_rows = list(zip(age, platform, strict=True)) if strata else [()] * n
    return treated, x, strata_rows, y, age, platform


def _design(x, age, platform, treated, strata):
    parts = [x] if x.shape[1] else []
    if strata:
        dummies = pd.get_dummies(pd.DataFrame({"a": age, "p": platform}), drop_first=True)
        parts.append(dummies.to_numpy(float))
    z = np.column_stack(parts) if parts else np.zeros((len(treated), 0))
    z = z - z.mean(axis=0)  # centred at the two arms' pooled mean
    return np.column_stack([np.ones(len(treated)), treated, z, treated[:, None] * z])


def _statistics(treated, y, x, strata_rows):
    arms = []
    for arm in (0, 1):
        rows = treated == arm
        arms.append(
            lin_statistic(
                y[rows], x[rows], [r for r, keep in zip(strata_rows, rows, strict=True) if keep]
            )
        )
    return arms


@pytest.mark.parametrize(
    ("covariates", "strata", "binary"),
    [(2, True, False), (3, False, False), (2, True, True), (1, True, False)],
)
def test_estimate_equals_statsmodels_interacted_ols(covariates, strata, binary):
    rng = np.random.default_rng(covariates * 10 + strata + 2 * binary)
    treated, x, strata_rows, y, age, platform = _data(
        rng, 3000, covariates=covariates, strata=strata, binary=binary
    )
    control, treatment = _statistics(treated, y, x, strata_rows)
    fit = sm.OLS(y, _design(x, age, platform, treated, strata)).fit(cov_type="HC2")
    result = lin_difference(control, treatment)
    assert result.estimate == pytest.approx(fit.params[1], rel=1e-9, abs=1e-12)
    assert result.control.adjusted_mean == pytest.approx(fit.params[0], rel=1e-9)


@pytest.mark.parametrize("binary", [False, True])
def test_standard_error_equals_statsmodels_hc2_exactly_with_strata_only(binary):
    rng = np.random.default_rng(11 + binary)
    treated, x, strata_rows, y, age, platform = _data(rng, 2500, covariates=0, binary=binary)
    control, treatment = _statistics(treated, y, x, strata_rows)
    fit = sm.OLS(y, _design(x, age, platform, treated, True)).fit(cov_type="HC2")
    result = lin_difference(control, treatment)
    assert math.sqrt(result.variance) == pytest.approx(fit.bse[1], rel=1e-9)


def test_standard_error_is_hc2_with_leverage_averaged_within_cells():
    """With continuous covariates the engine's variance is HC2 with each row's
    leverage replaced by its arm × cell average: rebuilt here from statsmodels'
    own residuals, leverages and coefficient weights, it agrees to 1e-9."""
    rng = np.random.default_rng(12)
    treated, x, strata_rows, y, age, platform = _data(rng, 3000, covariates=2)
    control, treatment = _statistics(treated, y, x, strata_rows)
    design = _design(x, age, platform, treated, True)
    fit = sm.OLS(y, design).fit()
    weights = np.linalg.pinv(design)[1]  # the treatment coefficient = Σ weights·y
    leverage = fit.get_influence().hat_matrix_diag
    residual = fit.resid
    cells = pd.Series([f"{t}|{a}|{p}" for t, (a, p) in zip(treated, strata_rows, strict=True)])
    variance = 0.0
    for _, index in cells.groupby(cells).groups.items():
        rows = np.asarray(index)
        variance += (
            np.sum(weights[rows] ** 2)
            * np.sum(residual[rows] ** 2)
            / (len(rows) - np.sum(leverage[rows]))
        )
    assert lin_difference(control, treatment).variance == pytest.approx(variance, rel=1e-9)


@pytest.mark.parametrize(("n", "bound"), [(4000, 0.02), (40_000, 0.003)])
def test_standard_error_is_close_to_hc2_with_continuous_covariates(n, bound):
    """The documented size of the leverage-averaging error: a strongly
    heteroskedastic design (noise sd growing with the covariate)."""
    rng = np.random.default_rng(n)
    treated, x, strata_rows, y, age, platform = _data(rng, n, covariates=2)
    control, treatment = _statistics(treated, y, x, strata_rows)
    fit = sm.OLS(y, _design(x, age, platform, treated, True)).fit(cov_type="HC2")
    relative = math.sqrt(lin_difference(control, treatment).variance) / fit.bse[1] - 1
    assert abs(relative) < bound


def test_ratio_metric_equals_statsmodels_on_numerator_and_denominator():
    rng = np.random.default_rng(21)
    n = 3000
    treated = (rng.random(n) < 0.5).astype(int)
    age = rng.choice(["a", "b"], n)
    pre = rng.gamma(2.0, 50.0, n)
    orders = rng.poisson(1.0 + 0.005 * pre + 0.3 * (age == "b"), n).astype(float)
    gmv = orders * rng.gamma(2.0, 40.0 * (1 + 0.05 * treated), n)
    x = pre[:, None]
    strata_rows = [(a,) for a in age]
    stats_ = [
        lin_statistic(
            np.column_stack([gmv[treated == arm], orders[treated == arm]]),
            x[treated == arm],
            [r for r, t in zip(strata_rows, treated, strict=True) if t == arm],
        )
        for arm in (0, 1)
    ]
    result = lin_difference(*stats_)
    z = np.column_stack([pre, (age == "b").astype(float)])
    z = z - z.mean(axis=0)
    design = np.column_stack([np.ones(n), treated, z, treated[:, None] * z])
    numerator, denominator = sm.OLS(gmv, design).fit(), sm.OLS(orders, design).fit()
    ratios = [
        (numerator.params[0] + arm * numerator.params[1])
        / (denominator.params[0] + arm * denominator.params[1])
        for arm in (0, 1)
    ]
    assert result.estimate == pytest.approx(ratios[1] - ratios[0], rel=1e-9)
    # Strata only: the delta-method variance is HC2 of the linearised outcome exactly.
    stats_plain = [
        lin_statistic(
            np.column_stack([gmv[treated == arm], orders[treated == arm]]),
            np.zeros((int((treated == arm).sum()), 0)),
            [r for r, t in zip(strata_rows, treated, strict=True) if t == arm],
        )
        for arm in (0, 1)
    ]
    plain = lin_difference(*stats_plain)
    design = np.column_stack([np.ones(n), treated, z[:, 1:], treated[:, None] * z[:, 1:]])
    numerator, denominator = sm.OLS(gmv, design).fit(), sm.OLS(orders, design).fit()
    linearised = np.empty(n)
    for arm in (0, 1):
        rows = treated == arm
        mean_n = numerator.params[0] + arm * numerator.params[1]
        mean_d = denominator.params[0] + arm * denominator.params[1]
        linearised[rows] = (gmv[rows] - mean_n / mean_d * orders[rows]) / mean_d
    hc2 = sm.OLS(linearised, design).fit(cov_type="HC2")
    assert math.sqrt(plain.variance) == pytest.approx(hc2.bse[1], rel=1e-9)


def test_without_covariates_or_strata_it_is_the_welch_test():
    rng = np.random.default_rng(31)
    a, b = rng.gamma(2, 3, 700), rng.gamma(2, 3.3, 400)
    lin = compare(
        lin_statistic(a, np.zeros((700, 0)), [()] * 700),
        lin_statistic(b, np.zeros((400, 0)), [()] * 400),
    )
    welch = compare(
        SampleMeanStatistic(n=700, sum=a.sum(), sum_squares=(a * a).sum()),
        SampleMeanStatistic(n=400, sum=b.sum(), sum_squares=(b * b).sum()),
    )
    assert lin.absolute.estimate == pytest.approx(welch.absolute.estimate, rel=1e-12)
    assert lin.absolute.standard_error == pytest.approx(welch.absolute.standard_error, rel=1e-10)
    assert lin.degrees_of_freedom == pytest.approx(welch.degrees_of_freedom, rel=1e-10)
    assert lin.absolute.p_value == pytest.approx(welch.absolute.p_value, rel=1e-9)


def _two_cell_statistic(y, x, level) -> LinAdjustedStatistic:
    """``lin_statistic`` for one two-level stratum, without the per-row labels (fast)."""
    values = np.column_stack([y, x])
    upper = np.triu_indices(values.shape[1])
    cells = {}
    for key, rows in ((("no",), ~level), (("yes",), level)):
        part = values[rows]
        cells[key] = CellMoments(
            n=len(part), sums=tuple(part.sum(axis=0)), cross_products=tuple((part.T @ part)[upper])
        )
    return LinAdjustedStatistic(
        outcomes=("y",), covariates=("x0", "x1"), strata=("s0",), cells=cells
    )


def _bulk_pairs(rng, size, n, *, r_squared, effect=0.0, useless=False):
    """Simulated experiments: y = signal + noise with the signal's share of the
    variance r_squared, from two covariates and a two-level stratum."""
    pairs, plain = [], []
    for _ in range(size):
        arms, plain_arms = [], []
        for arm in (0, 1):
            x = rng.normal(0, 1, (n, 2))
            level = rng.random(n) < 0.5
            signal = (x[:, 0] + 0.5 * x[:, 1] + 1.0 * level) / math.sqrt(1.25 + 0.25)
            noise = rng.normal(0, math.sqrt((1 - r_squared) / r_squared), n)
            y = (0.0 if useless else 1.0) * signal + noise + arm * effect
            if useless:
                x = rng.normal(0, 1, (n, 2))
            arms.append(_two_cell_statistic(y, x, level))
            plain_arms.append(SampleMeanStatistic(n=n, sum=y.sum(), sum_squares=(y * y).sum()))
        pairs.append(tuple(arms))
        plain.append(tuple(plain_arms))
    return pairs, plain


@pytest.mark.parametrize("r_squared", [0.3, 0.6])
def test_variance_reduction_matches_one_minus_r_squared(r_squared):
    rng = np.random.default_rng(int(r_squared * 100))
    pairs, plain = _bulk_pairs(rng, 1500, 300, r_squared=r_squared)
    comparisons = compare_many(pairs)
    adjusted = [c.absolute.estimate for c in comparisons]
    unadjusted = [c.absolute.estimate for c in compare_many(plain)]
    realised = float(np.var(adjusted) / np.var(unadjusted))
    assert abs(realised - (1 - r_squared)) < 0.03
    reported = float(np.mean([c.variance_reduction for c in comparisons]))
    assert abs(reported - r_squared) < 0.03


def test_useless_covariates_cost_no_more_than_noise():
    rng = np.random.default_rng(5)
    pairs, plain = _bulk_pairs(rng, 1500, 300, r_squared=0.5, useless=True)
    ratio = float(
        np.var([c.absolute.estimate for c in compare_many(pairs)])
        / np.var([c.absolute.estimate for c in compare_many(plain)])
    )
    # 3 regressors per arm at n = 300: Lin's price is about 1 + 2·3/300.
    assert ratio < 1.0 + 0.02 + 3 * math.sqrt(2 / 1500)


def test_aa_false_positive_rate_is_alpha():
    rng = np.random.default_rng(6)
    pairs, _ = _bulk_pairs(rng, 2000, 200, r_squared=0.5)
    rate = float(np.mean([c.absolute.p_value < 0.05 for c in compare_many(pairs)]))
    assert abs(rate - 0.05) < 3 * binomial_error(0.05, 2000)


def _frame(seed=1, n=3000):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "arm": rng.choice(["control", "b"], n, p=[0.6, 0.4]),
            "age_band": rng.choice(["18-24", "25-34", "35+"], n),
            "platform": rng.choice(["android", "ios"], n),
            "pre_gmv": rng.gamma(1.5, 80.0, n),
            "pre_orders": rng.poisson(1.0, n).astype(float),
        }
    )
    df["gmv"] = 0.5 * df.pre_gmv + 20 * (df.age_band == "35+") + rng.gamma(1.2, 60.0, n)
    df["orders"] = rng.poisson(1.2, n)
    df["converted"] = (rng.random(n) < 0.1 + 0.05 * (df.platform == "ios")).astype(int)
    return df


def test_analyze_cuped_plus_plus_equals_the_statistics_built_by_hand():
    df = _frame()
    report = analyze(
        df,
        control="control",
        weights={"control": 3, "b": 2},
        metrics={"gmv": "mean", "converted": "proportion", "gmv/orders": "ratio"},
        covariates={"gmv": ["pre_gmv", "pre_orders"], "gmv/orders": ["pre_gmv"]},
        strata=["age_band", "platform"],
    )
    by_metric = {c["metric"]: c for c in report["comparisons"]}
    assert by_metric["gmv"]["method"] == "lin_interacted_hc2"
    assert by_metric["gmv"]["adjusted_for"] == {
        "covariates": ["pre_gmv", "pre_orders"],
        "strata": ["age_band", "platform"],
    }
    assert by_metric["converted"]["adjusted_for"]["covariates"] == []
    assert by_metric["gmv/orders"]["method"] == "lin_interacted_hc2_ratio"
    arms = {}
    for arm, rows in df.groupby("arm"):
        strata_rows = list(zip(rows.age_band, rows.platform, strict=True))
        arms[arm] = lin_statistic(rows.gmv, rows[["pre_gmv", "pre_orders"]].to_numpy(), strata_rows)
    expected = lin_difference(arms["control"], arms["b"])
    assert by_metric["gmv"]["absolute"]["estimate"] == pytest.approx(expected.estimate, rel=1e-9)
    assert by_metric["gmv"]["absolute"]["standard_error"] == pytest.approx(
        math.sqrt(expected.variance), rel=1e-9
    )
    assert by_metric["gmv"]["variance_reduction"] > 0.2


@pytest.mark.parametrize(
    ("change", "kwargs", "message"),
    [
        (lambda d: d, {"covariates": {"gmv": ["pre_gmv", "nope"]}}, "covariates: .*'nope'"),
        (lambda d: d, {"covariates": {"gmv": []}}, r"covariates\['gmv'\]"),
        (lambda d: d, {"covariates": {"gmv": ["gmv"]}}, "covariates: metric 'gmv' lists its own"),
        (lambda d: d, {"strata": ["nope"]}, "strata: column 'nope'"),
        (
            lambda d: d.assign(platform="android"),
            {"strata": ["platform"]},
            "strata: .*single level",
        ),
        (
            lambda d: d[~((d.arm == "b") & (d.age_band == "35+"))],
            {"strata": ["age_band"]},
            "strata: level '35\\+' of 'age_band' has no subjects in arm 'b'",
        ),
        (lambda d: d, {"strata": "platform"}, "strata must be a list"),
    ],
)
def test_bad_covariates_and_strata_are_value_errors_naming_the_argument(change, kwargs, message):
    with pytest.raises(ValueError, match=message):
        analyze(
            change(_frame()),
            control="control",
            weights={"control": 3, "b": 2},
            metrics={"gmv": "mean"},
            **kwargs,
        )


def test_a_stratum_level_missing_from_one_arm_of_a_segment_is_skipped_not_fatal():
    df = _frame(n=4000)
    df = df[~((df.arm == "b") & (df.platform == "ios") & (df.age_band == "35+"))]
    report = analyze(
        df,
        control="control",
        weights={"control": 3, "b": 2},
        metrics={"gmv": "mean"},
        strata=["age_band"],
        segment_by="platform",
    )
    ios = next(s for s in report["segments"] if s["segment"] == "ios")
    assert ios["comparisons"] == [] and "cannot be adjusted" in ios["skipped"][0]["reason"]


def test_cell_moments_validate_their_shape_and_values():
    with pytest.raises(ValueError, match="cross-products"):
        CellMoments(n=2, sums=(1.0, 2.0), cross_products=(1.0, 2.0))
    with pytest.raises(ValueError, match="finite"):
        CellMoments(n=2, sums=(float("nan"),), cross_products=(1.0,))
    with pytest.raises(ValueError, match="inconsistent"):
        LinAdjustedStatistic(
            outcomes=("y",),
            covariates=(),
            strata=(),
            cells={(): CellMoments(n=10, sums=(10.0,), cross_products=(1.0,))},
        )
    with pytest.raises(ValueError, match="one level per stratum"):
        LinAdjustedStatistic(
            outcomes=("y",),
            covariates=(),
            strata=("age",),
            cells={(): CellMoments(n=2, sums=(1.0,), cross_products=(1.0,))},
        )


def test_an_exact_fit_is_insufficient_data_not_a_zero_standard_error():
    x = np.arange(50, dtype=float)[:, None]
    rows = [()] * 50
    with pytest.raises(InsufficientDataError, match="zero residual variance"):
        lin_difference(
            lin_statistic(2 * x[:, 0] + 1, x, rows), lin_statistic(2 * x[:, 0] + 3, x, rows)
        )
