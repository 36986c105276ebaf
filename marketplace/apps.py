"""The marketplace app: installed last, the one app allowed to import every other."""

from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    verbose_name = "Simulated marketplace"

    def ready(self) -> None:
        # The recommender cannot import this app, so ``evaluate_recommenders --synthetic``
        # and ``--grocery`` reach the generated data sets through its registry.
        from marketplace.datasets import grocery_baskets, synthetic_marketplace
        from recommender.datasets import dataset_register

        dataset_register(name="synthetic", generate=synthetic_marketplace)
        dataset_register(name="grocery", generate=grocery_baskets)
