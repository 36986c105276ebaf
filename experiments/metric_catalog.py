"""The one catalog of experiment metrics: what each measures, how it is tested and how it reads.

Models (the ``Metric`` choices), the pipeline, the results, the presenters, the
formatting and the simulator iterate this catalog instead of keeping their own
copies of the metric vocabulary. To add a metric: add its choice to
``experiments.models.Metric``, its definition here, and its sufficient
statistics to the metric pipeline (docs/architecture.md, "Where to add a metric").
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from experiments.models import Metric


class StatisticKind(StrEnum):
    """How the stats engine tests a metric (``experiments.stats``' statistic classes)."""

    PROPORTION = "proportion"
    MEAN = "mean"
    RATIO = "ratio"


class Unit(StrEnum):
    """How a metric's values are shown: percent (differences in pp), rupiah, or a plain number."""

    PERCENT = "percent"
    IDR = "idr"
    NUMBER = "number"


@dataclass(frozen=True)
class MetricDefinition:
    key: str
    label: str
    kind: StatisticKind
    higher_is_better: bool
    unit: Unit
    phrase: str  # how the metric reads inside a sentence ("cuts opt-outs by 1.8 pp")


def _define(metric: Metric, kind: StatisticKind, higher_is_better: bool, unit: Unit, phrase: str) -> MetricDefinition:
    return MetricDefinition(
        key=metric.value, label=str(metric.label), kind=kind, higher_is_better=higher_is_better, unit=unit, phrase=phrase
    )


# In the report's order.
METRIC_DEFINITIONS: tuple[MetricDefinition, ...] = (
    _define(Metric.CONVERSION, StatisticKind.PROPORTION, True, Unit.PERCENT, "conversion"),
    _define(Metric.OPT_OUT, StatisticKind.PROPORTION, False, Unit.PERCENT, "opt-outs"),
    _define(Metric.CONSENT_RATE, StatisticKind.PROPORTION, True, Unit.PERCENT, "the consent rate"),
    _define(Metric.GMV, StatisticKind.MEAN, True, Unit.IDR, "GMV per subject"),
    _define(Metric.ORDERS, StatisticKind.MEAN, True, Unit.NUMBER, "orders per subject"),
    _define(Metric.AOV, StatisticKind.RATIO, True, Unit.IDR, "the average order value"),
    _define(Metric.CTR, StatisticKind.RATIO, True, Unit.PERCENT, "recommendation CTR"),
)
_BY_KEY = {definition.key: definition for definition in METRIC_DEFINITIONS}


def metric_definition(key: str) -> MetricDefinition:
    """The definition of metric ``key``; a ``KeyError`` names an unknown key."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise KeyError(f"unknown metric {key!r}; known: {', '.join(_BY_KEY)}") from None
