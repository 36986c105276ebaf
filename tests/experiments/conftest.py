"""Fixtures shared by the experiments tests."""

import pytest
from django.contrib.auth import get_user_model


@pytest.fixture
def staff_client(client):
    """A client logged in as a superuser "pm" (the admin's tests)."""
    user = get_user_model().objects.create_superuser("pm", password="pm-password-123")
    client.force_login(user)
    return client
