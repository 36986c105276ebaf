"""``manage.py create_api_key NAME [--scopes assign,recommend,...]``: print a new API key once."""

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework_api_key.models import APIKey

from config.permissions import DEFAULT_SCOPES, SCOPE_DESCRIPTIONS, SCOPES, scopes_parse
from experiments.models import ApiKeyScopes


class Command(BaseCommand):
    help = (
        "Create an API key for a marketplace service and print it (it is stored only hashed). "
        f"Without --scopes it gets {','.join(s for s in SCOPES if s in DEFAULT_SCOPES)}."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="who the key is for, e.g. 'checkout-service'")
        parser.add_argument(
            "--scopes",
            help="comma-separated, of: "
            + "; ".join(f"{scope} ({SCOPE_DESCRIPTIONS[scope]})" for scope in SCOPES),
        )

    def handle(self, *args, name: str, scopes: str | None = None, **options):
        name = name.strip()
        if not name:
            raise CommandError("The key needs a non-empty name.")
        if len(name) > APIKey._meta.get_field("name").max_length:
            raise CommandError(f"The name is longer than {APIKey._meta.get_field('name').max_length} characters.")
        try:
            chosen = DEFAULT_SCOPES if scopes is None else scopes_parse(scopes)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        with transaction.atomic():
            api_key, key = APIKey.objects.create_key(name=name)
            row = ApiKeyScopes(api_key=api_key)
            row.set_scopes(chosen)
            row.save()
        self.stdout.write(key)
        self.stderr.write(f"scopes: {','.join(scope for scope in SCOPES if scope in chosen)}")
