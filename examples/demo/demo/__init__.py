"""A toy shop back end: money, a product catalog, e-mail receipts, a tiny HTTP API."""

from demo.registry import Registry, register
from demo.money import Money
from demo.catalog import Product, catalog
from demo.mail import receipt
from demo.http_api import handle

__all__ = ["Registry", "register", "Money", "Product", "catalog", "receipt", "handle"]
