"""The facts refresh: brings an experiment's stored per-exposure facts up to the analysis time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from consent.models import Purpose, Subject
from consent.selectors import purpose_rules_load
from experiments.metrics.planner import AVOID_JOINS, refresh_form_plan
from experiments.metrics.sql import RESTRICTED_FACTS_SQL, refresh_statements, table_name
from experiments.models import Experiment, Exposure, MetricFacts, MetricFactsState, MetricOrderFacts

# How long a writing transaction may stay open: rows stored this long before a
# refresh began and committed after it are still found by the next refresh.
LATE_MARGIN = timedelta(minutes=settings.PRIVACYLAB_METRICS_LATE_MARGIN_MINUTES)


def personalization_counting_notices(*, at: datetime, using: str = "default") -> list[int]:
    """The personalization notices whose grants count at ``at`` (the consent service's own rule)."""
    rule = purpose_rules_load(using=using).get(Purpose.PERSONALIZATION)
    return sorted(rule.counting_notice_ids(at)) if rule is not None else []


@dataclass(frozen=True)
class FactsRefresh:
    """What ``metric_facts_refresh`` did: ``rebuilt`` every exposure's facts, or ``updated`` the changed ones."""

    kind: str
    exposures: int  # rows written


def metric_facts_refresh(
    *,
    experiment: Experiment,
    window_start: datetime,
    window_end: datetime,
    pre_exposure_days: int,
    now: datetime | None = None,
    using: str = "default",
) -> FactsRefresh:
    """Bring the experiment's stored per-exposure facts to the window ``[window_start, window_end)``.

    The facts of an exposure are everything the metrics need of its subject
    (orders, GMV and the pre-exposure GMV, impressions, clicks, consent
    decisions, the segment attributes) counted up to the cutoff
    ``window_end``. A refresh to a later cutoff rewrites only the exposures
    whose facts can differ: exposed since the previous cutoff, or whose
    subject has events or decisions that happened in between or were stored
    since the previous refresh began (less ``LATE_MARGIN``, for transactions
    still open then). Anything else (an earlier cutoff, another phase,
    window start or pre-exposure window) rebuilds every exposure's facts.
    One statement either way, in the caller's transaction, with the
    experiment's facts locked: concurrent runs take turns, and a run that
    dies leaves the previous facts as they were.
    """
    connection = connections[using]
    # Before anything is read: the next refresh looks back from here. (``now`` replays
    # runs at other times, as the benchmark's scheduled runs 15 minutes apart.)
    began = now or timezone.now()
    with transaction.atomic(using=using):
        state, _ = (
            MetricFactsState.objects.using(using).select_for_update().get_or_create(experiment_id=experiment.pk)
        )
        counting = personalization_counting_notices(at=window_end, using=using)
        incremental = (
            state.cutoff is not None
            and state.refreshed_at is not None
            and state.counting_notices is not None
            and state.phase == experiment.phase
            and state.window_start == window_start
            and state.pre_exposure_days == pre_exposure_days
            and state.cutoff <= window_end
        )
        adapt = connection.ops.adapt_datetimefield_value
        params = {
            "experiment_id": experiment.pk,
            "phase": experiment.phase,
            "window_start": adapt(window_start),
            "window_end": adapt(window_end),
            "pre_window": timedelta(days=pre_exposure_days),
            "pre_window_us": pre_exposure_days * 86_400 * 1_000_000,
            "purpose": Purpose.PERSONALIZATION,
        }
        if incremental:
            params["previous_cutoff"] = adapt(state.cutoff)
            params["stored_since"] = adapt(state.refreshed_at - LATE_MARGIN)
            form = "indexed"  # a few subjects: through their indexes
        else:
            MetricFacts.objects.using(using).filter(experiment_id=experiment.pk).delete()
            MetricOrderFacts.objects.using(using).filter(experiment_id=experiment.pk).delete()
            form = refresh_form_plan(experiment=experiment, using=using)
        statements = refresh_statements(
            form=form,
            incremental=incremental,
            params=params,
            using=using,
            counting_notices=counting,
            changed_notices=set(state.counting_notices or ()) ^ set(counting) if incremental else set(),
        )
        with connection.cursor() as cursor:
            # Each form is one kind of join by design; the planner's estimates of how many
            # exposures changed, or of fresh, unanalysed tables (a simulation just loaded),
            # can mislead it into the other: a hash join over every event for a few
            # changed exposures, or a quadratic nested loop over the per-exposure aggregate.
            avoid = AVOID_JOINS[form] if connection.vendor == "postgresql" else ()
            for setting in avoid:
                cursor.execute("SELECT set_config(%s, 'off', true)", [setting])
            (sql, positional), *orders = statements
            cursor.execute(sql, positional)
            written = cursor.rowcount
            if written < 0 and connection.vendor == "sqlite":  # its driver counts no WITH … INSERT
                cursor.execute("SELECT changes()")
                written = cursor.fetchone()[0]
            for sql, positional in orders:
                cursor.execute(sql, positional)
            for setting in avoid:
                cursor.execute("SELECT set_config(%s, 'on', true)", [setting])
            for table in (MetricFacts, MetricOrderFacts):
                cursor.execute(
                    RESTRICTED_FACTS_SQL.format(
                        facts_table=table_name(connection, table),
                        subject=table_name(connection, Subject),
                        subject_pk=connection.ops.quote_name(Subject._meta.pk.column),
                        exposure=table_name(connection, Exposure),
                    ),
                    [experiment.pk],
                )
        state.phase = experiment.phase
        state.window_start = window_start
        state.cutoff = window_end
        state.pre_exposure_days = pre_exposure_days
        state.refreshed_at = began
        state.counting_notices = counting
        state.save(using=using)
    return FactsRefresh(kind="updated" if incremental else "rebuilt", exposures=max(written, 0))
