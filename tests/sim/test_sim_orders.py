"""Order types, times in force, modify, cancel and rejections, as ib_insync sees them."""

from __future__ import annotations

import re

import pytest
from ib_insync import IB, Contract, LimitOrder, MarketOrder, Order, StopLimitOrder, StopOrder, Trade

from ibkr_sim.config import SimConfig
from ibkr_sim.server import SimGateway
from tests.sim.helpers import AAPL, ACCOUNT, Connect, Errors, until

pytestmark = pytest.mark.integration

AAPL_PRICE = 231.40  # reference price in the default universe
EXEC_ID = re.compile(r"^[0-9a-f]{8}\.[0-9a-f]{8}\.\d{2}\.01$")


async def status_is(trade: Trade, status: str) -> None:
    await until(lambda: trade.orderStatus.status == status, what=f"status {status}")


def statuses(trade: Trade) -> list[str]:
    return [entry.status for entry in trade.log]


async def test_market_order_fills_at_once_in_ib_message_order(ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 100))
    await status_is(trade, "Filled")
    await until(lambda: trade.fills and trade.fills[0].commissionReport.commission, what="commission")
    assert statuses(trade)[:3] == ["PendingSubmit", "Submitted", "Submitted"]
    assert trade.orderStatus.filled == 100
    assert trade.orderStatus.avgFillPrice == AAPL_PRICE
    fill = trade.fills[0]
    assert fill.execution.side == "BOT"
    assert fill.execution.price == AAPL_PRICE
    assert EXEC_ID.match(fill.execution.execId)
    assert fill.commissionReport.commission == 1.0  # 100 × $0.005 = $0.50, minimum $1
    assert trade.order.permId > 0


async def test_limit_order_rests_until_price_crosses(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 10, 230.00))
    await status_is(trade, "Submitted")
    sim.set_price(AAPL, 230.50)
    assert trade.orderStatus.status == "Submitted"
    sim.set_price(AAPL, 229.90)
    await status_is(trade, "Filled")
    assert trade.fills[0].execution.price == 229.90
    assert trade.fills[0].execution.lastLiquidity == 1  # it rested: added liquidity


async def test_marketable_limit_fills_at_market_price(ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, LimitOrder("SELL", 5, 200.00))
    await status_is(trade, "Filled")
    assert trade.orderStatus.avgFillPrice == AAPL_PRICE


async def test_stop_order_waits_presubmitted_then_triggers(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, StopOrder("BUY", 10, 235.00))
    await status_is(trade, "PreSubmitted")
    sim.set_price(AAPL, 235.10)
    await status_is(trade, "Filled")
    assert trade.fills[0].execution.price == 235.10


async def test_stop_limit_triggers_then_fills_within_its_limit(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    trade = ib.placeOrder(aapl, StopLimitOrder("SELL", 10, 225.00, 228.00))
    await status_is(trade, "PreSubmitted")
    sim.set_price(AAPL, 224.00)  # triggered, but below the 225 limit
    await status_is(trade, "Submitted")
    assert trade.orderStatus.filled == 0
    sim.set_price(AAPL, 226.00)
    await status_is(trade, "Filled")
    assert trade.orderStatus.avgFillPrice == 226.00


async def test_ioc_not_marketable_is_cancelled(ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 10, 200.00, tif="IOC"))
    await status_is(trade, "Cancelled")
    assert trade.orderStatus.filled == 0


@pytest.mark.parametrize("sim_config", [SimConfig(clip_size=30)])
async def test_ioc_fills_what_it_can_and_cancels_the_rest(ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 100, tif="IOC"))
    await status_is(trade, "Cancelled")
    assert trade.orderStatus.filled == 30
    assert [f.execution.shares for f in trade.fills] == [30]


@pytest.mark.parametrize("sim_config", [SimConfig(clip_size=30)])
async def test_fok_larger_than_available_is_cancelled_whole(ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 100, tif="FOK"))
    await status_is(trade, "Cancelled")
    assert trade.fills == []
    small = ib.placeOrder(aapl, MarketOrder("BUY", 20, tif="FOK"))
    await status_is(small, "Filled")


@pytest.mark.parametrize("sim_config", [SimConfig(clip_size=30)])
async def test_partial_fills_sum_exactly(ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, MarketOrder("SELL", 100))
    await status_is(trade, "Filled")
    await until(lambda: len(trade.fills) == 4, what="four fills")
    shares = [f.execution.shares for f in trade.fills]
    assert shares == [30, 30, 30, 10]
    assert sum(shares) == trade.order.totalQuantity
    assert [f.execution.cumQty for f in trade.fills] == [30, 60, 90, 100]
    assert len({f.execution.execId for f in trade.fills}) == 4


