"""The snapshot document: stored JSON of schemas 1, 2 and 3 reads and round-trips key for key, extras kept."""

import pytest

from experiments.results.document import SCHEMA_VERSION, SnapshotDocument, UnreadableDocument

SCHEMA_1 = {
    "schema_version": 1, "status": "ok", "message": "",
    "experiment": {"key": "e", "name": "E", "phase": 1, "primary_metric": "conversion", "alpha": 0.05},
    "window": {"start": "2026-11-01T00:00:00+00:00", "end": "2026-11-15T00:00:00+00:00"},
    "settings": {"gmv_cap_percentile": 99, "gmv_cap": 1.0, "pre_exposure_days": 0, "cuped": False},
    "arms": [{"key": "control", "is_control": True, "subjects": 5}, {"key": "b", "is_control": False, "subjects": 7}],
    "metrics": {}, "statistics": {}, "srm": {"flag": True}, "report": {"comparisons": [{"metric": "gmv"}]},
    "skipped_metrics": [], "guardrails": [{"breached": False}, {"breached": True, "arm": "b"}],
    "decision": {"rule": "superiority", "outcome": "inconclusive"},
}


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_stored_document_round_trips_unchanged(version):
    stored = {**SCHEMA_1, "schema_version": version}
    document = SnapshotDocument.from_dict(stored)
    assert document.readable
    assert document.to_dict() == stored
    assert list(document.to_dict()) == [key for key in SnapshotDocument.field_names() if key in stored]
    assert {"descriptive", "recommendation_gmv"} <= document.absent  # schema 1-2 and early 3 lack them


def test_unknown_keys_are_kept_and_set_values_become_present():
    stored = {**SCHEMA_1, "schema_version": SCHEMA_VERSION, "warehouse": {"rows": 3}}
    document = SnapshotDocument.from_dict(stored).with_values(descriptive={})
    assert document.to_dict()["warehouse"] == {"rows": 3}
    assert document.to_dict()["descriptive"] == {}


def test_what_readers_ask_of_it():
    document = SnapshotDocument.from_dict(SCHEMA_1)
    assert document.subjects == 12
    assert document.srm_flag is True
    assert document.guardrail_breached and document.breached_guardrails == [{"breached": True, "arm": "b"}]
    assert document.comparisons == [{"metric": "gmv"}] and document.primary_metric == "conversion"


def test_a_newer_schema_reads_as_not_readable_and_garbage_is_refused():
    assert not SnapshotDocument.from_dict({"schema_version": SCHEMA_VERSION + 1, "x": 1}).readable
    with pytest.raises(UnreadableDocument):
        SnapshotDocument.from_dict({"effects": {}})


def test_schema_5_round_trips_its_adjustment_health_and_heterogeneity_and_schema_4_lacks_them():
    assert SCHEMA_VERSION == 5
    schema_5 = {
        **SCHEMA_1,
        "schema_version": 5,
        "engine": "frequentist",
        "adjustment": {"gmv": {"metric": "gmv", "method": "cuped++", "covariates": ["pre_gmv", "pre_orders"],
                               "strata": ["platform"], "variance_reduction": {"b": 0.4}, "fallback_reason": None}},
        "heterogeneity": {"interaction_tests": [], "exposure_days": None, "exposure_days_reason": "few days"},
        "health": {"healthy": True, "flags": []},
    }
    document = SnapshotDocument.from_dict(schema_5)
    assert document.readable and document.to_dict() == schema_5
    assert document.adjustment["gmv"]["method"] == "cuped++" and document.health["healthy"]
    schema_4 = {key: value for key, value in schema_5.items() if key not in ("adjustment", "heterogeneity", "health")}
    old = SnapshotDocument.from_dict({**schema_4, "schema_version": 4})
    assert old.readable and {"adjustment", "heterogeneity", "health"} <= old.absent
    assert old.to_dict() == {**schema_4, "schema_version": 4}
