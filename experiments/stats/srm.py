"""Sample-ratio mismatch: are the arms as large as the configured weights say?

Pearson's chi-square goodness-of-fit test of the observed subjects per arm
against ``total × weight / Σweights``. A mismatch means the assignment or the
logging is broken, and then no effect estimate can be trusted; the threshold is
strict (p < 0.001) because the test runs on every report and a false alarm
halts an experiment (Fabijan et al., KDD 2019).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from experiments.stats._distributions import chi2_sf
from experiments.stats.statistics import InsufficientDataError, _count, _finite

SRM_THRESHOLD = 0.001


@dataclass(frozen=True, slots=True)
class SrmResult:
    chi2: float
    p_value: float
    degrees_of_freedom: int
    flag: bool
    threshold: float
    observed: dict[str, int]
    expected: dict[str, float]

    def to_dict(self) -> dict:
        return {
            "chi2": self.chi2,
            "p_value": self.p_value,
            "degrees_of_freedom": self.degrees_of_freedom,
            "flag": self.flag,
            "threshold": self.threshold,
            "observed": dict(self.observed),
            "expected": dict(self.expected),
        }


def validate_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Weights as floats; each finite and ≥ 0, summing to a positive value."""
    if not weights:
        raise ValueError("weights are empty: give each arm's configured traffic weight")
    checked = {
        str(arm): _finite(weight, f"weight of arm {arm!r}") for arm, weight in weights.items()
    }
    negative = [arm for arm, weight in checked.items() if weight < 0]
    if negative:
        raise ValueError(f"weights must not be negative (arms {negative})")
    if not sum(checked.values()) > 0:
        raise ValueError("weights must sum to a positive value")
    return checked


def srm_test(
    observed: Mapping[str, int],
    weights: Mapping[str, float],
    *,
    threshold: float = SRM_THRESHOLD,
) -> SrmResult:
    """Pearson chi-square of subjects per arm against the configured weights.

    ``observed`` may omit arms or give them 0 subjects: an arm that received no
    traffic is the clearest mismatch there is and must be flagged, not crash.
    An arm with weight 0 must have no subjects and then takes no part in the
    test. Raises ``ValueError`` for arms in ``observed`` that have no weight,
    negative counts, or bad weights; ``InsufficientDataError`` when no arm has
    any subject or fewer than two arms have weight.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be strictly between 0 and 1, got {threshold!r}")
    checked_weights = validate_weights(weights)
    return _srm_test(observed, checked_weights, threshold)


def _srm_test(
    observed: Mapping[str, int], checked_weights: dict[str, float], threshold: float
) -> SrmResult:
    """``srm_test`` with weights already validated (the report runs one per segment)."""
    unknown = [arm for arm in observed if str(arm) not in checked_weights]
    if unknown:
        raise ValueError(f"arms {unknown} have subjects but no configured weight")
    counts = {
        arm: _count(observed.get(arm, 0), f"subjects in arm {arm!r}") for arm in checked_weights
    }
    for arm, weight in checked_weights.items():
        if weight == 0 and counts[arm] > 0:
            raise ValueError(f"arm {arm!r} has weight 0 but {counts[arm]} subjects")
    tested = [arm for arm, weight in checked_weights.items() if weight > 0]
    if len(tested) < 2:
        raise InsufficientDataError("a sample-ratio test needs at least two arms with weight")
    total = sum(counts[arm] for arm in tested)
    if total == 0:
        raise InsufficientDataError("no subjects in any arm: the sample ratio cannot be tested")
    weight_sum = math.fsum(checked_weights[arm] for arm in tested)
    expected = {arm: total * checked_weights[arm] / weight_sum for arm in tested}
    chi2 = math.fsum((counts[arm] - expected[arm]) ** 2 / expected[arm] for arm in tested)
    degrees_of_freedom = len(tested) - 1
    p_value = chi2_sf(chi2, degrees_of_freedom)
    return SrmResult(
        chi2=chi2,
        p_value=p_value,
        degrees_of_freedom=degrees_of_freedom,
        flag=p_value < threshold,
        threshold=threshold,
        observed={arm: counts[arm] for arm in checked_weights},
        expected=expected,
    )
