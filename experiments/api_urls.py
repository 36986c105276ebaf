from django.urls import path

from experiments.views import AssignmentView

urlpatterns = [
    path("assignments", AssignmentView.as_view(), name="api-assignments"),
]
