"""The analysis of one run: the metric pipeline fed to the stats engine, as the snapshot's JSON document."""

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta

from django.core.exceptions import ValidationError

from config.jsonsafe import json_safe
from experiments.metrics.aggregate import MetricStatistics
from experiments.metrics.definitions import DESCRIPTIVE, METRICS, SEGMENT_DIMENSIONS
from experiments.metrics.pipeline import metric_statistics_compute
from experiments.models import (
    Experiment,
    ExperimentDecision,
    Guardrail,
    Metric,
    ResultSnapshot,
)
from experiments.privacy_ladder import experiment_privacy_order
from experiments.results.adjustment import (
    ADJUSTMENT_STRATA,
    adjusted_statistics,
    adjustment_summary,
)
from experiments.results.document import SnapshotDocument
from experiments.results.health import run_health, run_heterogeneity
from experiments.stats import (
    DECISION_VERSION,
    Decision,
    GuardrailRule,
    InsufficientDataError,
    Outcome,
    Statistic,
    analyze_statistics,
    bayesian_report,
    decide_statistics,
    difference_moments,
    noninferiority_test,
    sequential_test,
    srm_test,
)

SCHEMA_VERSION = ResultSnapshot.SCHEMA_VERSION
# The always-valid test is tuned (before any data) for this many subjects in two
# arms when the experiment does not say how many it plans per arm.
DEFAULT_TUNING_SAMPLE_SIZE = 10_000

Status = ResultSnapshot.Status


def _statistic_dict(statistic: Statistic) -> dict:
    fields = {name: getattr(statistic, name) for name in statistic.__dataclass_fields__}
    return {"type": type(statistic).__name__, **fields}


def _metric_catalog() -> dict:
    return {
        metric: {"label": Metric(metric).label, "kind": kind, "higher_is_better": higher}
        for metric, (kind, higher) in METRICS.items()
    }


def _feasible_metrics(
    arms: Mapping[str, Mapping[str, Statistic]], control: str
) -> tuple[list[str], list[dict]]:
    """Metrics every treatment arm can be compared on; the others with the reason."""
    included, skipped = [], []
    for metric in METRICS:
        reason = None
        for arm, metrics in arms.items():
            if arm == control:
                continue
            try:
                difference_moments(arms[control][metric], metrics[metric])
            except InsufficientDataError as error:
                reason = f"arm {arm!r}: {error}"
                break
        if reason is None:
            included.append(metric)
        else:
            skipped.append({"metric": metric, "reason": reason})
    return included, skipped


def _previous_minima(experiment: Experiment, phase: int, window_end: datetime) -> tuple[dict, dict]:
    """From the last earlier run: each guardrail's always-valid running minimum, and the decision's.

    Only those two parts of its document are read: the whole document runs to hundreds of
    kB at scale (17 segments), and reading and parsing it cost a run more than the analysis.
    """
    previous = (
        ResultSnapshot.objects.filter(experiment=experiment, phase=phase, window_end__lt=window_end)
        .order_by("-window_end")
        .values_list("schema_version", "data__guardrails", "data__decision")
        .first()
    )
    if previous is None or previous[0] not in ResultSnapshot.READABLE_SCHEMA_VERSIONS:
        return {}, {}
    schema_version, guardrails, decision = previous
    guardrail_minima = {
        (entry["metric"], entry["arm"]): entry["sequential"]["p_value"]
        for entry in guardrails or []
        if entry.get("sequential")
    }
    if schema_version < 2 or not decision or "version" not in decision:
        return guardrail_minima, {}
    if decision.get("frozen"):  # a frozen verdict carries the final run's tests; the latest look has the minima
        decision = decision.get("latest") or {}
    if "running_minima" in decision:  # carried over every run, those that could not test included
        return guardrail_minima, dict(decision["running_minima"] or {})
    decision_minima = Decision.from_dict(decision).running_minima() if decision.get("version") else {}
    return guardrail_minima, decision_minima


