"""The metric catalog covers every metric choice once, in the report's order, with consistent units."""

import pytest

from experiments.metric_catalog import METRIC_DEFINITIONS, StatisticKind, Unit, metric_definition
from experiments.models import Metric


def test_the_catalog_defines_every_metric_choice_once_in_the_choices_order():
    assert [d.key for d in METRIC_DEFINITIONS] == list(Metric.values)
    assert [d.label for d in METRIC_DEFINITIONS] == list(Metric.labels)


def test_proportions_are_shown_in_percent_and_only_opt_outs_are_better_lower():
    for definition in METRIC_DEFINITIONS:
        if definition.kind is StatisticKind.PROPORTION:
            assert definition.unit is Unit.PERCENT
    assert [d.key for d in METRIC_DEFINITIONS if not d.higher_is_better] == [Metric.OPT_OUT]


def test_an_unknown_metric_is_named_in_the_error():
    assert metric_definition("gmv").unit is Unit.IDR
    with pytest.raises(KeyError, match="'revenue'"):
        metric_definition("revenue")
