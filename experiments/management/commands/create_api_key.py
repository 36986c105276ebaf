from django.core.management.base import BaseCommand, CommandError
from rest_framework_api_key.models import APIKey


class Command(BaseCommand):
    help = "Create an API key for a marketplace service and print it (it is stored only hashed)."

    def add_arguments(self, parser):
        parser.add_argument("name", help="who the key is for, e.g. 'checkout-service'")

    def handle(self, *args, name: str, **options):
        name = name.strip()
        if not name:
            raise CommandError("The key needs a non-empty name.")
        _, key = APIKey.objects.create_key(name=name)
        self.stdout.write(key)
