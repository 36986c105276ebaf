"""The consent app's API routes under ``/api/v1/``: consents, a subject's consents, data subject requests."""

from django.urls import path

from consent.views import (
    ConsentView,
    SubjectConsentsView,
    SubjectRequestCancelView,
    SubjectRequestDetailView,
    SubjectRequestsView,
)

urlpatterns = [
    path("consents", ConsentView.as_view(), name="api-consents"),
    path(
        "subjects/<str:subject_id>/consents",
        SubjectConsentsView.as_view(),
        name="api-subject-consents",
    ),
    path(
        "subjects/<str:subject_id>/requests",
        SubjectRequestsView.as_view(),
        name="api-subject-requests",
    ),
    path(
        "subjects/<str:subject_id>/requests/<uuid:request_id>",
        SubjectRequestDetailView.as_view(),
        name="api-subject-request",
    ),
    path(
        "subjects/<str:subject_id>/requests/<uuid:request_id>/cancel",
        SubjectRequestCancelView.as_view(),
        name="api-subject-request-cancel",
    ),
]
