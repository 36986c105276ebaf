"""Checks of an experiment's decision settings that a database constraint cannot express.

Called by ``Experiment.clean`` (so every form shows them on their fields) and
by the decision's callers; each problem is a sentence a product manager can act on.
"""

from __future__ import annotations

from collections.abc import Iterable

from experiments.stats import Rule


def experiment_decision_problems(*, experiment, arm_keys: Iterable[str] | None = None) -> dict[str, list[str]]:
    """Field name → the problems with the experiment's rule, margin, privacy order, runtime and plan."""
    problems: dict[str, list[str]] = {}

    def add(field: str, message: str) -> None:
        problems.setdefault(field, []).append(message)

    rule = experiment.decision_rule
    margin = experiment.decision_margin
    if rule == Rule.SUPERIORITY:
        if margin is not None:
            add("decision_margin", "The superiority rule uses no margin: clear it, or choose do no harm or "
                "privacy first.")
    elif margin is None:
        add("decision_margin", "This rule needs a margin: the largest tolerated relative loss of the primary "
            "metric, e.g. 0.05 for at most 5% worse.")
    elif not 0 < margin < 1:
        add("decision_margin", "The margin is a relative loss between 0 and 1 (0.05 = at most 5% worse); "
            f"{margin:g} is not.")
    days = experiment.minimum_runtime_days
    if days is not None and (days < 7 or days % 7):
        add("minimum_runtime_days", f"Use whole weeks (7, 14, 21 … days), so every weekday is counted alike; "
            f"{days} is not.")
    order = experiment.privacy_order
    if order in (None, ""):
        order = []
    if not isinstance(order, list) or not all(isinstance(arm, str) and arm for arm in order):
        add("privacy_order", 'List arm keys as text, most private first, e.g. ["dp-popularity", "control"].')
    else:
        repeated = sorted({arm for arm in order if order.count(arm) > 1})
        if repeated:
            add("privacy_order", f"Each arm appears once; {', '.join(repeated)} appear(s) more than once.")
        if arm_keys is not None and order:
            keys = list(arm_keys)
            unknown = [arm for arm in order if arm not in keys]
            missing = [arm for arm in keys if arm not in order]
            if unknown:
                add("privacy_order", f"Unknown arm(s) {', '.join(unknown)}; the arms are {', '.join(keys)}.")
            if missing:
                add("privacy_order", f"List every arm; missing {', '.join(missing)}.")
    for field, label in (("plan_daily_subjects", "daily subjects"), ("plan_standard_deviation",
                                                                       "standard deviation")):
        value = getattr(experiment, field)
        if value is not None and not value > 0:
            add(field, f"The planned {label} must be positive.")
    effect = experiment.plan_minimum_effect
    if effect is not None and effect <= 0:
        add("plan_minimum_effect", "The minimum effect is a positive relative improvement, e.g. 0.05 for +5%.")
    return problems
