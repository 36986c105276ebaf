"""The experiments app's configuration: at start-up it registers the personal data it holds with consent's registry."""

from django.apps import AppConfig


class ExperimentsConfig(AppConfig):
    name = "experiments"
    verbose_name = "Experiments"

    def ready(self) -> None:
        # consent cannot import this app, so data subject requests (export,
        # erasure) and the retention purge reach the experiments' personal data
        # through its registry.
        from consent.registry import personal_data_register
        from experiments.models import (
            Exposure,
            MetricFacts,
            MetricOrderFacts,
            OrderLine,
            OutcomeEvent,
            RolloutExposure,
        )
        from experiments.services import (
            exposures_retention_purge,
            metric_facts_retention_purge,
            metric_order_facts_retention_purge,
        )

        # Measurement data: kept while the experiment runs and for EXPOSURE_RETENTION_DAYS
        # after it ended (docs/privacy.md), then purged with its metric facts.
        personal_data_register(
            label="experiments.exposure",
            model=Exposure,
            subject_field="subject",
            timestamp_field="first_exposed_at",
            purge=exposures_retention_purge,
        )
        # Outcomes are behavioural data: they age out with that purpose's retention.
        personal_data_register(
            label="experiments.outcomeevent",
            model=OutcomeEvent,
            subject_field="subject",
            timestamp_field="occurred_at",
            purpose="behavioral_tracking",
        )
        personal_data_register(
            label="experiments.orderline",
            model=OrderLine,
            subject_field="subject",
            timestamp_field="occurred_at",
            purpose="behavioral_tracking",
        )
        # Which side of a rollout's ramp a subject was on: compared with their orders, so it ages out
        # with the orders it is compared with.
        personal_data_register(
            label="experiments.rolloutexposure",
            model=RolloutExposure,
            subject_field="subject",
            timestamp_field="first_exposed_at",
            purpose="behavioral_tracking",
        )
        # Derived per exposure (the metric facts): exported with the rest, erased
        # with the exposure (a cascade) or on their own.
        personal_data_register(
            label="experiments.metricfacts",
            export=lambda pseudonym: list(
                MetricFacts.objects.filter(exposure__subject_id=pseudonym).order_by("pk").values()
            ),
            erase=lambda pseudonym: MetricFacts.objects.filter(exposure__subject_id=pseudonym).delete()[0],
            purge=metric_facts_retention_purge,
        )
        # The orders the average order value counts, per exposure: derived like the facts.
        personal_data_register(
            label="experiments.metricorderfacts",
            export=lambda pseudonym: list(
                MetricOrderFacts.objects.filter(exposure__subject_id=pseudonym).order_by("pk").values()
            ),
            erase=lambda pseudonym: MetricOrderFacts.objects.filter(exposure__subject_id=pseudonym).delete()[0],
            purge=metric_order_facts_retention_purge,
        )
