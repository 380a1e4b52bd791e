"""A tiny JSON-over-HTTP router (no sockets: requests are plain tuples)."""

from __future__ import annotations

import dataclasses
import http
import http.cookies
import json
import urllib.parse
from http.server import BaseHTTPRequestHandler  # noqa: F401  (realistic import weight)
from typing import Callable

from demo.catalog import by_tag, catalog
from demo.registry import register


@register("response")
@dataclasses.dataclass
class Response:
    status: http.HTTPStatus
    body: bytes
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    def json(self):
        return json.loads(self.body)


Handler = Callable[[dict[str, list[str]]], Response]
ROUTES: dict[tuple[str, str], Handler] = {}


def route(method: str, path: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        ROUTES[(method, path)] = fn
        return fn

    return deco


def _json(status: http.HTTPStatus, payload) -> Response:
    body = json.dumps(payload, sort_keys=True).encode()
    return Response(status, body, {"Content-Type": "application/json"})


@route("GET", "/products")
def list_products(query: dict[str, list[str]]) -> Response:
    tag = query.get("tag", [None])[0]
    products = by_tag(tag) if tag else sorted(catalog.values(), key=lambda p: p.sku)
    return _json(http.HTTPStatus.OK, [{"sku": p.sku, "price": str(p.price.amount)} for p in products])


@route("GET", "/session")
def session(query: dict[str, list[str]]) -> Response:
    cookie = http.cookies.SimpleCookie()
    cookie["session"] = "abc123"
    cookie["session"]["httponly"] = True
    cookie["session"]["path"] = "/"
    resp = _json(http.HTTPStatus.OK, {"ok": True})
    resp.headers["Set-Cookie"] = cookie["session"].OutputString()
    return resp


def handle(method: str, url: str) -> Response:
    parts = urllib.parse.urlsplit(url)
    fn = ROUTES.get((method, parts.path))
    if fn is None:
        if any(path == parts.path for _, path in ROUTES):
            return _json(http.HTTPStatus.METHOD_NOT_ALLOWED, {"error": "method not allowed"})
        return _json(http.HTTPStatus.NOT_FOUND, {"error": "not found"})
    return fn(urllib.parse.parse_qs(parts.query))
