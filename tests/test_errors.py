"""config/errors.py: 404 and 500 answers outside the views, JSON under /api/ and pages elsewhere."""

from unittest import mock

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_an_unknown_api_address_is_a_json_404(api):
    response = api.get("/api/v1/no-such-endpoint")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found.", "code": "not_found"}


def test_an_unknown_page_is_the_sites_404_page(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404
    assert b"Page not found" in response.content and b"PrivacyLab" in response.content


def test_an_unexpected_error_in_the_api_is_a_json_500_not_an_html_page(api_key):
    client = Client(raise_request_exception=False, HTTP_AUTHORIZATION=f"Api-Key {api_key}")
    with mock.patch("experiments.views.subject_assign", side_effect=RuntimeError("a bug")):
        response = client.post("/api/v1/assignments", {"subject_id": "u-1"}, content_type="application/json")
    assert response.status_code == 500
    assert response.json() == {"detail": "Server error.", "code": "server_error"}


def test_an_unexpected_error_on_a_page_is_the_plain_500_page():
    client = Client(raise_request_exception=False)
    with mock.patch("django.contrib.auth.views.LoginView.get", side_effect=RuntimeError("a bug")):
        response = client.get("/accounts/login/")
    assert response.status_code == 500
    assert b"Something went wrong" in response.content
