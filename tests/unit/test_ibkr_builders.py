"""Our orders and instruments as ib_insync objects; IB statuses as our states."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from ib_insync import Order, TagValue

from workers.adapters.ibkr.builders import contract_for, order_for
from workers.adapters.ibkr.status_mapping import state_for_ib_status, status_change
from workers.domain.instruments import Instrument
from workers.domain.orders import Algo, AlgoPriority, OrderRequested, OrderState, OrderType, Side, TimeInForce
from workers.ports.ibkr import IbOrderStatus


def request(order_type: OrderType, limit: str | None, stop: str | None) -> OrderRequested:
    return OrderRequested(
        order_id=str(uuid.uuid4()), account="DU0000001", instrument_id="x", side=Side.SELL,
        quantity=Decimal("3"), order_type=order_type,
        limit_price=Decimal(limit) if limit else None, stop_price=Decimal(stop) if stop else None,
        time_in_force=TimeInForce.GTC, outside_rth=True, created_at=datetime.now(UTC),
    )


@pytest.mark.parametrize(("order_type", "limit", "stop", "ib_type"), [
    (OrderType.MARKET, None, None, "MKT"),
    (OrderType.LIMIT, "10.5", None, "LMT"),
    (OrderType.STOP, None, "9.5", "STP"),
    (OrderType.STOP_LIMIT, "9.25", "9.5", "STP LMT"),
])
def test_order_carries_type_prices_tif_account_and_order_ref(order_type: OrderType, limit: str | None,
                                                             stop: str | None, ib_type: str) -> None:
    req = request(order_type, limit, stop)
    order = order_for(req, ib_order_id=42)
    assert (order.orderId, order.orderType, order.action) == (42, ib_type, "SELL")
    assert order.orderRef == req.order_id
    assert order.account == "DU0000001" and order.tif == "GTC" and order.outsideRth
    assert order.totalQuantity == 3.0
    if limit:
        assert order.lmtPrice == float(limit)
    if stop:
        assert order.auxPrice == float(stop)


def test_contracts_are_identified_by_con_id_for_each_sec_type() -> None:
    opt = Instrument(instrument_id="o", con_id=7, symbol="SPY", sec_type="OPT", exchange="SMART",
                     currency="USD", multiplier=Decimal(100), last_trade_date="20261218",
                     min_tick=Decimal("0.01"), strike=Decimal("600"), option_right="C")
    contract = contract_for(opt)
    assert (contract.conId, contract.secType, contract.multiplier) == (7, "OPT", "100")
    assert (contract.strike, contract.right, contract.lastTradeDateOrContractMonth) == (600.0, "C", "20261218")
    fx = contract_for(Instrument(instrument_id="f", con_id=12087792, symbol="EUR", sec_type="CASH",
                                 exchange="IDEALPRO", currency="USD", min_tick=Decimal("0.00005")))
    assert (fx.conId, fx.exchange, fx.multiplier) == (12087792, "IDEALPRO", "")


@pytest.mark.parametrize(("ib_status", "filled", "remaining", "state"), [
    ("PendingSubmit", 0, 10, None),
    ("PreSubmitted", 0, 10, OrderState.SUBMITTED),
    ("Submitted", 4, 6, OrderState.PARTIALLY_FILLED),
    ("PendingCancel", 0, 10, OrderState.CANCEL_PENDING),
    ("Cancelled", 4, 6, OrderState.CANCELLED),
    ("Filled", 10, 0, OrderState.FILLED),
    ("Inactive", 0, 10, OrderState.REJECTED),
])
def test_ib_statuses_map_to_our_states(ib_status: str, filled: float, remaining: float,
                                       state: OrderState | None) -> None:
    assert state_for_ib_status(ib_status, filled, remaining) is state


def a_status(ib_status: str, *, order_ref: str = "o-1", filled: str = "0", remaining: str = "10",
             error_code: int | None = None) -> IbOrderStatus:
    return IbOrderStatus(order_ref=order_ref, ib_order_id=5, perm_id=77, ib_status=ib_status,
                         filled=Decimal(filled), remaining=Decimal(remaining), avg_fill_price=None,
                         error_code=error_code, error_message="Order rejected" if error_code else None)


def test_an_error_about_an_order_is_a_rejection_only_while_ibkr_has_not_acknowledged_it() -> None:
    change = status_change(a_status("Cancelled", error_code=201))

    assert change is not None
    assert (change.state, change.error_code, change.only_from) == (
        OrderState.REJECTED, 201, frozenset({OrderState.PLACING}))
    assert change.reason == "IBKR_REJECTED: Order rejected (IBKR error 201)"


def test_a_status_without_our_order_ref_or_in_a_transient_state_asks_nothing() -> None:
    assert status_change(a_status("Submitted", order_ref="")) is None
    assert status_change(a_status("PendingSubmit")) is None


def test_a_fill_status_carries_ibkrs_quantities_and_perm_id() -> None:
    change = status_change(a_status("Filled", filled="10", remaining="0"))

    assert change is not None
    assert (change.state, change.filled, change.remaining, change.perm_id) == (
        OrderState.FILLED, Decimal(10), Decimal(0), 77)


def new_type(order_type: OrderType, **changes: object) -> OrderRequested:
    return replace(request(order_type, None, None), **changes)  # type: ignore[arg-type]


UNSET = Order().lmtPrice  # ib_insync's "no value" (the largest float)


def test_trailing_stops_carry_the_amount_as_aux_price_or_the_percent_and_the_initial_stop() -> None:
    by_amount = order_for(new_type(OrderType.TRAILING_STOP, trailing_amount=Decimal("1.25")), ib_order_id=1)
    assert (by_amount.orderType, by_amount.auxPrice, by_amount.trailingPercent) == ("TRAIL", 1.25, UNSET)
    assert by_amount.trailStopPrice == UNSET and by_amount.lmtPrice == UNSET
    by_percent = order_for(new_type(OrderType.TRAILING_STOP, trailing_percent=Decimal("2.5"),
                                    stop_price=Decimal("98.5")), ib_order_id=2)
    assert (by_percent.trailingPercent, by_percent.trailStopPrice, by_percent.auxPrice) == (2.5, 98.5, UNSET)


def test_a_trailing_stop_limit_carries_its_limit_offset() -> None:
    order = order_for(new_type(OrderType.TRAILING_STOP_LIMIT, trailing_amount=Decimal(1),
                               limit_offset=Decimal("0.1")), ib_order_id=3)
    assert (order.orderType, order.auxPrice, order.lmtPriceOffset, order.lmtPrice) == ("TRAIL LIMIT", 1.0, 0.1, UNSET)


@pytest.mark.parametrize(("order_type", "limit", "stop", "ib_type"), [
    (OrderType.MARKET_ON_CLOSE, None, None, "MOC"),
    (OrderType.LIMIT_ON_CLOSE, "10.5", None, "LOC"),
    (OrderType.MARKET_IF_TOUCHED, None, "9.5", "MIT"),
    (OrderType.LIMIT_IF_TOUCHED, "9.25", "9.5", "LIT"),
])
def test_on_close_and_touched_orders_map_to_ibs_types_with_the_touch_price_as_aux_price(
        order_type: OrderType, limit: str | None, stop: str | None, ib_type: str) -> None:
    order = order_for(request(order_type, limit, stop), ib_order_id=4)
    assert order.orderType == ib_type
    assert order.lmtPrice == (float(limit) if limit else UNSET)
    assert order.auxPrice == (float(stop) if stop else UNSET)


def test_gtd_sends_good_till_as_ibs_utc_date_time() -> None:
    at = datetime(2026, 12, 8, 16, 30, 5, tzinfo=timezone(timedelta(hours=-5)))
    order = order_for(new_type(OrderType.MARKET, time_in_force=TimeInForce.GTD, good_till=at), ib_order_id=5)
    assert (order.tif, order.goodTillDate) == ("GTD", "20261208-21:30:05")
    assert order_for(new_type(OrderType.MARKET), ib_order_id=6).goodTillDate == ""


@pytest.mark.parametrize(("priority", "ib_priority"), [
    (None, "Normal"), (AlgoPriority.PATIENT, "Patient"), (AlgoPriority.NORMAL, "Normal"),
    (AlgoPriority.URGENT, "Urgent"),
])
def test_the_adaptive_algo_is_sent_with_its_priority(priority: AlgoPriority | None, ib_priority: str) -> None:
    order = order_for(new_type(OrderType.MARKET, algo=Algo.ADAPTIVE, algo_priority=priority), ib_order_id=7)
    assert order.algoStrategy == "Adaptive"
    assert order.algoParams == [TagValue("adaptivePriority", ib_priority)]
    assert order_for(new_type(OrderType.MARKET), ib_order_id=8).algoStrategy == ""
