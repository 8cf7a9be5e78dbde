"""The guards of the order types, TIF and algo of OrderRequested version 4: each type's price fields, GTD's
good_till, the Adaptive algo's rules, and brackets and OCA groups refused until they are supported."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from tests.unit.test_guards import AAPL, ES, POLICY, limit_order, reason_of
from workers.domain.guards import RejectReason, check_order
from workers.domain.orders import Algo, AlgoPriority, OrderRequested, OrderType, Side, TimeInForce

D = Decimal


def typed(order_type: OrderType, **changes: object) -> OrderRequested:
    """A BUY of ``order_type`` with no price at all, then ``changes``."""
    return replace(limit_order(order_type=order_type, limit_price=None), **changes)  # type: ignore[arg-type]


VALID = {
    "trailing stop by amount": typed(OrderType.TRAILING_STOP, trailing_amount=D("1.50")),
    "trailing stop by percent, initial stop": typed(OrderType.TRAILING_STOP, trailing_percent=D("2.5"),
                                                    stop_price=D("190")),
    "trailing stop limit": typed(OrderType.TRAILING_STOP_LIMIT, trailing_amount=D("1"), limit_offset=D("0.10")),
    "trailing stop limit, zero offset": typed(OrderType.TRAILING_STOP_LIMIT, trailing_percent=D("1"),
                                              limit_offset=D(0)),
    "market on close": typed(OrderType.MARKET_ON_CLOSE),
    "limit on close": typed(OrderType.LIMIT_ON_CLOSE, limit_price=D("187.25")),
    "market if touched": typed(OrderType.MARKET_IF_TOUCHED, stop_price=D("180")),
    "limit if touched": typed(OrderType.LIMIT_IF_TOUCHED, stop_price=D("180"), limit_price=D("180.50")),
    "GTD": limit_order(time_in_force=TimeInForce.GTD, good_till=datetime.now(UTC) + timedelta(days=2)),
    "adaptive limit": limit_order(algo=Algo.ADAPTIVE),
    "adaptive market, urgent": typed(OrderType.MARKET, algo=Algo.ADAPTIVE, algo_priority=AlgoPriority.URGENT),
}


@pytest.mark.parametrize("order", VALID.values(), ids=VALID.keys())
def test_a_valid_order_of_each_new_type_passes(order: OrderRequested) -> None:
    check_order(order, AAPL, POLICY)


REFUSED = [
    (typed(OrderType.TRAILING_STOP), RejectReason.MISSING_TRAILING_AMOUNT, "trailing_amount or trailing_percent"),
    (typed(OrderType.TRAILING_STOP, trailing_amount=D(1), trailing_percent=D(1)),
     RejectReason.UNEXPECTED_TRAILING_PERCENT, "not both"),
    (typed(OrderType.TRAILING_STOP, trailing_amount=D(1), limit_price=D(180)),
     RejectReason.UNEXPECTED_LIMIT_PRICE, "limit_price"),
    (typed(OrderType.TRAILING_STOP, trailing_amount=D(1), limit_offset=D("0.1")),
     RejectReason.UNEXPECTED_LIMIT_OFFSET, "limit_offset"),
    (typed(OrderType.TRAILING_STOP_LIMIT, trailing_amount=D(1)), RejectReason.MISSING_LIMIT_OFFSET, "limit_offset"),
    (typed(OrderType.TRAILING_STOP, trailing_amount=D(0)), RejectReason.INVALID_PRICE, "trailing_amount"),
    (typed(OrderType.TRAILING_STOP, trailing_percent=D(100)), RejectReason.INVALID_PRICE, "trailing_percent"),
    (typed(OrderType.TRAILING_STOP, trailing_percent=D(0)), RejectReason.INVALID_PRICE, "trailing_percent"),
    (typed(OrderType.TRAILING_STOP_LIMIT, trailing_amount=D(1), limit_offset=D("-0.01")),
     RejectReason.INVALID_PRICE, "limit_offset"),
    (typed(OrderType.TRAILING_STOP, trailing_amount=D("1.005")), RejectReason.PRICE_OFF_TICK, "trailing_amount"),
    (typed(OrderType.TRAILING_STOP_LIMIT, trailing_amount=D(1), limit_offset=D("0.001")),
     RejectReason.PRICE_OFF_TICK, "limit_offset"),
    (limit_order(trailing_amount=D(1)), RejectReason.UNEXPECTED_TRAILING_AMOUNT, "trailing_amount"),
    (limit_order(trailing_percent=D(1)), RejectReason.UNEXPECTED_TRAILING_PERCENT, "trailing_percent"),
    (typed(OrderType.MARKET_ON_CLOSE, limit_price=D(180)), RejectReason.UNEXPECTED_LIMIT_PRICE, "limit_price"),
    (typed(OrderType.MARKET_ON_CLOSE, stop_price=D(180)), RejectReason.UNEXPECTED_STOP_PRICE, "stop_price"),
    (typed(OrderType.LIMIT_ON_CLOSE), RejectReason.MISSING_LIMIT_PRICE, "limit_price"),
    (typed(OrderType.MARKET_IF_TOUCHED), RejectReason.MISSING_STOP_PRICE, "stop_price"),
    (typed(OrderType.MARKET_IF_TOUCHED, stop_price=D(180), limit_price=D(180)),
     RejectReason.UNEXPECTED_LIMIT_PRICE, "limit_price"),
    (typed(OrderType.LIMIT_IF_TOUCHED, stop_price=D(180)), RejectReason.MISSING_LIMIT_PRICE, "limit_price"),
    (typed(OrderType.LIMIT_IF_TOUCHED, limit_price=D(180)), RejectReason.MISSING_STOP_PRICE, "stop_price"),
    (limit_order(time_in_force=TimeInForce.GTD), RejectReason.MISSING_GOOD_TILL, "good_till"),
    (limit_order(good_till=datetime.now(UTC) + timedelta(days=1)), RejectReason.UNEXPECTED_GOOD_TILL, "good_till"),
    (typed(OrderType.STOP, stop_price=D(190), algo=Algo.ADAPTIVE), RejectReason.ALGO_NOT_ALLOWED, "MARKET and LIMIT"),
    (limit_order(algo_priority=AlgoPriority.PATIENT), RejectReason.UNEXPECTED_ALGO_PRIORITY, "algo_priority"),
    (limit_order(take_profit_price=D(187)), RejectReason.INVALID_BRACKET, "take_profit_price 187 must be above"),
    (limit_order(stop_loss_price=D(190)), RejectReason.INVALID_BRACKET, "stop_loss_price 190 must be below"),
    (limit_order(side=Side.SELL, take_profit_price=D(190)), RejectReason.INVALID_BRACKET, "must be below"),
    (typed(OrderType.MARKET, take_profit_price=D(180), stop_loss_price=D(185)), RejectReason.INVALID_BRACKET,
     "take_profit_price 180 must be above stop_loss_price 185"),
    (limit_order(take_profit_price=D(190), oca_group="pair-1"), RejectReason.INVALID_BRACKET, "oca_group"),
    (limit_order(take_profit_price=D(190), time_in_force=TimeInForce.IOC), RejectReason.INVALID_BRACKET, "IOC"),
    (typed(OrderType.TRAILING_STOP, trailing_amount=D(1), stop_loss_price=D(150)), RejectReason.INVALID_BRACKET,
     "TRAILING_STOP"),
    (limit_order(take_profit_price=D("190.001")), RejectReason.PRICE_OFF_TICK, "take_profit_price"),
    (limit_order(oca_group="x" * 65), RejectReason.INVALID_TEXT, "oca_group"),
    (limit_order(oca_group="pair\x00"), RejectReason.INVALID_TEXT, "oca_group"),
]


@pytest.mark.parametrize(("order", "reason", "field"), REFUSED, ids=[f"{r[1]}-{i}" for i, r in enumerate(REFUSED)])
def test_a_missing_or_superfluous_field_is_rejected_naming_it(order: OrderRequested, reason: RejectReason,
                                                              field: str) -> None:
    assert reason_of(order) is reason
    with pytest.raises(Exception) as caught:
        check_order(order, AAPL, POLICY)
    assert field in str(caught.value)


def test_the_adaptive_algo_is_refused_for_anything_but_stocks() -> None:
    future_order = limit_order(instrument_id=ES.instrument_id, limit_price=D("6000.25"), algo=Algo.ADAPTIVE)
    assert reason_of(future_order, ES) is RejectReason.ALGO_NOT_ALLOWED
    check_order(replace(future_order, algo=None), ES, POLICY)


def test_a_bracket_with_its_prices_on_the_right_sides_and_an_oca_order_pass_the_guards() -> None:
    check_order(limit_order(take_profit_price=D("190"), stop_loss_price=D("180")), AAPL, POLICY)
    check_order(limit_order(side=Side.SELL, take_profit_price=D("180"), stop_loss_price=D("190")), AAPL, POLICY)
    check_order(typed(OrderType.MARKET, stop_loss_price=D("150")), AAPL, POLICY)
    check_order(limit_order(oca_group="pair-1"), AAPL, POLICY)