async def test_opg_order_waits_for_the_opening_auction(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 10, tif="OPG"))
    await status_is(trade, "PreSubmitted")
    sim.run_opening_auction()
    await status_is(trade, "Filled")


async def test_day_order_expires_and_gtc_survives(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    day = ib.placeOrder(aapl, LimitOrder("BUY", 10, 200.00, tif="DAY"))
    gtc = ib.placeOrder(aapl, LimitOrder("BUY", 10, 200.00, tif="GTC"))
    await status_is(gtc, "Submitted")
    sim.expire_day_orders()
    await status_is(day, "Cancelled")
    assert gtc.orderStatus.status == "Submitted"


async def test_outside_rth_flag_decides_who_trades_outside_hours(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    sim.set_regular_trading_hours(False)
    waiting = ib.placeOrder(aapl, LimitOrder("BUY", 10, 240.00))
    extended = ib.placeOrder(aapl, LimitOrder("BUY", 10, 240.00, outsideRth=True))
    await status_is(extended, "Filled")
    assert waiting.orderStatus.status == "PreSubmitted"
    sim.set_regular_trading_hours(True)
    await status_is(waiting, "Filled")


async def test_order_ref_and_account_are_kept_and_echoed(sim: SimGateway, connect: Connect) -> None:
    ib = await connect(1)
    (aapl,) = await ib.qualifyContractsAsync(Contract(conId=AAPL))
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 1, 200.00, orderRef="ref-123", account=ACCOUNT))
    await status_is(trade, "Submitted")
    ib.disconnect()
    again = await connect(1)
    (restored,) = again.openTrades()
    assert restored.order.orderRef == "ref-123"
    assert restored.order.account == ACCOUNT
    assert restored.order.lmtPrice == 200.00
    assert restored.order.permId == trade.order.permId


async def test_modify_by_resending_the_same_order_id(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    order = LimitOrder("BUY", 10, 200.00, orderRef="mod-1")
    trade = ib.placeOrder(aapl, order)
    await status_is(trade, "Submitted")
    order.totalQuantity = 20
    order.lmtPrice = 240.00
    ib.placeOrder(aapl, order)
    await status_is(trade, "Filled")
    assert trade.orderStatus.filled == 20
    assert sim.place_count("mod-1") == 2
    assert len(sim.orders()) == 1


async def test_cancel_sends_202_and_cancelled_status(ib: IB, aapl: Contract) -> None:
    errors = Errors(ib)
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 10, 200.00))
    await status_is(trade, "Submitted")
    ib.cancelOrder(trade.order)
    await status_is(trade, "Cancelled")
    await until(lambda: 202 in errors.codes(trade.order.orderId), what="error 202")
    assert "Order Canceled - reason:" in errors.seen[-1][2]


async def test_cancel_unknown_or_filled_order_is_refused(ib: IB, aapl: Contract) -> None:
    errors = Errors(ib)
    ib.client.cancelOrder(987654)
    await until(lambda: errors.seen, what="error")
    assert errors.seen[0] == (987654, 10147, "OrderId 987654 that needs to be cancelled is not found.")
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 1))
    await status_is(trade, "Filled")
    ib.client.cancelOrder(trade.order.orderId)
    await until(lambda: 10148 in errors.codes(), what="error 10148")


async def test_other_client_cannot_cancel(sim: SimGateway, connect: Connect) -> None:
    owner = await connect(1)
    other = await connect(2)
    (aapl,) = await owner.qualifyContractsAsync(Contract(conId=AAPL))
    trade = owner.placeOrder(aapl, LimitOrder("BUY", 10, 200.00))
    await status_is(trade, "Submitted")
    errors = Errors(other)
    other.client.cancelOrder(trade.order.orderId)
    await until(lambda: errors.seen, what="error")
    assert errors.codes() == [10147]
    assert sim.order(1, trade.order.orderId).status == "Submitted"


@pytest.mark.parametrize("sim_config", [SimConfig(master_client_id=99)])
async def test_master_client_can_cancel_other_clients_orders(sim: SimGateway, connect: Connect) -> None:
    owner = await connect(1)
    master = await connect(99)
    (aapl,) = await owner.qualifyContractsAsync(Contract(conId=AAPL))
    trade = owner.placeOrder(aapl, LimitOrder("BUY", 10, 200.00))
    await status_is(trade, "Submitted")
    master.client.cancelOrder(trade.order.orderId)
    await status_is(trade, "Cancelled")


