from demo.mail import receipt


def test_receipt_headers(order):
    msg = receipt("ada@example.org", "Ada Lovelace", order)
    assert msg["To"] == "Ada Lovelace <ada@example.org>"
    assert msg["Subject"] == "Your receipt (2 items)"
    assert msg["Message-ID"].endswith("@example.org>")


def test_receipt_total(order):
    body = receipt("ada@example.org", "Ada", order).get_content()
    assert "Total: \u20ac21.00" in body
    assert "2 x Green tea" in body
