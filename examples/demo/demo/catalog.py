"""A product catalog loaded from embedded JSON when the module is imported."""

from __future__ import annotations

import dataclasses
import json
import re

from demo.money import Money
from demo.registry import register

_SKU = re.compile(r"^[A-Z]{3}-\d{4}$")

_CATALOG_JSON = """
[
  {"sku": "TEA-0001", "name": "Green tea", "price": "4.50", "tags": ["drink", "hot"]},
  {"sku": "TEA-0002", "name": "Black tea", "price": "3.90", "tags": ["drink", "hot"]},
  {"sku": "CUP-0100", "name": "Mug", "price": "12.00", "tags": ["kitchen"]},
  {"sku": "CUP-0101", "name": "Glass", "price": "6.25", "tags": ["kitchen"]},
  {"sku": "SNK-0042", "name": "Shortbread", "price": "2.99", "tags": ["food"]}
]
"""


@register("product")
@dataclasses.dataclass(frozen=True)
class Product:
    sku: str
    name: str
    price: Money
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not _SKU.match(self.sku):
            raise ValueError(f"bad SKU {self.sku!r}")


def _load(text: str) -> dict[str, Product]:
    items = {}
    for raw in json.loads(text):
        product = Product(raw["sku"], raw["name"], Money.of(raw["price"]), tuple(raw["tags"]))
        items[product.sku] = product
    return items


catalog: dict[str, Product] = _load(_CATALOG_JSON)


def by_tag(tag: str) -> list[Product]:
    return sorted((p for p in catalog.values() if tag in p.tags), key=lambda p: p.sku)
