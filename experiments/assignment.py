"""The assignment algorithm, as the server uses it: the pure functions live in ``privacylab_client.assignment``.

They are written once, in the Django-free client package, so that the platform
and the reference client cannot drift apart; every name the platform has
always imported from here (``assign``, ``bucket``, ``ExperimentSpec`` …) keeps
working.
"""

from privacylab_client.assignment import (
    ArmSpec,
    ExperimentSpec,
    HoldoutSpec,
    assign,
    bucket,
    in_holdout,
    targeting_matches,
    unit,
)

__all__ = ["ArmSpec", "ExperimentSpec", "HoldoutSpec", "assign", "bucket", "in_holdout", "targeting_matches", "unit"]
