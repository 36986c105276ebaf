"""PrivacyLab's stats engine: effects, intervals and p-values from sufficient statistics.

Pure Python on numpy, scipy and pandas; it imports nothing from Django or the
apps, so it runs in a notebook and is tested alone. Methods, formulas and
references: docs/statistics.md.

Per-subject rows (notebooks, the CLI)::

    from experiments.stats import analyze
    report = analyze(
        df, control="control", weights={"control": 1, "b": 1},
        metrics={"converted": "proportion", "gmv": "mean", "gmv/orders": "ratio"},
        covariates={"gmv": "pre_gmv"},
    )

    python -m experiments.stats report DATA.csv --control control \\
        --weights control=1,b=1 --metric converted:proportion gmv:mean \\
        --covariate gmv=pre_gmv

Sufficient statistics (the metric pipeline: one SQL aggregate per experiment)::

    from experiments.stats import (
        analyze_statistics, ProportionStatistic, RegressionAdjustedStatistic,
        RatioStatistic, SampleMeanStatistic,
    )
    report = analyze_statistics(
        {
            "control": {
                "converted": ProportionStatistic(n=10_000, successes=812),
                "gmv": RegressionAdjustedStatistic(
                    n=10_000, sum=..., sum_squares=..., covariate_sum=...,
                    covariate_sum_squares=..., cross_product=..., cap=4_250_000.0),
                "gmv/orders": RatioStatistic(
                    n=10_000, numerator_sum=..., numerator_sum_squares=...,
                    denominator_sum=..., denominator_sum_squares=..., cross_product=...),
            },
            "b": {...},
        },
        control="control", weights={"control": 1, "b": 1}, alpha=0.05,
        segments={"platform=android": {"control": {...}, "b": {...}}, ...},
    )
    report.to_dict()   # the JSON contract of ``analyze``

The statistic type chooses the method: ``SampleMeanStatistic`` and
``ProportionStatistic`` → Welch t; ``RegressionAdjustedStatistic`` → CUPED;
``RatioStatistic`` → delta method. Each arm's metrics must count the same
``n`` subjects (the exposed subjects of that arm); ``n`` of a ratio metric is
subjects too, not orders or impressions.

The second generation (docs/statistics.md §17–§21):

- ``analyze(..., engine="bayesian", prior=None | {"mean": m, "variance": v})`` and
  ``bayesian_report(statistics, ...)``, ``bayesian_compare(control, treatment, ...)``:
  GrowthBook's Gaussian effect model (chance to win, risk, credible intervals);
- ``analyze(..., covariates={"gmv": ["pre_gmv", "pre_orders"]}, strata=["age_band"])``
  and ``LinAdjustedStatistic`` / ``CellMoments``: CUPED++ (Lin's interacted
  regression) from per-arm × stratum-cell sums, for means, proportions and ratios;
- ``dunnett_adjust(moments, ...)``, ``dunnett_test(control, treatments, ...)``;
- ``interaction_test``, ``heterogeneity_tests(report)``, ``effect_by_exposure_day``;
- ``health_checks(statistics, control=..., comparisons=..., multiple_exposures=...)``.

The verdict (docs/statistics.md §9), on rows or on sufficient statistics::

    from experiments.stats import decide
    verdict = decide(
        df, control="control", weights={"control": 1, "dp": 1, "cohort": 1},
        metrics={"gmv": "mean", "opt_out": "proportion"}, primary="gmv",
        guardrails={"opt_out": {"margin": 0.005, "higher_is_better": False}},
        rule="privacy_first", margin=0.05, privacy_order=["dp", "cohort", "control"],
        planned_subjects_per_arm=12_000,
    )
    verdict["outcome"], verdict["arm"], verdict["final"], verdict["summary"]

    python -m experiments.stats decide DATA.csv --control control --weights control=1,dp=1 \\
        --metric gmv:mean opt_out:proportion --primary gmv --guardrail opt_out:0.005:lower \\
        --rule privacy_first --margin 0.05 --privacy-order dp,control --planned 12000

``decide_statistics`` takes ``{arm: {metric: statistic}}`` like
``analyze_statistics`` and returns a ``Decision`` (``to_dict``/``from_dict``).

For the guardrail monitor and the dashboard:

- ``compare(control, treatment, *, alpha)`` — one comparison;
- ``noninferiority_test(control, treatment, *, margin, higher_is_better, alpha, relative)``;
- ``sequential_test(control, treatment, *, tuning_sample_size, alpha, null_difference,
  previous_p_value)`` — always-valid (mSPRT), safe to run every hour;
- ``srm_test(observed, weights)``;
- ``required_sample_size``, ``statistical_power``, ``minimum_detectable_effect``,
  ``experiment_plan`` (subjects per arm and days from daily traffic), ``decision_plan``
  (sized for the whole decision rule: its confirmatory family and every guardrail);
- ``holm_adjust``, ``benjamini_hochberg_adjust``.

Bad input raises ``ValueError`` with a message; ``InsufficientDataError`` (a
``ValueError``) marks statistics that are valid but too thin for a test.
"""

