"""The metrics as one relational expression (ibis), compiled for each engine.

The same definitions as the built-in pipeline's SQL (``experiments.metrics.sql``,
docs/metrics.md): per exposure of the window its orders, GMV, pre-exposure GMV,
impressions, clicks and personalization decisions, then the sums of
``experiments.metrics.sql.SUMS`` per (segment, arm) and the two caps, all in the
engine: only those few rows come back.

The input tables have canonical column names (``experiments.warehouse.mapping``
renames a data source's columns to these):

- exposures: experiment_id, phase, arm, subject_id, first_exposed_at
- events: subject_id, type, occurred_at, amount
- consents: ledger_id, subject_id, purpose, action, recorded_at, expires_at, notice_id
- subjects: subject_id, age_band, province, platform, restricted_at
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from experiments.metrics.definitions import SEGMENT_DIMENSIONS, UNKNOWN_SEGMENT
from experiments.metrics.sql import SUMS


@dataclass(frozen=True)
class WarehouseQuery:
    """What one results run asks the engine: the experiment's window and settings."""

    experiment_id: int
    phase: int
    window_start: datetime
    window_end: datetime
    pre_exposure_days: int
    gmv_cap_percentile: float | None
    purpose: str
    counting_notices: tuple[int, ...]


def _flag(condition):
    """1 or 0 (PostgreSQL casts no boolean to a bigint; every engine sums these)."""
    import ibis

    return ibis.ifelse(condition, 1, 0)


def _percentile(column, p: float, *, name: str):
    """One row, one column ``name``: the ``p`` percentile of ``column`` (linear interpolation), exact.

    Written with window functions rather than an engine's quantile function: BigQuery and
    Trino have no exact aggregate one, and this way every engine computes the same value
    the same way (PostgreSQL's percentile_cont: with h = p·(N − 1), the value at ⌊h⌋ plus
    that fraction of the step to the next). NULL over no rows.
    """
    import ibis

    table = column.name("v").as_table()
    ranked = table.mutate(k=ibis.row_number().over(order_by=table.v), n=table.v.count().over(ibis.window()))
    ranked = ranked.mutate(h=(ranked.n - 1).cast("float64") * p)
    ranked = ranked.mutate(floor=ranked.h.floor().cast("int64"))
    null = ibis.null().cast("float64")
    bounds = ranked.aggregate(
        h=ranked.h.max(),
        lo=ibis.ifelse(ranked.k == ranked.floor, ranked.v, null).max(),
        hi=ibis.ifelse(ranked.k == ranked.floor + 1, ranked.v, null).max(),
    )
    fraction = bounds.h - bounds.h.floor()
    return bounds.select(**{name: bounds.lo + fraction * (ibis.coalesce(bounds.hi, bounds.lo) - bounds.lo)})


# Engines whose own percentile aggregate is exact and interpolates as PostgreSQL's
# percentile_cont does (one selection over the values, no sort of them all); elsewhere
# the window-function form above.
EXACT_PERCENTILE_ENGINES = frozenset({"duckdb", "postgres"})


