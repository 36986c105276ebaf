"""The metric pipeline: per-arm and per-segment sufficient statistics, computed in the database.

For one experiment, a few SQL statements (PostgreSQL or SQLite) in one
transaction: the *refresh* brings the stored per-exposure facts
(``MetricFacts``: what the metrics need of each exposed subject, read from the
exposures, the outcome events and the consent ledger; and ``MetricOrderFacts``,
the amounts of the orders they count) up to the analysis time, rewriting only
the exposures whose data changed since the last run (or whose consent lapsed); the
*aggregate* returns, per arm and per segment, the counts, sums, sums of
squares and cross-products the stats engine needs (``experiments.stats``).
No per-subject row ever reaches Python: the aggregate returns one row per
(dimension, value, arm).

Per exposed subject of the current phase, counting from the subject's first
exposure up to the analysis time ``as_of`` (docs/metrics.md has the details):

============  ===========================================================  ==================
metric        per-subject value                                            statistic
============  ===========================================================  ==================
conversion    placed ≥ 1 order                                             proportion
opt_out       withdrew personalization after exposure while holding a      proportion
              grant (the previous decision is a grant, not expired then)
consent_rate  holds a valid personalization grant at ``as_of``: the last   proportion
              decision (before or after exposure) is a grant, not
              expired, under a notice version that still counts
gmv           Σ order amounts (IDR), capped at ``gmv_cap_percentile`` of   mean, CUPED with
              the buyers' GMV; covariate: GMV in ``pre_exposure_days``     the pre-exposure
              before first exposure (capped alike)                          GMV
orders        number of orders                                             mean
aov           Σ order amounts, each capped at the percentile of the        ratio (delta)
              orders' amounts, / Σ orders
ctr           Σ recommendation clicks / Σ impressions                      ratio (delta)
============  ===========================================================  ==================

Descriptive only (``DESCRIPTIVE``, never tested): withdrawals among the
subjects who held a grant after exposure, which conditions on a
post-treatment outcome.

Segments: ``age_band``, ``province`` and ``platform`` of the subject, and
``customer`` = ``returning`` when the subject ordered in the pre-exposure
window, else ``new``. Subjects with a blank attribute fall in ``unknown``.

Public API::

    stats = metric_statistics(experiment=experiment, as_of=now)
    stats.arms        # {arm_key: {metric: Statistic}}          overall
    stats.segments    # {"platform=ios": {arm_key: {metric: Statistic}}, ...}
    stats.gmv_cap     # the cap the database computed (None: no cap / no buyers)
    stats.order_cap   # the cap of each order in the AOV (None: no cap / no orders)
    stats.descriptive # {"withdrawals_among_granted": {arm: {granted, withdrew, ratio}}}
    frame = metric_facts_frame(experiment=experiment, as_of=now)  # the notebook path

    refresh = metric_facts_refresh(experiment=…, window_start=…, window_end=…, pre_exposure_days=…)
    sql, params = metric_statistics_sql(experiment=experiment)  # the aggregate over the facts
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from consent.models import ConsentEvent, Purpose, Subject
from consent.selectors import purpose_rules_load
from experiments.models import (
    Arm,
    Experiment,
    Exposure,
    Metric,
    MetricFacts,
    MetricFactsState,
    MetricOrderFacts,
    OutcomeEvent,
)
from experiments.stats import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
    Statistic,
)

SEGMENT_DIMENSIONS = ("age_band", "province", "platform", "customer")
UNKNOWN_SEGMENT = "unknown"
QUERY_MARKER = "privacylab:metric-statistics"  # find the statement in pg_stat_activity / logs
PLAN_MARKER = "privacylab:metric-shape"  # the two small reads that choose the statement's form
REFRESH_MARKER = "privacylab:metric-facts-refresh"  # the statement that writes the per-exposure facts
ORDERS_MARKER = "privacylab:metric-order-facts"  # the statements that rewrite the exposures' orders
# PostgreSQL work_mem for the metric statement (SET LOCAL: this transaction only).
METRICS_WORK_MEM = getattr(settings, "PRIVACYLAB_METRICS_WORK_MEM", "64MB")
# Above this share of all subjects exposed, the streamed form of the statement wins.
STREAM_SHARE = getattr(settings, "PRIVACYLAB_METRICS_STREAM_SHARE", 0.3)
# How long a writing transaction may stay open: rows stored this long before a
# refresh began and committed after it are still found by the next refresh.
LATE_MARGIN = timedelta(minutes=getattr(settings, "PRIVACYLAB_METRICS_LATE_MARGIN_MINUTES", 15))

# Metric key → (statistic kind, higher is better). The order is the report's order.
METRICS: dict[str, tuple[str, bool]] = {
    Metric.CONVERSION: ("proportion", True),
    Metric.OPT_OUT: ("proportion", False),
    Metric.CONSENT_RATE: ("proportion", True),
    Metric.GMV: ("mean", True),
    Metric.ORDERS: ("mean", True),
    Metric.AOV: ("ratio", True),
    Metric.CTR: ("ratio", True),
}

# The aggregate columns of every output row, in SELECT order.
_SUMS = (
    "n",
    "converted",
    "opted_out",
    "consented",
    "granted",
    "gmv_sum",
    "gmv_ss",
    "pre_sum",
    "pre_ss",
    "gmv_pre",
    "orders_sum",
    "orders_ss",
    "aov_sum",
    "aov_ss",
    "aov_orders",
    "impressions_sum",
    "impressions_ss",
    "clicks_sum",
    "clicks_ss",
    "clicks_impressions",
)


@dataclass(frozen=True)
class MetricStatistics:
    """The pipeline's answer for one experiment at one analysis time."""

    experiment_id: int
    phase: int
    window_start: datetime
    window_end: datetime
    gmv_cap_percentile: float | None
    gmv_cap: float | None
    order_cap: float | None  # the cap of each order's amount in the average order value
    pre_exposure_days: int
    arms: dict[str, dict[str, Statistic]]
    segments: dict[str, dict[str, dict[str, Statistic]]]
    sums: dict[str, dict[str, float]] = field(repr=False)  # overall raw sums per arm (for tests, the docs)
    refresh: FactsRefresh | None = field(default=None, repr=False)  # what the run did to the stored facts

    @property
    def subjects(self) -> dict[str, int]:
        return {arm: int(self.sums[arm]["n"]) for arm in self.sums}

    @property
    def descriptive(self) -> dict[str, dict[str, dict]]:
        """Descriptive ratios, never tested (``DESCRIPTIVE``): per arm the counts and the ratio."""
        return {
            "withdrawals_among_granted": {
                arm: withdrawals_among_granted(granted=sums["granted"], withdrew=sums["opted_out"])
                for arm, sums in self.sums.items()
            }
        }


