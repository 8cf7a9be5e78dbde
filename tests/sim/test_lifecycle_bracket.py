"""Transmit flags, parent ids and brackets as IBKR works them, seen from ib_insync."""

from __future__ import annotations

import asyncio

import pytest
from ib_insync import IB, BracketOrder, Contract, LimitOrder, MarketOrder, StopOrder, Trade

from ibkr_sim.config import SimConfig
from ibkr_sim.control import ControlServer, control_call
from ibkr_sim.server import SimGateway
from tests.sim.helpers import AAPL, Errors, until

pytestmark = pytest.mark.integration


async def status_is(trade: Trade, status: str) -> None:
    await until(lambda: trade.orderStatus.status == status, what=f"status {status}")


def place_bracket(ib: IB, aapl: Contract, bracket: BracketOrder) -> list[Trade]:
    return [ib.placeOrder(aapl, order) for order in bracket]


async def test_an_order_placed_without_transmit_is_held_until_placed_again_with_transmit(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    order = MarketOrder("BUY", 10, transmit=False)
    trade = ib.placeOrder(aapl, order)
    await until(sim.orders, what="the order at the sim")
    held = sim.order(1, order.orderId)
    assert held.held and held.status == "PreSubmitted"
    sim.set_price(AAPL, 230.00)
    assert sim.executions() == []
    assert trade.orderStatus.status == "PendingSubmit"
    order.transmit = True
    ib.placeOrder(aapl, order)
    await status_is(trade, "Filled")
    assert trade.fills[0].execution.price == 230.00


async def test_a_bracket_works_nothing_until_its_last_child_is_transmitted(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    parent, take_profit, stop_loss = ib.bracketOrder("BUY", 10, 240.00, 250.00, 220.00)
    parent_trade = ib.placeOrder(aapl, parent)
    take_profit_trade = ib.placeOrder(aapl, take_profit)
    await until(lambda: len(sim.orders()) == 2, what="two held orders")
    assert all(o.held for o in sim.orders())
    assert sim.executions() == []
    ib.placeOrder(aapl, stop_loss)
    await status_is(parent_trade, "Filled")
    await status_is(take_profit_trade, "Submitted")
    assert [e.order.order_id for e in sim.executions()] == [parent.orderId]
    assert not any(o.held for o in sim.orders())


async def test_bracket_children_wait_for_the_parent_then_the_take_profit_cancels_the_stop_loss(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    parent, take_profit, stop_loss = place_bracket(ib, aapl, ib.bracketOrder("BUY", 10, 230.00, 236.00, 225.00))
    await status_is(parent, "Submitted")
    await status_is(take_profit, "PreSubmitted")
    await status_is(stop_loss, "PreSubmitted")
    sim.set_price(AAPL, 237.00)  # the take-profit's price, but it is not working before the parent fills
    assert sim.executions() == []
    sim.set_price(AAPL, 229.50)
    await status_is(parent, "Filled")
    await status_is(take_profit, "Submitted")
    assert stop_loss.orderStatus.status == "PreSubmitted"  # a stop waits for its trigger
    sim.set_price(AAPL, 236.50)
    await status_is(take_profit, "Filled")
    await status_is(stop_loss, "Cancelled")
    assert take_profit.fills[0].execution.price == 236.50
    assert sim.position("DU0000001", AAPL).quantity == 0  # type: ignore[union-attr]


async def test_the_stop_loss_filling_cancels_the_take_profit(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    parent, take_profit, stop_loss = place_bracket(ib, aapl, ib.bracketOrder("BUY", 10, 232.00, 236.00, 225.00))
    await status_is(parent, "Filled")
    await status_is(take_profit, "Submitted")
    sim.set_price(AAPL, 224.80)
    await status_is(stop_loss, "Filled")
    await status_is(take_profit, "Cancelled")
    assert stop_loss.fills[0].execution.price == 224.80


async def test_cancelling_the_parent_cancels_its_children(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    parent, take_profit, stop_loss = place_bracket(ib, aapl, ib.bracketOrder("BUY", 10, 220.00, 236.00, 210.00))
    await status_is(parent, "Submitted")
    await status_is(stop_loss, "PreSubmitted")
    ib.cancelOrder(parent.order)
    for trade in (parent, take_profit, stop_loss):
        await status_is(trade, "Cancelled")
    assert sim.open_orders() == []


@pytest.mark.parametrize("sim_config", [SimConfig(clip_size=4, clip_interval=60.0)])
async def test_a_partial_take_profit_fill_reduces_the_stop_loss(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    parent, take_profit, stop_loss = place_bracket(ib, aapl, ib.bracketOrder("BUY", 10, 232.00, 236.00, 225.00))
    await until(lambda: parent.orderStatus.filled == 4, what="a first clip of the parent")
    assert take_profit.orderStatus.status == "PreSubmitted"  # the parent is not filled yet
    # Fill the rest of the parent: each price move matches one more clip.
    sim.set_price(AAPL, 231.50)
    sim.set_price(AAPL, 231.40)
    await status_is(parent, "Filled")
    sim.set_price(AAPL, 236.00)
    await until(lambda: take_profit.orderStatus.filled == 4, what="a partial take-profit")
    await until(lambda: stop_loss.order.totalQuantity == 6, what="the stop-loss reduced to 6")
    assert sim.order(1, stop_loss.order.orderId).status == "PreSubmitted"


async def test_a_child_of_an_unknown_parent_is_refused_with_10006(ib: IB, aapl: Contract) -> None:
    errors = Errors(ib)
    trade = ib.placeOrder(aapl, StopOrder("SELL", 10, 220.00, parentId=987654))
    await until(lambda: errors.seen, what="an error")
    assert errors.seen[0] == (trade.order.orderId, 10006, "Missing parent order.")


async def test_a_child_added_to_a_filled_parent_works_at_once(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    parent = ib.placeOrder(aapl, MarketOrder("BUY", 10))
    await status_is(parent, "Filled")
    child = ib.placeOrder(aapl, LimitOrder("SELL", 10, 240.00, parentId=parent.order.orderId))
    await status_is(child, "Submitted")
    sim.set_price(AAPL, 240.00)
    await status_is(child, "Filled")


async def test_a_global_cancel_cancels_a_bracket_once_each(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    trades = place_bracket(ib, aapl, ib.bracketOrder("BUY", 10, 220.00, 236.00, 210.00))
    await status_is(trades[2], "PreSubmitted")
    ib.reqGlobalCancel()
    for trade in trades:
        await status_is(trade, "Cancelled")
    await asyncio.sleep(0.05)
    assert [[e.status for e in t.log].count("Cancelled") for t in trades] == [1, 1, 1]


async def test_the_control_port_reports_parents_groups_and_held_orders(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    server = ControlServer(sim)
    host, port = await server.start()
    try:
        parent = ib.placeOrder(aapl, LimitOrder("BUY", 10, 220.00, transmit=False))
        child = ib.placeOrder(aapl, LimitOrder("SELL", 10, 236.00, parentId=parent.order.orderId, ocaGroup="g"))
        await status_is(child, "PreSubmitted")
        orders = {o["order_id"]: o for o in await control_call(host, port, "orders")}
        assert orders[child.order.orderId]["parent_id"] == parent.order.orderId
        assert orders[child.order.orderId]["oca_group"] == "g"
        assert orders[child.order.orderId]["awaiting_parent"] is True
        assert orders[parent.order.orderId]["held"] is False  # the child transmitted it
    finally:
        await server.stop()