def metric_statistics_expression(*, tables: dict, query: WarehouseQuery, engine: str | None = None):
    """The ibis expression of the aggregate: rows (dimension, value, arm, *SUMS, cap, order_cap).

    ``tables``: ibis tables ``exposures``, ``events``, ``consents``, ``subjects`` with the
    canonical columns. ``engine``: the backend's name (``backend.name``), to use its exact
    percentile aggregate where it has one. Nothing here runs; the caller executes the
    expression on its backend.

    One pass per input table: the window's exposures are joined to their subjects once
    (segments and the restriction), the events to the window once and summed per subject
    once (the order cap and the orders above it come from that same join), then one
    GROUP BY over the subjects into the cells arm × segment dimensions, rolled up.
    """
    import ibis

    exposures, events, consents, subjects = (tables[name] for name in ("exposures", "events", "consents", "subjects"))
    end = ibis.literal(query.window_end)
    exact_percentile = engine in EXACT_PERCENTILE_ENGINES

    def percentile(column, name):
        p = float(query.gmv_cap_percentile)
        if exact_percentile:
            return column.quantile(p).name(name).as_table()
        return _percentile(column, p, name=name)

    def segment(column):
        return ibis.coalesce(column.nullif(""), ibis.literal(UNKNOWN_SEGMENT))

    # A subject who restricted processing is left out of the measurement (docs/privacy.md);
    # an exposure without a subject row has no segments and is left out too (inner join).
    people = subjects.filter(subjects.restricted_at.isnull())
    window = exposures.filter(
        exposures.experiment_id == query.experiment_id,
        exposures.phase == query.phase,
        exposures.first_exposed_at >= ibis.literal(query.window_start),
        exposures.first_exposed_at < end,
    )
    window = window.inner_join(people, "subject_id")
    window = window.select(
        "subject_id", "arm", fe=window.first_exposed_at,
        pre_start=window.first_exposed_at - ibis.interval(days=query.pre_exposure_days),
        age_band=segment(window.age_band), province=segment(window.province), platform=segment(window.platform),
    )

    # Only the events a metric counts: from the pre-exposure window's start to the end.
    joined = window.select("subject_id", "fe", "pre_start").inner_join(
        events.filter(events.occurred_at < end), "subject_id"
    )
    joined = joined.filter(joined.occurred_at >= joined.pre_start)
    post = joined.occurred_at >= joined.fe
    is_order = joined.type == "order"
    amount = joined.amount.cast("float64")
    pre = is_order & (joined.occurred_at < joined.fe)
    per_events = joined.group_by("subject_id").aggregate(
        orders=_flag(is_order & post).sum(),
        gmv=ibis.ifelse(is_order & post, amount, 0.0).sum(),
        pre_gmv=ibis.ifelse(pre, amount, 0.0).sum(),
        pre_orders=_flag(pre).sum(),
        impressions=_flag((joined.type == "rec_impression") & post).sum(),
        clicks=_flag((joined.type == "rec_click") & post).sum(),
    )

    ledger = consents.filter(consents.purpose == query.purpose, consents.recorded_at < end)
    # Whether a withdrawal ended a grant: the subject's previous decision (ledger order) is a grant valid then.
    previous = ibis.window(group_by=ledger.subject_id, order_by=ledger.ledger_id)
    ledger = ledger.mutate(
        previous_action=ledger.action.lag().over(previous),
        previous_expires=ledger.expires_at.lag().over(previous),
    )
    ledger = ledger.mutate(
        ends_grant=(ledger.action == "withdraw")
        & (ledger.previous_action == "grant").fill_null(False)
        & (ledger.previous_expires.isnull() | (ledger.previous_expires > ledger.recorded_at)).fill_null(False),
        valid_at_cutoff=(ledger.action == "grant")
        & (ledger.expires_at.isnull() | (ledger.expires_at > end)).fill_null(False)
        & ledger.notice_id.isin(list(query.counting_notices) or [-1]).fill_null(False),
    )
    decisions = window.select("subject_id", "fe").inner_join(ledger, "subject_id")
    after = decisions.recorded_at >= decisions.fe
    before = decisions.recorded_at < decisions.fe
    null_id = ibis.null().cast(decisions.ledger_id.type())

    def last_id(where):
        # MAX over a CASE, not an aggregate filter: ClickHouse's maxIf gives 0, not NULL, over no rows.
        return ibis.ifelse(where, decisions.ledger_id, null_id).max()

    per_consent = decisions.group_by("subject_id").aggregate(
        withdrawals=_flag(decisions.ends_grant & after).sum(),
        grants_after=_flag((decisions.action == "grant") & after).sum(),
        last_decision=decisions.ledger_id.max(),
        last_valid_grant=last_id(decisions.valid_at_cutoff),
        last_before=last_id(before),
        standing_grant=last_id(
            before & (decisions.action == "grant")
            & (decisions.expires_at.isnull() | (decisions.expires_at > decisions.fe)).fill_null(False)
        ),
    )

    # The caps: the subject GMV cap over the buyers, the order cap over the orders counted.
    # The average order value's numerator is each order capped at the order cap, summed per
    # subject: the subject's GMV less what its orders above the cap exceed it by (a few
    # orders, from the same join), rather than a second pass over every order.
    counted_orders = joined.filter(is_order & post)
    if query.gmv_cap_percentile is None:
        cap_row = order_cap_row = None
        with_excess = per_events.mutate(excess=ibis.literal(0.0), cap=ibis.literal(None, type="float64"))
    else:
        cap_row = percentile(per_events.filter(per_events.gmv > 0).gmv, "cap")
        order_cap_row = percentile(counted_orders.amount.cast("float64"), "order_cap")
        above = counted_orders.cross_join(order_cap_row)
        above = above.filter(above.amount.cast("float64") > above.order_cap)
        excess = above.group_by("subject_id").aggregate(
            excess=(above.amount.cast("float64") - above.order_cap).sum()
        )
        with_excess = per_events.left_join(excess, "subject_id").cross_join(cap_row)
        with_excess = with_excess.select(
            *per_events.columns, excess=with_excess.excess.fill_null(0.0), cap=with_excess.cap
        )

    facts = window.left_join(with_excess, "subject_id").left_join(per_consent, "subject_id")
    withdrew = facts.withdrawals.fill_null(0) > 0
    orders = facts.orders.fill_null(0)
    gmv = facts.gmv.fill_null(0.0)
    pre_gmv = facts.pre_gmv.fill_null(0.0)
    cap = facts.cap

    def capped_value(column):
        return ibis.ifelse(cap.isnull() | (column <= cap), column, cap)

    c = facts.select(
        "arm", "age_band", "province", "platform",
        customer=ibis.ifelse(facts.pre_orders.fill_null(0) > 0, "returning", "new"),
        orders=orders,
        impressions=facts.impressions.fill_null(0),
        clicks=facts.clicks.fill_null(0),
        opted_out=_flag(withdrew),
        consented=_flag((facts.last_decision == facts.last_valid_grant).fill_null(False)),
        granted=_flag(
            withdrew | (facts.grants_after.fill_null(0) > 0) | (facts.last_before == facts.standing_grant).fill_null(False)
        ),
        converted=_flag(orders > 0),
        gmv=capped_value(gmv),
        pre_gmv=capped_value(pre_gmv),
        aov_gmv=gmv - facts.excess.fill_null(0.0),
    )
    assert tuple(c.columns[1:5]) == SEGMENT_DIMENSIONS
    aggregates = {
        "n": c.count(),
        "converted": c.converted.sum(),
        "opted_out": c.opted_out.sum(),
        "consented": c.consented.sum(),
        "granted": c.granted.sum(),
        "gmv_sum": c.gmv.sum(),
        "gmv_ss": (c.gmv * c.gmv).sum(),
        "pre_sum": c.pre_gmv.sum(),
        "pre_ss": (c.pre_gmv * c.pre_gmv).sum(),
        "gmv_pre": (c.gmv * c.pre_gmv).sum(),
        "orders_sum": c.orders.sum(),
        "orders_ss": (c.orders * c.orders).sum(),
        "aov_sum": c.aov_gmv.sum(),
        "aov_ss": (c.aov_gmv * c.aov_gmv).sum(),
        "aov_orders": (c.aov_gmv * c.orders).sum(),
        "impressions_sum": c.impressions.sum(),
        "impressions_ss": (c.impressions * c.impressions).sum(),
        "clicks_sum": c.clicks.sum(),
        "clicks_ss": (c.clicks * c.clicks).sum(),
        "clicks_impressions": (c.clicks * c.impressions).sum(),
    }
    assert tuple(aggregates) == SUMS
    # One pass over the subjects into the cells arm × every segment dimension (a few hundred
    # rows), as the built-in aggregate does; the per-arm and per-segment rows add up cells.
    cells = c.group_by("arm", *SEGMENT_DIMENSIONS).aggregate(**aggregates)
    rollup = {name: cells[name].sum() for name in SUMS}
    parts = [cells.group_by("arm").aggregate(**rollup).mutate(dimension=ibis.literal("all"), value=ibis.literal(""))]
    for name in SEGMENT_DIMENSIONS:
        parts.append(
            cells.group_by("arm", name).aggregate(**rollup).mutate(dimension=ibis.literal(name)).rename(value=name)
        )
    ordered = ["dimension", "value", "arm", *SUMS]
    stats = ibis.union(*(part.select(*ordered).cast({name: "float64" for name in SUMS}) for part in parts))
    # The caps ride along on every row: one statement, and the engine computes each cap once
    # (the same subexpressions as the capping above, so one CTE each).
    if cap_row is None:
        return stats.mutate(cap=ibis.literal(None, type="float64"), order_cap=ibis.literal(None, type="float64"))
    return stats.cross_join(cap_row).cross_join(order_cap_row)