# Descriptive ratios: shown per arm, outside every test and decision. Withdrawals among the
# subjects who granted conditions on a post-treatment outcome (whether a subject granted
# depends on the arm's prompt), so a difference between arms mixes who grants with how
# often they withdraw: it describes, it does not estimate an effect.
DESCRIPTIVE: dict[str, dict[str, str]] = {
    "withdrawals_among_granted": {
        "label": "Withdrawals among subjects who granted",
        "numerator": "subjects who opted out",
        "denominator": "subjects who held a personalization grant after exposure",
        "caveat": "Conditioned on a post-treatment outcome (granting): descriptive only, not tested, "
        "not an effect of the arm.",
    }
}


def withdrawals_among_granted(*, granted: float, withdrew: float) -> dict:
    granted, withdrew = int(granted), int(withdrew)
    return {"granted": granted, "withdrew": withdrew, "ratio": withdrew / granted if granted else None}


def _named_to_positional(sql: str, params: dict) -> tuple[str, list]:
    """``%(name)s`` → ``%s`` with a parameter list, so one query text serves both backends."""
    ordered: list = []

    def take(match: re.Match) -> str:
        ordered.append(params[match.group(1)])
        return "%s"

    return re.sub(r"%\((\w+)\)s", take, sql), ordered


_SQLITE_PERCENTILE = """{name}_values AS MATERIALIZED (SELECT {value} AS v {source}),
    {name}_rank AS (
        SELECT (COUNT(*) - 1) * %(cap_percentile)s AS h, COUNT(*) AS k FROM {name}_values
    ),
    {name} AS (
        SELECT CASE WHEN %(cap_percentile)s IS NULL OR k = 0 THEN NULL ELSE
            lo + (h - CAST(h AS INTEGER)) * (COALESCE(hi, lo) - lo) END AS cap
        FROM (
            SELECT h, k,
                (SELECT v FROM {name}_values ORDER BY v LIMIT 1 OFFSET (SELECT CAST(h AS INTEGER) FROM {name}_rank)) AS lo,
                (SELECT v FROM {name}_values ORDER BY v LIMIT 1 OFFSET (SELECT CAST(h AS INTEGER) + 1 FROM {name}_rank)) AS hi
            FROM {name}_rank
        )
    )"""


def _percentile_cte(vendor: str, *, name: str, value: str, source: str) -> str:
    """``name AS (SELECT … AS cap)``: the ``%(cap_percentile)s`` percentile of ``value`` over ``source``.

    PostgreSQL: ``percentile_cont``. SQLite: the same by hand, still in the
    database: with h = p·(N − 1), the value at ⌊h⌋ plus the fraction of the
    step to the next (``ORDER BY … OFFSET``). NULL without a percentile or rows.
    """
    if vendor == "postgresql":
        return (
            f"{name} AS (SELECT CASE WHEN CAST(%(cap_percentile)s AS double precision) IS NULL THEN NULL ELSE "
            f"percentile_cont(CAST(%(cap_percentile)s AS double precision)) WITHIN GROUP (ORDER BY {value}) "
            f"END AS cap {source})"
        )
    return _SQLITE_PERCENTILE.format(name=name, value=value, source=source)


def _vendor_snippets(vendor: str) -> dict[str, str]:
    if vendor == "postgresql":
        return {
            "pre_start": "e.first_exposed_at - %(pre_window)s",
            "float": "double precision",
            "consent_purpose": "c.purpose_id",
        }
    if vendor == "sqlite":
        return {
            # Django's own SQLite function, exact to the microsecond in its storage format.
            "pre_start": "django_format_dtdelta('-', e.first_exposed_at, %(pre_window_us)s)",
            "float": "REAL",
            # Unary plus keeps SQLite's planner off the (purpose, time) index, which would
            # scan every decision of the window per exposure, and on (subject, purpose).
            "consent_purpose": "+c.purpose_id",
        }
    raise NotImplementedError(f"the metric pipeline supports PostgreSQL and SQLite, not {vendor}")


