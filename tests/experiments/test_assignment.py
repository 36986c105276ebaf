"""The pure assignment algorithm: determinism, weights, ramping, layers, holdout, vectors."""

import hashlib
import json
from collections import Counter
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import chisquare

from experiments.assignment import (
    ArmSpec,
    ExperimentSpec,
    HoldoutSpec,
    assign,
    bucket,
    targeting_matches,
)

VECTORS = json.loads((Path(__file__).parents[2] / "docs" / "assignment-vectors.json").read_text())
SUBJECTS = [f"subject-{i}" for i in range(20_000)]


def three_arms(**overrides) -> ExperimentSpec:
    fields = {
        "key": "exp",
        "salt": "salt-1",
        "coverage": 1.0,
        "arms": (ArmSpec("control", 1), ArmSpec("b", 1), ArmSpec("c", 2)),
    }
    return ExperimentSpec(**(fields | overrides))


def test_assign_is_deterministic():
    spec = three_arms()
    first = [assign(spec, s) for s in SUBJECTS[:2000]]
    again = [assign(three_arms(), s) for s in SUBJECTS[:2000]]
    assert first == again


def test_arm_counts_match_weights_chi_square():
    spec = three_arms()
    counts = Counter(assign(spec, s) for s in SUBJECTS)
    observed = [counts["control"], counts["b"], counts["c"]]
    expected = [len(SUBJECTS) * w / 4 for w in (1, 1, 2)]
    assert sum(observed) == len(SUBJECTS)
    assert chisquare(observed, expected).pvalue > 0.001


def test_different_salts_give_independent_assignments():
    a = [assign(three_arms(salt="one"), s) for s in SUBJECTS[:5000]]
    b = [assign(three_arms(salt="two"), s) for s in SUBJECTS[:5000]]
    agreement = sum(x == y for x, y in zip(a, b, strict=True)) / len(a)
    # Independent draws agree with probability 0.25² + 0.25² + 0.5² = 0.375.
    assert agreement == pytest.approx(0.375, abs=0.03)


def test_ramping_coverage_never_moves_an_included_subject():
    stages = [0.1, 0.5, 1.0]
    previous: dict[str, str] = {}
    for coverage in stages:
        current = {s: arm for s in SUBJECTS if (arm := assign(three_arms(coverage=coverage), s))}
        assert all(current.get(s) == arm for s, arm in previous.items())
        assert len(current) == pytest.approx(coverage * len(SUBJECTS), rel=0.05)
        previous = current


def test_layer_ranges_are_mutually_exclusive_and_cover_the_layer():
    arms = (ArmSpec("control", 1), ArmSpec("t", 1))
    left = ExperimentSpec("left", "l", 1.0, arms, layer_range=(0.0, 0.3), layer_salt="reco")
    mid = ExperimentSpec("mid", "m", 1.0, arms, layer_range=(0.3, 0.7), layer_salt="reco")
    right = ExperimentSpec("right", "r", 1.0, arms, layer_range=(0.7, 1.0), layer_salt="reco")
    memberships = [sum(assign(spec, s) is not None for spec in (left, mid, right)) for s in SUBJECTS]
    assert set(memberships) == {1}
    share_left = sum(assign(left, s) is not None for s in SUBJECTS) / len(SUBJECTS)
    assert share_left == pytest.approx(0.3, abs=0.02)


def test_holdout_keeps_its_share_out_of_every_experiment():
    holdout = HoldoutSpec("global", 0.1)
    specs = [three_arms(key=f"e{i}", salt=f"s{i}", holdout=holdout) for i in range(3)]
    out_of_all = [s for s in SUBJECTS if all(assign(spec, s) is None for spec in specs)]
    assert len(out_of_all) / len(SUBJECTS) == pytest.approx(0.1, abs=0.01)
    # The same subjects are held out of every experiment, and only they.
    held = {s for s in SUBJECTS if bucket("holdout:global", s) < 0.1}
    assert set(out_of_all) == held


def test_holdout_does_not_skew_arm_shares():
    spec = three_arms(holdout=HoldoutSpec("global", 0.2))
    counts = Counter(arm for s in SUBJECTS if (arm := assign(spec, s)))
    n = sum(counts.values())
    assert chisquare([counts["control"], counts["b"], counts["c"]], [n / 4, n / 4, n / 2]).pvalue > 0.001


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"arms": (ArmSpec("control", 1),)}, "at least two arms"),
        ({"coverage": 1.5}, "coverage"),
        ({"layer_range": (0.5, 0.5)}, "layer_range"),
        ({"salt": ""}, "salt"),
        ({"arms": (ArmSpec("a", 1), ArmSpec("a", 1))}, "unique"),
    ],
)
def test_invalid_specs_are_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        three_arms(**fields)


