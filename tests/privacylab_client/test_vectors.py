"""The client's algorithm against every published vector (docs/assignment-vectors.json), without Django."""

import hashlib
import json
import math
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


def _assign_by_the_documented_floats(spec: ExperimentSpec, subject_id: str) -> str | None:
    """Steps 4 and 5 of docs/assignment.md as written (``unit`` against coverage and thresholds)."""
    digest = hashlib.sha256(f"{spec.salt}:{subject_id}".encode()).digest()
    if unit(digest, 0) >= spec.coverage:
        return None
    position = unit(digest, 1)
    return next(arm.key for arm, threshold in zip(spec.arms, spec.thresholds, strict=True) if position < threshold)


def test_the_integer_comparisons_are_the_documented_floats():
    """``assign`` compares raw words with precomputed bounds; at and beside every boundary it agrees with ``unit``."""
    from privacylab_client.assignment import _word_bound

    ids = [f"user-{i}" for i in range(3000)]
    for index, subject_id in enumerate(ids[:300]):
        digest = hashlib.sha256(f"edge:{subject_id}".encode()).digest()
        word = int.from_bytes(digest[:8], "big")
        share = unit(digest, 0)
        assert (word < _word_bound(share)) is False  # unit(word) < unit(word) is false
        assert (word < _word_bound(math.nextafter(share, 2.0))) is True
        # Coverage exactly at this subject's unit leaves it out; one ulp more lets it in.
        arms = (ArmSpec("a", 1 + index % 3), ArmSpec("b", 0.1), ArmSpec("c", 2.5))
        at = ExperimentSpec("t", "edge", share, arms)
        above = ExperimentSpec("t", "edge", math.nextafter(share, 2.0), arms)
        assert assign(at, subject_id) is None
        assert assign(above, subject_id) == _assign_by_the_documented_floats(above, subject_id) is not None
    for coverage in (0.0, 0.1, 1 / 3, 0.5, 0.999999, 1.0):
        spec = ExperimentSpec("t", "mixed", coverage, (ArmSpec("a", 0.1), ArmSpec("b", 0.2), ArmSpec("c", 0.7)))
        assert [assign(spec, s) for s in ids] == [_assign_by_the_documented_floats(spec, s) for s in ids]
