"""The pipeline's SQL: the facts refresh and the aggregate statements, with each database's variant."""

from __future__ import annotations

import re
from datetime import timedelta

from django.db import connections

from consent.models import ConsentEvent, Subject
from experiments.metrics.definitions import SEGMENT_DIMENSIONS, UNKNOWN_SEGMENT
from experiments.models import (
    Experiment,
    Exposure,
    MetricFacts,
    MetricOrderFacts,
    OutcomeEvent,
    RolloutExposure,
)

QUERY_MARKER = "privacylab:metric-statistics"  # find the statement in pg_stat_activity / logs
REFRESH_MARKER = "privacylab:metric-facts-refresh"  # the statement that writes the per-exposure facts
ORDERS_MARKER = "privacylab:metric-order-facts"  # the statements that rewrite the exposures' orders


# The aggregate columns of every output row, in SELECT order.
SUMS = (
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


# CUPED++ (``experiments.stats.LinAdjustedStatistic``): each metric's outcome column(s) and the
# pre-exposure covariates every metric is adjusted for. The aggregate's ``cell`` rows carry, per
# arm × stratum cell, Σv and Σv·w over these variables (``LIN_SUMS`` names the ones ``SUMS``
# does not already hold); ``lin_sum_name`` finds either.
LIN_COVARIATES = ("pre_gmv", "pre_orders")
LIN_OUTCOMES = {
    "conversion": ("converted",),
    "opt_out": ("opted_out",),
    "consent_rate": ("consented",),
    "gmv": ("gmv",),
    "orders": ("orders",),
    "aov": ("aov", "orders"),  # numerator: each order capped at the order cap
    "ctr": ("clicks", "impressions"),
}
# The stratum cell of a cell row: the assignment attributes, then the customer segment (so that
# every segment's statistic can be summed from the cells too).
CELL_KEY = ("age_band", "province", "platform", "customer")
_BINARY = ("converted", "opted_out", "consented")
_LIN_VARIABLES = (*_BINARY, "gmv", "orders", "aov", "clicks", "impressions", *LIN_COVARIATES)
# Each variable's column in the aggregate's ``capped`` rows (the AOV numerator starts uncapped;
# its capped orders' corrections are added as rows of their own).
_LIN_COLUMN = {name: name for name in _LIN_VARIABLES} | {"aov": "raw_gmv"}
_SUMS_HELD = {
    ("converted",): "converted", ("opted_out",): "opted_out", ("consented",): "consented",
    ("gmv",): "gmv_sum", ("gmv", "gmv"): "gmv_ss", ("pre_gmv",): "pre_sum", ("pre_gmv", "pre_gmv"): "pre_ss",
    ("gmv", "pre_gmv"): "gmv_pre", ("orders",): "orders_sum", ("orders", "orders"): "orders_ss",
    ("aov",): "aov_sum", ("aov", "aov"): "aov_ss", ("orders", "aov"): "aov_orders",
    ("impressions",): "impressions_sum", ("impressions", "impressions"): "impressions_ss",
    ("clicks",): "clicks_sum", ("clicks", "clicks"): "clicks_ss", ("clicks", "impressions"): "clicks_impressions",
} | {(name, name): name for name in _BINARY}  # a 0/1 value is its own square


def _lin_key(*variables: str) -> tuple[str, ...]:
    return tuple(sorted(variables, key=_LIN_VARIABLES.index))


def lin_sum_name(*variables: str) -> str:
    """The aggregate column of Σ v (one variable) or Σ v·w (two) of the CUPED++ variables."""
    key = _lin_key(*variables)
    return _SUMS_HELD.get(key) or "lin_" + "_".join(key)


def _lin_products() -> list[tuple[str, ...]]:
    needed: list[tuple[str, ...]] = []
    for outcomes in LIN_OUTCOMES.values():
        variables = (*outcomes, *LIN_COVARIATES)
        for i, a in enumerate(variables):
            for key in ((a,), *(_lin_key(a, b) for b in variables[i:])):
                if key not in needed:
                    needed.append(key)
    return [key for key in needed if key not in _SUMS_HELD]


_LIN_PRODUCTS = _lin_products()
LIN_SUMS = tuple(lin_sum_name(*key) for key in _LIN_PRODUCTS)


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
{sources}{cap},
{order_cap},
per_subject AS (
    SELECT arm_id, age_band, province, platform, customer, orders, gmv, pre_gmv, pre_orders, impressions, clicks,
        opted_out, consented, granted
    FROM {facts_table}
    WHERE experiment_id = %(experiment_id)s
    -- A fixed order makes every floating-point sum below add up in the same order on
    -- every run (the (experiment, exposure) index delivers it: no sort, one pass).
    ORDER BY exposure_id
),
capped AS (
    SELECT p.arm_id, p.age_band, p.province, p.platform, p.customer, p.orders, p.impressions, p.clicks,
        p.opted_out, p.consented, p.granted, p.pre_orders,
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
    SELECT f.arm_id, f.age_band, f.province, f.platform, f.customer, x.excess, f.gmv AS raw_gmv, f.orders,
        CASE WHEN cap.cap IS NULL OR f.pre_gmv <= cap.cap THEN f.pre_gmv ELSE cap.cap END AS pre_gmv,
        f.pre_orders
    FROM excess x JOIN {facts_table} f ON f.exposure_id = x.exposure_id CROSS JOIN cap
    ORDER BY f.exposure_id
),
cells AS (
    -- One pass over the subjects into the cells arm × every segment dimension (a few
    -- hundred rows); the per-arm and per-segment sums below add up cells. The sums of
    -- the order-capped GMV start from the uncapped GMV, and the few capped orders'
    -- corrections are added as cells of their own:
    -- Σ(g − e) = Σg − Σe, Σ(g − e)² = Σg² + Σ(e² − 2ge), Σ(g − e)·n = Σg·n − Σe·n (and
    -- likewise its products with the CUPED++ covariates).
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
{on_conflict}
"""
# A refresh upserts the changed exposures' facts; a rebuild has deleted the experiment's
# facts first (under the state's lock), so it inserts plainly: no speculative insertion
# and conflict check per row.
_UPSERT = "ON CONFLICT (exposure_id) DO UPDATE SET {fact_updates}"

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


_FACT_COLUMNS = (
    "arm_id", "age_band", "province", "platform", "customer", "orders", "gmv", "pre_gmv", "pre_orders",
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
{per_subject} AS MATERIALIZED (
    SELECT f.exposure_id, MAX(f.arm_id) AS arm_id, MAX(f.age_band) AS age_band, MAX(f.province) AS province,
        MAX(f.platform) AS platform,
        CASE WHEN SUM(f.pre_orders) > 0 THEN 'returning' ELSE 'new' END AS customer,
        SUM(f.orders) AS orders,
        CAST(SUM(f.gmv) AS {float}) AS gmv,
        CAST(SUM(f.pre_gmv) AS {float}) AS pre_gmv,
        SUM(f.pre_orders) AS pre_orders,
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
{per_subject} AS MATERIALIZED (
    SELECT x.exposure_id, x.arm_id,
        COALESCE(NULLIF(u.age_band, ''), '{unknown}') AS age_band,
        COALESCE(NULLIF(u.province, ''), '{unknown}') AS province,
        COALESCE(NULLIF(u.platform, ''), '{unknown}') AS platform,
        CASE WHEN COALESCE(p.pre_orders, 0) > 0 THEN 'returning' ELSE 'new' END AS customer,
        COALESCE(p.orders, 0) AS orders,
        CAST(COALESCE(p.gmv, 0) AS {float}) AS gmv,
        CAST(COALESCE(p.pre_gmv, 0) AS {float}) AS pre_gmv,
        COALESCE(p.pre_orders, 0) AS pre_orders,
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

# Per cell, in the order of SUMS.
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


def _lin_aggregate(key: tuple[str, ...]) -> str:
    return "SUM(" + " * ".join(_LIN_COLUMN[name] for name in key) + ")"


def _lin_correction(key: tuple[str, ...]) -> str:
    """The AOV numerator's correction rows for one CUPED++ sum: Σ(g − e)·x = Σg·x − Σe·x."""
    if "aov" not in key:
        return "0"
    (other,) = [name for name in key if name != "aov"]  # Σ(g − e)² is held in SUMS already
    return f"-SUM(excess * {other})"


def _cell_aggregates() -> str:
    held = [f"{expression} AS {name}" for name, expression in zip(SUMS, _AGGREGATES, strict=True)]
    lin = [f"{_lin_aggregate(key)} AS {name}" for key, name in zip(_LIN_PRODUCTS, LIN_SUMS, strict=True)]
    return ", ".join(held + lin)


def _correction_aggregates() -> str:
    held = [f"{_CORRECTIONS.get(name, '0')} AS {name}" for name in SUMS]
    lin = [f"{_lin_correction(key)} AS {name}" for key, name in zip(_LIN_PRODUCTS, LIN_SUMS, strict=True)]
    return ", ".join(held + lin)


def _selects(vendor: str) -> str:
    sums = ", ".join(f"SUM({name})" for name in (*SUMS, *LIN_SUMS))
    key = ", ".join(CELL_KEY)
    # Identifiers come from the module's constants, never from input. The 'cell' rows (one per
    # arm × CELL_KEY, the key as a JSON array) are CUPED++'s stratum cells.
    if vendor == "postgresql":
        is_cell = " AND ".join(f"GROUPING({name}) = 0" for name in CELL_KEY)
        dimension = f"CASE WHEN {is_cell} THEN 'cell' " + " ".join(
            f"WHEN GROUPING({name}) = 0 THEN '{name}'" for name in SEGMENT_DIMENSIONS
        ) + " ELSE 'all' END"
        value = (
            f"CASE WHEN {is_cell} THEN CAST(json_build_array({key}) AS text) "
            "ELSE COALESCE(" + ", ".join(SEGMENT_DIMENSIONS) + ", '') END"
        )
        sets = ", ".join(["(arm_id)", *(f"(arm_id, {name})" for name in SEGMENT_DIMENSIONS), f"(arm_id, {key})"])
        return f"SELECT {dimension}, {value}, arm_id, {sums} FROM cells GROUP BY GROUPING SETS ({sets})"  # noqa: S608
    parts = [f"SELECT 'all', '', arm_id, {sums} FROM cells GROUP BY arm_id"]  # noqa: S608
    for name in SEGMENT_DIMENSIONS:
        parts.append(f"SELECT '{name}', {name}, arm_id, {sums} FROM cells GROUP BY arm_id, {name}")  # noqa: S608
    parts.append(f"SELECT 'cell', json_array({key}), arm_id, {sums} FROM cells GROUP BY arm_id, {key}")  # noqa: S608
    return "\nUNION ALL\n".join(parts)


def table_name(connection, model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def metric_statistics_sql(
    *, experiment: Experiment, gmv_cap_percentile: float | None = None, using: str = "default"
) -> tuple[str, list]:
    """The aggregate statement over the experiment's stored facts, and its parameters."""
    connection = connections[using]
    if gmv_cap_percentile is not None and not 0.0 <= float(gmv_cap_percentile) <= 1.0:
        raise ValueError(f"gmv_cap_percentile must be in [0, 1] or None, got {gmv_cap_percentile!r}")
    facts_table, order_facts = table_name(connection, MetricFacts), table_name(connection, MetricOrderFacts)
    sql = _aggregate_sql(
        connection, marker=QUERY_MARKER, sources="", facts_table=facts_table, order_facts=order_facts
    )
    params = {
        "experiment_id": experiment.pk,
        "cap_percentile": None if gmv_cap_percentile is None else float(gmv_cap_percentile),
    }
    return _named_to_positional(sql, params)


def _aggregate_sql(connection, *, marker: str, sources: str, facts_table: str, order_facts: str) -> str:
    """The aggregate over ``facts_table`` and ``order_facts`` (stored tables, or CTEs that ``sources`` defines)."""
    return _SQL.format(
        marker=marker,
        sources=sources,
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
        padding=", ".join(["NULL"] * (len(SUMS) + len(LIN_SUMS) - 1)),
    )


# The facts of exposures whose subject restricted processing since they were written
# (a refresh rewrites only changed exposures, and a restriction changes none).
RESTRICTED_FACTS_SQL = """DELETE FROM {facts_table} WHERE exposure_id IN (
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


def _table_names(connection) -> dict[str, str]:
    return {
        "exposure": table_name(connection, Exposure),
        "subject": table_name(connection, Subject),
        "subject_pk": connection.ops.quote_name(Subject._meta.pk.column),
        "event": table_name(connection, OutcomeEvent),
        "consent": table_name(connection, ConsentEvent),
        "facts_table": table_name(connection, MetricFacts),
        "order_facts": table_name(connection, MetricOrderFacts),
    }


def _facts_ctes(
    *, form: str, per_subject: str, params: dict, snippets: dict, names: dict, counting_notices
) -> str:
    """The per-exposure facts of ``exposure_window``'s exposures (``form``: indexed or streamed), as the CTE
    ``per_subject``: every metric's per-subject value, defined once for the refresh and the rollouts."""
    return (_FACTS_STACKED if form == "indexed" else _FACTS_STREAM).format(
        per_subject=per_subject,
        float=snippets["float"],
        consent_purpose=snippets["consent_purpose"],
        unknown=UNKNOWN_SEGMENT,
        ends_grant=_ENDS_GRANT.format(**names),
        valid_at_cutoff=_VALID_AT_CUTOFF.format(counting_notices=_id_list(params, "notice", counting_notices)),
        **names,
    )


def refresh_statements(
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
    names = _table_names(connection)
    facts = _facts_ctes(
        form=form, per_subject="per_subject", params=params, snippets=snippets, names=names,
        counting_notices=counting_notices,
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
        on_conflict=_UPSERT.format(
            fact_updates=", ".join(f"{column} = excluded.{column}" for column in _FACT_COLUMNS)
        ) if incremental else "",
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


ROLLOUT_MARKER = "privacylab:rollout-statistics"  # the rollout health check's one statement

# A rollout step's exposures in the place of an experiment's (docs/surfaces.md, "The health check"):
# the side of the ramp is the "arm" (1: the shipped treatment, 0: the previous default).
_ROLLOUT_SOURCES = """exposure_window AS MATERIALIZED (
    SELECT r.id AS exposure_id, r.subject_id, CASE WHEN r.{group} = 'rollout' THEN 1 ELSE 0 END AS arm_id,
        r.first_exposed_at AS fe, {pre_start} AS pre_start
    FROM {rollout_exposure} r
    WHERE r.rollout_id = %(rollout_id)s AND r.step_index = %(step_index)s AND r.first_exposed_at < %(window_end)s
      AND NOT EXISTS (
          SELECT 1 FROM {subject} rs WHERE rs.{subject_pk} = r.subject_id AND rs.restricted_at IS NOT NULL
      )
),
{facts},
rollout_facts AS (
    SELECT exposure_id, CAST(%(experiment_id)s AS BIGINT) AS experiment_id, {fact_columns} FROM rollout_subjects
),
rollout_order_facts AS (
    SELECT x.exposure_id, CAST(%(experiment_id)s AS BIGINT) AS experiment_id, CAST(o.amount AS {float}) AS amount
    FROM exposure_window x
    JOIN {event} o ON o.subject_id = x.subject_id
    WHERE o.type = 'order' AND o.occurred_at >= x.fe AND o.occurred_at < %(window_end)s
),
"""


def rollout_statistics_sql(
    *,
    rollout_id: int,
    step_index: int,
    experiment_id: int,
    window_end,
    pre_exposure_days: int,
    gmv_cap_percentile: float | None,
    counting_notices: list[int],
    purpose: str,
    using: str = "default",
) -> tuple[str, list]:
    """The aggregate of one rollout step's subjects, per side of the ramp (``arm_id`` 1: rollout, 0: default).

    The same per-subject facts (``_facts_ctes``, the indexed form: a step's subjects are
    a few) and the same aggregate as an experiment's, computed on the fly from the
    step's exposures (nothing stored): the rows ``metric_statistics_from_rows`` reads.
    """
    connection = connections[using]
    if gmv_cap_percentile is not None and not 0.0 <= float(gmv_cap_percentile) <= 1.0:
        raise ValueError(f"gmv_cap_percentile must be in [0, 1] or None, got {gmv_cap_percentile!r}")
    adapt = connection.ops.adapt_datetimefield_value
    params = {
        "rollout_id": rollout_id,
        "step_index": step_index,
        "experiment_id": experiment_id,
        "window_end": adapt(window_end),
        "pre_window": timedelta(days=pre_exposure_days),
        "pre_window_us": pre_exposure_days * 86_400 * 1_000_000,
        "purpose": purpose,
        "cap_percentile": None if gmv_cap_percentile is None else float(gmv_cap_percentile),
    }
    snippets = _vendor_snippets(connection.vendor)
    names = _table_names(connection)
    sources = _ROLLOUT_SOURCES.format(
        group=connection.ops.quote_name(RolloutExposure._meta.get_field("group").column),
        rollout_exposure=table_name(connection, RolloutExposure),
        pre_start=snippets["pre_start"].replace("e.first_exposed_at", "r.first_exposed_at"),
        facts=_facts_ctes(
            form="indexed", per_subject="rollout_subjects", params=params, snippets=snippets, names=names,
            counting_notices=counting_notices,
        ),
        fact_columns=", ".join(_FACT_COLUMNS),
        float=snippets["float"],
        **names,
    )
    sql = _aggregate_sql(
        connection, marker=ROLLOUT_MARKER, sources=sources, facts_table="rollout_facts",
        order_facts="rollout_order_facts",
    )
    return _named_to_positional(sql, params)
