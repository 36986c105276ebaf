"""The marketplace app: installed last, the one app allowed to import every other."""

from django.apps import AppConfig


class MarketplaceConfig(AppConfig):
    name = "marketplace"
    verbose_name = "Simulated marketplace"
