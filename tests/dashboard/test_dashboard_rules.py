"""The permission model: owner, named viewers and staff read; owner and staff recompute; others nothing."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import AnonymousUser

from experiments.models import Experiment
from experiments.rules import RECOMPUTE_RESULTS, VIEW_RESULTS, experiments_visible_q
from tests.experiments.factories import ExperimentFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def cast(people):
    superuser = UserFactory(username="sam-super", is_superuser=True)
    inactive_owner = UserFactory(username="ivy-inactive", is_active=False)
    experiments = {
        "shared": ExperimentFactory(key="shared", owner=people["owner"]),
        "private": ExperimentFactory(key="private", owner=people["owner"]),
        "others": ExperimentFactory(key="others", owner=people["other"]),
        "inactive": ExperimentFactory(key="inactive", owner=inactive_owner),
    }
    experiments["shared"].viewers.add(people["viewer"])
    experiments["inactive"].viewers.add(people["viewer"])
    return {**people, "superuser": superuser, "inactive": inactive_owner}, experiments


@pytest.mark.parametrize(
    ("who", "visible", "recomputable"),
    [
        ("owner", {"shared", "private"}, {"shared", "private"}),
        ("viewer", {"shared", "inactive"}, set()),
        ("staff", {"shared", "private", "others", "inactive"}, {"shared", "private", "others", "inactive"}),
        ("superuser", {"shared", "private", "others", "inactive"}, {"shared", "private", "others", "inactive"}),
        ("other", {"others"}, {"others"}),
        ("inactive", set(), set()),  # an account switched off loses access to its own experiments
    ],
)
def test_object_permissions(cast, who, visible, recomputable):
    users, experiments = cast
    user = users[who]
    assert {key for key, e in experiments.items() if user.has_perm(VIEW_RESULTS, e)} == visible
    assert {key for key, e in experiments.items() if user.has_perm(RECOMPUTE_RESULTS, e)} == recomputable


def test_anonymous_users_have_no_permission(cast):
    _, experiments = cast
    anonymous = AnonymousUser()
    assert not any(anonymous.has_perm(VIEW_RESULTS, e) for e in experiments.values())
    assert not Experiment.objects.filter(experiments_visible_q(anonymous)).exists()


def test_the_list_filter_states_the_same_rule_as_the_object_permission(cast):
    users, experiments = cast
    for who, user in users.items():
        q = experiments_visible_q(user)
        listed = set(
            (Experiment.objects.all() if q is None else Experiment.objects.filter(q)).values_list("key", flat=True)
        )
        allowed = {e.key for e in Experiment.objects.all() if user.has_perm(VIEW_RESULTS, e)}
        assert listed == allowed, who
        # No duplicate rows from the viewers relation.
        if q is not None:
            assert Experiment.objects.filter(q).count() == len(listed)


def test_a_model_permission_grants_nothing_per_experiment(cast):
    """The per-experiment rule is the only way in: a group's model permission does not open every experiment."""
    from django.contrib.auth.models import Permission

    users, experiments = cast
    user = users["other"]
    user.user_permissions.add(Permission.objects.get(codename="view_experiment"))
    user = type(user).objects.get(pk=user.pk)  # fresh permission cache
    assert user.has_perm("experiments.view_experiment")
    assert not user.has_perm(VIEW_RESULTS, experiments["private"])