def _guardrails(
    experiment: Experiment,
    statistics: MetricStatistics,
    control: str,
    treatments: list[str],
    previous: dict,
) -> list[dict]:
    tuning = 2 * experiment.planned_subjects_per_arm if experiment.planned_subjects_per_arm else DEFAULT_TUNING_SAMPLE_SIZE
    entries = []
    for guardrail in Guardrail.objects.filter(experiment=experiment).order_by("metric"):
        higher_is_better = METRICS[guardrail.metric][1]
        for arm in treatments:
            control_statistic = statistics.arms[control][guardrail.metric]
            treatment_statistic = statistics.arms[arm][guardrail.metric]
            # A relative margin is a fraction of the control's value; the monitor's always-valid
            # test watches it in the metric's unit at this run's control mean.
            margin = guardrail.margin * abs(control_statistic.mean) if guardrail.relative else guardrail.margin
            harm = -margin if higher_is_better else margin
            entry = {
                "metric": guardrail.metric,
                "arm": arm,
                "margin": margin,
                "relative": guardrail.relative,
                "relative_margin": guardrail.margin if guardrail.relative else None,
                "higher_is_better": higher_is_better,
                "noninferiority": None,
                "sequential": None,
                "breached": False,
                "reason": "",
            }
            try:
                ni = noninferiority_test(
                    control_statistic,
                    treatment_statistic,
                    margin=guardrail.margin,
                    higher_is_better=higher_is_better,
                    alpha=experiment.alpha,
                    relative=guardrail.relative,
                )
                if margin == 0:
                    raise InsufficientDataError("a relative margin needs a non-zero control mean")
                seq = sequential_test(
                    control_statistic,
                    treatment_statistic,
                    tuning_sample_size=tuning,
                    alpha=experiment.alpha,
                    null_difference=harm,
                    previous_p_value=previous.get((guardrail.metric, arm), 1.0),
                )
            except InsufficientDataError as error:
                entry["reason"] = f"not testable yet: {error}"
                entries.append(entry)
                continue
            entry["noninferiority"] = ni.to_dict()
            entry["sequential"] = seq.to_dict()
            entry["breached"] = seq.harms_beyond(harm, higher_is_better=higher_is_better)
            label = Metric(guardrail.metric).label
            if entry["breached"]:
                low, high = seq.confidence_sequence
                entry["reason"] = (
                    f"{label} in arm {arm!r}: the always-valid {1 - experiment.alpha:.0%} interval "
                    f"[{low:+.4g}, {high:+.4g}] lies beyond the tolerated harm {harm:+.4g} "
                    f"(estimate {seq.estimate:+.4g}, p={seq.p_value:.3g})."
                )
            elif ni.noninferior:
                entry["reason"] = f"{label} in arm {arm!r} is non-inferior at margin {guardrail.margin:g}."
            else:
                entry["reason"] = (
                    f"{label} in arm {arm!r}: non-inferiority at margin {guardrail.margin:g} "
                    f"is not yet shown (p={ni.p_value:.3g})."
                )
            entries.append(entry)
    return entries


UNITS = {Metric.GMV: "IDR", Metric.AOV: "IDR"}