from experiments.stats.bayesian import (
    BayesianComparison,
    BayesianReport,
    GaussianMoments,
    GaussianPrior,
    bayesian_compare,
    bayesian_compare_moments,
    bayesian_report,
    gaussian_moments,
)
from experiments.stats.corrections import benjamini_hochberg_adjust, holm_adjust
from experiments.stats.decide import (
    DECISION_VERSION,
    FINAL_OUTCOMES,
    RULES,
    Decision,
    DecisionTest,
    GuardrailRule,
    Mode,
    Outcome,
    Rule,
    decide,
    decide_statistics,
)
from experiments.stats.dunnett import DunnettResult, dunnett_adjust, dunnett_test
from experiments.stats.frame import analyze, statistics_from_frame
from experiments.stats.frequentist import (
    Comparison,
    DifferenceMoments,
    Effect,
    compare,
    compare_many,
    cuped_slope,
    difference_moments,
)
from experiments.stats.health import HealthFlag, HealthReport, health_checks
from experiments.stats.heterogeneity import (
    ExposureDayEffects,
    InteractionResult,
    effect_by_exposure_day,
    heterogeneity_tests,
    interaction_test,
)
from experiments.stats.noninferiority import NonInferiorityResult, noninferiority_test
from experiments.stats.power import (
    DecisionPlan,
    ExperimentPlan,
    SampleSizeResult,
    decision_plan,
    experiment_plan,
    minimum_detectable_effect,
    required_sample_size,
    statistical_power,
)
from experiments.stats.regression import CellMoments, LinAdjustedStatistic, lin_difference
from experiments.stats.report import Report, SegmentReport, SkippedComparison, analyze_statistics
from experiments.stats.sequential import SequentialResult, sequential_test
from experiments.stats.srm import SRM_THRESHOLD, SrmResult, srm_test
from experiments.stats.statistics import (
    InsufficientDataError,
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    Statistic,
)

__all__ = [
    "DECISION_VERSION",
    "FINAL_OUTCOMES",
    "RULES",
    "SRM_THRESHOLD",
    "BayesianComparison",
    "BayesianReport",
    "CellMoments",
    "DunnettResult",
    "ExposureDayEffects",
    "GaussianMoments",
    "GaussianPrior",
    "HealthFlag",
    "HealthReport",
    "InteractionResult",
    "LinAdjustedStatistic",
    "Mode",
    "Outcome",
    "Rule",
    "bayesian_compare",
    "bayesian_compare_moments",
    "bayesian_report",
    "dunnett_adjust",
    "dunnett_test",
    "effect_by_exposure_day",
    "gaussian_moments",
    "health_checks",
    "heterogeneity_tests",
    "interaction_test",
    "lin_difference",
    "Comparison",
    "Decision",
    "DecisionPlan",
    "DecisionTest",
    "GuardrailRule",
    "DifferenceMoments",
    "Effect",
    "ExperimentPlan",
    "InsufficientDataError",
    "NonInferiorityResult",
    "ProportionStatistic",
    "RatioStatistic",
    "RegressionAdjustedStatistic",
    "Report",
    "SampleMeanStatistic",
    "SampleSizeResult",
    "SegmentReport",
    "SequentialResult",
    "SkippedComparison",
    "SrmResult",
    "Statistic",
    "analyze",
    "analyze_statistics",
    "benjamini_hochberg_adjust",
    "compare",
    "compare_many",
    "cuped_slope",
    "decide",
    "decide_statistics",
    "decision_plan",
    "difference_moments",
    "experiment_plan",
    "holm_adjust",
    "minimum_detectable_effect",
    "noninferiority_test",
    "required_sample_size",
    "sequential_test",
    "srm_test",
    "statistical_power",
    "statistics_from_frame",
]
