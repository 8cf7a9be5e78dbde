"""How a ticker's float prices become reference prices."""

from __future__ import annotations

from decimal import Decimal

import pytest

from workers.adapters.ibkr.market_data import _price


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0.0])
def test_prices_ibkr_does_not_have_are_none(value: float) -> None:
    assert _price(value) is None


def test_a_price_is_the_shortest_exact_decimal_of_the_float() -> None:
    assert _price(229.99) == Decimal("229.99")
    assert _price(1.08565) == Decimal("1.08565")