@pytest.mark.parametrize("weight", [0, -1, float("nan"), float("inf")])
def test_weights_must_be_positive_and_finite(weight):
    with pytest.raises(ValueError, match="weight"):
        ArmSpec("a", weight)


@given(st.text(max_size=64), st.text(max_size=64))
def test_bucket_is_in_unit_interval(seed, subject_id):
    assert 0.0 <= bucket(seed, subject_id) < 1.0


@given(
    st.lists(st.floats(min_value=0.01, max_value=100), min_size=2, max_size=6),
    st.text(max_size=30),
    st.floats(min_value=0.0, max_value=1.0),
)
def test_an_included_subject_always_gets_one_of_the_arms(weights, subject_id, coverage):
    spec = ExperimentSpec("p", "salt", coverage, tuple(ArmSpec(f"a{i}", w) for i, w in enumerate(weights)))
    arm = assign(spec, subject_id)
    assert arm is None or arm in {a.key for a in spec.arms}
    if coverage == 1.0:
        assert arm is not None


def test_targeting_rules():
    rules = {"age_band": ["18-24", "25-34"], "platform": ["android"]}
    assert targeting_matches(rules, {"age_band": "18-24", "platform": "android", "province": "JK"})
    assert not targeting_matches(rules, {"age_band": "45-54", "platform": "android"})
    assert not targeting_matches(rules, {"age_band": "18-24"})  # unreported attribute
    assert targeting_matches({}, {})


# --- the published vectors ---------------------------------------------------------


def _spec_from_vector(raw: dict) -> ExperimentSpec:
    return ExperimentSpec(
        key=raw["key"],
        salt=raw["salt"],
        coverage=raw["coverage"],
        arms=tuple(ArmSpec(a["key"], a["weight"]) for a in raw["arms"]),
        layer_range=tuple(raw["layer_range"]),
        layer_salt=raw["layer_salt"],
        holdout=HoldoutSpec(**raw["holdout"]) if raw["holdout"] else None,
    )


def _independent_assign(raw: dict, subject_id: str) -> str | None:
    """docs/assignment.md re-implemented with exact rational arithmetic, as a port would."""

    def word(seed: str, index: int) -> Fraction:
        digest = hashlib.sha256((seed + ":" + subject_id).encode("utf-8")).digest()
        return Fraction(int.from_bytes(digest[8 * index : 8 * index + 8], "big") >> 11, 2**53)

    holdout = raw["holdout"]
    if holdout and word("holdout:" + holdout["salt"], 0) < Fraction(holdout["share"]):
        return None
    low, high = (Fraction(x) for x in raw["layer_range"])
    if not low <= word("layer:" + raw["layer_salt"], 0) < high:  # evaluated even for [0, 1]
        return None
    if not word(raw["salt"], 0) < Fraction(raw["coverage"]):
        return None
    p = word(raw["salt"], 1)
    total = sum(Fraction(a["weight"]) for a in raw["arms"])
    cumulative = Fraction(0)
    for arm in raw["arms"]:
        cumulative += Fraction(arm["weight"])
        if p < cumulative / total:
            return arm["key"]
    return raw["arms"][-1]["key"]


def test_vectors_are_numerous_and_varied():
    assert len(VECTORS["cases"]) >= 300
    arms = {case["arm"] for case in VECTORS["cases"]}
    assert None in arms and len(arms) >= 8


def test_implementation_reproduces_every_published_vector():
    specs = {raw["key"]: _spec_from_vector(raw) for raw in VECTORS["specs"]}
    mismatches = [c for c in VECTORS["cases"] if assign(specs[c["experiment"]], c["subject_id"]) != c["arm"]]
    assert mismatches == []


def test_documented_algorithm_reproduces_every_published_vector():
    specs = {raw["key"]: raw for raw in VECTORS["specs"]}
    mismatches = [
        c for c in VECTORS["cases"] if _independent_assign(specs[c["experiment"]], c["subject_id"]) != c["arm"]
    ]
    assert mismatches == []


def test_bucket_examples():
    for example in VECTORS["bucket_examples"]:
        assert bucket(example["seed"], example["subject_id"]) == example["bucket"]
