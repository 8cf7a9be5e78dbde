"""One-cancels-all groups (ocaGroup, ocaType 1, 2 and 3) as IBKR works them, seen from ib_insync."""

from __future__ import annotations

import pytest
from ib_insync import IB, Contract, LimitOrder, Trade

from ibkr_sim.config import SimConfig
from ibkr_sim.server import SimGateway
from tests.sim.helpers import AAPL, until

pytestmark = pytest.mark.integration


async def status_is(trade: Trade, status: str) -> None:
    await until(lambda: trade.orderStatus.status == status, what=f"status {status}")


def oca_pair(group: str, oca_type: int, quantity: int = 100) -> tuple[LimitOrder, LimitOrder]:
    """A buy below the market and a sell above it, one group."""
    return (
        LimitOrder("BUY", quantity, 225.00, ocaGroup=group, ocaType=oca_type),
        LimitOrder("SELL", quantity, 238.00, ocaGroup=group, ocaType=oca_type),
    )


@pytest.mark.parametrize("oca_type", [1, 0])
async def test_a_fill_in_a_cancel_with_block_group_cancels_the_other_members(
    sim: SimGateway, ib: IB, aapl: Contract, oca_type: int
) -> None:
    buy, sell = oca_pair("oco-1", oca_type)
    buy_trade = ib.placeOrder(aapl, buy)
    sell_trade = ib.placeOrder(aapl, sell)
    await status_is(sell_trade, "Submitted")
    sim.set_price(AAPL, 224.00)
    await status_is(buy_trade, "Filled")
    await status_is(sell_trade, "Cancelled")
    sim.set_price(AAPL, 240.00)
    assert [e.order.order_id for e in sim.executions()] == [buy.orderId]


@pytest.mark.parametrize("oca_type", [2, 3])
@pytest.mark.parametrize("sim_config", [SimConfig(clip_size=30, clip_interval=60.0)])
async def test_a_partial_fill_in_a_reduce_group_reduces_the_other_members_by_as_much(
    sim: SimGateway, ib: IB, aapl: Contract, oca_type: int
) -> None:
    buy, sell = oca_pair("oco-reduce", oca_type)
    buy_trade = ib.placeOrder(aapl, buy)
    sell_trade = ib.placeOrder(aapl, sell)
    await status_is(sell_trade, "Submitted")
    sim.set_price(AAPL, 224.00)
    await until(lambda: buy_trade.orderStatus.filled == 30, what="a clip of 30")
    await until(lambda: sell_trade.order.totalQuantity == 70, what="the sell reduced to 70")
    assert sell_trade.orderStatus.remaining == 70
    assert sell_trade.orderStatus.status == "Submitted"
    assert sim.order(1, sell.orderId).total_quantity == 70


@pytest.mark.parametrize("sim_config", [SimConfig(clip_size=60, clip_interval=0.0)])
async def test_a_reduce_group_member_filled_whole_cancels_the_others(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    buy, sell = oca_pair("oco-reduce-all", 2)
    buy_trade = ib.placeOrder(aapl, buy)
    sell_trade = ib.placeOrder(aapl, sell)
    await status_is(sell_trade, "Submitted")
    sim.set_price(AAPL, 224.00)
    await status_is(buy_trade, "Filled")
    await status_is(sell_trade, "Cancelled")
    assert sell_trade.fills == []


async def test_cancelling_one_member_leaves_the_others_working(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    buy, sell = oca_pair("oco-cancel", 1)
    buy_trade = ib.placeOrder(aapl, buy)
    sell_trade = ib.placeOrder(aapl, sell)
    await status_is(sell_trade, "Submitted")
    ib.cancelOrder(buy)
    await status_is(buy_trade, "Cancelled")
    sim.set_price(AAPL, 238.50)
    await status_is(sell_trade, "Filled")


async def test_groups_are_independent_of_each_other(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    first_buy, _ = oca_pair("group-a", 1)
    _, other_sell = oca_pair("group-b", 1)
    first_trade = ib.placeOrder(aapl, first_buy)
    other_trade = ib.placeOrder(aapl, other_sell)
    await status_is(other_trade, "Submitted")
    sim.set_price(AAPL, 224.00)
    await status_is(first_trade, "Filled")
    assert sim.order(1, other_sell.orderId).status == "Submitted"
