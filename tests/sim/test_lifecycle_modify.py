"""Modifying a working order by placing its order id again, as IBKR does it, seen from ib_insync."""

from __future__ import annotations

import pytest
from ib_insync import IB, Contract, LimitOrder, Order, Stock, StopOrder, Trade

from ibkr_sim.config import SimConfig
from ibkr_sim.server import SimGateway
from tests.sim.helpers import AAPL, Errors, until

pytestmark = pytest.mark.integration


async def status_is(trade: Trade, status: str) -> None:
    await until(lambda: trade.orderStatus.status == status, what=f"status {status}")


async def test_a_modified_limit_price_and_size_apply_in_place_and_fill_at_the_new_price(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    order = LimitOrder("BUY", 10, 200.00)
    trade = ib.placeOrder(aapl, order)
    await status_is(trade, "Submitted")
    perm_id = trade.order.permId
    order.lmtPrice = 225.00
    order.totalQuantity = 15
    ib.placeOrder(aapl, order)
    await until(lambda: sim.order(1, order.orderId).lmt_price == 225.00, what="the new limit")
    held = sim.order(1, order.orderId)
    assert held.total_quantity == 15
    assert held.perm_id == perm_id
    assert held.status == "Submitted"
    sim.set_price(AAPL, 226.00)
    assert sim.executions() == []
    sim.set_price(AAPL, 224.50)
    await status_is(trade, "Filled")
    assert trade.orderStatus.filled == 15
    assert trade.fills[0].execution.price == 224.50
    assert len(sim.orders()) == 1


@pytest.mark.parametrize("sim_config", [SimConfig(clip_size=30, clip_interval=60.0)])
async def test_a_size_below_the_filled_quantity_is_refused_and_a_size_equal_to_it_fills_the_order(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    order = LimitOrder("BUY", 100, 231.40)
    trade = ib.placeOrder(aapl, order)
    await until(lambda: trade.orderStatus.filled == 30, what="a first clip of 30")
    errors = Errors(ib)
    order.totalQuantity = 20
    ib.placeOrder(aapl, order)
    await until(lambda: errors.seen, what="an error")
    assert errors.codes(order.orderId) == [201]
    # ib_insync marks the trade cancelled on the error; the terms and status that follow restore it.
    await status_is(trade, "Submitted")
    assert trade.order.totalQuantity == 100
    assert sim.order(1, order.orderId).total_quantity == 100
    order.totalQuantity = 30
    ib.placeOrder(aapl, order)
    await status_is(trade, "Filled")
    assert trade.orderStatus.filled == 30
    assert trade.orderStatus.remaining == 0


async def test_a_time_in_force_changed_to_gtc_survives_the_end_of_the_day(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    order = LimitOrder("BUY", 10, 200.00, tif="DAY")
    trade = ib.placeOrder(aapl, order)
    await status_is(trade, "Submitted")
    order.tif = "GTC"
    ib.placeOrder(aapl, order)
    await until(lambda: sim.order(1, order.orderId).tif == "GTC", what="GTC")
    sim.expire_day_orders()
    assert sim.order(1, order.orderId).status == "Submitted"


async def test_a_modified_stop_price_triggers_at_the_new_stop(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    order = StopOrder("SELL", 10, 220.00)
    trade = ib.placeOrder(aapl, order)
    await status_is(trade, "PreSubmitted")
    order.auxPrice = 228.00
    ib.placeOrder(aapl, order)
    await until(lambda: sim.order(1, order.orderId).aux_price == 228.00, what="the new stop")
    sim.set_price(AAPL, 227.90)
    await status_is(trade, "Filled")
    assert trade.fills[0].execution.price == 227.90


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"action": "SELL"}, id="side"),
        pytest.param({"orderType": "MKT", "lmtPrice": 0.0}, id="order type"),
        pytest.param({"ocaGroup": "late"}, id="OCA group"),
    ],
)
async def test_what_ibkr_cannot_change_in_place_is_refused_with_105(
    sim: SimGateway, ib: IB, aapl: Contract, change: dict[str, object]
) -> None:
    order = LimitOrder("BUY", 10, 200.00)
    trade = ib.placeOrder(aapl, order)
    await status_is(trade, "Submitted")
    errors = Errors(ib)
    changed = Order(**{**order.__dict__, **change})
    ib.client.placeOrder(order.orderId, aapl, changed)
    await until(lambda: errors.seen, what="an error")
    assert errors.seen == [(order.orderId, 105, "Order being modified does not match original order.")]
    await status_is(trade, "Submitted")
    held = sim.order(1, order.orderId)
    assert (held.request.action, held.order_type, held.lmt_price, held.status) == ("BUY", "LMT", 200.00, "Submitted")


async def test_a_modification_naming_another_contract_is_refused_with_105(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    order = LimitOrder("BUY", 10, 200.00)
    trade = ib.placeOrder(aapl, order)
    await status_is(trade, "Submitted")
    (msft,) = await ib.qualifyContractsAsync(Stock("MSFT", "SMART", "USD"))
    errors = Errors(ib)
    ib.client.placeOrder(order.orderId, msft, order)
    await until(lambda: errors.seen, what="an error")
    assert errors.codes(order.orderId) == [105]
    await status_is(trade, "Submitted")
    assert sim.order(1, order.orderId).instrument.con_id == AAPL


async def test_a_modification_of_a_filled_order_gets_104_and_of_a_cancelled_one_103(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    filled = LimitOrder("BUY", 5, 240.00)
    filled_trade = ib.placeOrder(aapl, filled)
    await status_is(filled_trade, "Filled")
    cancelled = LimitOrder("BUY", 5, 200.00)
    cancelled_trade = ib.placeOrder(aapl, cancelled)
    await status_is(cancelled_trade, "Submitted")
    ib.cancelOrder(cancelled)
    await status_is(cancelled_trade, "Cancelled")
    errors = Errors(ib)
    # ib_insync refuses to modify a trade it knows is done: send the placeOrder frames directly.
    ib.client.placeOrder(filled.orderId, aapl, LimitOrder("BUY", 5, 241.00))
    ib.client.placeOrder(cancelled.orderId, aapl, LimitOrder("BUY", 5, 201.00))
    await until(lambda: len(errors.seen) == 2, what="two errors")
    assert errors.seen == [
        (filled.orderId, 104, "Can't modify a filled order."),
        (cancelled.orderId, 103, "Duplicate order id"),
    ]
    assert sim.order(1, filled.orderId).lmt_price == 240.00
    assert sim.order(1, cancelled.orderId).lmt_price == 200.00
    assert len(sim.executions()) == 1
