"""The demo's privacy experiment: its four arms, its plan, and its creation through the experiments' services.

``manage.py demo`` and ``manage.py simulate`` start it (``experiment_setup``);
the simulator then drives shoppers through it (``marketplace.driver``).
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from experiments import services
from experiments.models import Experiment, Metric, PrivacyTreatment, Surface

# The demo's privacy experiment: (arm key, weight, is control, treatment).
DEMO_ARMS = (
    (
        "control",
        1.0,
        True,
        {
            "name": "Full personalization, consent banner",
            "consent_prompt": "banner",
            "personalization_level": "full",
            "sensitive_category_policy": "explicit_consent",
            # Sensitive data may be used (with its own consent): the shorter sensitive retention applies.
            "retention_days": 90,
        },
    ),
    (
        "optin-cohort",
        1.0,
        False,
        {
            "name": "Explicit opt-in, k-anonymous cohorts",
            "consent_prompt": "modal",
            "personalization_level": "cohort",
            "sensitive_category_policy": "explicit_consent",
            "cohort_k": 50,
            "retention_days": 90,
        },
    ),
    (
        "dp-popularity",
        1.0,
        False,
        {
            "name": "No prompt, differentially private popularity",
            "consent_prompt": "none",
            "personalization_level": "dp_popularity",
            "sensitive_category_policy": "exclude",
            "dp_epsilon": 1.0,
            "retention_days": 90,
        },
    ),
    (
        "no-sensitive",
        1.0,
        False,
        {
            "name": "Full personalization, sensitive categories excluded",
            "consent_prompt": "banner",
            "personalization_level": "full",
            "sensitive_category_policy": "exclude",
            "retention_days": 365,
        },
    ),
)


# The surface the demo experiment runs on: the marketplace's product recommendations, whose
# default (what every shopper outside the experiment gets) is the control's design, today's.
DEMO_SURFACE = {"key": "product-recommendations", "name": "Product recommendations"}


def demo_surface_ensure(*, arms=DEMO_ARMS) -> Surface:
    """The demo's surface: created with the control's treatment as its default, or the existing one as it is
    (a default a rollout promoted earlier stays)."""
    surface = Surface.objects.filter(key=DEMO_SURFACE["key"]).first()
    if surface is not None:
        return surface
    control = next(fields for _, _, is_control, fields in arms if is_control)
    return services.surface_create(
        key=DEMO_SURFACE["key"], name=DEMO_SURFACE["name"], default_treatment=_treatment_for(control),
        description="The recommendation list of the product and home pages: its privacy design.",
    )


# The largest GMV loss per subject the demo's product team accepts for more privacy.
DEMO_GMV_MARGIN = 0.10
# What a product manager would read off the marketplace's history to plan the demo experiment:
# GMV per subject (capped, IDR) and its spread per subject, and the opt-out rate, in this simulator.
DEMO_PLAN = {"gmv_baseline": 75_000.0, "gmv_standard_deviation": 180_000.0, "opt_out_baseline": 0.045}


def experiment_setup(
    *,
    key: str,
    owner,
    start: datetime,
    arms=DEMO_ARMS,
    gmv_cap_percentile: float | None = 0.99,
    opt_out_margin: float = 0.02,
    planned_subjects_per_arm: int | None = None,
    salt: str | None = None,
    decision_rule: str = Experiment.DecisionRule.PRIVACY_FIRST,
    decision_margin: float | None = DEMO_GMV_MARGIN,
    daily_subjects: float | None = None,
    surface: Surface | None = None,
) -> Experiment:
    """Create and start (at ``start``) a privacy experiment with the given arms and an opt-out guardrail.

    The demo's question is privacy first: the most private design whose GMV per
    subject stays within ``decision_margin`` of the control, its opt-out
    guardrail passing. With ``daily_subjects`` the planner sizes it (from the
    simulated marketplace's GMV level and spread, ``DEMO_PLAN``); otherwise
    ``planned_subjects_per_arm`` is used as given. ``salt`` fixes the
    assignment hash (a reproducible simulation); by default it is random.
    ``surface``: the surface it runs on (``demo_surface_ensure``), whose treatment
    its arms decide while it runs and to which its winner can be shipped.
    """
    with transaction.atomic():
        experiment = services.experiment_save(
            experiment=Experiment(
                key=key,
                name="Privacy designs for product recommendations",
                hypothesis=(
                    "An explicit opt-in with k-anonymous cohort recommendations keeps most of full "
                    "personalization's GMV while cutting opt-outs; excluding sensitive categories cuts "
                    "opt-outs among shoppers interested in them."
                ),
                owner=owner,
                surface=surface,
                primary_metric=Metric.GMV,
                planned_subjects_per_arm=planned_subjects_per_arm,
                gmv_cap_percentile=gmv_cap_percentile,
                decision_rule=decision_rule,
                decision_margin=None if decision_rule == Experiment.DecisionRule.SUPERIORITY else decision_margin,
                **({"salt": salt} if salt else {}),
                **({"plan_daily_subjects": daily_subjects, "plan_baseline": DEMO_PLAN["gmv_baseline"],
                    "plan_standard_deviation": DEMO_PLAN["gmv_standard_deviation"]} if daily_subjects else {}),
            )
        )
        for arm_key, weight, is_control, fields in arms:
            services.arm_create(
                experiment=experiment, key=arm_key, treatment=_treatment_for(fields), weight=weight, is_control=is_control
            )
        services.guardrail_create(
            experiment=experiment, metric=Metric.OPT_OUT, margin=opt_out_margin,
            plan_baseline=DEMO_PLAN["opt_out_baseline"] if daily_subjects else None,
        )
        if daily_subjects:
            services.experiment_plan_apply(experiment=experiment)
    return services.experiment_transition(experiment=experiment, action="start", now=start)


def _treatment_for(fields: dict) -> PrivacyTreatment:
    """A treatment with exactly these settings: reused if it exists, else created (renamed if taken)."""
    settings = {name: value for name, value in fields.items() if name != "name"}
    existing = PrivacyTreatment.objects.filter(name__startswith=fields["name"], **settings).order_by("id").first()
    if existing is not None:
        return existing
    name, version = fields["name"], 1
    while PrivacyTreatment.objects.filter(name=name).exists():
        version += 1
        name = f"{fields['name']} (v{version})"
    return services.treatment_create(**{**fields, "name": name})
