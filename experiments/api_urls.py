from django.urls import path

from experiments.views import AssignmentView, EventsView

urlpatterns = [
    path("assignments", AssignmentView.as_view(), name="api-assignments"),
    path("events", EventsView.as_view(), name="api-events"),
]
