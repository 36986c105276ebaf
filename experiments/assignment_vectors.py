"""Generate the published assignment test vectors (``docs/assignment-vectors.json``).

    python -m experiments.assignment_vectors > docs/assignment-vectors.json

The specs cover two and more arms, uneven weights, partial coverage, narrow and
wide layer ranges, a holdout, and unusual subject ids (unicode in NFC and NFD,
non-BMP characters, emoji, empty-looking, long), so that a port to another
language is checked where ports go wrong. Beyond single specs: the arm
thresholds of weights a plain sum gets wrong, specs that must be refused, ids
that are not valid Unicode, targeting rules, and whole configurations (the
document of ``GET /api/v1/config``: holdout, layers, targeting together) with
each subject's assignments as ``POST /api/v1/assignments`` answers them — and, with
surfaces and a targeted rollout, each subject's ``treatments`` (the treatment by name).
The rollout bucket examples are ``bucket("rollout:" + salt, id)``.
"""

import hashlib
import json
import re
import sys
import unicodedata

from privacylab_client.assignment import (
    ArmSpec,
    ExperimentSpec,
    HoldoutSpec,
    assign,
    bucket,
    targeting_matches,
    unit,
)
from privacylab_client.client import config_parse, local_assignments, local_treatments

SPECS = [
    ExperimentSpec("checkout-consent", "a1b2c3", 1.0, (ArmSpec("control", 1), ArmSpec("banner", 1))),
    ExperimentSpec(
        "reco-privacy",
        "s3",
        1.0,
        (ArmSpec("control", 1), ArmSpec("cohort", 1), ArmSpec("dp", 1)),
    ),
    ExperimentSpec(
        "uneven",
        "uneven-salt",
        0.5,
        (ArmSpec("control", 0.5), ArmSpec("b", 0.25), ArmSpec("c", 0.25)),
    ),
    ExperimentSpec(
        "layered",
        "layered-salt",
        0.8,
        (ArmSpec("control", 3), ArmSpec("optin", 1)),
        layer_range=(0.25, 0.6),
        layer_salt="recommendations",
    ),
    ExperimentSpec(
        "with-holdout",
        "h-salt",
        1.0,
        (ArmSpec("control", 1), ArmSpec("b", 2), ArmSpec("c", 3), ArmSpec("d", 4)),
        holdout=HoldoutSpec("global", 0.1),
    ),
    ExperimentSpec("tiny-coverage", "tc", 0.05, (ArmSpec("control", 1), ArmSpec("treatment", 1))),
]

SUBJECT_IDS = (
    [f"user-{i}" for i in range(60)]
    + [str(i) for i in range(1000, 1010)]
    + ["", " ", "Ünïcødé-ßubject", "用户-42", "a" * 200, "user:with:colons", "62-812-0000-1111"]
    # Non-BMP characters and emoji (all already in NFC: the normalisation cases are apart).
    + ["Jos\u00e9-1", "\U0001d4b3-math", "\U00020000-cjk-ext-b", "\U0001f600",
       "\U0001f469\u200d\U0001f4bb-dev", "\U0001f1ee\U0001f1e9-id"]
)

# Weights whose thresholds a port gets wrong with a plain left-to-right total (0.1 × 10 sums to
# 0.9999999999999999; math.fsum gives 1.0), and ordinary ones.
THRESHOLD_WEIGHTS = [[0.1] * 10, [1, 1, 1], [0.5, 0.25, 0.25], [3, 1], [0.7, 0.2, 0.1], [1e-3, 1e3, 1], [1, 2, 3, 4]]

