"""The ramp step's health check (experiments.stats.rollout), from sufficient statistics."""

from experiments.stats import ProportionStatistic, SampleMeanStatistic
from experiments.stats.rollout import WatchedMetric, rollout_check

CONVERSION = WatchedMetric(metric="conversion", margin=0.02, relative=False, higher_is_better=True)


def check(counts, percent, statistics, watched=(CONVERSION,)):
    return rollout_check(counts=counts, percent=percent, statistics=statistics, watched=list(watched), alpha=0.05,
                         tuning_sample_size=10_000)


def conversion(default, rollout):
    return {"conversion": (ProportionStatistic(n=default[0], successes=default[1]),
                           ProportionStatistic(n=rollout[0], successes=rollout[1]))}


def test_equal_sides_in_the_expected_ratio_are_healthy():
    verdict = check({"rollout": 1000, "default": 3000}, 25, conversion((3000, 300), (1000, 101)))
    assert verdict.healthy and not verdict.srm and verdict.srm_p_value > 0.5 and verdict.breaches == ()


def test_a_conversion_far_below_the_margin_is_a_breach():
    verdict = check({"rollout": 2000, "default": 2000}, 50, conversion((2000, 600), (2000, 100)))
    assert not verdict.healthy and not verdict.srm
    (breach,) = verdict.breaches
    assert breach["metric"] == "conversion" and breach["interval"][1] < breach["tolerated"] == -0.02


def test_a_small_harm_within_the_margin_is_no_breach():
    verdict = check({"rollout": 2000, "default": 2000}, 50, conversion((2000, 300), (2000, 290)))
    assert verdict.breaches == ()


def test_lower_is_better_metrics_breach_upwards():
    opt_out_like = WatchedMetric(metric="orders", margin=0.05, relative=False, higher_is_better=False)
    stats = {"orders": (SampleMeanStatistic(n=2000, sum=200, sum_squares=200),
                        SampleMeanStatistic(n=2000, sum=1400, sum_squares=1400))}
    assert check({"rollout": 2000, "default": 2000}, 50, stats, [opt_out_like]).breaches[0]["metric"] == "orders"


def test_a_skewed_ratio_is_a_sample_ratio_mismatch():
    verdict = check({"rollout": 700, "default": 300}, 50, {})
    assert verdict.srm and not verdict.healthy and verdict.srm_p_value < 0.001


def test_at_100_percent_there_is_nothing_to_compare():
    verdict = check({"rollout": 500, "default": 0}, 100, {})
    assert verdict.healthy and verdict.srm_p_value is None and verdict.untestable == ("conversion",)


def test_a_relative_margin_on_a_zero_mean_is_untestable_not_an_error():
    relative = WatchedMetric(metric="conversion", margin=0.05, relative=True, higher_is_better=True)
    verdict = check({"rollout": 10, "default": 10}, 50, conversion((10, 0), (10, 0)), [relative])
    assert verdict.untestable == ("conversion",) and verdict.healthy