_SQL = """/* {marker} */
WITH
{cap},
{order_cap},
per_subject AS (
    SELECT arm_id, age_band, province, platform, customer, orders, gmv, pre_gmv, impressions, clicks,
        opted_out, consented, granted
    FROM {facts_table}
    WHERE experiment_id = %(experiment_id)s
    -- A fixed order makes every floating-point sum below add up in the same order on
    -- every run (the (experiment, exposure) index delivers it: no sort, one pass).
    ORDER BY exposure_id
),
capped AS (
    SELECT p.arm_id, p.age_band, p.province, p.platform, p.customer, p.orders, p.impressions, p.clicks,
        p.opted_out, p.consented, p.granted,
        CASE WHEN p.orders > 0 THEN 1 ELSE 0 END AS converted,
        CASE WHEN cap.cap IS NULL OR p.gmv <= cap.cap THEN p.gmv ELSE cap.cap END AS gmv,
        CASE WHEN cap.cap IS NULL OR p.pre_gmv <= cap.cap THEN p.pre_gmv ELSE cap.cap END AS pre_gmv,
        p.gmv AS raw_gmv
    FROM per_subject p CROSS JOIN cap
),
excess AS (
    -- The average order value caps each order: per exposure, what its orders above the
    -- order cap exceed it by (a few exposures, read from the top of the amounts' index).
    SELECT o.exposure_id, SUM(o.amount - order_cap.cap) AS excess
    FROM order_cap JOIN {order_facts} o ON o.experiment_id = %(experiment_id)s AND o.amount > order_cap.cap
    GROUP BY o.exposure_id
),
corrections AS (
    SELECT f.arm_id, f.age_band, f.province, f.platform, f.customer, x.excess, f.gmv AS raw_gmv, f.orders
    FROM excess x JOIN {facts_table} f ON f.exposure_id = x.exposure_id
    ORDER BY f.exposure_id
),
cells AS (
    -- One pass over the subjects into the cells arm × every segment dimension (a few
    -- hundred rows); the per-arm and per-segment sums below add up cells. The sums of
    -- the order-capped GMV start from the uncapped GMV, and the few capped orders'
    -- corrections are added as cells of their own:
    -- Σ(g − e) = Σg − Σe, Σ(g − e)² = Σg² + Σ(e² − 2ge), Σ(g − e)·n = Σg·n − Σe·n.
    SELECT arm_id, age_band, province, platform, customer, {cell_aggregates}
    FROM capped
    GROUP BY arm_id, age_band, province, platform, customer
    UNION ALL
    SELECT arm_id, age_band, province, platform, customer, {correction_aggregates}
    FROM corrections
    GROUP BY arm_id, age_band, province, platform, customer
)
{selects}
UNION ALL
SELECT 'cap', '', NULL, cap, {padding} FROM cap
UNION ALL
SELECT 'order_cap', '', NULL, cap, {padding} FROM order_cap
"""

# The facts of an experiment's exposures, written in one statement: every exposure of
# the window (a rebuild) or only those whose data may have changed since the last
# refresh ({changed}), upserted.
_EXPOSURE_WINDOW = """exposure_window AS {window_materialized} (
    SELECT e.id AS exposure_id, e.subject_id, e.arm_id, e.first_exposed_at AS fe, {pre_start} AS pre_start
    FROM {exposure} e
    WHERE e.experiment_id = %(experiment_id)s AND e.phase = %(phase)s
      AND e.first_exposed_at >= %(window_start)s AND e.first_exposed_at < %(window_end)s
      {only_changed}
      -- A subject who restricted processing is left out of the measurement (docs/privacy.md).
      AND NOT EXISTS (
          SELECT 1 FROM {subject} rs WHERE rs.{subject_pk} = e.subject_id AND rs.restricted_at IS NOT NULL
      )
)"""

_REFRESH_SQL = """/* {marker} */
WITH
{changed}{exposure_window},
{facts}
INSERT INTO {facts_table} (exposure_id, experiment_id, {fact_columns})
SELECT exposure_id, %(experiment_id)s, {fact_columns} FROM per_subject
WHERE true  -- (SQLite needs a WHERE before ON CONFLICT after a SELECT)
ORDER BY exposure_id  -- a rebuild lays the rows down in the order they are read in
ON CONFLICT (exposure_id) DO UPDATE SET {fact_updates}
"""

# The orders of the same exposures, rewritten alongside their facts: on a refresh the
# changed exposures' orders are deleted, then every exposure's of the window inserted.
_ORDERS_DELETE_SQL = """/* {marker} */
WITH
{changed}
DELETE FROM {order_facts} WHERE exposure_id IN (SELECT id FROM changed)
"""

_ORDERS_SQL = """/* {marker} */
WITH
{changed}{exposure_window}
INSERT INTO {order_facts} (exposure_id, experiment_id, amount)
SELECT x.exposure_id, %(experiment_id)s, CAST(o.amount AS {float})
FROM exposure_window x
JOIN {event} o ON o.subject_id = x.subject_id
WHERE o.type = 'order' AND o.occurred_at >= x.fe AND o.occurred_at < %(window_end)s
ORDER BY x.exposure_id, o.id
"""

# The exposures whose facts may differ from the stored ones: exposed since the last
# cutoff, or recorded late (stored since the last refresh began, less the margin,
# with an earlier first exposure); or whose subject has events or personalization
# decisions that entered the window since (happened in [previous cutoff, window
# end)) or were stored late. Each part is an index range scan; the subjects' part
# finds their exposures through the (experiment, subject) index.
_CHANGED = """changed AS MATERIALIZED (
    SELECT e.id FROM {exposure} e
    WHERE e.experiment_id = %(experiment_id)s
      AND e.first_exposed_at >= %(previous_cutoff)s AND e.first_exposed_at < %(window_end)s
    UNION
    SELECT e.id FROM {exposure} e
    WHERE e.stored_at >= %(stored_since)s AND e.experiment_id = %(experiment_id)s
    UNION
    SELECT e.id FROM {exposure} e
    JOIN (
        SELECT o.subject_id FROM {event} o WHERE o.stored_at >= %(stored_since)s
        UNION
        SELECT o.subject_id FROM {event} o
        WHERE o.occurred_at >= %(previous_cutoff)s AND o.occurred_at < %(window_end)s
        UNION
        SELECT c.subject_id FROM {consent} c WHERE c.stored_at >= %(stored_since)s
        UNION
        SELECT c.subject_id FROM {consent} c
        WHERE c.purpose_id = %(purpose)s
          AND c.recorded_at >= %(previous_cutoff)s AND c.recorded_at < %(window_end)s
        UNION
        -- A consent can lapse with no new record: a grant that expired since the last cutoff,
        SELECT c.subject_id FROM {consent} c
        WHERE c.purpose_id = %(purpose)s
          AND c.expires_at > %(previous_cutoff)s AND c.expires_at <= %(window_end)s
        {notices_changed}
    ) AS touched ON touched.subject_id = e.subject_id
    WHERE e.experiment_id = %(experiment_id)s
),
"""

