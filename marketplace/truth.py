"""The ground truth: every arm's true value of every metric, and its true effects against the control.

Because the behavioural model is known (``marketplace.model``), every arm has a
*true* value of every metric: the average over all exposed shoppers of their
expected value under that arm (the counterfactual for the arms they were not
in). ``ground_truth`` is the document ``manage.py simulate --truth`` writes, so
a test can check that the platform recovers it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from experiments.metric_catalog import METRIC_DEFINITIONS
from experiments.models import Metric
from marketplace.model import ArmBehaviour, arm_behaviour_subset, expected_values
from marketplace.population import Population, population_subset

# Every metric of the catalog, in the report's order.
TRUTH_METRICS: tuple[str, ...] = tuple(definition.key for definition in METRIC_DEFINITIONS)

# How each metric's true value follows from the shoppers' expected values (ratios: ratio of
# means). A metric added to the catalog without its entry here fails ``true_metrics`` loudly.
_TRUE_VALUES: dict[str, Callable[[Mapping], float]] = {
    Metric.CONVERSION: lambda e: float(e["converted"].mean()),
    Metric.OPT_OUT: lambda e: float(e["opted_out"].mean()),
    Metric.CONSENT_RATE: lambda e: float(e["consented"].mean()),
    Metric.GMV: lambda e: float(e["gmv"].mean()),
    Metric.ORDERS: lambda e: float(e["orders"].mean()),
    Metric.AOV: lambda e: float(e["gmv"].sum() / e["orders"].sum()),
    Metric.CTR: lambda e: float(e["clicks"].sum() / e["impressions"].sum()),
}


def true_metrics(behaviour: ArmBehaviour, population: Population) -> dict[str, float]:
    """The arm's true value of every metric over the whole population (ratios: ratio of means)."""
    e = expected_values(behaviour, population)
    return {metric: _TRUE_VALUES[metric](e) for metric in TRUTH_METRICS}


def ground_truth(*, experiment, population, exposed, behaviours, seed, start, end, by_arm) -> dict:
    """Every arm's true metric values over the exposed shoppers, and the effects against the control."""
    control = experiment.arms.get(is_control=True).key
    subset = population_subset(population, exposed)
    values = {key: true_metrics(arm_behaviour_subset(behaviour, exposed), subset) for key, behaviour in behaviours.items()}
    effects = {
        key: {
            metric: {
                "absolute": values[key][metric] - values[control][metric],
                "relative": (values[key][metric] - values[control][metric]) / values[control][metric]
                if values[control][metric]
                else None,
            }
            for metric in TRUTH_METRICS
        }
        for key in values
        if key != control
    }
    return {
        "schema_version": 1,
        "experiment": experiment.key,
        "seed": seed,
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "subjects_exposed": int(exposed.sum()),
        "control": control,
        "note": "True values are averages over all exposed shoppers of their expected value under each arm; "
        "GMV is uncapped. Compare with results computed with gmv_cap_percentile = None.",
        "arms": {key: {"subjects": by_arm[key], "true": values[key]} for key in values},
        "effects": effects,
    }

