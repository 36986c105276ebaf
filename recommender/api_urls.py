"""The recommender's API routes under /api/v1/."""

from django.urls import path

from recommender.views import RecommendationView

urlpatterns = [
    path("recommendations/<str:subject_id>", RecommendationView.as_view(), name="api-recommendations"),
]
