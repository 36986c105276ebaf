"""PrivacyLab's reference client, without Django: local assignment from ``GET /api/v1/config``, batched exposures.

    from privacylab_client import Client

    client = Client("https://privacylab.example", api_key="…")
    client.assign("user-42", {"platform": "android"})   # the dict POST /api/v1/assignments answers
    client.close()                                       # sends the exposures still buffered

The algorithm (``privacylab_client.assignment``) is the one the server runs;
docs/assignment.md describes it for other languages.
"""

from privacylab_client.assignment import (
    ArmSpec,
    ExperimentSpec,
    HoldoutSpec,
    assign,
    bucket,
    in_holdout,
    spec_from_json,
    targeting_matches,
    unit,
)
from privacylab_client.client import (
    Client,
    LocalConfig,
    config_parse,
    local_assignments,
    local_treatments,
)
from privacylab_client.surfaces import FALLBACK_TREATMENT, fallback_treatments, surface_treatments

__all__ = [
    "FALLBACK_TREATMENT",
    "ArmSpec",
    "Client",
    "ExperimentSpec",
    "HoldoutSpec",
    "LocalConfig",
    "assign",
    "bucket",
    "config_parse",
    "in_holdout",
    "fallback_treatments",
    "local_assignments",
    "local_treatments",
    "surface_treatments",
    "spec_from_json",
    "targeting_matches",
    "unit",
]
