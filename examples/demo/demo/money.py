"""Money in exact decimals, with a currency table parsed at import time."""

from __future__ import annotations

import dataclasses
import decimal
import json

from demo.registry import register

_CURRENCIES_JSON = """
{
  "EUR": {"symbol": "\u20ac", "exponent": 2},
  "USD": {"symbol": "$", "exponent": 2},
  "GBP": {"symbol": "\u00a3", "exponent": 2},
  "JPY": {"symbol": "\u00a5", "exponent": 0},
  "CHF": {"symbol": "CHF ", "exponent": 2}
}
"""

CURRENCIES: dict[str, dict] = json.loads(_CURRENCIES_JSON)
_CONTEXT = decimal.Context(prec=28, rounding=decimal.ROUND_HALF_EVEN)
_QUANTA = {code: decimal.Decimal(1).scaleb(-c["exponent"]) for code, c in CURRENCIES.items()}


@register("money")
@dataclasses.dataclass(frozen=True)
class Money:
    amount: decimal.Decimal
    currency: str = "EUR"

    def __post_init__(self) -> None:
        if self.currency not in CURRENCIES:
            raise ValueError(f"unknown currency {self.currency!r}")
        amount = _CONTEXT.create_decimal(self.amount).quantize(
            _QUANTA[self.currency], context=_CONTEXT
        )
        object.__setattr__(self, "amount", amount)

    @classmethod
    def of(cls, amount: str | int, currency: str = "EUR") -> Money:
        return cls(decimal.Decimal(amount), currency)

    def __add__(self, other: Money) -> Money:
        if other.currency != self.currency:
            raise ValueError("currency mismatch")
        return Money(self.amount + other.amount, self.currency)

    def __mul__(self, factor: int | decimal.Decimal) -> Money:
        return Money(self.amount * decimal.Decimal(factor), self.currency)

    def allocate(self, parts: int) -> list[Money]:
        """Split into `parts` amounts that differ by at most one minor unit and sum exactly."""
        quantum = _QUANTA[self.currency]
        units = int(self.amount / quantum)
        base, extra = divmod(units, parts)
        return [Money((base + (i < extra)) * quantum, self.currency) for i in range(parts)]

    def __str__(self) -> str:
        return f"{CURRENCIES[self.currency]['symbol']}{self.amount:,}"
