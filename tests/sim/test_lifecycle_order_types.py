"""Trailing, touched and on-close orders as IBKR works them, seen from ib_insync."""

from __future__ import annotations

import pytest
from ib_insync import IB, Contract, Order, TagValue, Trade

from ibkr_sim.config import SimConfig
from ibkr_sim.control import ControlServer, control_call
from ibkr_sim.server import SimGateway
from tests.sim.helpers import AAPL, Connect, Errors, until

pytestmark = pytest.mark.integration


async def status_is(trade: Trade, status: str) -> None:
    await until(lambda: trade.orderStatus.status == status, what=f"status {status}")


def trail_stop_of(sim: SimGateway, trade: Trade) -> float | None:
    return sim.order(1, trade.order.orderId).trail_stop


async def test_a_trailing_stop_follows_the_market_up_and_triggers_on_the_way_down(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    trade = ib.placeOrder(aapl, Order(action="SELL", totalQuantity=10, orderType="TRAIL", auxPrice=2.00))
    await status_is(trade, "PreSubmitted")
    assert trail_stop_of(sim, trade) == 229.40  # 231.40 less the 2.00 trailing amount
    sim.set_price(AAPL, 235.00)
    assert trail_stop_of(sim, trade) == 233.00
    sim.set_price(AAPL, 233.50)
    assert trail_stop_of(sim, trade) == 233.00  # it never moves against the order
    assert trade.orderStatus.status == "PreSubmitted"
    sim.set_price(AAPL, 232.90)
    await status_is(trade, "Filled")
    assert trade.fills[0].execution.price == 232.90


async def test_a_trailing_stop_follows_the_sim_price_process(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, Order(action="SELL", totalQuantity=10, orderType="TRAIL", auxPrice=1.00))
    await status_is(trade, "PreSubmitted")
    sim.script_prices(AAPL, [232.00, 234.00, 233.50, 232.90])
    for _ in range(3):
        sim.step_prices([AAPL])
    assert trail_stop_of(sim, trade) == 233.00
    assert trade.orderStatus.status == "PreSubmitted"
    sim.step_prices([AAPL])
    await status_is(trade, "Filled")
    assert trade.fills[0].execution.price == 232.90


async def test_a_buy_trailing_stop_by_percent_follows_the_market_down(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    trade = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=10, orderType="TRAIL", trailingPercent=1.0))
    await status_is(trade, "PreSubmitted")
    assert trail_stop_of(sim, trade) == 233.71  # 1% above 231.40, on the tick grid
    sim.set_price(AAPL, 220.00)
    assert trail_stop_of(sim, trade) == 222.20
    sim.set_price(AAPL, 222.30)
    await status_is(trade, "Filled")
    assert trade.fills[0].execution.price == 222.30


async def test_a_trailing_stop_starts_at_the_trail_stop_price_given(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    order = Order(action="SELL", totalQuantity=10, orderType="TRAIL", auxPrice=2.00, trailStopPrice=225.00)
    trade = ib.placeOrder(aapl, order)
    await status_is(trade, "PreSubmitted")
    assert trail_stop_of(sim, trade) == 225.00
    sim.set_price(AAPL, 230.00)
    assert trail_stop_of(sim, trade) == 225.00  # below the 231.40 it started at: no new high
    sim.set_price(AAPL, 233.40)
    assert trail_stop_of(sim, trade) == 227.00  # 2.00 above the start: the stop keeps its distance


async def test_a_trailing_stop_limit_triggers_then_trades_within_its_offset(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    order = Order(action="SELL", totalQuantity=10, orderType="TRAIL LIMIT", auxPrice=2.00, lmtPriceOffset=0.50)
    trade = ib.placeOrder(aapl, order)
    await status_is(trade, "PreSubmitted")
    sim.set_price(AAPL, 228.00)  # below the 229.40 stop: triggered, but below its 228.90 limit
    await status_is(trade, "Submitted")
    assert trade.orderStatus.filled == 0
    sim.set_price(AAPL, 229.00)
    await status_is(trade, "Filled")
    assert trade.fills[0].execution.price == 229.00


async def test_a_trailing_stop_without_amount_or_percent_is_refused(ib: IB, aapl: Contract) -> None:
    errors = Errors(ib)
    trade = ib.placeOrder(aapl, Order(action="SELL", totalQuantity=10, orderType="TRAIL"))
    await status_is(trade, "Cancelled")
    assert errors.codes(trade.order.orderId) == [201]


async def test_a_market_if_touched_buy_triggers_at_or_below_its_price(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    trade = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=10, orderType="MIT", auxPrice=225.00))
    await status_is(trade, "PreSubmitted")
    sim.set_price(AAPL, 226.00)
    assert trade.orderStatus.status == "PreSubmitted"
    sim.set_price(AAPL, 225.00)
    await status_is(trade, "Filled")
    assert trade.fills[0].execution.price == 225.00


async def test_a_limit_if_touched_order_triggers_then_waits_for_its_limit(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    order = Order(action="BUY", totalQuantity=10, orderType="LIT", auxPrice=225.00, lmtPrice=224.50)
    trade = ib.placeOrder(aapl, order)
    await status_is(trade, "PreSubmitted")
    sim.set_price(AAPL, 225.00)
    await status_is(trade, "Submitted")
    assert trade.orderStatus.filled == 0
    sim.set_price(AAPL, 224.40)
    await status_is(trade, "Filled")
    assert trade.fills[0].execution.price == 224.40


async def test_a_sell_limit_if_touched_fills_when_touched_and_marketable(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    order = Order(action="SELL", totalQuantity=10, orderType="LIT", auxPrice=235.00, lmtPrice=234.50)
    trade = ib.placeOrder(aapl, order)
    await status_is(trade, "PreSubmitted")
    sim.set_price(AAPL, 235.10)
    await status_is(trade, "Filled")
    assert trade.fills[0].execution.price == 235.10


async def test_on_close_orders_wait_for_the_close_and_trade_at_the_closing_price(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    moc = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=10, orderType="MOC"))
    loc_filled = ib.placeOrder(aapl, Order(action="SELL", totalQuantity=5, orderType="LOC", lmtPrice=232.00))
    loc_missed = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=5, orderType="LOC", lmtPrice=230.00))
    for trade in (moc, loc_filled, loc_missed):
        await status_is(trade, "PreSubmitted")
    sim.set_price(AAPL, 229.00)
    sim.set_price(AAPL, 233.00)
    assert sim.executions() == []
    sim.close_session()
    await status_is(moc, "Filled")
    await status_is(loc_filled, "Filled")
    await status_is(loc_missed, "Cancelled")
    assert moc.fills[0].execution.price == 233.00
    assert loc_filled.fills[0].execution.price == 233.00


