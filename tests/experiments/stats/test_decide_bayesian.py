"""The decision read by the Bayesian engine: thresholds, credible bounds against margins, priors, bad input."""

import math

import numpy as np
import pytest
from scipy import stats

from experiments.stats import ProportionStatistic, SampleMeanStatistic, decide_statistics
from experiments.stats.__main__ import main
from experiments.stats.bayesian import bayesian_compare_moments, gaussian_moments

N = 4000
ORDER = ["c", "b", "control"]
GUARDRAILS = {"opt_out": {"margin": 0.03, "higher_is_better": False}}


def mean_arm(mean: float, sd: float = 40.0, n: int = N) -> SampleMeanStatistic:
    return SampleMeanStatistic(n=n, sum=n * mean, sum_squares=(n - 1) * sd * sd + n * mean * mean)


def arm(gmv: float, opt_out: float = 0.05, n: int = N) -> dict:
    return {"gmv": mean_arm(gmv, n=n), "opt_out": ProportionStatistic(n=n, successes=round(n * opt_out))}


def bayes(statistics: dict, **settings):
    arguments = {"control": "control", "weights": dict.fromkeys(statistics, 1), "primary": "gmv",
                 "guardrails": GUARDRAILS, "planned_subjects_per_arm": N, "engine": "bayesian", **settings}
    return decide_statistics(statistics, **arguments)


def test_with_a_flat_prior_the_non_inferiority_bound_is_the_normal_bound_of_the_relative_lift():
    statistics = {"control": arm(100.0), "b": arm(98.5)}
    decision = bayes(statistics, rule="noninferiority", margin=0.05)
    test = next(t for t in decision.tests if t.kind == "noninferiority")
    moments = gaussian_moments(statistics["control"]["gmv"], statistics["b"]["gmv"])
    expected = moments.relative_estimate - stats.norm.isf(0.05) * math.sqrt(moments.relative_variance)
    assert test.bound == pytest.approx(expected, rel=1e-12)
    assert test.p_value == pytest.approx(stats.norm.cdf((-0.05 - moments.relative_estimate)
                                                        / math.sqrt(moments.relative_variance)), rel=1e-9)
    assert test.passed and decision.outcome == "ship" and decision.final and decision.engine == "bayesian"
    assert test.chance_to_win == pytest.approx(1 - test.p_value)


def test_superiority_needs_the_one_sided_chance_above_one_minus_alpha_over_two_and_a_small_risk():
    control = arm(100.0)
    for gmv in (101.5, 102.0, 103.0):
        decision = bayes({"control": control, "b": arm(gmv)}, rule="superiority", guardrails=None)
        test = decision.tests[0]
        posterior = bayesian_compare_moments([gaussian_moments(control["gmv"], arm(gmv)["gmv"])])[0]
        assert test.chance_to_win == pytest.approx(posterior.chance_to_win)
        # The anchor: "significant at 95% two-sided" is a chance above 97.5%, not 95% (one-sided).
        expected = posterior.chance_to_win >= 0.975 and posterior.risk[1] <= 0.0025
        assert test.passed is expected
        assert decision.outcome == ("ship" if expected else "keep_control")
    # A chance of 96% (above 95%, below 97.5%) does not ship.
    middle = next(g for g in np.linspace(100.5, 102.5, 400)
                  if 0.955 < bayesian_compare_moments([gaussian_moments(control["gmv"], arm(g)["gmv"])])[0]
                  .chance_to_win < 0.97)
    assert bayes({"control": control, "b": arm(middle)}, guardrails=None).outcome == "keep_control"


def test_a_tight_risk_threshold_keeps_an_arm_that_is_probably_better_but_could_cost_much():
    statistics = {"control": arm(100.0, n=400), "b": arm(107.0, n=400)}
    loose = bayes(statistics, guardrails=None, planned_subjects_per_arm=400, risk_threshold=0.05)
    strict = bayes(statistics, guardrails=None, planned_subjects_per_arm=400, risk_threshold=1e-6)
    assert loose.outcome == "ship" and strict.outcome == "keep_control"
    assert "chance to win" in loose.summary and "risk" in loose.summary


def test_a_sceptical_prior_holds_back_a_small_sample():
    statistics = {"control": arm(100.0, n=300), "b": arm(104.0, n=300)}
    flat = bayes(statistics, guardrails=None, planned_subjects_per_arm=300, risk_threshold=0.05)
    sceptical = bayes(statistics, guardrails=None, planned_subjects_per_arm=300, risk_threshold=0.05,
                      prior={"mean": 0.0, "variance": 0.0001})
    assert flat.tests[0].estimate > sceptical.tests[0].estimate > 0
    assert sceptical.tests[0].chance_to_win < flat.tests[0].chance_to_win
    assert "Gaussian prior" in sceptical.rule_text and "flat prior" in flat.rule_text


def test_privacy_first_reads_the_credible_bounds_and_walks_the_privacy_order():
    statistics = {"control": arm(100.0), "b": arm(100.0), "c": arm(92.0)}  # c loses 8 %
    decision = bayes(statistics, rule="privacy_first", margin=0.05, privacy_order=ORDER)
    assert (decision.outcome, decision.arm, decision.final) == ("ship", "b", True)
    c = next(t for t in decision.tests if t.arm == "c" and t.kind == "noninferiority")
    assert c.ruled_out and not c.passed


def test_the_bayesian_engine_is_fixed_horizon_only_and_takes_no_prior_elsewhere():
    statistics = {"control": arm(100.0), "b": arm(100.0)}
    with pytest.raises(ValueError, match="sequential: the Bayesian engine has no always-valid mode"):
        bayes(statistics, sequential=True)
    with pytest.raises(ValueError, match="prior: only the Bayesian engine"):
        bayes(statistics, engine="frequentist", prior={"mean": 0, "variance": 1})
    with pytest.raises(ValueError, match="engine must be one of"):
        bayes(statistics, engine="bootstrap")
    with pytest.raises(ValueError, match="risk_threshold must be positive"):
        bayes(statistics, risk_threshold=0)
    with pytest.raises(ValueError, match="variance"):
        bayes(statistics, prior={"mean": 0, "variance": -1})


def test_the_cli_decides_with_the_bayesian_engine(tmp_path, capsys):
    rng = np.random.default_rng(3)
    rows = ["arm,gmv"] + [f"{a},{rng.gamma(2, 50):.4f}" for a in ("control", "b") for _ in range(2000)]
    data = tmp_path / "rows.csv"
    data.write_text("\n".join(rows))
    code = main(["decide", str(data), "--control", "control", "--weights", "control=1,b=1", "--metric", "gmv:mean",
                 "--primary", "gmv", "--rule", "noninferiority", "--margin", "0.1", "--planned", "2000",
                 "--engine", "bayesian", "--prior-mean", "0", "--prior-variance", "0.01"])
    assert code == 0
    import json

    verdict = json.loads(capsys.readouterr().out)
    assert verdict["engine"] == "bayesian" and verdict["report"]["comparisons"][0]["engine"] == "bayesian"
    assert verdict["tests"][0]["chance_to_win"] is not None
    assert main(["decide", str(data), "--control", "control", "--weights", "control=1,b=1", "--metric", "gmv:mean",
                 "--primary", "gmv", "--sequential", "--engine", "bayesian"]) == 2