# … or a grant under a notice version that stopped (or started) counting: a version that
# requires re-consent took effect, or the notices were edited.
_NOTICES_CHANGED = """UNION
        SELECT c.subject_id FROM {consent} c WHERE c.notice_id IN ({changed_notices})"""

# Whether the previous personalization decision of the subject (ledger order) before
# this withdrawal ``c`` is a grant still valid then: the withdrawal ended a grant.
_ENDS_GRANT = """SELECT CASE WHEN p.action = 'grant' AND (p.expires_at IS NULL OR p.expires_at > c.recorded_at)
            THEN 1 ELSE 0 END
        FROM {consent} p WHERE p.subject_id = c.subject_id AND p.purpose_id = %(purpose)s AND p.id < c.id
        ORDER BY p.id DESC LIMIT 1"""

# Whether the decision ``c`` is a grant valid at the cutoff: not expired, under a notice
# version that still counts then (the consent rules of consent.selectors.PurposeRule).
_VALID_AT_CUTOFF = (
    "c.action = 'grant' AND (c.expires_at IS NULL OR c.expires_at > %(window_end)s) "
    "AND c.notice_id IN ({counting_notices})"
)

_AVOID_JOINS = {"streamed": ("enable_nestloop",), "indexed": ("enable_hashjoin", "enable_mergejoin")}

_FACT_COLUMNS = (
    "arm_id", "age_band", "province", "platform", "customer", "orders", "gmv", "pre_gmv",
    "impressions", "clicks", "opted_out", "consented", "granted",
)

_FACTS_STACKED = """facts AS (
    -- Three kinds of per-exposure facts, stacked and then summed per exposure: no
    -- join between aggregates, so no engine ever matches them row by row.
    SELECT x.exposure_id, CAST(NULL AS BIGINT) AS arm_id,
        CAST(NULL AS TEXT) AS age_band, CAST(NULL AS TEXT) AS province, CAST(NULL AS TEXT) AS platform,
        COUNT(*) FILTER (WHERE o.type = 'order' AND o.occurred_at >= x.fe) AS orders,
        SUM(o.amount) FILTER (WHERE o.type = 'order' AND o.occurred_at >= x.fe) AS gmv,
        SUM(o.amount) FILTER (WHERE o.type = 'order' AND o.occurred_at < x.fe) AS pre_gmv,
        COUNT(*) FILTER (WHERE o.type = 'order' AND o.occurred_at < x.fe) AS pre_orders,
        COUNT(*) FILTER (WHERE o.type = 'rec_impression') AS impressions,
        COUNT(*) FILTER (WHERE o.type = 'rec_click') AS clicks,
        0 AS opted_out, 0 AS granted_after, CAST(NULL AS BIGINT) AS last_decision,
        CAST(NULL AS BIGINT) AS last_valid_grant, CAST(NULL AS BIGINT) AS last_before,
        CAST(NULL AS BIGINT) AS standing_grant
    FROM exposure_window x
    JOIN {event} o ON o.subject_id = x.subject_id
    WHERE o.occurred_at < %(window_end)s
      AND (o.occurred_at >= x.fe OR (o.type = 'order' AND o.occurred_at >= x.pre_start))
    GROUP BY x.exposure_id
    UNION ALL
    -- Every personalization decision before the cutoff, before exposure too: a standing
    -- grant counts for the consent rate (docs/metrics.md has each definition).
    SELECT x.exposure_id, NULL, NULL, NULL, NULL, 0, 0, 0, 0, 0, 0,
        MAX(CASE WHEN c.action = 'withdraw' AND c.recorded_at >= x.fe AND ({ends_grant}) = 1 THEN 1 ELSE 0 END),
        MAX(CASE WHEN c.action = 'grant' AND c.recorded_at >= x.fe THEN 1 ELSE 0 END),
        MAX(c.id),
        MAX(CASE WHEN {valid_at_cutoff} THEN c.id END),
        MAX(CASE WHEN c.recorded_at < x.fe THEN c.id END),
        MAX(CASE WHEN c.recorded_at < x.fe AND c.action = 'grant'
                  AND (c.expires_at IS NULL OR c.expires_at > x.fe) THEN c.id END)
    FROM exposure_window x
    JOIN {consent} c ON c.subject_id = x.subject_id
    WHERE {consent_purpose} = %(purpose)s AND c.recorded_at < %(window_end)s
    GROUP BY x.exposure_id
    UNION ALL
    SELECT x.exposure_id, x.arm_id,
        COALESCE(NULLIF(s.age_band, ''), '{unknown}'),
        COALESCE(NULLIF(s.province, ''), '{unknown}'),
        COALESCE(NULLIF(s.platform, ''), '{unknown}'),
        0, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL, NULL
    FROM exposure_window x
    JOIN {subject} s ON s.{subject_pk} = x.subject_id
),
per_subject AS MATERIALIZED (
    SELECT f.exposure_id, MAX(f.arm_id) AS arm_id, MAX(f.age_band) AS age_band, MAX(f.province) AS province,
        MAX(f.platform) AS platform,
        CASE WHEN SUM(f.pre_orders) > 0 THEN 'returning' ELSE 'new' END AS customer,
        SUM(f.orders) AS orders,
        CAST(SUM(f.gmv) AS {float}) AS gmv,
        CAST(SUM(f.pre_gmv) AS {float}) AS pre_gmv,
        SUM(f.impressions) AS impressions,
        SUM(f.clicks) AS clicks,
        MAX(f.opted_out) AS opted_out,
        CASE WHEN MAX(f.last_decision) = MAX(f.last_valid_grant) THEN 1 ELSE 0 END AS consented,
        CASE WHEN MAX(f.opted_out) = 1 OR MAX(f.granted_after) = 1 OR MAX(f.last_before) = MAX(f.standing_grant)
             THEN 1 ELSE 0 END AS granted
    FROM facts f
    GROUP BY f.exposure_id
)
"""

