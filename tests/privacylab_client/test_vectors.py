"""The client's algorithm against every published vector (docs/assignment-vectors.json), without Django."""

import hashlib
import json
from pathlib import Path

import pytest

from privacylab_client import (
    assign,
    bucket,
    config_parse,
    local_assignments,
    spec_from_json,
    targeting_matches,
    unit,
)
from privacylab_client.assignment import ArmSpec, ExperimentSpec

VECTORS = json.loads((Path(__file__).parents[2] / "docs" / "assignment-vectors.json").read_text(encoding="utf-8"))


def test_every_spec_case():
    specs = {raw["key"]: spec_from_json(raw) for raw in VECTORS["specs"]}
    assert [c for c in VECTORS["cases"] if assign(specs[c["experiment"]], c["subject_id"]) != c["arm"]] == []


def test_unicode_ids_are_covered():
    ids = {case["subject_id"] for case in VECTORS["cases"]}
    assert {"Jos\u00e9-1", "\U0001f600"} <= ids  # non-ASCII, emoji
    assert any(ord(ch) > 0xFFFF for subject in ids for ch in subject)  # beyond the BMP
    assert bucket("s", "Jos\u00e9-1") == bucket("s", "Jose\u0301-1")  # one subject: hashed in NFC


def test_bucket_and_unit_examples():
    for example in VECTORS["bucket_examples"]:
        assert bucket(example["seed"], example["subject_id"]) == example["bucket"]
    for example in VECTORS["unit_examples"]:
        digest = hashlib.sha256(f"{example['seed']}:{example['subject_id']}".encode()).digest()
        assert unit(digest, example["word"]) == example["unit"]


def test_thresholds_use_the_exact_total():
    for case in VECTORS["threshold_cases"]:
        arms = tuple(ArmSpec(f"arm-{i}", weight) for i, weight in enumerate(case["weights"]))
        assert list(ExperimentSpec("t", "t", 1.0, arms).thresholds) == case["thresholds"]
    tenths = VECTORS["threshold_cases"][0]
    assert sum(tenths["weights"]) != 1.0  # a plain sum would divide by 0.9999999999999999


@pytest.mark.parametrize("case", VECTORS["invalid_specs"], ids=lambda case: case["why"])
def test_invalid_specs_are_refused(case):
    with pytest.raises(ValueError):
        spec_from_json(case["spec"])


@pytest.mark.parametrize("subject_id", VECTORS["invalid_subject_ids"])
def test_invalid_ids_are_refused(subject_id):
    spec = spec_from_json(VECTORS["specs"][0])
    with pytest.raises(ValueError):
        assign(spec, subject_id)


def test_targeting_cases():
    assert [c for c in VECTORS["targeting_cases"] if targeting_matches(c["targeting"], c["attributes"]) != c["matches"]] == []


def test_configuration_cases():
    for case in VECTORS["configuration_cases"]:
        config = config_parse(case["configuration"])
        for subject in case["subjects"]:
            got = [
                {"experiment": a["experiment"], "arm": a["arm"]}
                for a in local_assignments(config, subject["subject_id"], subject["attributes"])
            ]
            assert got == subject["assignments"], subject


def test_the_package_imports_no_django():
    import subprocess
    import sys

    code = "import sys, privacylab_client; sys.exit(any(m.split('.')[0] in {'django', 'rest_framework'} for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2]).returncode == 0


def test_ids_are_hashed_in_nfc():
    import unicodedata

    cases = VECTORS["normalisation_cases"]
    assert any(case["subject_id"] != case["nfc"] for case in cases)
    for case in cases:
        assert unicodedata.normalize("NFC", case["subject_id"]) == case["nfc"]
        assert bucket(case["seed"], case["subject_id"]) == case["bucket"] == bucket(case["seed"], case["nfc"])


def test_configuration_cases_give_each_subject_its_treatments():
    """Surfaces, an experiment on one and a targeted rollout on another: the published treatments by name."""
    from privacylab_client import local_treatments

    cases_with_surfaces = [case for case in VECTORS["configuration_cases"] if case["configuration"].get("surfaces")]
    assert cases_with_surfaces and any(case["configuration"].get("rollouts") for case in cases_with_surfaces)
    sources = set()
    for case in VECTORS["configuration_cases"]:
        config = config_parse(case["configuration"])
        for subject in case["subjects"]:
            sid, attributes = subject["subject_id"], subject["attributes"]
            got = {
                surface: {"treatment": entry["treatment"]["name"], "source": entry["source"],
                          "experiment": entry["experiment"], "arm": entry["arm"]}
                for surface, entry in local_treatments(config, local_assignments(config, sid, attributes), sid,
                                                       attributes).items()
            }
            assert got == subject["treatments"], subject
            sources.update(entry["source"] for entry in got.values())
    assert sources == {"experiment", "rollout", "default"}


def test_rollout_bucket_examples():
    for case in VECTORS["rollout_bucket_examples"]:
        assert bucket("rollout:" + case["salt"], case["subject_id"]) == case["bucket"]
