"""The catalog's import: rows and CSV, created or updated by key and sku, all or nothing."""

import pytest
from django.core.management import call_command

from recommender.models import Category, Product
from recommender.services.catalog import catalog_import

pytestmark = pytest.mark.django_db


def test_catalog_csv_loads_and_updates(tmp_path):
    categories = tmp_path / "categories.csv"
    products = tmp_path / "products.csv"
    categories.write_text("key,name,sensitive\nfashion,Fashion,false\nhealth,Health & Pharmacy,true\n")
    products.write_text("sku,name,category,price,active\nF1,Shirt,fashion,150000,true\nH1,Vitamins,health,,\n")
    call_command("load_catalog", categories=categories, products=products, skip_checks=True)
    assert Product.objects.get(sku="H1").category.sensitive is True
    assert Product.objects.get(sku="F1").price == 150000
    products.write_text("sku,name,category,price,active\nF1,Shirt (blue),fashion,160000,false\n")
    call_command("load_catalog", products=products, skip_checks=True)
    shirt = Product.objects.get(sku="F1")
    assert (shirt.name, shirt.price, shirt.active) == ("Shirt (blue)", 160000, False)


def test_a_bad_catalog_row_names_its_line_and_column_and_loads_nothing(tmp_path):
    from django.core.management.base import CommandError

    products = tmp_path / "products.csv"
    categories = tmp_path / "categories.csv"
    categories.write_text("key,name,sensitive\nfashion,Fashion,maybe\n")
    products.write_text("sku,name,category,price\nF1,Shirt,fashion,10\nF2,Shoe,nowhere,-3\n")
    with pytest.raises(CommandError) as raised:
        call_command("load_catalog", categories=categories, products=products, skip_checks=True)
    message = str(raised.value)
    assert "categories[0].sensitive (CSV line 2)" in message
    assert "products[1].category (CSV line 3)" in message and "products[1].price" in message
    assert not Product.objects.exists()


def test_the_catalog_import_reads_repeatable_flags():
    catalog_import(
        categories=[{"key": "groceries", "repeatable": "yes"}, {"key": "home"}],
        products=[{"sku": "A", "category": "home", "repeatable": "true"}, {"sku": "B", "category": "groceries"}],
    )
    assert Category.objects.get(key="groceries").repeatable and not Category.objects.get(key="home").repeatable
    assert Product.objects.get(sku="A").repeatable is True and Product.objects.get(sku="B").repeatable is None
    catalog_import(categories=[{"key": "groceries"}])  # no column: the flag stays
    assert Category.objects.get(key="groceries").repeatable
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="not a yes/no"):
        catalog_import(categories=[{"key": "x", "repeatable": "often"}])