_FACTS_STREAM = """stream AS NOT MATERIALIZED (
    -- Outcome events and personalization decisions in one stream, so one join
    -- with the exposures and one aggregation per exposure cover both.
    SELECT o.subject_id, o.type AS kind, o.occurred_at AS at, o.amount, CAST(NULL AS BIGINT) AS ledger_id,
        CAST(NULL AS timestamp with time zone) AS expires_at, 0 AS valid_at_cutoff, 0 AS ends_grant
    FROM {event} o
    WHERE o.occurred_at < %(window_end)s
    UNION ALL
    SELECT c.subject_id, c.action, c.recorded_at, NULL, c.id, c.expires_at,
        CASE WHEN {valid_at_cutoff} THEN 1 ELSE 0 END,
        CASE WHEN c.action = 'withdraw' THEN COALESCE(({ends_grant}), 0) ELSE 0 END
    FROM {consent} c
    WHERE {consent_purpose} = %(purpose)s AND c.recorded_at < %(window_end)s
),
per_exposure AS (
    SELECT x.exposure_id,
        COUNT(*) FILTER (WHERE s.kind = 'order' AND s.at >= x.fe) AS orders,
        SUM(s.amount) FILTER (WHERE s.kind = 'order' AND s.at >= x.fe) AS gmv,
        SUM(s.amount) FILTER (WHERE s.kind = 'order' AND s.at < x.fe) AS pre_gmv,
        COUNT(*) FILTER (WHERE s.kind = 'order' AND s.at < x.fe) AS pre_orders,
        COUNT(*) FILTER (WHERE s.kind = 'rec_impression') AS impressions,
        COUNT(*) FILTER (WHERE s.kind = 'rec_click') AS clicks,
        COUNT(*) FILTER (WHERE s.kind = 'withdraw' AND s.at >= x.fe AND s.ends_grant = 1) AS withdrawals,
        COUNT(*) FILTER (WHERE s.kind = 'grant' AND s.at >= x.fe) AS grants_after,
        MAX(s.ledger_id) AS last_decision,
        MAX(s.ledger_id) FILTER (WHERE s.valid_at_cutoff = 1) AS last_valid_grant,
        MAX(s.ledger_id) FILTER (WHERE s.at < x.fe) AS last_before,
        MAX(s.ledger_id) FILTER (
            WHERE s.kind = 'grant' AND s.at < x.fe AND (s.expires_at IS NULL OR s.expires_at > x.fe)
        ) AS standing_grant
    FROM exposure_window x
    JOIN stream s ON s.subject_id = x.subject_id
    -- After exposure: everything; before it: orders of the pre-exposure window, and
    -- every decision (a standing grant counts).
    WHERE s.at >= x.fe OR (s.kind = 'order' AND s.at >= x.pre_start) OR s.ledger_id IS NOT NULL
    GROUP BY x.exposure_id
),
per_subject AS MATERIALIZED (
    SELECT x.exposure_id, x.arm_id,
        COALESCE(NULLIF(u.age_band, ''), '{unknown}') AS age_band,
        COALESCE(NULLIF(u.province, ''), '{unknown}') AS province,
        COALESCE(NULLIF(u.platform, ''), '{unknown}') AS platform,
        CASE WHEN COALESCE(p.pre_orders, 0) > 0 THEN 'returning' ELSE 'new' END AS customer,
        COALESCE(p.orders, 0) AS orders,
        CAST(COALESCE(p.gmv, 0) AS {float}) AS gmv,
        CAST(COALESCE(p.pre_gmv, 0) AS {float}) AS pre_gmv,
        COALESCE(p.impressions, 0) AS impressions,
        COALESCE(p.clicks, 0) AS clicks,
        CASE WHEN COALESCE(p.withdrawals, 0) > 0 THEN 1 ELSE 0 END AS opted_out,
        CASE WHEN p.last_decision = p.last_valid_grant THEN 1 ELSE 0 END AS consented,
        CASE WHEN COALESCE(p.withdrawals, 0) > 0 OR COALESCE(p.grants_after, 0) > 0
              OR p.last_before = p.standing_grant
             THEN 1 ELSE 0 END AS granted
    FROM exposure_window x
    JOIN {subject} u ON u.{subject_pk} = x.subject_id
    LEFT JOIN per_exposure p ON p.exposure_id = x.exposure_id
)
"""

# Per cell, in the order of _SUMS.
_AGGREGATES = (
    "COUNT(*)", "SUM(converted)", "SUM(opted_out)", "SUM(consented)", "SUM(granted)",
    "SUM(gmv)", "SUM(gmv * gmv)", "SUM(pre_gmv)", "SUM(pre_gmv * pre_gmv)", "SUM(gmv * pre_gmv)",
    "SUM(orders)", "SUM(orders * orders)",
    "SUM(raw_gmv)", "SUM(raw_gmv * raw_gmv)", "SUM(raw_gmv * orders)",
    "SUM(impressions)", "SUM(impressions * impressions)", "SUM(clicks)", "SUM(clicks * clicks)",
    "SUM(clicks * impressions)",
)


# The corrections of the order-capped GMV's sums (above), the same columns; zero elsewhere.
_CORRECTIONS = {
    "aov_sum": "-SUM(excess)",
    "aov_ss": "SUM(excess * excess - 2 * raw_gmv * excess)",
    "aov_orders": "-SUM(excess * orders)",
}


