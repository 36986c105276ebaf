"""Random experiment data written to the database, and the same metrics computed by pandas.

``seed_experiment`` writes exposures, outcome events and consent decisions for a
started experiment (with decoys the pipeline must ignore: another phase,
another experiment, other purposes, events outside the window) and returns the
rows it wrote as DataFrames; ``reference_sums`` computes, with pandas on those
rows, what ``metric_statistics_compute`` must return.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd

from consent.models import ConsentEvent, Notice, Purpose, Subject
from consent.pseudonyms import subject_pseudonym
from experiments.metrics.definitions import SEGMENT_DIMENSIONS, UNKNOWN_SEGMENT
from experiments.models import Experiment, Exposure, OrderLine, OutcomeEvent

AGE_BANDS = ["18-24", "25-34", "35-44", "45+", ""]
PROVINCES = ["DKI Jakarta", "Jawa Barat", "Bali", ""]
PLATFORMS = ["android", "ios", "web"]


@dataclass
class Seeded:
    exposures: pd.DataFrame  # subject, arm, fe, phase, experiment_id, age_band, province, platform
    events: pd.DataFrame  # subject, type, occurred_at, amount
    consents: pd.DataFrame  # subject, purpose, action, recorded_at, expires_at, notice_id (ledger order)


def _moment(rng: random.Random, start: datetime, end: datetime) -> datetime:
    seconds = (end - start).total_seconds()
    # Whole microseconds, like the database stores.
    return start + timedelta(microseconds=int(rng.uniform(0, seconds) * 1_000_000))


def seed_experiment(
    experiment: Experiment,
    *,
    subjects: int,
    as_of: datetime,
    seed: int = 1,
    decoys: bool = True,
    prefix: str = "s",
) -> Seeded:
    rng = random.Random(seed)
    # Expiries and notice versions of the grants, drawn apart so the other draws stay as they were.
    grant_rng = random.Random(seed + 10_000)
    arms = list(experiment.arms.order_by("id"))
    start = experiment.started_at
    grant_notices = list(Notice.objects.filter(purpose_id=Purpose.PERSONALIZATION).order_by("effective_at", "id"))
    marketing_notice = Notice.objects.filter(purpose_id=Purpose.MARKETING).order_by("effective_at").first()
    subject_rows, exposure_rows, events, consents = [], [], [], []
    for i in range(subjects):
        pseudonym = subject_pseudonym(f"{prefix}{seed}-{i}")
        attrs = {
            "age_band": rng.choice(AGE_BANDS),
            "province": rng.choice(PROVINCES),
            "platform": rng.choice(PLATFORMS),
        }
        subject_rows.append(Subject(pseudonym=pseudonym, **attrs))
        arm = rng.choice(arms)
        fe = _moment(rng, start, as_of + timedelta(hours=6))  # some exposed after as_of: excluded
        phase = experiment.phase if not decoys or rng.random() > 0.05 else experiment.phase + 1
        exposure_rows.append(
            {"subject": pseudonym, "arm": arm.key, "arm_id": arm.id, "fe": fe, "phase": phase, **attrs}
        )
        spend = rng.lognormvariate(11.5, 1.0)  # a subject's typical order value, IDR
        for _ in range(rng.choice([0, 0, 0, 1, 1, 2, 4])):
            when = _moment(rng, fe, as_of + timedelta(days=2))
            events.append((pseudonym, "order", when, Decimal(f"{spend * rng.uniform(0.5, 1.5):.2f}")))
        for _ in range(rng.choice([0, 0, 1, 2, 3])):  # history: some inside the pre-exposure window
            when = _moment(rng, fe - timedelta(days=40), fe)
            events.append((pseudonym, "order", when, Decimal(f"{spend * rng.uniform(0.5, 1.5):.2f}")))
        for _ in range(rng.choice([0, 1, 3, 6])):
            events.append((pseudonym, "rec_impression", _moment(rng, fe - timedelta(days=3), as_of + timedelta(days=1)), None))
        for _ in range(rng.choice([0, 0, 1, 2])):
            events.append((pseudonym, "rec_click", _moment(rng, fe - timedelta(days=3), as_of + timedelta(days=1)), None))
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            action = rng.choice(["grant", "withdraw"])
            consents.append(
                (pseudonym, Purpose.PERSONALIZATION, action, _moment(rng, fe - timedelta(days=2), as_of + timedelta(days=1)))
            )
        if decoys and rng.random() < 0.2:
            consents.append((pseudonym, Purpose.MARKETING, "withdraw", _moment(rng, fe, as_of)))
    if decoys:
        # The same subjects in an unrelated experiment's exposures must not leak in.
        other = Experiment.objects.exclude(pk=experiment.pk).first()
        if other is not None:
            other_arm = other.arms.first()
            exposure_rows_other = [
                Exposure(experiment=other, arm=other_arm, subject_id=row["subject"], phase=1, first_exposed_at=row["fe"])
                for row in exposure_rows[: subjects // 3]
            ]
        else:
            exposure_rows_other = []
    Subject.objects.bulk_create(subject_rows)
    Exposure.objects.bulk_create(
        [
            Exposure(
                experiment=experiment, arm_id=row["arm_id"], subject_id=row["subject"], phase=row["phase"],
                first_exposed_at=row["fe"],
            )
            for row in exposure_rows
        ]
        + (exposure_rows_other if decoys else [])
    )
    stored = OutcomeEvent.objects.bulk_create(
        [
            OutcomeEvent(
                event_id=f"{prefix}{seed}-e{n}", subject_id=subject, type=kind, occurred_at=when,
                received_at=when, amount=amount, product_id="" if kind == "order" else f"p{n % 17}",
                category="" if kind == "order" else "fashion",
            )
            for n, (subject, kind, when, amount) in enumerate(events)
        ]
    )
    OrderLine.objects.bulk_create(
        [
            OrderLine(event=row, subject_id=row.subject_id, occurred_at=row.occurred_at, product_id="p1",
                      category="fashion", quantity=1, price=row.amount)
            for row in stored
            if row.type == "order"
        ]
    )
    consents.sort(key=lambda row: row[3])  # ledger ids follow time, as the consent service ensures
    ledger = []
    for subject, purpose, action, when in consents:
        expires_at, notice = None, None
        if action == "grant":
            # Some grants lapse (before or after the analysis time), under any notice version.
            if grant_rng.random() < 0.3:
                expires_at = when + timedelta(microseconds=int(grant_rng.uniform(3_600, 6 * 86_400) * 1_000_000))
            notice = grant_rng.choice(grant_notices) if purpose == Purpose.PERSONALIZATION else marketing_notice
        ledger.append((subject, purpose, action, when, expires_at, notice))
    ConsentEvent.objects.bulk_create(
        [
            ConsentEvent(
                subject_id=subject, purpose_id=purpose, action=action, recorded_at=when, expires_at=expires_at,
                notice=notice,
            )
            for subject, purpose, action, when, expires_at, notice in ledger
        ]
    )
    return Seeded(
        exposures=pd.DataFrame(exposure_rows),
        events=pd.DataFrame(events, columns=["subject", "type", "occurred_at", "amount"]),
        consents=pd.DataFrame(
            [(*row[:5], row[5].pk if row[5] is not None else None) for row in ledger],
            columns=["subject", "purpose", "action", "recorded_at", "expires_at", "notice_id"],
        ),
    )


def reference_per_subject(
    seeded: Seeded,
    *,
    phase: int,
    window_start: datetime,
    window_end: datetime,
    pre_exposure_days: int,
    cap_percentile: float | None,
    counting_notices: list[int] | None = None,
) -> tuple[pd.DataFrame, float | None]:
    """Per exposed subject, every metric's value, computed with pandas; and the GMV cap.

    ``counting_notices``: the personalization notices whose grants count at
    ``window_end`` (default: every notice).
    """
    ex = seeded.exposures
    ex = ex[(ex.phase == phase) & (ex.fe >= window_start) & (ex.fe < window_end)].copy()
    ex = ex.set_index("subject")
    ev = seeded.events.merge(ex[["fe"]], left_on="subject", right_index=True)
    ev["amount"] = ev["amount"].astype(float)
    post = ev[(ev.occurred_at >= ev.fe) & (ev.occurred_at < window_end)]
    pre = ev[
        (ev.type == "order")
        & (ev.occurred_at < ev.fe)
        & (ev.occurred_at >= ev.fe - timedelta(days=pre_exposure_days))
    ]
    orders = post[post.type == "order"].groupby("subject")
    # The average order value caps each order, at the percentile of the counted orders' amounts.
    amounts = post.loc[post.type == "order", "amount"]
    order_cap = None
    if cap_percentile is not None and len(amounts):
        order_cap = float(np.quantile(amounts.to_numpy(), cap_percentile, method="linear"))
    capped_orders = post[post.type == "order"].assign(
        amount=amounts if order_cap is None else amounts.clip(upper=order_cap)
    )
    ex.attrs["order_cap"] = order_cap
    ex["aov_gmv"] = capped_orders.groupby("subject")["amount"].sum().reindex(ex.index, fill_value=0.0)
    ex["orders"] = orders.size().reindex(ex.index, fill_value=0)
    ex["gmv"] = orders["amount"].sum().reindex(ex.index, fill_value=0.0)
    ex["pre_gmv"] = pre.groupby("subject")["amount"].sum().reindex(ex.index, fill_value=0.0)
    ex["pre_orders"] = pre.groupby("subject").size().reindex(ex.index, fill_value=0)
    ex["impressions"] = post[post.type == "rec_impression"].groupby("subject").size().reindex(ex.index, fill_value=0)
    ex["clicks"] = post[post.type == "rec_click"].groupby("subject").size().reindex(ex.index, fill_value=0)
    # The subject's personalization decisions in ledger order (the seeded rows are), each
    # with the decision before it.
    c = seeded.consents[seeded.consents.purpose == Purpose.PERSONALIZATION].copy()
    c["prev_action"] = c.groupby("subject")["action"].shift(1)
    c["prev_expires"] = c.groupby("subject")["expires_at"].shift(1)
    c = c.merge(ex[["fe"]], left_on="subject", right_index=True)
    c = c[c.recorded_at < window_end]
    ends_grant = (c.prev_action == "grant") & (c.prev_expires.isna() | (c.prev_expires > c.recorded_at))
    opted = c[(c.action == "withdraw") & (c.recorded_at >= c.fe) & ends_grant].subject.unique()
    ex["opted_out"] = ex.index.isin(opted).astype(int)
    notices = set(c.notice_id.dropna()) if counting_notices is None else set(counting_notices)
    last = c.groupby("subject").tail(1).set_index("subject")  # (``last()`` would skip nulls)
    valid = (last.action == "grant") & (last.expires_at.isna() | (last.expires_at > window_end)) & last.notice_id.isin(notices)
    ex["consented"] = ex.index.isin(last.index[valid]).astype(int)
    granted_after = c[(c.action == "grant") & (c.recorded_at >= c.fe)].subject.unique()
    before = c[c.recorded_at < c.fe].groupby("subject").tail(1).set_index("subject")
    standing = before.index[(before.action == "grant") & (before.expires_at.isna() | (before.expires_at > before.fe))]
    ex["granted"] = (
        (ex.opted_out == 1) | ex.index.isin(granted_after) | ex.index.isin(standing)
    ).astype(int)
    buyers = ex.loc[ex.gmv > 0, "gmv"]
    cap = None
    if cap_percentile is not None and len(buyers):
        cap = float(np.quantile(buyers.to_numpy(), cap_percentile, method="linear"))
        ex["gmv"] = ex["gmv"].clip(upper=cap)
        ex["pre_gmv"] = ex["pre_gmv"].clip(upper=cap)
    ex["converted"] = (ex.orders > 0).astype(int)
    ex["customer"] = np.where(ex.pre_orders > 0, "returning", "new")
    for dimension in ("age_band", "province", "platform"):
        ex[dimension] = ex[dimension].replace("", UNKNOWN_SEGMENT)
    return ex, cap


def reference_sums(per_subject: pd.DataFrame, by: list[str]) -> dict:
    """``{group: {sum name: value}}`` exactly as ``MetricStatistics.sums`` names them."""
    frame = per_subject.assign(
        gmv_ss=per_subject.gmv**2,
        pre_ss=per_subject.pre_gmv**2,
        gmv_pre=per_subject.gmv * per_subject.pre_gmv,
        orders_ss=per_subject.orders**2,
        aov_ss=per_subject.aov_gmv**2,
        aov_orders=per_subject.aov_gmv * per_subject.orders,
        impressions_ss=per_subject.impressions**2,
        clicks_ss=per_subject.clicks**2,
        clicks_impressions=per_subject.clicks * per_subject.impressions,
    )
    grouped = frame.groupby(by).agg(
        n=("gmv", "size"),
        converted=("converted", "sum"),
        opted_out=("opted_out", "sum"),
        consented=("consented", "sum"),
        granted=("granted", "sum"),
        gmv_sum=("gmv", "sum"),
        gmv_ss=("gmv_ss", "sum"),
        pre_sum=("pre_gmv", "sum"),
        pre_ss=("pre_ss", "sum"),
        gmv_pre=("gmv_pre", "sum"),
        orders_sum=("orders", "sum"),
        orders_ss=("orders_ss", "sum"),
        aov_sum=("aov_gmv", "sum"),
        aov_ss=("aov_ss", "sum"),
        aov_orders=("aov_orders", "sum"),
        impressions_sum=("impressions", "sum"),
        impressions_ss=("impressions_ss", "sum"),
        clicks_sum=("clicks", "sum"),
        clicks_ss=("clicks_ss", "sum"),
        clicks_impressions=("clicks_impressions", "sum"),
    )
    return {key: {name: float(value) for name, value in row.items()} for key, row in grouped.iterrows()}


SEGMENTS = SEGMENT_DIMENSIONS


def populate(experiment: Experiment, arms: dict[str, dict], *, seed: int = 3, prefix: str = "p") -> None:
    """Exposed subjects per arm with given rates: ``{"control": {"n": 200, "opt_out": 0.05,
    "conversion": 0.2, "gmv": 100_000, "impressions": 2, "clicks": 0.3}}``. Times lie in the
    experiment's first day; rates are met exactly (the first ⌊rate·n⌋ subjects)."""
    rng = random.Random(seed)
    start = experiment.started_at
    arm_ids = dict(experiment.arms.values_list("key", "id"))
    notice = Notice.objects.filter(purpose_id=Purpose.PERSONALIZATION).order_by("effective_at").first()
    subjects, exposures, events, consents = [], [], [], []
    for key, spec in arms.items():
        n = spec["n"]
        for i in range(n):
            pseudonym = subject_pseudonym(f"{prefix}-{key}-{i}")
            subjects.append(Subject(pseudonym=pseudonym, platform=PLATFORMS[i % 3], age_band=AGE_BANDS[i % 4]))
            fe = start + timedelta(minutes=1 + i % 600)
            exposures.append(
                Exposure(experiment=experiment, arm_id=arm_ids[key], subject_id=pseudonym, first_exposed_at=fe, phase=experiment.phase)
            )
            if i < int(spec.get("opt_out", 0) * n):  # an opt-out ends a grant
                consents.append(
                    ConsentEvent(subject_id=pseudonym, purpose_id=Purpose.PERSONALIZATION, action="grant",
                                 notice=notice, recorded_at=fe + timedelta(minutes=2))
                )
                consents.append(
                    ConsentEvent(subject_id=pseudonym, purpose_id=Purpose.PERSONALIZATION, action="withdraw",
                                 recorded_at=fe + timedelta(minutes=5))
                )
            if i < int(spec.get("conversion", 0) * n):
                amount = Decimal(f"{spec.get('gmv', 100_000) * rng.uniform(0.5, 1.5):.2f}")
                events.append(OutcomeEvent(event_id=f"{prefix}-{key}-{i}-o", subject_id=pseudonym, type="order",
                                           occurred_at=fe + timedelta(minutes=30), received_at=fe, amount=amount))
            for j in range(spec.get("impressions", 0)):
                events.append(OutcomeEvent(event_id=f"{prefix}-{key}-{i}-i{j}", subject_id=pseudonym, type="rec_impression",
                                           occurred_at=fe + timedelta(minutes=10), received_at=fe, product_id="p1"))
            if rng.random() < spec.get("clicks", 0):
                events.append(OutcomeEvent(event_id=f"{prefix}-{key}-{i}-c", subject_id=pseudonym, type="rec_click",
                                           occurred_at=fe + timedelta(minutes=11), received_at=fe, product_id="p1"))
    Subject.objects.bulk_create(subjects)
    Exposure.objects.bulk_create(exposures)
    OutcomeEvent.objects.bulk_create(events)
    ConsentEvent.objects.bulk_create(consents)