def _decision(
    experiment: Experiment,
    statistics: MetricStatistics,
    arms: list,
    srm,
    included: list[str],
    previous: dict,
) -> Decision:
    """The experiment's rule applied by the decision engine to this run's statistics (``previous``: the last run's minima)."""
    control = next(arm.key for arm in arms if arm.is_control)
    primary = experiment.primary_metric
    if primary not in included:
        raise InsufficientDataError(f"{Metric(primary).label} cannot be compared yet")
    sequential = experiment.testing_mode == Experiment.TestingMode.SEQUENTIAL
    guardrails = {
        guardrail.metric: GuardrailRule(
            metric=guardrail.metric, margin=guardrail.margin, higher_is_better=METRICS[guardrail.metric][1],
            relative=guardrail.relative,
        )
        for guardrail in Guardrail.objects.filter(experiment=experiment).order_by("metric")
        if guardrail.metric in included
    }
    runtime = (statistics.window_end - statistics.window_start).total_seconds() / 86_400
    return decide_statistics(
        {arm: {metric: by_metric[metric] for metric in included} for arm, by_metric in statistics.arms.items()},
        control=control,
        weights={arm.key: arm.weight for arm in arms},
        primary=primary,
        primary_higher_is_better=METRICS[primary][1],
        guardrails=guardrails,
        rule=experiment.decision_rule,
        margin=experiment.decision_margin,
        privacy_order=experiment_privacy_order(experiment=experiment, arms=arms),
        planned_subjects_per_arm=experiment.planned_subjects_per_arm,
        sequential=sequential,
        alpha=experiment.alpha,
        runtime_days=runtime,
        minimum_runtime_days=experiment.minimum_runtime_days,
        previous=previous,
        labels={metric: Metric(metric).label for metric in METRICS},
        kinds={metric: kind for metric, (kind, _) in METRICS.items()},
        units=UNITS,
        srm=srm,
        engine=experiment.analysis_engine,
        prior=experiment_prior(experiment=experiment),
    )


def experiment_prior(*, experiment: Experiment) -> dict | None:
    """The experiment's prior on the relative effect for the Bayesian engine; None: flat (or frequentist)."""
    if experiment.analysis_engine != Experiment.AnalysisEngine.BAYESIAN or experiment.prior_variance is None:
        return None
    return {"mean": experiment.prior_mean, "variance": experiment.prior_variance}


def _decision_dates(decision: Decision, statistics: MetricStatistics, experiment: Experiment) -> dict:
    """When the verdict can be expected, in dates (the engine counts days)."""
    progress = decision.progress
    earliest_runtime = statistics.window_start + timedelta(days=experiment.minimum_runtime_days)
    expected = None
    if progress is not None and progress.days_remaining is not None:
        expected = statistics.window_end + timedelta(days=progress.days_remaining)
    if decision.mode == "sequential":
        earliest = earliest_runtime
    elif expected is not None:
        earliest = max(expected, earliest_runtime)
    else:
        earliest = None
    return {
        "expected_date": None if expected is None else expected.isoformat(),
        "earliest_decision_date": None if earliest is None else earliest.isoformat(),
    }


def _unreadable_decision(experiment: Experiment, reason: str, *, srm) -> dict:
    """The decision document of a run whose primary metric cannot be analysed yet."""
    invalid = srm is not None and srm.flag
    summary = (
        f"Sample-ratio mismatch (p = {srm.p_value:.2g}): the arms did not get the traffic their weights promise, so "
        "no effect can be trusted; fix the assignment or exposure logging before deciding."
        if invalid
        else f"Keep running: {reason}."
    )
    return {
        "version": DECISION_VERSION,
        "outcome": Outcome.INVALID if invalid else Outcome.CONTINUE,
        "arm": None,
        "final": False,
        "rule": experiment.decision_rule,
        "mode": experiment.testing_mode,
        "alpha": experiment.alpha,
        "primary_metric": experiment.primary_metric,
        "primary_higher_is_better": METRICS[experiment.primary_metric][1],
        "margin": experiment.decision_margin,
        "privacy_order": [],
        "summary": summary,
        "rule_text": "",
        "reasons": [],
        "tests": [],
        "progress": None,
        "guardrails": [],
    }


def _frozen(experiment: Experiment, phase: int, window_end: datetime, current: dict) -> dict:
    """This run's decision, or the phase's final verdict when an earlier run made one."""
    final = (
        ExperimentDecision.objects.filter(experiment=experiment, phase=phase, window_end__lt=window_end)
        .values("document", "window_end")
        .first()
    )
    if final is None:
        return current
    return {**final["document"], "frozen": True, "final_since": final["window_end"].isoformat(), "latest": current}


