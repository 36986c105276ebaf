"""``python -m experiments.stats report``: JSON on stdout, exit 2 with a message on bad input."""

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from experiments.stats import analyze
from experiments.stats.__main__ import main

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def csv_path(tmp_path):
    rng = np.random.default_rng(1)
    n = 1200
    arm = rng.choice(["control", "b", "c"], n)
    pre = rng.gamma(2.0, 50.0, n)
    df = pd.DataFrame(
        {
            "arm": arm,
            "converted": (rng.random(n) < 0.2).astype(int),
            "gmv": 0.5 * pre + rng.gamma(2.0, 30.0, n),
            "pre_gmv": pre,
            "orders": rng.poisson(2.0, n) + 1,
            "platform": rng.choice(["android", "ios"], n),
        }
    )
    path = tmp_path / "data.csv"
    df.to_csv(path, index=False)
    return path


def test_cli_prints_the_same_report_as_analyze(csv_path, capsys):
    code = main(
        [
            "report",
            str(csv_path),
            "--control",
            "control",
            "--weights",
            "control=1,b=1,c=1",
            "--metric",
            "converted:proportion",
            "gmv:mean",
            "--metric",
            "gmv/orders:ratio",
            "--covariate",
            "gmv=pre_gmv",
            "--alpha",
            "0.1",
            "--segment",
            "platform",
            "--cap",
            "gmv=99",
        ]
    )
    captured = capsys.readouterr()
    assert code == 0 and captured.err == ""
    printed = json.loads(captured.out)
    expected = analyze(
        pd.read_csv(csv_path, dtype={"arm": str, "platform": str}),
        control="control",
        weights={"control": 1.0, "b": 1.0, "c": 1.0},
        metrics={"converted": "proportion", "gmv": "mean", "gmv/orders": "ratio"},
        covariates={"gmv": "pre_gmv"},
        alpha=0.1,
        segment_by="platform",
        caps={"gmv": 99.0},
    )
    assert printed == json.loads(json.dumps(expected))
    assert [c["metric"] for c in printed["comparisons"]][:3] == ["converted", "gmv", "gmv/orders"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--weights", "control=1,b=x"], "not a number"),
        (["--weights", "control1,b=1"], "ARM=W"),
        (["--metric", "gmv"], "COLUMN:"),
        (["--metric", "gmv:median"], "COLUMN:"),
        (["--metric", "nope:mean"], "column 'nope' is not in the data"),
        (["--covariate", "gmv"], "METRIC=COLUMN"),
        (["--control", "zzz"], "not among the weighted arms"),
        (["--weights", "control=1,b=1"], r"arms \['c'\] have statistics but no configured weight"),
        (["--alpha", "2"], "alpha"),
        (["--cap", "gmv=high"], "not a number"),
    ],
)
def test_cli_bad_input_exits_2_with_a_message(csv_path, capsys, arguments, message):
    defaults = {"--control": "control", "--weights": "control=1,b=1,c=1", "--metric": "gmv:mean"}
    argv = ["report", str(csv_path)]
    overridden = dict(zip(arguments[::2], arguments[1::2], strict=True))
    for flag, value in (defaults | overridden).items():
        argv += [flag, value]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert re.search(message, captured.err)


def test_cli_missing_file_and_garbage_exit_2(tmp_path, capsys):
    assert (
        main(
            [
                "report",
                str(tmp_path / "absent.csv"),
                "--control",
                "a",
                "--weights",
                "a=1,b=1",
                "--metric",
                "x:mean",
            ]
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert (
        main(["report", str(empty), "--control", "a", "--weights", "a=1,b=1", "--metric", "x:mean"])
        == 2
    )
    assert "cannot read" in capsys.readouterr().err


def test_cli_as_a_process_exits_2_and_loads_no_django(csv_path):
    # The real entry point (``raise SystemExit(main())``) once, under
    # ``-X importtime`` so the same run shows that the CLI path imports nothing
    # from Django or the apps. The success path is the in-process test above.
    command = [
        sys.executable,
        "-X",
        "importtime",
        "-m",
        "experiments.stats",
        "report",
        str(csv_path),
        "--control",
        "control",
        "--weights",
        "control=1,b=1,c=1",
        "--metric",
        "gmv:proportion",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    messages = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert messages == ["error: proportion metric 'gmv': column 'gmv' must be 0/1"]
    imported = {
        line.rsplit("|", 1)[-1].strip()
        for line in result.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "experiments.stats.frame" in imported
    forbidden = {
        name
        for name in imported
        if name.split(".")[0]
        in ("django", "rest_framework", "celery", "config", "consent", "recommender")
    }
    assert forbidden == set()


def test_cli_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["report"])
    assert exit_info.value.code == 2
    assert "required" in capsys.readouterr().err


def _base(csv_path):
    return [
        "report",
        str(csv_path),
        "--control",
        "control",
        "--weights",
        "control=1,b=1,c=1",
        "--metric",
        "gmv:mean",
        "gmv/orders:ratio",
    ]


def test_cli_bayesian_cuped_plus_plus_prints_the_same_report_as_analyze(csv_path, capsys):
    code = main(
        [
            *_base(csv_path),
            "--covariate",
            "gmv=pre_gmv,orders",
            "gmv/orders=pre_gmv",
            "--strata",
            "platform",
            "--engine",
            "bayesian",
            "--prior-mean",
            "0",
            "--prior-variance",
            "0.04",
        ]
    )
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    expected = analyze(
        pd.read_csv(csv_path, dtype={"arm": str, "platform": str}),
        control="control",
        weights={"control": 1, "b": 1, "c": 1},
        metrics={"gmv": "mean", "gmv/orders": "ratio"},
        covariates={"gmv": ["pre_gmv", "orders"], "gmv/orders": "pre_gmv"},
        strata=["platform"],
        engine="bayesian",
        prior={"mean": 0.0, "variance": 0.04},
    )
    assert printed == json.loads(json.dumps(expected))
    assert printed["engine"] == "bayesian" and printed["comparisons"][0]["adjusted_for"] == {
        "covariates": ["pre_gmv", "orders"],
        "strata": ["platform"],
    }


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--engine", "bayes"], "engine must be one of"),
        (["--engine", "bayesian", "--prior-mean", "0", "--prior-variance", "0"], "prior variance"),
        (["--engine", "bayesian", "--prior-mean", "0"], "--prior-mean and --prior-variance"),
        (["--covariate", "gmv=pre_gmv,nope"], "covariates: metric 'gmv': column 'nope'"),
        (["--strata", "nope"], "strata: column 'nope'"),
        (["--strata", "platform,"], "--strata: empty column name"),
        (["--subject", "nope"], "subject_column"),
    ],
)
def test_cli_second_generation_bad_input_exits_2(csv_path, capsys, arguments, message):
    assert main([*_base(csv_path), *arguments]) == 2
    assert message in capsys.readouterr().err