async def test_the_control_port_closes_the_session(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    server = ControlServer(sim)
    host, port = await server.start()
    try:
        trade = ib.placeOrder(aapl, Order(action="SELL", totalQuantity=10, orderType="MOC"))
        await status_is(trade, "PreSubmitted")
        assert await control_call(host, port, "close_session") is None
        await status_is(trade, "Filled")
    finally:
        await server.stop()


async def test_an_on_close_order_other_than_day_is_refused_with_113(ib: IB, aapl: Contract) -> None:
    errors = Errors(ib)
    trade = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=10, orderType="MOC", tif="GTC"))
    await status_is(trade, "Cancelled")
    assert errors.codes(trade.order.orderId) == [113]


async def test_open_orders_report_the_trailing_stop_where_it_is_now(sim: SimGateway, connect: Connect) -> None:
    ib = await connect(1)
    (aapl,) = await ib.qualifyContractsAsync(Contract(conId=AAPL, exchange="SMART"))
    order = Order(action="SELL", totalQuantity=10, orderType="TRAIL LIMIT", trailingPercent=2.0, lmtPriceOffset=0.25)
    trade = ib.placeOrder(aapl, order)
    await status_is(trade, "PreSubmitted")
    sim.set_price(AAPL, 240.00)
    ib.disconnect()
    again = await connect(1)
    (restored,) = again.openTrades()
    assert restored.order.orderType == "TRAIL LIMIT"
    assert restored.order.trailStopPrice == 235.20  # 2% below 240.00
    assert restored.order.trailingPercent == 2.0
    assert restored.order.lmtPriceOffset == 0.25


@pytest.mark.parametrize("sim_config", [SimConfig(server_version=v) for v in (157, 163, 170, 176)])
async def test_trailing_fields_and_algos_are_read_and_reported_at_every_server_version(
    sim: SimGateway, connect: Connect
) -> None:
    ib = await connect(1)
    (aapl,) = await ib.qualifyContractsAsync(Contract(conId=AAPL, exchange="SMART"))
    order = Order(
        action="BUY", totalQuantity=10, orderType="TRAIL LIMIT", trailingPercent=1.0, lmtPriceOffset=0.10,
        ocaGroup="versions", ocaType=2, algoStrategy="Adaptive", algoParams=[TagValue("adaptivePriority", "Normal")],
    )
    trade = ib.placeOrder(aapl, order)
    await status_is(trade, "Cancelled")  # Adaptive takes market and limit orders only
    plain = Order(
        action="BUY", totalQuantity=10, orderType="TRAIL LIMIT", trailingPercent=1.0, lmtPriceOffset=0.10,
        ocaGroup="versions", ocaType=2,
    )
    trade = ib.placeOrder(aapl, plain)
    await status_is(trade, "PreSubmitted")
    request = sim.order(1, plain.orderId).request
    assert (request.trailing_percent, request.lmt_price_offset, request.oca_group, request.oca_type) == (
        1.0, 0.10, "versions", 2,
    )
    algo = Order(
        action="BUY", totalQuantity=10, orderType="LMT", lmtPrice=200.00, algoStrategy="Adaptive",
        algoParams=[TagValue("adaptivePriority", "Patient")],
    )
    await status_is(ib.placeOrder(aapl, algo), "Submitted")
    ib.disconnect()
    again = await connect(1)
    restored = {t.order.orderId: t.order for t in again.openTrades()}
    trailing = restored[plain.orderId]
    assert (trailing.trailingPercent, trailing.lmtPriceOffset, trailing.ocaType) == (1.0, 0.10, 2)
    assert trailing.trailStopPrice == 233.71
    assert restored[algo.orderId].algoParams == [TagValue("adaptivePriority", "Patient")]
