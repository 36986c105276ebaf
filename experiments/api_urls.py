"""The experiments app's API routes under /api/v1/: assignments, the published configuration, exposures, outcome events."""

from django.urls import path

from experiments.views import AssignmentView, ConfigView, EventsView, ExposuresView

urlpatterns = [
    path("assignments", AssignmentView.as_view(), name="api-assignments"),
    path("events", EventsView.as_view(), name="api-events"),
    path("config", ConfigView.as_view(), name="api-config"),
    path("exposures", ExposuresView.as_view(), name="api-exposures"),
]
