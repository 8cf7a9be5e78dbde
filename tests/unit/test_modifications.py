"""What a modification may change in place, and the terms it asks for (no database, no IBKR)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.unit.order_service_fakes import ACCOUNT, an_order
from workers.domain.modifications import (
    ModifyRefusal,
    ModifyRefused,
    OrderModifyRequested,
    WorkingTerms,
    applied_reason,
    checked_request,
    differing_modify_terms,
    target_terms,
)
from workers.domain.orders import NewOrder, Order, OrderState, OrderType, TimeInForce

NOW = datetime(2026, 1, 5, 15, 0, 2, tzinfo=UTC)


def working(order_type: OrderType = OrderType.LIMIT, state: OrderState = OrderState.SUBMITTED,
            **fields: object) -> Order:
    request = an_order(order_type=order_type, quantity=Decimal(10),
                       limit_price=Decimal(100) if order_type.needs_limit_price else None,
                       stop_price=Decimal(95) if order_type.needs_stop_price else None)
    order = Order.recorded(NewOrder(request, OrderState.ACCEPTED), owner_client_id=7, now=NOW)
    return replace(order, state=state, **fields)  # type: ignore[arg-type]


def trailing() -> Order:
    return replace(working(OrderType.MARKET), order_type=OrderType.TRAILING_STOP, trailing_amount=Decimal(2))


def modify(**terms: object) -> OrderModifyRequested:
    request = OrderModifyRequested(modify_id="m-1", order_id=an_order().order_id, account=ACCOUNT,
                                   requested_at=NOW)
    return replace(request, **terms)  # type: ignore[arg-type]


def refusal(order: Order, request: OrderModifyRequested) -> ModifyRefused:
    with pytest.raises(ModifyRefused) as raised:
        target_terms(order, request)
    return raised.value


def test_given_terms_replace_the_orders_and_the_others_are_kept() -> None:
    target = target_terms(working(), modify(limit_price=Decimal("101.5"), time_in_force=TimeInForce.GTC))

    assert target == WorkingTerms(Decimal(10), Decimal("101.5"), None, TimeInForce.GTC)


def test_a_stop_limit_order_takes_both_prices_and_a_new_size() -> None:
    target = target_terms(working(OrderType.STOP_LIMIT),
                          modify(quantity=Decimal(12), stop_price=Decimal(96), limit_price=Decimal(97)))

    assert target == WorkingTerms(Decimal(12), Decimal(97), Decimal(96), TimeInForce.DAY)


@pytest.mark.parametrize(("order", "request_", "code", "words"), [
    (working(state=OrderState.FILLED), modify(quantity=Decimal(20)), ModifyRefusal.ORDER_DONE, "FILLED"),
    (working(state=OrderState.CANCEL_PENDING), modify(quantity=Decimal(20)), ModifyRefusal.CANCEL_PENDING,
     "being cancelled"),
    (working(), modify(account="someone-else"), ModifyRefusal.ACCOUNT_MISMATCH, "not the order's account"),
    (working(OrderType.MARKET), modify(limit_price=Decimal(1)), ModifyRefusal.NOT_MODIFIABLE,
     "a MARKET order has no limit_price"),
    (working(), modify(stop_price=Decimal(1)), ModifyRefusal.NOT_MODIFIABLE, "a LIMIT order has no stop_price"),
    (working(), modify(time_in_force=TimeInForce.IOC), ModifyRefusal.NOT_MODIFIABLE, "DAY -> IOC"),
    (working(), modify(limit_price=Decimal(-1)), ModifyRefusal.INVALID_PRICE, "positive"),
    (working(), modify(quantity=Decimal("NaN")), ModifyRefusal.INVALID_QUANTITY, "positive"),
    (working(filled_quantity=Decimal(6)), modify(quantity=Decimal(6)), ModifyRefusal.INVALID_QUANTITY,
     "not above the filled quantity 6"),
    (working(), modify(limit_price=Decimal("100.00")), ModifyRefusal.NO_CHANGE, "already works"),
    (working(), modify(trailing_amount=Decimal(1)), ModifyRefusal.NOT_MODIFIABLE, "has no trailing_amount"),
    (trailing(), modify(trailing_percent=Decimal(1)), ModifyRefusal.NOT_MODIFIABLE, "has no trailing_percent"),
    (trailing(), modify(trailing_amount=Decimal(0)), ModifyRefusal.INVALID_PRICE, "out of range"),
], ids=["filled", "cancelling", "account", "type", "no-stop", "tif", "price", "nan", "below-filled", "same",
        "no-trail", "other-trail", "zero-trail"])
def test_what_ibkr_cannot_change_in_place_is_refused_with_a_code_and_a_sentence(
        order: Order, request_: OrderModifyRequested, code: ModifyRefusal, words: str) -> None:
    refused = refusal(order, request_)

    assert refused.code is code
    assert words in refused.detail
    assert refused.text.startswith(f"MODIFY_REFUSED: {code.value}: ")


def test_a_trailing_orders_trail_changes_in_place_and_keeps_its_kind() -> None:
    target = target_terms(trailing(), modify(trailing_amount=Decimal("1.5"), quantity=Decimal(12)))

    assert (target.trailing_amount, target.trailing_percent, target.quantity) == (Decimal("1.5"), None, Decimal(12))
    assert applied_reason(WorkingTerms.of(trailing()), target) == (
        "MODIFIED: quantity 10 -> 12, trailing_amount 2 -> 1.5")


def test_the_rules_check_the_quantity_still_to_trade_at_the_new_terms_as_of_the_modification() -> None:
    order = working(filled_quantity=Decimal(4))
    request = modify(quantity=Decimal(15), limit_price=Decimal(99))
    target = target_terms(order, request)

    checked = checked_request(order, target, request)

    assert (checked.quantity, checked.limit_price, checked.created_at) == (Decimal(11), Decimal(99), NOW)
    assert (checked.order_id, checked.side, checked.order_type) == (order.order_id, order.side, order.order_type)


def test_the_applied_reason_says_what_changed_and_a_redelivery_is_told_from_a_conflict() -> None:
    before = WorkingTerms(Decimal(10), Decimal(100), None, TimeInForce.DAY)
    after = WorkingTerms(Decimal(12), Decimal("100.50"), None, TimeInForce.DAY)

    assert applied_reason(before, after) == "MODIFIED: quantity 10 -> 12, limit_price 100 -> 100.5"
    assert differing_modify_terms(modify(quantity=Decimal(3)), modify(quantity=Decimal(3), source="retry")) == ()
    assert differing_modify_terms(modify(quantity=Decimal(3)), modify(quantity=Decimal(4))) == ("quantity",)


def test_a_modified_order_is_still_the_order_it_was_requested_as() -> None:
    order = working()
    modified = replace(order, quantity=Decimal(12), limit_price=Decimal(101), requested_quantity=order.quantity,
                       requested_limit_price=order.limit_price, requested_time_in_force=order.time_in_force)

    assert modified.as_requested == order.request
    assert modified.request.quantity == Decimal(12)
    assert order.as_requested == order.request
