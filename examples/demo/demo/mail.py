"""E-mail receipts built with the standard library's email package."""

from __future__ import annotations

import email.policy
import email.utils
from email.message import EmailMessage
from string import Template

from demo.catalog import catalog
from demo.money import Money

SENDER = email.utils.formataddr(("Demo Shop", "shop@example.org"))
_TEMPLATE = Template("Hello $name,\n\nthank you for your order:\n\n$lines\n\nTotal: $total\n")


def receipt(to: str, name: str, order: dict[str, int]) -> EmailMessage:
    lines = []
    total = Money.of(0)
    for sku, qty in sorted(order.items()):
        product = catalog[sku]
        cost = product.price * qty
        total = total + cost
        lines.append(f"  {qty} x {product.name:<12} {cost}")
    msg = EmailMessage(policy=email.policy.SMTP)
    msg["From"] = SENDER
    msg["To"] = email.utils.formataddr((name, to))
    msg["Subject"] = f"Your receipt ({len(order)} items)"
    msg["Message-ID"] = email.utils.make_msgid(domain="example.org")
    msg.set_content(_TEMPLATE.substitute(name=name, lines="\n".join(lines), total=total))
    return msg
