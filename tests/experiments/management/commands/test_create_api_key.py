"""The create_api_key management command (the demo has tests/marketplace/test_demo.py)."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient
from rest_framework_api_key.models import APIKey

pytestmark = pytest.mark.django_db


def test_create_api_key_prints_a_working_key_stored_hashed():
    out = StringIO()
    call_command("create_api_key", "checkout-service", stdout=out)
    key = out.getvalue().strip()
    stored = APIKey.objects.get(name="checkout-service")
    assert key not in stored.hashed_key
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert client.post("/api/v1/assignments", {"subject_id": "u"}, format="json").status_code == 200


def test_create_api_key_needs_a_name():
    with pytest.raises(CommandError, match="non-empty name"):
        call_command("create_api_key", "  ")

