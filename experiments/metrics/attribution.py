"""Recommendation attribution: per arm, the order value bought after a recommendation click on the same product."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db.models import (
    Case,
    DateTimeField,
    DecimalField,
    Exists,
    ExpressionWrapper,
    F,
    OuterRef,
    Sum,
    Value,
    When,
)

from experiments.models import OrderLine, OutcomeEvent

# An order line counts as bought from a recommendation when the subject clicked
# a recommendation of that product in this many days before the order.
RECOMMENDATION_ATTRIBUTION_WINDOW = timedelta(days=7)


def recommendation_gmv_attribution(
    *,
    experiment_id: int,
    phase: int,
    window_start: datetime,
    window_end: datetime,
    using: str = "default",
) -> dict[str, dict[str, float]]:
    """Per arm key, ``{"attributed": …, "total": …}``: the order value bought after a click, and all of it.

    Over the window's subjects (the phase's exposures in ``[window_start,
    window_end)``) and their orders after exposure, uncapped; an arm without
    order lines is absent; a subject who restricted processing is left out. One aggregate query, rows per arm.
    """
    money = DecimalField(max_digits=20, decimal_places=2)
    lines = (
        OrderLine.objects.using(using)
        .filter(
            # One filter() call: every condition applies to the same exposure row.
            subject__exposures__experiment_id=experiment_id,
            subject__exposures__phase=phase,
            subject__exposures__first_exposed_at__gte=window_start,
            subject__exposures__first_exposed_at__lt=window_end,
            subject__exposures__first_exposed_at__lte=F("occurred_at"),
            occurred_at__lt=window_end,
            # A subject who restricted processing is left out, as from every other measurement (docs/privacy.md).
            subject__restricted_at__isnull=True,
        )
        .annotate(
            arm_key=F("subject__exposures__arm__key"),
            exposed_at=F("subject__exposures__first_exposed_at"),
            attribution_start=ExpressionWrapper(
                F("occurred_at") - Value(RECOMMENDATION_ATTRIBUTION_WINDOW), output_field=DateTimeField()
            ),
            line_value=ExpressionWrapper(F("quantity") * F("price"), output_field=money),
        )
        .annotate(
            from_recommendation=Exists(
                OutcomeEvent.objects.filter(
                    subject_id=OuterRef("subject_id"),
                    type=OutcomeEvent.Type.REC_CLICK,
                    product_id=OuterRef("product_id"),
                    occurred_at__gte=OuterRef("exposed_at"),
                    occurred_at__lte=OuterRef("occurred_at"),
                ).filter(occurred_at__gte=OuterRef("attribution_start"))
            )
        )
        .order_by()
        .values("arm_key")
        .annotate(
            total=Sum("line_value"),
            attributed=Sum(Case(When(from_recommendation=True, then=F("line_value")), default=Value(0),
                                output_field=money)),
        )
    )
    return {
        row["arm_key"]: {"attributed": float(row["attributed"] or 0), "total": float(row["total"] or 0)}
        for row in lines
    }
