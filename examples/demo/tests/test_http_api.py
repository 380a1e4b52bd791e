import http

from demo.http_api import handle


def test_list_products_by_tag():
    resp = handle("GET", "/products?tag=kitchen")
    assert resp.status == http.HTTPStatus.OK
    assert resp.json() == [{"price": "12.00", "sku": "CUP-0100"}, {"price": "6.25", "sku": "CUP-0101"}]


def test_session_cookie():
    resp = handle("GET", "/session")
    assert resp.headers["Set-Cookie"] == "session=abc123; HttpOnly; Path=/"


def test_errors():
    assert handle("GET", "/nope").status == http.HTTPStatus.NOT_FOUND
    assert handle("POST", "/products").status == http.HTTPStatus.METHOD_NOT_ALLOWED
