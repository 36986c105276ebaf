"""``python -m experiments.stats report|decide DATA.csv ...``: the report or the verdict as JSON on stdout.

    python -m experiments.stats report DATA.csv --control control \\
        --weights control=1,b=1 \\
        --metric converted:proportion gmv:mean gmv/orders:ratio \\
        --covariate gmv=pre_gmv [--cap gmv=99] [--segment platform] [--alpha 0.05]

    python -m experiments.stats decide DATA.csv --control control --weights control=1,dp=1,cohort=1 \\
        --metric gmv:mean opt_out:proportion --primary gmv \\
        --guardrail opt_out:0.005:lower --rule privacy_first --margin 0.05 \\
        --privacy-order dp,cohort,control --planned 12000 [--sequential] [--alpha 0.05]

    # CUPED++ (several covariates, post-stratification) and the Bayesian engine:
    python -m experiments.stats report DATA.csv --control control --weights control=1,b=1 \\
        --metric gmv:mean --covariate gmv=pre_gmv,pre_orders --strata age_band,platform \\
        --engine bayesian [--prior-mean 0 --prior-variance 0.01] \\
        [--lower-is-better-metrics opted_out] [--subject subject_id]

``DATA.csv`` has one row per exposed subject and an ``arm`` column (``-``
reads stdin). ``--metric`` and ``--covariate`` may be repeated or take several
values. Bad input prints a message on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import pandas as pd

from experiments.stats.bayesian import ENGINES
from experiments.stats.decide import DEFAULT_RISK_THRESHOLD, RULES, decide
from experiments.stats.frame import ARM_COLUMN, METRIC_TYPES, analyze
from experiments.stats.health import BIAS_THRESHOLD, SUSPICIOUS_UPLIFT

EXIT_BAD_INPUT = 2


class BadInput(Exception):
    pass


def _pairs(items: Sequence[str], what: str, example: str) -> dict[str, str]:
    result = {}
    for item in items:
        key, separator, value = item.partition("=")
        if not separator or not key or not value:
            raise BadInput(f"{what} must look like {example}, got {item!r}")
        if key in result:
            raise BadInput(f"{what} {key!r} is given twice")
        result[key] = value
    return result


def _weights(text: str) -> dict[str, float]:
    weights = {}
    for arm, value in _pairs(
        [part.strip() for part in text.split(",") if part.strip()], "--weights", "ARM=W,ARM=W"
    ).items():
        try:
            weights[arm] = float(value)
        except ValueError:
            raise BadInput(
                f"--weights: the weight of arm {arm!r} is not a number: {value!r}"
            ) from None
    if not weights:
        raise BadInput("--weights is empty")
    return weights


def _metrics(items: Sequence[str]) -> dict[str, str]:
    metrics = {}
    for item in items:
        name, separator, metric_type = item.rpartition(":")
        if not separator or not name or metric_type not in METRIC_TYPES:
            raise BadInput(
                f"--metric must look like COLUMN:{'|'.join(METRIC_TYPES)} "
                f"(a ratio as NUMERATOR/DENOMINATOR:ratio), got {item!r}"
            )
        if name in metrics:
            raise BadInput(f"--metric {name!r} is given twice")
        metrics[name] = metric_type
    return metrics


def _caps(items: Sequence[str]) -> dict[str, float]:
    caps = {}
    for metric, value in _pairs(items, "--cap", "METRIC=PERCENTILE").items():
        try:
            caps[metric] = float(value)
        except ValueError:
            raise BadInput(
                f"--cap: the percentile for {metric!r} is not a number: {value!r}"
            ) from None
    return caps


def _read(path: str, string_columns: list[str]) -> pd.DataFrame:
    source = sys.stdin if path == "-" else path
    try:
        # Arm and segment labels stay text ("01" is not 1).
        return pd.read_csv(source, dtype={column: str for column in string_columns})
    except FileNotFoundError:
        raise BadInput(f"no such file: {path}") from None
    except (
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        UnicodeDecodeError,
        IsADirectoryError,
        PermissionError,
    ) as error:
        raise BadInput(f"cannot read {path} as CSV: {error}") from None


def _covariates(items: Sequence[str]) -> dict[str, str | list[str]]:
    """``METRIC=COLUMN`` (classic CUPED) or ``METRIC=COLUMN,COLUMN`` (CUPED++)."""
    covariates: dict[str, str | list[str]] = {}
    for metric, value in _pairs(items, "--covariate", "METRIC=COLUMN[,COLUMN...]").items():
        columns = [column.strip() for column in value.split(",")]
        if not all(columns):
            raise BadInput(f"--covariate {metric}: empty column name in {value!r}")
        covariates[metric] = columns if len(columns) > 1 else columns[0]
    return covariates


def _columns(text: str | None, what: str) -> list[str] | None:
    if text is None:
        return None
    columns = [column.strip() for column in text.split(",")]
    if not all(columns):
        raise BadInput(f"{what}: empty column name in {text!r}")
    return columns


def _prior(mean: float | None, variance: float | None) -> dict[str, float] | None:
    if mean is None and variance is None:
        return None
    if mean is None or variance is None:
        raise BadInput("--prior-mean and --prior-variance go together")
    return {"mean": mean, "variance": variance}


def _guardrails(items: Sequence[str]) -> dict[str, dict]:
    guardrails: dict[str, dict] = {}
    for item in items:
        parts = item.rsplit(":", 2)
        if len(parts) != 3 or not parts[0] or parts[2] not in ("higher", "lower"):
            raise BadInput(
                f"--guardrail must look like METRIC:MARGIN:higher|lower (higher: higher is better), got {item!r}"
            )
        metric, margin, direction = parts
        if metric in guardrails:
            raise BadInput(f"--guardrail {metric!r} is given twice")
        try:
            value = float(margin)
        except ValueError:
            raise BadInput(f"--guardrail {metric!r}: the margin is not a number: {margin!r}") from None
        guardrails[metric] = {"margin": value, "higher_is_better": direction == "higher"}
    return guardrails


def _common_arguments(command: argparse.ArgumentParser) -> None:
    command.add_argument("data", help="CSV with one row per subject and an 'arm' column ('-' for stdin)")
    command.add_argument("--control", required=True, help="the control arm")
    command.add_argument("--weights", required=True, help="configured weights, e.g. control=1,b=1")
    command.add_argument(
        "--metric",
        required=True,
        action="extend",
        nargs="+",
        help="COLUMN:proportion|mean, or NUMERATOR/DENOMINATOR:ratio (repeatable)",
    )
    command.add_argument(
        "--covariate",
        action="extend",
        nargs="+",
        default=[],
        help="METRIC=COLUMN for CUPED, METRIC=COLUMN,COLUMN,... for CUPED++ (repeatable)",
    )
    command.add_argument("--cap", action="extend", nargs="+", default=[], help="METRIC=PERCENTILE, e.g. gmv=99")
    command.add_argument("--alpha", type=float, default=0.05, help="significance level (default 0.05)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments.stats", description="PrivacyLab stats engine"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser(
        "report", help="analyse per-subject rows and print the report as JSON"
    )
    _common_arguments(report)
    report.add_argument(
        "--segment", help="a column to report per segment (Benjamini–Hochberg across segments)"
    )
    report.add_argument(
        "--strata", help="post-stratify every metric on these columns (CUPED++), e.g. age_band,platform"
    )
    report.add_argument(
        "--engine", default="frequentist", help=f"one of {', '.join(ENGINES)} (default frequentist)"
    )
    report.add_argument(
        "--prior-mean", type=float, help="Bayesian: prior mean of the relative effect (e.g. 0)"
    )
    report.add_argument(
        "--prior-variance",
        type=float,
        help="Bayesian: prior variance of the relative effect (e.g. 0.01); without a prior it is flat",
    )
    report.add_argument(
        "--lower-is-better-metrics",
        help="Bayesian: metrics whose chance to win is a decrease, e.g. opted_out",
    )
    report.add_argument("--subject", help="a subject id column: enables the multiple-exposure check")
    report.add_argument(
        "--suspicious-uplift",
        type=float,
        default=SUSPICIOUS_UPLIFT,
        help=f"flag relative effects beyond this (default {SUSPICIOUS_UPLIFT})",
    )
    report.add_argument(
        "--bias-threshold",
        type=float,
        default=BIAS_THRESHOLD,
        help=f"flag pre-exposure imbalance at p below this (default {BIAS_THRESHOLD})",
    )
    verdict = commands.add_parser(
        "decide", help="apply a decision rule to per-subject rows and print the verdict as JSON"
    )
    _common_arguments(verdict)
    verdict.add_argument("--primary", required=True, help="the primary metric (one of --metric)")
    verdict.add_argument(
        "--guardrail", action="extend", nargs="+", default=[],
        help="METRIC:MARGIN:higher|lower, MARGIN the largest tolerated harm in the metric's unit (repeatable)",
    )
    verdict.add_argument("--rule", default="superiority", help=f"one of {', '.join(RULES)} (default superiority)")
    verdict.add_argument("--margin", type=float, help="largest tolerated relative loss of the primary, e.g. 0.05")
    verdict.add_argument("--privacy-order", help="every arm, most private first, e.g. dp,cohort,control")
    verdict.add_argument("--planned", type=int, help="planned subjects per arm (required unless --sequential)")
    verdict.add_argument("--sequential", action="store_true", help="always-valid tests, final at any look")
    verdict.add_argument(
        "--lower-is-better", action="store_true", help="the primary metric improves when it goes down"
    )
    verdict.add_argument(
        "--engine", default="frequentist", help=f"one of {', '.join(ENGINES)} (default frequentist)"
    )
    verdict.add_argument("--prior-mean", type=float, help="Bayesian: prior mean of the relative effect")
    verdict.add_argument("--prior-variance", type=float, help="Bayesian: prior variance of the relative effect")
    verdict.add_argument(
        "--risk-threshold", type=float, default=DEFAULT_RISK_THRESHOLD,
        help=f"Bayesian superiority: the largest tolerated risk of choosing an arm (default {DEFAULT_RISK_THRESHOLD})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        weights = _weights(args.weights)
        metrics = _metrics(args.metric)
        covariates = _covariates(args.covariate)
        caps = _caps(args.cap)
        segment = getattr(args, "segment", None)
        strata = _columns(getattr(args, "strata", None), "--strata")
        subject = getattr(args, "subject", None)
        text_columns = [ARM_COLUMN, *([segment] if segment else []), *(strata or [])]
        df = _read(args.data, text_columns + ([subject] if subject else []))
        if args.command == "decide":
            report = decide(
                df,
                control=args.control,
                weights=weights,
                metrics=metrics,
                primary=args.primary,
                covariates=covariates or None,
                guardrails=_guardrails(args.guardrail) or None,
                rule=args.rule,
                margin=args.margin,
                privacy_order=None if args.privacy_order is None
                else [arm.strip() for arm in args.privacy_order.split(",") if arm.strip()],
                planned_subjects_per_arm=args.planned,
                sequential=args.sequential,
                alpha=args.alpha,
                primary_higher_is_better=not args.lower_is_better,
                caps=caps or None,
                engine=args.engine,
                prior=_prior(args.prior_mean, args.prior_variance),
                risk_threshold=args.risk_threshold,
            )
        else:
            report = analyze(
                df,
                control=args.control,
                weights=weights,
                metrics=metrics,
                covariates=covariates or None,
                alpha=args.alpha,
                segment_by=segment,
                caps=caps or None,
                strata=strata,
                engine=args.engine,
                prior=_prior(args.prior_mean, args.prior_variance),
                lower_is_better=_columns(args.lower_is_better_metrics, "--lower-is-better-metrics")
                or [],
                subject_column=subject,
                suspicious_uplift=args.suspicious_uplift,
                bias_threshold=args.bias_threshold,
            )
    except (BadInput, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # allow_nan=False: a NaN reaching the output is a bug, and must fail loudly.
    print(json.dumps(report, indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
