"""The privacy ladder: arms ordered most private first, rung by rung; a PM's order wins."""

from types import SimpleNamespace

import pytest

from experiments.privacy_ladder import (
    arms_privacy_order,
    experiment_privacy_order,
    treatment_privacy_key,
)
from tests.experiments.factories import ExperimentFactory


def treatment(level, *, epsilon=None, k=50, sensitive="exclude", retention=90, preselected=False):
    return SimpleNamespace(
        personalization_level=level, dp_epsilon=epsilon, cohort_k=k, sensitive_category_policy=sensitive,
        retention_days=retention, default_personalization_consent=preselected,
    )


def arm(key, **fields):
    return SimpleNamespace(key=key, treatment=treatment(**fields))


def test_personalization_is_the_first_rung():
    arms = [
        arm("full", level="full"), arm("cohort", level="cohort"), arm("dp", level="dp_popularity", epsilon=1.0),
        arm("popular", level="popularity"), arm("session", level="session"),
        arm("dp-items", level="dp_item_item", epsilon=0.5),
    ]
    assert arms_privacy_order(arms) == ["popular", "session", "dp", "cohort", "dp-items", "full"]


def test_within_a_level_smaller_epsilon_and_larger_k_are_more_private():
    arms = [
        arm("dp-4", level="dp_popularity", epsilon=4.0), arm("dp-half", level="dp_popularity", epsilon=0.5),
        arm("k-20", level="cohort", k=20), arm("k-200", level="cohort", k=200),
    ]
    assert arms_privacy_order(arms) == ["dp-half", "dp-4", "k-200", "k-20"]


def test_later_rungs_break_ties_only():
    arms = [
        arm("included", level="full", sensitive="include"),
        arm("explicit", level="full", sensitive="explicit_consent"),
        arm("preselected", level="full", preselected=True),
        arm("long", level="full", retention=365),
        arm("short", level="full", retention=30),
        arm("cohort-included", level="cohort", sensitive="include"),  # rung 1 beats every later rung
    ]
    assert arms_privacy_order(arms) == ["cohort-included", "short", "preselected", "long", "explicit", "included"]
    assert treatment_privacy_key(treatment("full")) < treatment_privacy_key(treatment("full", preselected=True))


def test_ties_keep_the_arm_order():
    arms = [arm("b", level="popularity"), arm("a", level="session")]
    assert arms_privacy_order(arms) == ["b", "a"]


@pytest.mark.django_db
def test_the_experiments_own_order_overrides_the_ladder():
    experiment = ExperimentFactory(arms=3)
    keys = list(experiment.arms.order_by("id").values_list("key", flat=True))
    assert experiment_privacy_order(experiment=experiment) == arms_privacy_order(
        experiment.arms.select_related("treatment").order_by("id")
    )
    experiment.privacy_order = list(reversed(keys))
    assert experiment_privacy_order(experiment=experiment) == list(reversed(keys))
