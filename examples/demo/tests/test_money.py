import decimal

import pytest

from demo.money import Money


def test_rounds_half_even():
    assert Money.of("2.345").amount == decimal.Decimal("2.34")
    assert Money.of("2.355").amount == decimal.Decimal("2.36")


def test_add_and_multiply():
    assert Money.of("1.10") + Money.of("2.20") == Money.of("3.30")
    assert Money.of("4.50") * 3 == Money.of("13.50")


def test_currency_mismatch():
    with pytest.raises(ValueError, match="currency mismatch"):
        Money.of(1, "EUR") + Money.of(1, "USD")


@pytest.mark.parametrize("parts", [1, 3, 7])
def test_allocate_sums_exactly(parts):
    shares = Money.of("10.00").allocate(parts)
    assert len(shares) == parts
    assert sum((s.amount for s in shares), decimal.Decimal(0)) == decimal.Decimal("10.00")


def test_yen_has_no_minor_unit():
    assert str(Money.of("1234.6", "JPY")) == "\u00a51,235"
