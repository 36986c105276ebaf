"""Seeded simulations of the decision engine: error rates and the planner's power (issue 11, Validation).

Fast versions: a few hundred to a few thousand replicates each, every replicate watched
look by look through ``decide_statistics`` (tests/experiments/stats/decision_simkit.py).
The long versions, with the fixed-horizon engine it replaced beside them, are
``python -m benchmarks decide``.

Each bound is binomial: a count above ``most_successes_at(alpha, R)`` has probability
below 1e-4 for an engine whose true rate is alpha, and far less for these engines, whose
rates sit below alpha (figures in docs/benchmarks.md). The power checks allow ±3 points
around the planned power; with R = 3,000 that is 4.1 binomial standard errors (false
failure 4e-5 for a planner that is exact).
"""

import math

import pytest

from .decision_simkit import (
    ALPHA,
    aa_scenario,
    guardrail_at_margin_scenario,
    most_successes_at,
    planner_scenario,
    privacy_first_scenario,
)

# Every case runs at CPU speed on this machine in 1–4 s (0.3 ms per decision, 20 looks).
pytestmark = pytest.mark.timeout(120)


def test_an_aa_experiment_watched_20_times_ships_falsely_at_most_alpha_in_sequential_mode():
    # 700 experiments × 20 looks. The always-valid engine ships about 0.6 % of them (the
    # binomial bound at alpha is 8.3 %); fixed-horizon tests read at every look with the
    # same stopping rule ship about 12 %, and would pass with probability 0.001.
    scenario = aa_scenario(sequential=True)
    runs = scenario.run(replicates=700, seed=11)
    assert runs.count("ship") <= most_successes_at(ALPHA, runs.replicates)
    # Nothing is left undecided: at the planned size the verdict is final.
    assert runs.count("continue") == 0
    assert runs.count("ship") + runs.count("keep_control") == runs.replicates


def test_an_aa_experiment_in_fixed_mode_is_never_final_before_its_planned_size():
    scenario = aa_scenario(sequential=False, treatments=4)
    runs = scenario.run(replicates=150, seed=12)
    assert runs.final_before_the_last_look() == 0
    assert (runs.final_looks == scenario.looks - 1).all()  # and always final at the planned size


def test_an_aa_experiment_in_fixed_mode_ships_falsely_at_most_alpha_with_holm_over_the_arms():
    # Read at the planned size only (one look: nothing is read before). Six treatment arms:
    # with Holm the false ship rate is about 1.7 %; without it (each arm at alpha) about 9 %,
    # which would stay under the bound (6.5 % at R = 3,000) with probability 1e-7.
    runs = aa_scenario(sequential=False, treatments=6).run(replicates=3000, seed=13, looks=1)
    assert runs.count("ship") <= most_successes_at(ALPHA, runs.replicates)


@pytest.mark.parametrize(("sequential", "replicates"), [(False, 3000), (True, 400)])
def test_a_guardrail_whose_true_harm_equals_its_margin_lets_its_arm_ship_at_most_alpha(sequential, replicates):
    scenario = guardrail_at_margin_scenario(sequential=sequential)
    runs = scenario.run(replicates=replicates, seed=14, looks=None if sequential else 1)
    assert runs.count("ship", scenario.shipped) <= most_successes_at(ALPHA, runs.replicates)
    # The primary metric is never what stops it: every replicate that did not ship kept the
    # control because the guardrail was not shown to hold.
    assert runs.count("continue") == 0


@pytest.mark.parametrize(("sequential", "replicates"), [(False, 3000), (True, 400)])
def test_privacy_first_ships_a_design_that_loses_the_whole_margin_at_most_alpha(sequential, replicates):
    scenario = privacy_first_scenario(sequential=sequential, lossy_most_private=True)
    runs = scenario.run(replicates=replicates, seed=15, looks=None if sequential else 1)
    assert runs.count("ship", "dp") <= most_successes_at(ALPHA, runs.replicates)
    # Walking past dp, the rule still finds cohort most of the time.
    assert runs.rate("ship", "cohort") > 0.5


@pytest.mark.parametrize("rule", ["superiority", "noninferiority", "privacy_first"])
def test_the_planners_power_matches_simulation_in_fixed_mode(rule):
    scenario = planner_scenario(rule, sequential=False)
    runs = scenario.run(replicates=3000, seed=16, looks=1)
    simulated = runs.rate("ship", scenario.shipped)
    assert math.isclose(scenario.planned_power, 0.8, abs_tol=0.001)
    assert abs(simulated - scenario.planned_power) <= 0.03, (simulated, scenario.planned_power)
    # The arm that is not as good as planned (null effect, or the whole margin lost) ships at most alpha.
    other = runs.count("ship") - runs.count("ship", scenario.shipped)
    assert other <= most_successes_at(ALPHA, runs.replicates)


@pytest.mark.parametrize("rule", ["superiority", "privacy_first"])
def test_the_sequential_planner_is_conservative(rule):
    # The planner reads the always-valid test's power at the final look only; the test may
    # also cross earlier, so the simulated power is at least the planned one (about 4–5
    # points above it in the benchmark). R = 400: −3 points is 3.8 standard errors below 0.84.
    scenario = planner_scenario(rule, sequential=True)
    runs = scenario.run(replicates=400, seed=17)
    assert runs.rate("ship", scenario.shipped) >= scenario.planned_power - 0.03