def recommendation_attribution_expression(*, tables: dict, query: WarehouseQuery):
    """Rows (arm, attributed, total): per arm the order-line value bought after a recommendation click, and all of it.

    The built-in's definition (``experiments.metrics.attribution``): the order lines of the
    window's exposures (the phase's, first exposed in the window) at or after exposure and
    before the window's end, valued quantity × price, uncapped; a line is attributed when the
    subject clicked a recommendation of its product in the 7 days before it (and not before
    exposure), and a subject who restricted processing is left out. ``tables``: ``order_lines``
    and ``clicks`` (the events with their product_id) besides ``exposures`` and ``subjects``. An arm without order lines has no row.
    """
    import ibis

    from experiments.metrics.attribution import RECOMMENDATION_ATTRIBUTION_WINDOW

    exposures, lines, events = tables["exposures"], tables["order_lines"], tables["clicks"]
    end = ibis.literal(query.window_end)
    window = exposures.filter(
        exposures.experiment_id == query.experiment_id,
        exposures.phase == query.phase,
        exposures.first_exposed_at >= ibis.literal(query.window_start),
        exposures.first_exposed_at < end,
    ).select("subject_id", "arm", fe=exposures.first_exposed_at)
    # A subject who restricted processing is left out, as from every other measurement (docs/privacy.md).
    subjects = tables["subjects"]
    people = subjects.filter(subjects.restricted_at.isnull()).select("subject_id")
    window = window.semi_join(people, "subject_id")
    exposed = lines.inner_join(window, "subject_id")
    exposed = exposed.filter(exposed.fe <= exposed.occurred_at, exposed.occurred_at < end)
    # Each line keyed once, so a line with several qualifying clicks counts once (the built-in's EXISTS).
    exposed = exposed.select(
        "subject_id", "arm", "fe", "product_id", "occurred_at",
        line=ibis.row_number().over(ibis.window()),
        value=exposed.quantity.cast("float64") * exposed.price.cast("float64"),
    )
    clicks = events.filter(events.type == "rec_click").select(
        click_subject=events.subject_id, click_product=events.product_id, clicked_at=events.occurred_at
    )
    attribution_window = ibis.interval(seconds=int(RECOMMENDATION_ATTRIBUTION_WINDOW.total_seconds()))
    matched = exposed.left_join(
        clicks,
        [
            exposed.subject_id == clicks.click_subject,
            exposed.product_id == clicks.click_product,
            clicks.clicked_at >= exposed.fe,
            clicks.clicked_at <= exposed.occurred_at,
            clicks.clicked_at >= exposed.occurred_at - attribution_window,
        ],
    )
    per_line = matched.group_by("line", "arm", "value").aggregate(
        from_recommendation=matched.clicked_at.notnull().any()
    )
    return per_line.group_by("arm").aggregate(
        attributed=ibis.ifelse(per_line.from_recommendation, per_line.value, 0.0).sum(),
        total=per_line.value.sum(),
    )