# Specs that must be refused (the reference raises ValueError), with why.
INVALID_SPECS = [
    ({"key": "", "salt": "s", "coverage": 1.0, "arms": [{"key": "a", "weight": 1}, {"key": "b", "weight": 1}]},
     "empty key"),
    ({"key": "k", "salt": "", "coverage": 1.0, "arms": [{"key": "a", "weight": 1}, {"key": "b", "weight": 1}]},
     "empty salt"),
    ({"key": "k", "salt": "s", "coverage": 1.5, "arms": [{"key": "a", "weight": 1}, {"key": "b", "weight": 1}]},
     "coverage outside [0, 1]"),
    ({"key": "k", "salt": "s", "coverage": 1.0, "arms": [{"key": "a", "weight": 1}]}, "fewer than two arms"),
    ({"key": "k", "salt": "s", "coverage": 1.0, "arms": [{"key": "a", "weight": 1}, {"key": "a", "weight": 1}]},
     "repeated arm key"),
    ({"key": "k", "salt": "s", "coverage": 1.0, "arms": [{"key": "a", "weight": 0}, {"key": "b", "weight": 1}]},
     "a weight that is not positive"),
    ({"key": "k", "salt": "s", "coverage": 1.0, "arms": [{"key": "", "weight": 1}, {"key": "b", "weight": 1}]},
     "empty arm key"),
    ({"key": "k", "salt": "s", "coverage": 1.0, "arms": [{"key": "a", "weight": 1}, {"key": "b", "weight": 1}],
      "layer_range": [0.5, 0.5]}, "empty layer range"),
    ({"key": "k", "salt": "s", "coverage": 1.0, "arms": [{"key": "a", "weight": 1}, {"key": "b", "weight": 1}],
      "layer_range": [0.2, 1.2]}, "layer range outside [0, 1]"),
    ({"key": "k", "salt": "s", "coverage": 1.0, "arms": [{"key": "a", "weight": 1}, {"key": "b", "weight": 1}],
      "holdout": {"salt": "h", "share": 1.0}}, "holdout share of 1 or more"),
]

NORMALISATION_IDS = ["Jose\u0301-1", "Jos\u00e9-1", "A\u030angstr\u00f6m", "\u212b-angstrom-sign",
                     "\u1100\u1161-hangul-jamo", "e\u0323\u0302-stacked"]

# Not valid Unicode (a lone surrogate): no UTF-8 bytes to hash. Refuse, never replace with U+FFFD.
INVALID_SUBJECT_IDS = ["\ud800", "user-\udfff"]

TARGETING_CASES = [
    ({}, {}, True),
    ({}, {"platform": "android"}, True),
    ({"platform": ["android"]}, {"platform": "android"}, True),
    ({"platform": ["android"]}, {"platform": "Android"}, False),  # exact, case-sensitive
    ({"platform": ["android"]}, {"platform": "android "}, False),  # no trimming
    ({"platform": ["android"]}, {}, False),  # an unreported attribute matches nothing
    ({"platform": ["android"]}, {"platform": ""}, False),
    ({"platform": ["android", "ios"]}, {"platform": "ios", "age_band": "18-24"}, True),
    ({"platform": ["android"], "age_band": ["18-24", "25-34"]}, {"platform": "android", "age_band": "25-34"}, True),
    ({"platform": ["android"], "age_band": ["18-24", "25-34"]}, {"platform": "android", "age_band": "35-44"}, False),
    ({"platform": "android"}, {"platform": "and"}, False),  # a lone string is one value, never a substring
    ({"platform": "android"}, {"platform": "android"}, True),
    ({"province": ["DKI Jakarta"]}, {"province": "DKI Jakarta"}, True),
    ({"platform": []}, {"platform": "android"}, False),  # an empty list matches nobody
]

_TREATMENT = {"name": "placeholder"}  # the server sends each arm's treatment contract here

