"""The notebook path: an experiment's refreshed per-exposure facts as a pandas DataFrame."""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from experiments.metrics.definitions import window_for
from experiments.metrics.refresh import metric_facts_refresh
from experiments.models import Arm, Experiment, MetricFacts, MetricOrderFacts

# The facts' columns as the notebook path reads them (``metric_facts_frame``), named after
# what ``experiments.stats.analyze`` takes: one row per exposed subject, no identifier.
FRAME_COLUMNS = (
    "arm", "age_band", "province", "platform", "customer", "converted", "opted_out", "consented", "granted",
    "gmv", "pre_gmv", "pre_orders", "orders", "impressions", "clicks", "order_gmv",
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
                "granted", "gmv", "pre_gmv", "pre_orders", "orders", "impressions", "clicks", "exposure_id",
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
