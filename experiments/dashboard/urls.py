"""The dashboard's URLs: the experiment list, each experiment's page, its recompute, JSON and exports."""

from django.urls import path

from experiments.dashboard import views

app_name = "dashboard"

urlpatterns = [
    path("", views.ExperimentListView.as_view(), name="experiment-list"),
    path("experiments/<slug:key>/", views.ExperimentDetailView.as_view(), name="experiment-detail"),
    path("experiments/<slug:key>/recompute/", views.RecomputeView.as_view(), name="recompute"),
    path("experiments/<slug:key>/recompute/status/", views.RecomputeStatusView.as_view(), name="recompute-status"),
    path("experiments/<slug:key>/results.json", views.ResultsJsonView.as_view(), name="results-json"),
    path("experiments/<slug:key>/export.csv", views.ExportCsvView.as_view(), name="export-csv"),
    path("experiments/<slug:key>/export.json", views.ExportJsonView.as_view(), name="export-json"),
]