CONFIGURATIONS = [
    {
        "format": 1,
        "version": "vectors-1",
        "algorithm": "docs/assignment.md",
        "holdout": {"salt": "global-holdout", "share": 0.2},
        "experiments": [
            {"key": "consent-prompt", "salt": "cp-salt", "phase": 1, "coverage": 1.0, "layer_salt": "prompts",
             "layer_range": [0.0, 0.5], "targeting": {},
             "arms": [{"key": "control", "weight": 1}, {"key": "modal", "weight": 1}]},
            {"key": "prompt-copy", "salt": "pc-salt", "phase": 2, "coverage": 0.6, "layer_salt": "prompts",
             "layer_range": [0.5, 1.0], "targeting": {"platform": ["android", "ios"]},
             "arms": [{"key": "control", "weight": 2}, {"key": "short", "weight": 1}]},
            {"key": "reco-level", "salt": "rl-salt", "phase": 1, "coverage": 0.9, "layer_salt": "default",
             "layer_range": [0.0, 1.0], "targeting": {"age_band": ["18-24", "25-34"]},
             "arms": [{"key": "control", "weight": 0.1}, {"key": "cohort", "weight": 0.1},
                      {"key": "dp", "weight": 0.1}]},
        ],
    },
    {
        "format": 1,
        "version": "vectors-2",
        "algorithm": "docs/assignment.md",
        "holdout": None,
        "experiments": [
            {"key": "solo", "salt": "solo-salt", "phase": 1, "coverage": 1.0, "layer_salt": "default",
             "layer_range": [0.0, 1.0], "targeting": {},
             "arms": [{"key": "control", "weight": 1}, {"key": "b", "weight": 1}, {"key": "c", "weight": 1}]},
        ],
    },
]
# Surfaces, an experiment on one, and a targeted rollout on another (docs/surfaces.md): each subject's
# "treatments" is what POST /api/v1/assignments answers for them.
CONFIGURATIONS.append({
    "format": 1,
    "version": "vectors-3",
    "algorithm": "docs/assignment.md",
    "holdout": None,
    "experiments": [
        {"key": "reco-level", "salt": "rl3-salt", "phase": 1, "coverage": 0.5, "layer_salt": "default",
         "layer_range": [0.0, 1.0], "targeting": {}, "surface": "product-recommendations",
         "arms": [{"key": "control", "weight": 1}, {"key": "cohort", "weight": 1}]},
    ],
    "surfaces": [
        {"key": "checkout-consent-prompt", "default": {"name": "banner default", "personalization_level": "popularity"}},
        {"key": "product-recommendations", "default": {"name": "popular default", "personalization_level": "popularity"}},
    ],
    "rollouts": [
        {"surface": "checkout-consent-prompt", "experiment": "prompt-copy", "arm": "short", "salt": "ro-salt",
         "percent": 25.0, "targeting": {"age_band": ["18-24", "25-34"]},
         "treatment": {"name": "short prompt", "personalization_level": "popularity"}},
    ],
})
_PLATFORMS = [None, "android", "ios", "web"]
_AGE_BANDS = [None, "18-24", "25-34", "35-44"]
CONFIGURATION_SUBJECTS = [f"shopper-{i}" for i in range(80)] + ["Jos\u00e9-1", "Jose\u0301-1", "\U0001f600"]


def _with_treatments(document: dict) -> dict:
    for experiment in document["experiments"]:
        for arm in experiment["arms"]:
            arm["treatment"] = _TREATMENT
        spec = config_parse({**document, "experiments": [experiment]}).experiments[0].spec
        experiment["thresholds"] = list(spec.thresholds)
    return document


