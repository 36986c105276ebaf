"""Health checks: multiple exposures, pre-exposure bias, suspicious uplift — flags with reasons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments.stats import analyze, health_checks
from experiments.stats.health import BIAS_THRESHOLD

from .stats_testkit import binomial_error, cuped_statistic


def _rows(seed=1, n=4000, pre_shift=0.0, lift=0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "subject": np.arange(n),
            "arm": rng.choice(["control", "b"], n),
            "platform": rng.choice(["android", "ios"], n),
        }
    )
    treated = (df.arm == "b").to_numpy()
    df["pre_gmv"] = rng.gamma(1.5, 80.0, n) * (1 + pre_shift * treated)
    df["gmv"] = 0.5 * df.pre_gmv + rng.gamma(1.2, 60.0, n) * (1 + lift * treated)
    return df


def _analyze(df, **kwargs):
    return analyze(
        df,
        control="control",
        weights={"control": 1, "b": 1},
        metrics={"gmv": "mean"},
        covariates={"gmv": ["pre_gmv"]},
        strata=["platform"],
        **kwargs,
    )


def test_a_healthy_experiment_has_no_flags():
    health = _analyze(_rows(), subject_column="subject")["health"]
    assert health["healthy"] and health["flags"] == [] and health["multiple_exposures"] == 0
    kinds = {(t["kind"], t["column"]) for t in health["pre_exposure_bias"]["tests"]}
    assert kinds == {("covariate", "pre_gmv"), ("stratum", "platform")}


def test_multiple_exposures_are_flagged_and_left_out():
    df = _rows()
    twice = df.sample(100, random_state=1).assign(
        arm=lambda d: np.where(d.arm == "b", "control", "b")
    )
    report = _analyze(pd.concat([df, twice]), subject_column="subject")
    flags = [f for f in report["health"]["flags"] if f["check"] == "multiple_exposures"]
    assert len(flags) == 1 and "100 subjects" in flags[0]["reason"]
    assert report["arms"]["control"] + report["arms"]["b"] == len(df) - 100


def test_a_few_multiple_exposures_below_the_thresholds_are_not_flagged():
    df = _rows()
    twice = df.head(9).assign(arm=lambda d: np.where(d.arm == "b", "control", "b"))
    report = _analyze(pd.concat([df, twice]), subject_column="subject")
    assert report["health"]["multiple_exposures"] == 9 and report["health"]["healthy"]


def test_a_subject_twice_in_one_arm_is_a_value_error():
    df = _rows()
    with pytest.raises(ValueError, match="subject_column: subject .* has two rows"):
        _analyze(pd.concat([df, df.head(1)]), subject_column="subject")


def test_pre_exposure_bias_is_flagged_with_its_reason():
    report = _analyze(_rows(pre_shift=0.15))
    (flag,) = [f for f in report["health"]["flags"] if f["check"] == "pre_exposure_bias"]
    assert flag["arm"] == "b" and flag["metric"] == "pre_gmv" and "beyond chance" in flag["reason"]


def test_stratum_imbalance_is_flagged():
    df = _rows()
    drop = df[(df.arm == "b") & (df.platform == "ios")].index[:500]
    report = _analyze(df.drop(drop))
    flags = [f for f in report["health"]["flags"] if f["metric"] == "platform"]
    assert len(flags) == 1 and "distribution differs" in flags[0]["reason"]


def test_suspicious_uplift_is_flagged_at_the_configured_bound():
    df = _rows(lift=1.5)  # about +80 % on GMV
    assert any(f["check"] == "suspicious_uplift" for f in _analyze(df)["health"]["flags"])
    relaxed = _analyze(df, suspicious_uplift=3.0)["health"]
    assert not any(f["check"] == "suspicious_uplift" for f in relaxed["flags"])
    bayesian = _analyze(df, engine="bayesian")["health"]
    assert any(f["check"] == "suspicious_uplift" for f in bayesian["flags"])


def test_bias_check_false_positive_rate_is_its_threshold():
    """A/A: the covariate balance test rejects at its level (checked at 5 %, where it is visible)."""
    rng = np.random.default_rng(8)
    size, flagged = 3000, 0
    for _ in range(size):
        x_c, x_t = rng.gamma(1.5, 10, 200), rng.gamma(1.5, 10, 200)
        statistics = {
            "control": {"gmv": cuped_statistic(x_c + rng.normal(0, 1, 200), x_c)},
            "b": {"gmv": cuped_statistic(x_t + rng.normal(0, 1, 200), x_t)},
        }
        report = health_checks(statistics, control="control", bias_threshold=0.05)
        flagged += bool(report.flags)
    assert abs(flagged / size - 0.05) < 3 * binomial_error(0.05, size)
    assert BIAS_THRESHOLD == 0.001


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"suspicious_uplift": 0}, "suspicious_uplift must be positive"),
        ({"bias_threshold": 1.5}, "bias_threshold must be positive and below 1"),
        ({"subject_column": "nope"}, "subject_column: column 'nope'"),
    ],
)
def test_bad_health_arguments_are_value_errors_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _analyze(_rows(), **kwargs)
