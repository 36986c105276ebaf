"""``manage.py load_catalog --categories categories.csv --products products.csv``.

categories.csv: ``key,name,sensitive`` (sensitive: true/false); products.csv:
``sku,name,category,price,active``. Rows are created or updated by key/sku,
all or nothing: a bad row stops the load and names its line and column.
"""

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from recommender.services.catalog import catalog_import_csv


class Command(BaseCommand):
    help = "Load categories and products from CSV files (created or updated, all or nothing)."

    def add_arguments(self, parser):
        parser.add_argument("--categories", type=Path, help="CSV with key,name,sensitive")
        parser.add_argument("--products", type=Path, help="CSV with sku,name,category,price,active")

    def handle(self, *args, categories: Path | None, products: Path | None, **options):
        if not categories and not products:
            raise CommandError("Give --categories and/or --products.")
        try:
            summary = catalog_import_csv(
                categories_csv=categories.read_text(encoding="utf-8-sig") if categories else None,
                products_csv=products.read_text(encoding="utf-8-sig") if products else None,
            )
        except OSError as exc:
            raise CommandError(f"Cannot read the file: {exc}") from exc
        except ValidationError as exc:
            lines = [f"  {field} (CSV line {_line(field)}): {' '.join(messages)}" for field, messages in exc.message_dict.items()]
            raise CommandError("Nothing was loaded:\n" + "\n".join(lines)) from exc
        self.stdout.write(
            self.style.SUCCESS(
                f"Categories: {summary.categories_created} created, {summary.categories_updated} updated; "
                f"products: {summary.products_created} created, {summary.products_updated} updated."
            )
        )


def _line(field: str) -> str:
    # categories[3].sensitive → line 5 of the file (a header line, and rows count from 0).
    try:
        return str(int(field.split("[", 1)[1].split("]", 1)[0]) + 2)
    except (IndexError, ValueError):
        return "?"
