import pytest

from demo.catalog import Product, by_tag, catalog
from demo.money import Money


def test_catalog_loaded():
    assert len(catalog) == 5
    assert catalog["CUP-0100"].price == Money.of("12")


def test_by_tag():
    assert [p.sku for p in by_tag("hot")] == ["TEA-0001", "TEA-0002"]


def test_bad_sku():
    with pytest.raises(ValueError, match="bad SKU"):
        Product("tea", "Tea", Money.of(1))
