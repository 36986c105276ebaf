"""The recommender's app config: registers its per-subject lists and cache keys for data subject requests."""

from django.apps import AppConfig


class RecommenderConfig(AppConfig):
    name = "recommender"
    verbose_name = "Recommendations"

    def ready(self) -> None:
        # consent cannot import this app, so data subject requests reach the
        # precomputed per-subject lists (tables and cache keys) through its registry.
        from consent.registry import personal_cache_register, personal_data_register
        from recommender.cache_keys import subject_cache_keys
        from recommender.models import RecommendationList

        personal_data_register(
            label="recommender.recommendationlist",
            model=RecommendationList,
            subject_field="subject",
            timestamp_field="created_at",
            purpose="personalization",
        )
        personal_cache_register(label="recommender.cache", keys=subject_cache_keys)