def _cell_aggregates() -> str:
    return ", ".join(f"{expression} AS {name}" for name, expression in zip(_SUMS, _AGGREGATES, strict=True))


def _correction_aggregates() -> str:
    return ", ".join(f"{_CORRECTIONS.get(name, '0')} AS {name}" for name in _SUMS)


def _selects(vendor: str) -> str:
    sums = ", ".join(f"SUM({name})" for name in _SUMS)
    # Identifiers come from the module's constants, never from input.
    if vendor == "postgresql":
        dimension = "CASE " + " ".join(
            f"WHEN GROUPING({name}) = 0 THEN '{name}'" for name in SEGMENT_DIMENSIONS
        ) + " ELSE 'all' END"
        value = "COALESCE(" + ", ".join(SEGMENT_DIMENSIONS) + ", '')"
        sets = ", ".join(["(arm_id)", *(f"(arm_id, {name})" for name in SEGMENT_DIMENSIONS)])
        return f"SELECT {dimension}, {value}, arm_id, {sums} FROM cells GROUP BY GROUPING SETS ({sets})"  # noqa: S608
    parts = [f"SELECT 'all', '', arm_id, {sums} FROM cells GROUP BY arm_id"]  # noqa: S608
    for name in SEGMENT_DIMENSIONS:
        parts.append(f"SELECT '{name}', {name}, arm_id, {sums} FROM cells GROUP BY arm_id, {name}")  # noqa: S608
    return "\nUNION ALL\n".join(parts)


def window_for(experiment: Experiment, as_of: datetime | None = None) -> tuple[datetime, datetime]:
    """The analysis window: from the start to ``as_of`` (default now), never past the stop."""
    as_of = as_of or timezone.now()
    end = min(as_of, experiment.ended_at) if experiment.ended_at else as_of
    start = experiment.started_at or end
    return start, max(start, end)


def shape(*, experiment: Experiment, using: str = "default") -> str:
    """Which form of the statement suits this experiment: ``indexed`` or ``streamed``.

    *indexed* walks, per exposure, the subject's events and decisions through
    their subject indexes, and stacks the per-exposure facts: cheap when the
    experiment's subjects are a small part of the tables, and what SQLite
    always uses. *streamed* (PostgreSQL) reads events and decisions as one
    stream, joins it once with the exposures by hashing and aggregates per
    exposure, in parallel: cheaper once the experiment covers a large share of
    the subjects (then nearly every row is read anyway). The choice compares
    the experiment's exposures with the planner's estimate of the subjects.
    Both forms return the same numbers (tests/experiments/test_metrics.py).
    """
    connection = connections[using]
    if connection.vendor != "postgresql":
        return "indexed"
    with connection.cursor() as cursor:
        cursor.execute(
            f"/* {PLAN_MARKER} */ SELECT GREATEST(reltuples, 1) FROM pg_class WHERE oid = %s::regclass",  # noqa: S608
            [Subject._meta.db_table],
        )
        row = cursor.fetchone()
        subjects = float(row[0]) if row else 1.0
        cursor.execute(
            f"/* {PLAN_MARKER} */ SELECT COUNT(*) FROM {connection.ops.quote_name(Exposure._meta.db_table)} "  # noqa: S608
            "WHERE experiment_id = %s AND phase = %s",
            [experiment.pk, experiment.phase],
        )
        exposures = cursor.fetchone()[0]
    return "streamed" if exposures >= STREAM_SHARE * subjects else "indexed"


