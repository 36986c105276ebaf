"""The consent app's configuration (it imports no other app: DESIGN.md)."""

from django.apps import AppConfig


class ConsentConfig(AppConfig):
    name = "consent"
    verbose_name = "Consent and data subjects"
