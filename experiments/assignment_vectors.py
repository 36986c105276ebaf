"""Generate the published assignment test vectors (``docs/assignment-vectors.json``).

    python -m experiments.assignment_vectors > docs/assignment-vectors.json

The specs cover two and more arms, uneven weights, partial coverage, narrow and
wide layer ranges, a holdout, and unusual subject ids (unicode, empty-looking,
long), so that a port to another language is checked where ports go wrong.
"""

import json
import sys

from experiments.assignment import ArmSpec, ExperimentSpec, HoldoutSpec, assign, bucket

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
)


def vectors() -> dict:
    cases = []
    for spec in SPECS:
        for subject_id in SUBJECT_IDS:
            cases.append({"experiment": spec.key, "subject_id": subject_id, "arm": assign(spec, subject_id)})
    return {
        "algorithm": "docs/assignment.md",
        "bucket_examples": [
            {"seed": seed, "subject_id": sid, "bucket": bucket(seed, sid)}
            for seed, sid in [("arm:a1b2c3", "user-1"), ("coverage:s3", "user-2"), ("layer:default", "")]
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


if __name__ == "__main__":
    json.dump(vectors(), sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")
