"""The catalog's writes: categories and products imported from rows or CSV, all or nothing."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from django.core.exceptions import ValidationError
from django.db import transaction

from recommender.models import Category, Product


@dataclass(frozen=True)
class CatalogImport:
    categories_created: int = 0
    categories_updated: int = 0
    products_created: int = 0
    products_updated: int = 0


_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


def _flag(value: object, where: str, errors: dict) -> bool:
    text = str(value if value is not None else "").strip().lower()
    if text in _TRUE:
        return True
    if text not in _FALSE:
        errors.setdefault(where, []).append(f"{value!r} is not a yes/no value (true/false, 1/0).")
    return False


def _text(row: Mapping, name: str, where: str, errors: dict, *, max_length: int, required: bool = True) -> str:
    value = (row.get(name) or "").strip()
    if required and not value:
        errors.setdefault(f"{where}.{name}", []).append("This field is required.")
    elif len(value) > max_length:
        errors.setdefault(f"{where}.{name}", []).append(f"At most {max_length} characters.")
    elif not value.isprintable():
        errors.setdefault(f"{where}.{name}", []).append("Must not contain control characters.")
    return value


def catalog_import(
    *, categories: Iterable[Mapping[str, object]] = (), products: Iterable[Mapping[str, object]] = ()
) -> CatalogImport:
    """Create or update categories (key, name, sensitive, repeatable) and products (sku, name, category,
    price, active, repeatable).

    All or nothing: any bad row raises a ValidationError naming its line and
    column (``categories[3].sensitive``), and nothing is written.
    """
    errors: dict[str, list[str]] = {}
    clean_categories: dict[str, dict] = {}
    for index, row in enumerate(categories):
        where = f"categories[{index}]"
        key = _text(row, "key", where, errors, max_length=64)
        name = _text(row, "name", where, errors, max_length=120, required=False) or key
        sensitive = _flag(row.get("sensitive"), f"{where}.sensitive", errors)
        # Absent or blank: a new category is not repeatable, an existing one keeps its flag.
        repeatable = None if row.get("repeatable") in (None, "") else _flag(
            row.get("repeatable"), f"{where}.repeatable", errors)
        if key in clean_categories:
            errors.setdefault(f"{where}.key", []).append(f"Category {key!r} appears twice.")
        clean_categories[key] = {"name": name, "sensitive": sensitive, "repeatable": repeatable}
    known = set(Category.objects.values_list("key", flat=True)) | set(clean_categories)
    clean_products: dict[str, dict] = {}
    for index, row in enumerate(products):
        where = f"products[{index}]"
        sku = _text(row, "sku", where, errors, max_length=64)
        name = _text(row, "name", where, errors, max_length=200, required=False) or sku
        category = _text(row, "category", where, errors, max_length=64)
        if category and category not in known:
            errors.setdefault(f"{where}.category", []).append(f"Unknown category {category!r}.")
        price = None
        raw_price = str(row.get("price") or "").strip()
        if raw_price:
            try:
                price = Decimal(raw_price)
                if not price.is_finite() or price < 0 or price >= Decimal("1e13"):
                    raise InvalidOperation
                price = price.quantize(Decimal("0.01"))
            except InvalidOperation:
                errors.setdefault(f"{where}.price", []).append("Must be a non-negative amount in IDR.")
                price = None
        active = True if row.get("active") in (None, "") else _flag(row.get("active"), f"{where}.active", errors)
        # Blank: as the category says.
        repeatable = None if row.get("repeatable") in (None, "") else _flag(
            row.get("repeatable"), f"{where}.repeatable", errors)
        if sku in clean_products:
            errors.setdefault(f"{where}.sku", []).append(f"Product {sku!r} appears twice.")
        clean_products[sku] = {"name": name, "category": category, "price": price, "active": active,
                               "repeatable": repeatable}
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        existing = {c.key: c for c in Category.objects.select_for_update().filter(key__in=clean_categories)}
        new = [
            Category(key=key, name=values["name"], sensitive=values["sensitive"], repeatable=bool(values["repeatable"]))
            for key, values in clean_categories.items()
            if key not in existing
        ]
        for key, values in clean_categories.items():
            if key in existing:
                existing[key].name, existing[key].sensitive = values["name"], values["sensitive"]
                if values["repeatable"] is not None:
                    existing[key].repeatable = values["repeatable"]
        Category.objects.bulk_create(new, batch_size=1000)
        Category.objects.bulk_update(list(existing.values()), ["name", "sensitive", "repeatable"], batch_size=1000)
        category_ids = dict(Category.objects.values_list("key", "id"))
        current = {p.sku: p for p in Product.objects.select_for_update().filter(sku__in=clean_products)}
        new_products, changed = [], []
        for sku, values in clean_products.items():
            fields = {
                "name": values["name"],
                "category_id": category_ids[values["category"]],
                "price": values["price"],
                "active": values["active"],
                "repeatable": values["repeatable"],
            }
            if sku in current:
                for name, value in fields.items():
                    setattr(current[sku], name, value)
                changed.append(current[sku])
            else:
                new_products.append(Product(sku=sku, **fields))
        Product.objects.bulk_create(new_products, batch_size=2000)
        Product.objects.bulk_update(changed, ["name", "category_id", "price", "active", "repeatable"], batch_size=2000)
    return CatalogImport(
        categories_created=len(new),
        categories_updated=len(existing),
        products_created=len(new_products),
        products_updated=len(changed),
    )


def catalog_import_csv(*, categories_csv: str | None = None, products_csv: str | None = None) -> CatalogImport:
    """``catalog_import`` from CSV text with a header row (columns as ``catalog_import`` names them)."""

    def rows(text: str | None, required: set[str], label: str) -> list[dict]:
        if not text:
            return []
        reader = csv.DictReader(io.StringIO(text))
        missing = sorted(required - set(reader.fieldnames or ()))
        if missing:
            raise ValidationError({label: f"Missing columns: {', '.join(missing)}."})
        return list(reader)

    return catalog_import(
        categories=rows(categories_csv, {"key"}, "categories"),
        products=rows(products_csv, {"sku", "category"}, "products"),
    )