def _configuration_cases() -> list[dict]:
    cases = []
    for document in CONFIGURATIONS:
        document = _with_treatments(json.loads(json.dumps(document)))
        config = config_parse(document)
        subjects = []
        for i, subject_id in enumerate(CONFIGURATION_SUBJECTS):
            attributes = {
                name: value
                for name, value in (("platform", _PLATFORMS[i % 4]), ("age_band", _AGE_BANDS[(i // 4) % 4]))
                if value is not None
            }
            assignments = [
                {"experiment": a["experiment"], "arm": a["arm"]} for a in local_assignments(config, subject_id, attributes)
            ]
            treatments = {
                surface: {"treatment": entry["treatment"]["name"], "source": entry["source"],
                          "experiment": entry["experiment"], "arm": entry["arm"]}
                for surface, entry in local_treatments(
                    config, local_assignments(config, subject_id, attributes), subject_id, attributes).items()
            }
            subjects.append({"subject_id": subject_id, "attributes": attributes, "assignments": assignments,
                             "treatments": treatments})
        cases.append({"configuration": document, "subjects": subjects})
    return cases


def _refused(raw: dict) -> bool:
    from privacylab_client.assignment import spec_from_json

    try:
        spec_from_json(raw)
    except ValueError:
        return True
    return False


def vectors() -> dict:
    cases = []
    for spec in SPECS:
        for subject_id in SUBJECT_IDS:
            cases.append({"experiment": spec.key, "subject_id": subject_id, "arm": assign(spec, subject_id)})
    assert all(_refused(raw) for raw, _ in INVALID_SPECS)
    return {
        "algorithm": "docs/assignment.md",
        # Coverage: bucket(salt, id), the experiment's own digest's word 0; the layer and the holdout
        # prefix their salt. (The arm is word 1 of the same digest: see unit_examples.)
        "bucket_examples": [
            {"seed": seed, "subject_id": sid, "bucket": bucket(seed, sid)}
            for seed, sid in [("a1b2c3", "user-1"), ("s3", "user-2"), ("layer:default", ""),
                              ("holdout:global", "user-3")]
        ],
        "unit_examples": [
            {"seed": seed, "subject_id": sid, "word": word,
             "unit": unit(hashlib.sha256(f"{seed}:{sid}".encode()).digest(), word)}
            for seed, sid in [("a1b2c3", "user-1"), ("s3", "user-2")]
            for word in (0, 1)
        ],
        "threshold_cases": [
            {"weights": weights, "thresholds": list(ExperimentSpec(
                "t", "t", 1.0, tuple(ArmSpec(f"arm-{i}", w) for i, w in enumerate(weights))).thresholds)}
            for weights in THRESHOLD_WEIGHTS
        ],
        "invalid_specs": [{"spec": raw, "why": why} for raw, why in INVALID_SPECS],
        "invalid_subject_ids": INVALID_SUBJECT_IDS,
        # Ids are hashed in NFC: each spelling here buckets as its NFC form does.
        "normalisation_cases": [
            {"subject_id": subject_id, "nfc": unicodedata.normalize("NFC", subject_id), "seed": "a1b2c3",
             "bucket": bucket("a1b2c3", subject_id)}
            for subject_id in NORMALISATION_IDS
        ],
        "targeting_cases": [
            {"targeting": rules, "attributes": attributes, "matches": targeting_matches(rules, attributes)}
            for rules, attributes, _ in TARGETING_CASES
        ],
        "configuration_cases": _configuration_cases(),
        "rollout_bucket_examples": [
            {"salt": salt, "subject_id": sid, "bucket": bucket("rollout:" + salt, sid)}
            for salt, sid in [("ro-salt", "shopper-1"), ("ro-salt", "Jos\u00e9-1"), ("ro-salt", "\U0001f600")]
        ],
        "specs": [
            {
                "key": spec.key,
                "salt": spec.salt,
                "coverage": spec.coverage,
                "arms": [{"key": arm.key, "weight": arm.weight} for arm in spec.arms],
                "layer_range": list(spec.layer_range),
                "layer_salt": spec.layer_salt,
                "holdout": None if spec.holdout is None else {"salt": spec.holdout.salt, "share": spec.holdout.share},
            }
            for spec in SPECS
        ],
        "cases": cases,
    }


def vectors_json() -> str:
    """The file's text: UTF-8 as written, except lone surrogates, which only a JSON escape can carry."""
    text = json.dumps(vectors(), indent=1, ensure_ascii=False)
    return re.sub("[\ud800-\udfff]", lambda match: f"\\u{ord(match.group()):04x}", text) + "\n"


if __name__ == "__main__":
    sys.stdout.write(vectors_json())
