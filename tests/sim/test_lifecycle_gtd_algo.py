"""GTD expiry and IB's Adaptive algo as the sim works them, seen from ib_insync."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from ib_insync import IB, Contract, LimitOrder, MarketOrder, Order, StopOrder, TagValue, Trade

from ibkr_sim.server import SimGateway
from tests.sim.helpers import Connect, Errors, until

pytestmark = pytest.mark.integration


async def status_is(trade: Trade, status: str, timeout: float = 2.0) -> None:
    await until(lambda: trade.orderStatus.status == status, timeout=timeout, what=f"status {status}")


def utc_in(seconds: float) -> str:
    """A goodTillDate ``seconds`` from now, in IB's UTC form."""
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y%m%d-%H:%M:%S")


def adaptive(order: Order, priority: str) -> Order:
    order.algoStrategy = "Adaptive"
    order.algoParams = [TagValue("adaptivePriority", priority)]
    return order


async def test_a_gtd_order_is_cancelled_at_its_time(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 10, 200.00, tif="GTD", goodTillDate=utc_in(1.5)))
    await status_is(trade, "Submitted")
    await status_is(trade, "Cancelled", timeout=4.0)
    assert trade.fills == []
    assert sim.order(1, trade.order.orderId).completed_status == "Expired"


async def test_a_gtd_order_moved_to_a_later_time_does_not_expire_at_the_first(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    order = LimitOrder("BUY", 10, 200.00, tif="GTD", goodTillDate=utc_in(1.0))
    trade = ib.placeOrder(aapl, order)
    await status_is(trade, "Submitted")
    order.goodTillDate = utc_in(3600)
    ib.placeOrder(aapl, order)
    await until(lambda: sim.order(1, order.orderId).request.good_till_date == order.goodTillDate, what="modified")
    await asyncio.sleep(2.2)
    assert trade.orderStatus.status == "Submitted"


async def test_a_gtd_order_with_a_date_the_sim_cannot_read_is_refused(ib: IB, aapl: Contract) -> None:
    errors = Errors(ib)
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 10, 200.00, tif="GTD", goodTillDate="next tuesday"))
    await status_is(trade, "Cancelled")
    assert errors.codes(trade.order.orderId) == [201]


async def test_the_adaptive_algo_is_accepted_for_a_stock_and_reported_back(
    sim: SimGateway, connect: Connect
) -> None:
    ib = await connect(1)
    (aapl,) = await ib.qualifyContractsAsync(Contract(conId=265598, exchange="SMART"))
    filled = ib.placeOrder(aapl, adaptive(MarketOrder("BUY", 10), "Urgent"))
    resting = ib.placeOrder(aapl, adaptive(LimitOrder("BUY", 10, 200.00), "Patient"))
    await status_is(filled, "Filled")
    await status_is(resting, "Submitted")
    ib.disconnect()
    again = await connect(1)
    (restored,) = again.openTrades()
    assert restored.order.algoStrategy == "Adaptive"
    assert restored.order.algoParams == [TagValue("adaptivePriority", "Patient")]


@pytest.mark.parametrize(
    ("con_id", "exchange", "order", "reason"),
    [
        pytest.param(90100001, "CME", MarketOrder("BUY", 1), "security type FUT", id="a future"),
        pytest.param(265598, "SMART", StopOrder("BUY", 1, 240.00), "STP", id="a stop order"),
        pytest.param(265598, "SMART", MarketOrder("BUY", 1), "adaptivePriority", id="an unknown priority"),
    ],
)
async def test_the_adaptive_algo_is_refused_where_ibkr_does_not_offer_it(
    sim: SimGateway, ib: IB, con_id: int, exchange: str, order: Order, reason: str
) -> None:
    (contract,) = await ib.qualifyContractsAsync(Contract(conId=con_id, exchange=exchange))
    errors = Errors(ib)
    trade = ib.placeOrder(contract, adaptive(order, "Hasty" if "Priority" in reason else "Normal"))
    await status_is(trade, "Cancelled")
    assert errors.codes(trade.order.orderId) == [201]
    assert reason in errors.seen[0][2]
    assert sim.orders() == []
