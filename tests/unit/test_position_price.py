"""The average price of a position as quoted, from IBKR's average cost per contract and the multiplier."""

from __future__ import annotations

from decimal import Decimal

import pytest

from workers.adapters.ibkr.reports import contract_multiplier
from workers.domain.positions import average_price


def test_a_futures_cost_per_contract_becomes_its_price() -> None:
    assert average_price(Decimal("301910.85"), Decimal(50)) == Decimal("6038.217")


def test_a_stock_or_currency_price_is_its_cost() -> None:
    assert average_price(Decimal("187.25"), Decimal(1)) == Decimal("187.25")


@pytest.mark.parametrize("multiplier", [None, Decimal(0), Decimal(-100)])
def test_without_a_usable_multiplier_there_is_no_price(multiplier: Decimal | None) -> None:
    assert average_price(Decimal("100"), multiplier) is None


@pytest.mark.parametrize(("text", "expected"), [
    ("", Decimal(1)), ("  ", Decimal(1)), (None, Decimal(1)), ("50", Decimal(50)), ("100", Decimal(100)),
    ("0.1", Decimal("0.1")), ("abc", None), ("0", None), ("-5", None), ("NaN", None), ("Infinity", None),
])
def test_ibs_multiplier_text_is_read_as_a_number_or_refused(text: str | None, expected: Decimal | None) -> None:
    assert contract_multiplier(text) == expected
