"""``manage.py warehouse_export --to URL``: append new exposures and consent decisions to a warehouse now."""

from django.core.management.base import BaseCommand, CommandError

from experiments.warehouse import WarehouseError
from experiments.warehouse.export import warehouse_export


class Command(BaseCommand):
    help = (
        "Append the exposures and consent decisions not yet exported (pseudonymous ids only) to a URL: "
        "duckdb:///path/file.duckdb, postgres://…, or parquet:///path/dir. A rerun adds nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--to", required=True, help="the target URL")

    def handle(self, *args, to: str, **options):
        if "://" not in to:
            raise CommandError(f"--to must be a URL such as duckdb:///path/file.duckdb, got {to!r}")
        try:
            appended = warehouse_export(to=to)
        except WarehouseError as error:
            raise CommandError(str(error)) from error
        self.stdout.write(", ".join(f"{name}: {count} appended" for name, count in appended.items()))