def results_document(
    *, experiment: Experiment, as_of: datetime | None = None, source=None
) -> tuple[str, dict, MetricStatistics]:
    """The snapshot's status and JSON document for the window ending at ``as_of`` (nothing stored).

    ``source``: a ``experiments.warehouse.ResolvedSource`` to read the outcomes from
    (default: the experiment's data source; none: the built-in pipeline). Raises
    ``WarehouseError`` when the source cannot answer.
    """
    from experiments.warehouse import source_resolve

    source = source or source_resolve(experiment=experiment)
    if source is None:
        statistics = metric_statistics_compute(experiment=experiment, as_of=as_of)
    else:
        statistics = source.statistics(experiment=experiment, as_of=as_of)
    arms = list(experiment.arms.select_related("treatment").order_by("id"))
    control_arm = next((arm for arm in arms if arm.is_control), None)
    if control_arm is None:
        raise ValidationError(f"Experiment {experiment.key!r} has no control arm.")
    control = control_arm.key
    treatments = [arm.key for arm in arms if not arm.is_control]
    weights = {arm.key: arm.weight for arm in arms}
    subjects = {arm.key: statistics.subjects.get(arm.key, 0) for arm in arms}
    measured = statistics  # as the pipeline returned it: the snapshot's "statistics" keep these sums
    if subjects.get(control) and all(subjects.values()):
        # Each metric with its variance adjustment (CUPED++ where identified), segments too; the
        # decision, the guardrails and the reports all read these.
        overall, adjustments = adjusted_statistics(statistics=statistics, control=control)
        like = {metric: type(statistic) for metric, statistic in overall[control].items()}
        statistics = replace(
            statistics,
            arms=overall,
            segments={
                label: adjusted_statistics(statistics=statistics, control=control, segment=label, like=like)[0]
                for label in statistics.segments
            },
        )
    else:
        adjustments = {}
    document = SnapshotDocument(
        schema_version=SCHEMA_VERSION,
        experiment={
            "key": experiment.key,
            "name": experiment.name,
            "phase": experiment.phase,
            "primary_metric": experiment.primary_metric,
            "alpha": experiment.alpha,
        },
        window={"start": statistics.window_start.isoformat(), "end": statistics.window_end.isoformat()},
        # Where the outcomes were read (absent: the built-in database, as before data sources).
        source=None if source is None else source.describe(),
        engine=experiment.analysis_engine,
        # Present only when they apply: a data source's name, the Bayesian engine's report.
        absent=frozenset({"bayesian_report"} | (set() if source is not None else {"source"})),
        settings={
            "gmv_cap_percentile": statistics.gmv_cap_percentile,
            "gmv_cap": statistics.gmv_cap,
            "order_cap": statistics.order_cap,
            "pre_exposure_days": statistics.pre_exposure_days,
            "cuped": statistics.pre_exposure_days > 0,
            "segment_dimensions": list(SEGMENT_DIMENSIONS),
            # CUPED++ (schema 5): what each metric may be adjusted for; "adjustment" says what it was.
            "covariates": list(statistics.covariates) if statistics.cells else (
                ["pre_gmv"] if statistics.pre_exposure_days > 0 else []
            ),
            "strata": list(ADJUSTMENT_STRATA) if statistics.cells else [],
            "suspicious_uplift": experiment.suspicious_uplift,
        },
        adjustment=adjustment_summary(adjustments) if adjustments else None,
        arms=[
            {
                "key": arm.key,
                "treatment": arm.treatment.name,
                "personalization_level": arm.treatment.personalization_level,
                "consent_prompt": arm.treatment.consent_prompt,
                "is_control": arm.is_control,
                "weight": arm.weight,
                "subjects": subjects[arm.key],
            }
            for arm in arms
        ],
        metrics=_metric_catalog(),
        # The pipeline's single-covariate statistics, as before schema 5 (re-analysable as they
        # were; the CUPED++ cells are not stored: "adjustment" says what each metric used).
        statistics={
            arm: {metric: _statistic_dict(statistic) for metric, statistic in metrics.items()}
            for arm, metrics in measured.arms.items()
        },
        # Shown per arm, never tested nor part of the decision (experiments.metrics.DESCRIPTIVE).
        descriptive={
            name: {**DESCRIPTIVE[name], "arms": by_arm} for name, by_arm in statistics.descriptive.items()
        },
        # Per arm, the order value bought after a recommendation click and all of it (not tested).
        recommendation_gmv=statistics.recommendation_gmv,
    )
    total = sum(subjects.values())
    if total == 0:
        document = document.with_values(
            status=Status.NO_EXPOSURES, message="No subject has been exposed to this experiment in the window yet."
        )
        return Status.NO_EXPOSURES, json_safe(document.to_dict()), measured
    srm = srm_test(subjects, weights)
    document = document.with_values(srm=srm.to_dict())
    empty = [arm for arm, n in subjects.items() if n == 0]
    if empty:
        document = document.with_values(
            status=Status.ARM_WITHOUT_EXPOSURES,
            message=(
                f"Arm(s) {', '.join(empty)} have no exposed subjects yet, so no comparison is possible "
                f"(sample-ratio test p={srm.p_value:.3g})."
            ),
        )
        return Status.ARM_WITHOUT_EXPOSURES, json_safe(document.to_dict()), measured
    included, skipped = _feasible_metrics(statistics.arms, control)
    document = document.with_values(skipped_metrics=skipped)
    if included:
        report = analyze_statistics(
            {arm: {metric: metrics[metric] for metric in included} for arm, metrics in statistics.arms.items()},
            control=control,
            weights=weights,
            alpha=experiment.alpha,
            primary=experiment.primary_metric if experiment.primary_metric in included else None,
            segments={
                label: {arm: {metric: metrics[metric] for metric in included} for arm, metrics in by_arm.items()}
                for label, by_arm in statistics.segments.items()
            },
        )
        document = document.with_values(
            report=report.to_dict(),
            heterogeneity=run_heterogeneity(
                report=report, experiment=experiment, statistics=statistics, control=control, weights=weights,
                included=included, source=source,
            ),
            health=run_health(
                statistics={arm: {metric: metrics[metric] for metric in included} for arm, metrics in statistics.arms.items()},
                report=report,
                control=control,
                experiment=experiment,
                source=source,
            ),
        )
        if experiment.analysis_engine == Experiment.AnalysisEngine.BAYESIAN:
            # Additive: "report" stays the frequentist one the pages and older snapshots read.
            document = document.with_values(
                bayesian_report=bayesian_report(
                    {arm: {metric: metrics[metric] for metric in included} for arm, metrics in statistics.arms.items()},
                    control=control,
                    weights=weights,
                    alpha=experiment.alpha,
                    prior=experiment_prior(experiment=experiment),
                    lower_is_better=[metric for metric in included if not METRICS[metric][1]],
                ).to_dict()
            )
    else:
        document = document.with_values(
            message="No metric can be compared yet: " + "; ".join(s["reason"] for s in skipped)
        )
    previous_guardrails, previous_decision = _previous_minima(experiment, statistics.phase, statistics.window_end)
    document = document.with_values(
        guardrails=_guardrails(experiment, statistics, control, treatments, previous_guardrails)
    )
    try:
        decision = _decision(experiment, statistics, arms, srm, included, previous_decision)
    except InsufficientDataError as error:
        current = _unreadable_decision(experiment, str(error), srm=srm)
        minima = previous_decision
    else:
        current = decision.with_extra(**_decision_dates(decision, statistics, experiment)).to_dict()
        minima = {**previous_decision, **decision.running_minima()}
    # Carried over every run, a run that could not test (a sample-ratio mismatch, a metric not yet
    # comparable) included: the always-valid tests' evidence is never lost between runs.
    current["running_minima"] = minima if experiment.testing_mode == Experiment.TestingMode.SEQUENTIAL else {}
    document = document.with_values(
        decision=_frozen(experiment, statistics.phase, statistics.window_end, current), status=Status.OK
    )
    return Status.OK, json_safe(document.to_dict()), measured
