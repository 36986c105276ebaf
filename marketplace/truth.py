"""The ground truth: every arm's true value of every metric, and its true effects against the control.

Because the behavioural model is known (``marketplace.model``), every shopper
has an exact expected value of every metric given the lists they were shown
(``expected_values``): organic orders at their rate, and each shown item's
click and purchase probabilities. The truth is the full counterfactual: an
arm's *true* value is the average over every exposed shopper of their
expectations under that arm — the lists it served its own shoppers, and for
everyone else the lists its model would have served them under the consent
they would have given in it (``marketplace.counterfactual``) — and consent
metrics are expectations from the arm's grant and withdrawal probabilities.
It conditions on the lists (the world that happened: the models built, each
shopper's evidence), not on any click or order: the platform's estimates are
checked against what the arms' models cause, with the noise of assignment and
of the shoppers' responses left to the estimate. ``ground_truth`` is the
document ``manage.py simulate --truth`` writes, so a test can check that the
platform recovers it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from experiments.metric_catalog import METRIC_DEFINITIONS
from experiments.models import Metric

# Every metric of the catalog, in the report's order.
TRUTH_METRICS: tuple[str, ...] = tuple(definition.key for definition in METRIC_DEFINITIONS)

# How each metric's true value follows from the shoppers' expected values (ratios: ratio of
# means). A metric added to the catalog without its entry here fails ``true_metrics`` loudly.
_TRUE_VALUES: dict[str, Callable[[Mapping], float]] = {
    Metric.CONVERSION: lambda e: float(e["converted"].mean()),
    Metric.OPT_OUT: lambda e: float(e["opted_out"].mean()),
    Metric.CONSENT_RATE: lambda e: float(e["consented"].mean()),
    Metric.GMV: lambda e: e["gmv"],
    Metric.ORDERS: lambda e: e["orders"],
    Metric.AOV: lambda e: e["gmv"] / e["orders"],
    Metric.CTR: lambda e: float(e["clicks"].sum() / e["impressions"].sum()) if e["impressions"].sum() else 0.0,
}


def true_metrics(expected: Mapping[str, np.ndarray], members: np.ndarray, exposed: np.ndarray) -> dict[str, float]:
    """The true value of every metric under an arm, averaged over the shoppers ``members`` selects (ratios: ratio of means).

    ``expected`` holds every shopper's expectations under the arm. The ground
    truth averages over every exposed shopper (``members`` = ``exposed``: the
    full counterfactual); organic orders, which do not depend on the arm, are
    always averaged over every ``exposed`` shopper.
    """
    e = {name: values[members] for name, values in expected.items()}
    e["gmv"] = float(expected["gmv_organic"][exposed].mean() + e["gmv_induced"].mean())
    e["orders"] = float(expected["orders_organic"][exposed].mean() + e["orders_induced"].mean())
    return {metric: _TRUE_VALUES[metric](e) for metric in TRUTH_METRICS}


def ground_truth(*, experiment, expected: dict[str, dict], arm_of: np.ndarray, arm_keys: list[str], seed, start, end,
                 recommendations: str) -> dict:
    """Every arm's true metric values over its shoppers, and the effects against the control.

    ``expected[arm]`` holds every shopper's expected values under that arm
    (``marketplace.model.expected_values``); ``arm_of`` the arm index of each
    shopper (−1: not exposed).
    """
    control = experiment.arms.get(is_control=True).key
    exposed = arm_of >= 0
    values = {key: true_metrics(expected[key], exposed, exposed) for key in arm_keys}
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
        "schema_version": 3,
        "experiment": experiment.key,
        "seed": seed,
        "recommendations": recommendations,
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "subjects_exposed": int((arm_of >= 0).sum()),
        "control": control,
        "note": "True values are averages over every exposed shopper of their exact expected outcomes under the arm, "
        "given the lists it served them or (for the other arms' shoppers) the lists its model would have served them "
        "under the consent they would have given in it (consent metrics: expectations from the arm's grant and "
        "withdrawal rates); GMV is uncapped. Compare with results computed with gmv_cap_percentile = None.",
        "arms": {key: {"subjects": int((arm_of == i).sum()), "true": values[key]} for i, key in enumerate(arm_keys)},
        "effects": effects,
    }