def _table(connection, model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def metric_statistics_sql(
    *, experiment: Experiment, gmv_cap_percentile: float | None = None, using: str = "default"
) -> tuple[str, list]:
    """The aggregate statement over the experiment's stored facts, and its parameters."""
    connection = connections[using]
    if gmv_cap_percentile is not None and not 0.0 <= float(gmv_cap_percentile) <= 1.0:
        raise ValueError(f"gmv_cap_percentile must be in [0, 1] or None, got {gmv_cap_percentile!r}")
    facts_table, order_facts = _table(connection, MetricFacts), _table(connection, MetricOrderFacts)
    sql = _SQL.format(
        marker=QUERY_MARKER,
        # The subject GMV cap: over the buyers (GMV > 0), through the buyers' index.
        cap=_percentile_cte(
            connection.vendor, name="cap", value="gmv",
            source=f"FROM {facts_table} WHERE experiment_id = %(experiment_id)s AND gmv > 0",
        ),
        # The order cap: over the orders counted, through the amounts' index.
        order_cap=_percentile_cte(
            connection.vendor, name="order_cap", value="amount",
            source=f"FROM {order_facts} WHERE experiment_id = %(experiment_id)s",
        ),
        facts_table=facts_table,
        order_facts=order_facts,
        selects=_selects(connection.vendor),
        cell_aggregates=_cell_aggregates(),
        correction_aggregates=_correction_aggregates(),
        padding=", ".join(["NULL"] * (len(_SUMS) - 1)),
    )
    params = {
        "experiment_id": experiment.pk,
        "cap_percentile": None if gmv_cap_percentile is None else float(gmv_cap_percentile),
    }
    return _named_to_positional(sql, params)


# The facts of exposures whose subject restricted processing since they were written
# (a refresh rewrites only changed exposures, and a restriction changes none).
_RESTRICTED_FACTS_SQL = """DELETE FROM {facts_table} WHERE exposure_id IN (
    SELECT e.id FROM {subject} s JOIN {exposure} e ON e.subject_id = s.{subject_pk}
    WHERE s.restricted_at IS NOT NULL AND e.experiment_id = %s
)"""


def _id_list(params: dict, name: str, ids) -> str:
    """Placeholders for a list of ids (``NULL`` for none: ``IN (NULL)`` matches nothing), into ``params``."""
    names = []
    for n, value in enumerate(sorted(ids)):
        params[f"{name}_{n}"] = int(value)
        names.append(f"%({name}_{n})s")
    return ", ".join(names) or "NULL"


def _refresh_sql(
    *,
    form: str,
    incremental: bool,
    params: dict,
    using: str,
    counting_notices: list[int],
    changed_notices: set[int] = frozenset(),
) -> list[tuple[str, list]]:
    """The refresh's statements: the facts upserted, then (on a refresh, the changed exposures'
    orders deleted) their orders inserted."""
    connection = connections[using]
    params = dict(params)
    snippets = _vendor_snippets(connection.vendor)
    names = {
        "exposure": _table(connection, Exposure),
        "subject": _table(connection, Subject),
        "subject_pk": connection.ops.quote_name(Subject._meta.pk.column),
        "event": _table(connection, OutcomeEvent),
        "consent": _table(connection, ConsentEvent),
        "facts_table": _table(connection, MetricFacts),
        "order_facts": _table(connection, MetricOrderFacts),
    }
    facts = (_FACTS_STACKED if form == "indexed" else _FACTS_STREAM).format(
        float=snippets["float"],
        consent_purpose=snippets["consent_purpose"],
        unknown=UNKNOWN_SEGMENT,
        ends_grant=_ENDS_GRANT.format(**names),
        valid_at_cutoff=_VALID_AT_CUTOFF.format(counting_notices=_id_list(params, "notice", counting_notices)),
        **names,
    )
    notices_changed = (
        _NOTICES_CHANGED.format(changed_notices=_id_list(params, "changed_notice", changed_notices), **names)
        if changed_notices
        else ""
    )
    changed = _CHANGED.format(notices_changed=notices_changed, **names) if incremental else ""
    exposure_window = _EXPOSURE_WINDOW.format(
        only_changed="AND e.id IN (SELECT id FROM changed)" if incremental else "",
        # A refresh's few exposures are read once, not once per kind of fact.
        window_materialized="MATERIALIZED" if incremental else "NOT MATERIALIZED",
        pre_start=snippets["pre_start"],
        **names,
    )
    sql = _REFRESH_SQL.format(
        marker=REFRESH_MARKER,
        changed=changed,
        exposure_window=exposure_window,
        facts=facts,
        fact_columns=", ".join(_FACT_COLUMNS),
        fact_updates=", ".join(f"{column} = excluded.{column}" for column in _FACT_COLUMNS),
        **names,
    )
    statements = [_named_to_positional(sql, params)]
    if incremental:
        statements.append(
            _named_to_positional(
                _ORDERS_DELETE_SQL.format(
                    marker=ORDERS_MARKER, changed=changed.rstrip().removesuffix(","), **names
                ),
                params,
            )
        )
    statements.append(
        _named_to_positional(
            _ORDERS_SQL.format(
                marker=ORDERS_MARKER, changed=changed, exposure_window=exposure_window,
                float=snippets["float"], **names,
            ),
            params,
        )
    )
    return statements


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
            form = shape(experiment=experiment, using=using)
        statements = _refresh_sql(
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
            avoid = _AVOID_JOINS[form] if connection.vendor == "postgresql" else ()
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
                    _RESTRICTED_FACTS_SQL.format(
                        facts_table=_table(connection, table),
                        subject=_table(connection, Subject),
                        subject_pk=connection.ops.quote_name(Subject._meta.pk.column),
                        exposure=_table(connection, Exposure),
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


# The facts' columns as the notebook path reads them (``metric_facts_frame``), named after
# what ``experiments.stats.analyze`` takes: one row per exposed subject, no identifier.
FRAME_COLUMNS = (
    "arm", "age_band", "province", "platform", "customer", "converted", "opted_out", "consented", "granted",
    "gmv", "pre_gmv", "orders", "impressions", "clicks", "order_gmv",
)


def metric_facts_frame(
    *,
    experiment: Experiment,
    as_of: datetime | None = None,
    pre_exposure_days: int | None = None,
    gmv_cap_percentile: float | None | type[...] = ...,
    using: str = "default",
):
    """The experiment's per-exposure facts as a pandas DataFrame, for ``experiments.stats.analyze``.

    The facts are refreshed to ``as_of`` first (as a results run does), then read
    in exposure order: one row per exposed subject with its arm key, segment
    attributes and uncapped metric values (``FRAME_COLUMNS``), never the
    subject's pseudonym; ``order_gmv`` is the subject's GMV with each order
    capped at the ``gmv_cap_percentile`` of the orders' amounts (the average
    order value's numerator; default: the experiment's setting).
    ``analyze(frame, metrics={…, "order_gmv/orders": "ratio"},
    covariates={"gmv": "pre_gmv"}, caps={"gmv": 100·p}, primary=…)`` then gives
    the dashboard's numbers (docs/metrics.md, "The notebook path").
    """
    import numpy as np
    import pandas as pd

    window_start, window_end = window_for(experiment, as_of)
    days = experiment.pre_exposure_days if pre_exposure_days is None else int(pre_exposure_days)
    arm_keys = dict(Arm.objects.using(using).filter(experiment=experiment).values_list("id", "key"))
    with transaction.atomic(using=using):
        metric_facts_refresh(
            experiment=experiment, window_start=window_start, window_end=window_end, pre_exposure_days=days,
            using=using,
        )
        rows = list(
            MetricFacts.objects.using(using)
            .filter(experiment_id=experiment.pk)
            .order_by("exposure_id")
            .values_list(
                "arm_id", "age_band", "province", "platform", "customer", "orders", "opted_out", "consented",
                "granted", "gmv", "pre_gmv", "orders", "impressions", "clicks", "exposure_id",
            )
        )
        orders = pd.DataFrame(
            list(
                MetricOrderFacts.objects.using(using)
                .filter(experiment_id=experiment.pk)
                .values_list("exposure_id", "amount")
            ),
            columns=["exposure_id", "amount"],
        ).astype({"amount": float})
    frame = pd.DataFrame(rows, columns=["arm", *FRAME_COLUMNS[1:-1], "exposure_id"])
    frame["arm"] = frame["arm"].map(arm_keys)
    frame["converted"] = (frame["converted"] > 0).astype(int)
    percentile = experiment.gmv_cap_percentile if gmv_cap_percentile is ... else gmv_cap_percentile
    amounts = orders["amount"].to_numpy()
    if percentile is not None and amounts.size:
        orders["amount"] = np.minimum(amounts, float(np.quantile(amounts, float(percentile), method="linear")))
    by_exposure = orders.groupby("exposure_id")["amount"].sum()
    frame["order_gmv"] = frame["exposure_id"].map(by_exposure).fillna(0.0).astype(float)
    return frame.drop(columns="exposure_id")


def _number(value) -> float:
    return 0.0 if value is None else float(value)


def _statistics(sums: dict[str, float], *, cap: float | None, cuped: bool) -> dict[str, Statistic]:
    n = int(sums["n"])
    gmv: Statistic
    if cuped:
        gmv = RegressionAdjustedStatistic(
            n=n,
            sum=sums["gmv_sum"],
            sum_squares=sums["gmv_ss"],
            covariate_sum=sums["pre_sum"],
            covariate_sum_squares=sums["pre_ss"],
            cross_product=sums["gmv_pre"],
            cap=cap,
        )
    else:
        gmv = SampleMeanStatistic(n=n, sum=sums["gmv_sum"], sum_squares=sums["gmv_ss"], cap=cap)
    return {
        Metric.CONVERSION: ProportionStatistic(n=n, successes=int(sums["converted"])),
        Metric.OPT_OUT: ProportionStatistic(n=n, successes=int(sums["opted_out"])),
        Metric.CONSENT_RATE: ProportionStatistic(n=n, successes=int(sums["consented"])),
        Metric.GMV: gmv,
        Metric.ORDERS: SampleMeanStatistic(n=n, sum=sums["orders_sum"], sum_squares=sums["orders_ss"]),
        Metric.AOV: RatioStatistic(
            n=n,
            numerator_sum=sums["aov_sum"],
            numerator_sum_squares=sums["aov_ss"],
            denominator_sum=sums["orders_sum"],
            denominator_sum_squares=sums["orders_ss"],
            cross_product=sums["aov_orders"],
        ),
        Metric.CTR: RatioStatistic(
            n=n,
            numerator_sum=sums["clicks_sum"],
            numerator_sum_squares=sums["clicks_ss"],
            denominator_sum=sums["impressions_sum"],
            denominator_sum_squares=sums["impressions_ss"],
            cross_product=sums["clicks_impressions"],
        ),
    }


def metric_statistics(
    *,
    experiment: Experiment,
    as_of: datetime | None = None,
    gmv_cap_percentile: float | None | type[...] = ...,
    pre_exposure_days: int | None = None,
    now: datetime | None = None,
    using: str = "default",
) -> MetricStatistics:
    """Every metric's sufficient statistics per arm and per segment: the facts refreshed, then aggregated.

    ``gmv_cap_percentile`` and ``pre_exposure_days`` default to the
    experiment's settings. Arms with no exposure in the window are absent
    from ``arms`` (the caller decides what that means).
    """
    window_start, window_end = window_for(experiment, as_of)
    days = experiment.pre_exposure_days if pre_exposure_days is None else int(pre_exposure_days)
    percentile = experiment.gmv_cap_percentile if gmv_cap_percentile is ... else gmv_cap_percentile
    sql, params = metric_statistics_sql(experiment=experiment, gmv_cap_percentile=percentile, using=using)
    arm_keys = dict(Arm.objects.using(using).filter(experiment=experiment).values_list("id", "key"))
    connection = connections[using]
    with transaction.atomic(using=using):
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                # Room for the per-exposure hash tables and sorts, for this transaction only
                # (the default 4 MB makes them spill to disk at a million subjects).
                cursor.execute("SELECT set_config('work_mem', %s, true)", [METRICS_WORK_MEM])
                # JIT compilation costs 1–2 s here and gains nothing on these statements.
                cursor.execute("SELECT set_config('jit', 'off', true)")
        refresh = metric_facts_refresh(
            experiment=experiment,
            window_start=window_start,
            window_end=window_end,
            pre_exposure_days=days,
            now=now,
            using=using,
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
    caps: dict[str, float | None] = {"cap": None, "order_cap": None}
    overall: dict[str, dict[str, float]] = {}
    by_segment: dict[str, dict[str, dict[str, float]]] = {}
    for dimension, value, arm_id, *aggregates in rows:
        if dimension in caps:
            caps[dimension] = None if aggregates[0] is None else float(aggregates[0])
            continue
        sums = {name: _number(total) for name, total in zip(_SUMS, aggregates, strict=True)}
        arm = arm_keys[arm_id]
        if dimension == "all":
            overall[arm] = sums
        else:
            by_segment.setdefault(f"{dimension}={value}", {})[arm] = sums
    cuped = days > 0
    cap = caps["cap"]
    return MetricStatistics(
        experiment_id=experiment.pk,
        phase=experiment.phase,
        window_start=window_start,
        window_end=window_end,
        gmv_cap_percentile=None if percentile is None else float(percentile),
        gmv_cap=cap,
        order_cap=caps["order_cap"],
        pre_exposure_days=days,
        arms={arm: _statistics(sums, cap=cap, cuped=cuped) for arm, sums in overall.items()},
        segments={
            label: {arm: _statistics(sums, cap=cap, cuped=cuped) for arm, sums in arms.items()}
            for label, arms in sorted(by_segment.items())
        },
        sums=overall,
        refresh=refresh,
    )