async def test_global_cancel_cancels_every_client(sim: SimGateway, connect: Connect) -> None:
    first = await connect(1)
    second = await connect(2)
    (aapl,) = await first.qualifyContractsAsync(Contract(conId=AAPL))
    trades = [ib.placeOrder(aapl, LimitOrder("BUY", 1, 200.00)) for ib in (first, second)]
    for trade in trades:
        await status_is(trade, "Submitted")
    first.reqGlobalCancel()
    for trade in trades:
        await status_is(trade, "Cancelled")
    assert sim.open_orders() == []


async def test_price_off_the_tick_grid_is_rejected_with_110(ib: IB, aapl: Contract) -> None:
    errors = Errors(ib)
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 10, 230.005))
    await until(lambda: errors.seen, what="error")
    assert errors.seen[0][:2] == (trade.order.orderId, 110)


async def test_a_fractional_stock_order_is_refused_with_10243_as_ibkr_does_for_api_orders(
        sim: SimGateway, ib: IB, aapl: Contract) -> None:
    errors = Errors(ib)
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 0.5))
    await until(lambda: errors.seen, what="error")
    assert errors.seen[0][:2] == (trade.order.orderId, 10243)
    assert "Fractional-sized order" in errors.seen[0][2]
    assert sim.executions() == []


async def test_reusing_a_filled_order_id_is_refused(ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 1))
    await status_is(trade, "Filled")
    errors = Errors(ib)
    ib.client.placeOrder(trade.order.orderId, aapl, MarketOrder("BUY", 1))
    await until(lambda: errors.seen, what="error")
    assert errors.codes() == [104]


async def test_reusing_a_cancelled_order_id_is_a_duplicate(ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 1, 200.00))
    await status_is(trade, "Submitted")
    ib.cancelOrder(trade.order)
    await status_is(trade, "Cancelled")
    errors = Errors(ib)
    ib.client.placeOrder(trade.order.orderId, aapl, LimitOrder("BUY", 1, 200.00))
    await until(lambda: errors.seen, what="error")
    assert errors.codes() == [103]


async def test_order_for_an_account_not_managed_is_rejected(ib: IB, aapl: Contract) -> None:
    errors = Errors(ib)
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 1, account="DU9999999"))
    await status_is(trade, "Cancelled")
    assert errors.codes(trade.order.orderId) == [201]


async def test_order_without_exchange_is_rejected(ib: IB) -> None:
    errors = Errors(ib)
    trade = ib.placeOrder(Contract(conId=AAPL), MarketOrder("BUY", 1))
    await status_is(trade, "Cancelled")
    assert errors.codes(trade.order.orderId) == [321]


async def test_order_for_unknown_contract_gets_200(ib: IB) -> None:
    errors = Errors(ib)
    trade = ib.placeOrder(Contract(conId=123, exchange="SMART"), MarketOrder("BUY", 1))
    await status_is(trade, "Cancelled")
    assert errors.codes(trade.order.orderId) == [200]


async def test_unsupported_order_type_is_rejected(ib: IB, aapl: Contract) -> None:
    errors = Errors(ib)
    trade = ib.placeOrder(aapl, Order(action="BUY", totalQuantity=1, orderType="PEG MID", auxPrice=1.0))
    await status_is(trade, "Cancelled")
    assert errors.codes(trade.order.orderId) == [387]


async def test_req_ids_gives_an_id_above_every_used_one(ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 1))
    await status_is(trade, "Filled")
    ids: list[int] = []
    ib.wrapper.nextValidId = ids.append  # type: ignore[method-assign]
    ib.client.reqIds(1)
    await until(lambda: ids, what="nextValidId")
    assert ids[0] > trade.order.orderId


async def test_perm_ids_are_unique_and_stable(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    trades = [ib.placeOrder(aapl, LimitOrder("BUY", 1, 200.00)) for _ in range(5)]
    for trade in trades:
        await status_is(trade, "Submitted")
    perm_ids = [t.order.permId for t in trades]
    assert len(set(perm_ids)) == 5
    assert all(p > 0 for p in perm_ids)
    assert [sim.order(1, t.order.orderId).perm_id for t in trades] == perm_ids


async def test_what_if_order_returns_margin_without_placing(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    state = await ib.whatIfOrderAsync(aapl, MarketOrder("BUY", 100))
    assert float(state.initMarginChange) > 0
    assert sim.orders() == []


async def test_current_time_and_account_summary(ib: IB) -> None:
    now = await ib.reqCurrentTimeAsync()
    assert now.year >= 2024
    summary = {v.tag: v.value for v in await ib.accountSummaryAsync()}
    assert float(summary["NetLiquidation"]) == 1_000_000.0
    assert summary["AccountType"] == "INDIVIDUAL"
