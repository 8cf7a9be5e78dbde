"""Positions, average cost, account values and execution replay, through ib_insync."""

from __future__ import annotations

import pytest
from ib_insync import IB, Contract, ExecutionFilter, Future, LimitOrder, MarketOrder, Trade

from ibkr_sim.config import SimConfig
from ibkr_sim.server import SimGateway
from tests.sim.helpers import AAPL, ACCOUNT, Connect, until

pytestmark = pytest.mark.integration


async def filled(ib: IB, contract: Contract, action: str, qty: float) -> Trade:
    trade = ib.placeOrder(contract, MarketOrder(action, qty))
    await until(lambda: trade.orderStatus.status == "Filled", what="fill")
    await until(lambda: all(f.commissionReport.execId for f in trade.fills), what="commission reports")
    return trade


def values(ib: IB) -> dict[str, float]:
    return {
        v.tag: float(v.value) for v in ib.accountValues()
        if v.currency == "USD" and not v.modelCode and v.tag != "Currency"
    }


async def test_positions_and_average_cost_after_buy_sell_sequence(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    await filled(ib, aapl, "BUY", 100)  # @231.40, $1.00
    sim.set_price(AAPL, 241.40)
    await filled(ib, aapl, "BUY", 300)  # @241.40, $1.50
    await until(lambda: ib.positions() and ib.positions()[0].position == 400, what="position 400")
    (pos,) = ib.positions()
    expected_avg = (100 * 231.40 + 1.0 + 300 * 241.40 + 1.5) / 400
    assert pos.avgCost == pytest.approx(expected_avg, abs=1e-6)
    sim.set_price(AAPL, 251.40)
    sell = await filled(ib, aapl, "SELL", 150)  # $1.00 (150 × 0.005 = 0.75 → minimum)
    realized = sell.fills[0].commissionReport.realizedPNL
    assert realized == pytest.approx((251.40 - expected_avg) * 150 - 1.0, abs=0.01)
    await until(lambda: ib.positions()[0].position == 250, what="position 250")
    assert ib.positions()[0].avgCost == pytest.approx(expected_avg, abs=1e-6)
    assert sim.position(ACCOUNT, AAPL) is not None
    await filled(ib, aapl, "SELL", 250)
    await until(lambda: not ib.positions(), what="flat")
    await until(lambda: not ib.portfolio(), what="portfolio flat")


async def test_account_values_follow_fills_and_commissions(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    await filled(ib, aapl, "BUY", 1000)  # 231,400 + $5.00 commission
    await until(lambda: values(ib).get("TotalCashValue") == 1_000_000 - 231_400 - 5.0, what="cash")
    sim.set_price(AAPL, 232.40)
    await filled(ib, aapl, "BUY", 1)  # pushes fresh values; $1.00
    expected_cash = 1_000_000 - 231_400 - 5.0 - 232.40 - 1.0
    await until(lambda: values(ib)["TotalCashValue"] == pytest.approx(expected_cash), what="cash")
    v = values(ib)
    assert v["NetLiquidation"] == pytest.approx(expected_cash + 1001 * 232.40, abs=0.01)
    assert v["GrossPositionValue"] == pytest.approx(1001 * 232.40, abs=0.01)
    assert v["BuyingPower"] > 0
    summary = {a.tag: float(a.value) for a in await ib.accountSummaryAsync() if a.currency == "USD"}
    assert summary["NetLiquidation"] == pytest.approx(v["NetLiquidation"], abs=0.01)
    (item,) = ib.portfolio()
    assert item.marketPrice == 232.40
    assert item.unrealizedPNL == pytest.approx(1001 * 232.40 - 1001 * item.averageCost, abs=0.01)


async def test_futures_move_cash_only_by_realized_pnl(sim: SimGateway, ib: IB) -> None:
    (es,) = await ib.qualifyContractsAsync(Future("ES", "202612", "CME"))
    await filled(ib, es, "BUY", 2)  # 2 × $0.85
    sim.set_price(es.conId, 6060.00)
    await filled(ib, es, "SELL", 2)
    gain = (6060.00 - 6050.00) * 50 * 2
    await until(
        lambda: values(ib).get("TotalCashValue") == pytest.approx(1_000_000 + gain - 4 * 0.85), what="cash"
    )
    assert values(ib)["RealizedPnL"] == pytest.approx(gain - 4 * 0.85)


async def test_executions_replay_with_identical_exec_ids_after_reconnect(
    sim: SimGateway, connect: Connect
) -> None:
    ib = await connect(1)
    (aapl,) = await ib.qualifyContractsAsync(Contract(conId=AAPL, exchange="SMART"))
    trades = [await filled(ib, aapl, "BUY", 10) for _ in range(3)]
    exec_ids = [f.execution.execId for t in trades for f in t.fills]
    resting = ib.placeOrder(aapl, LimitOrder("BUY", 5, 200.00))
    await until(lambda: resting.orderStatus.status == "Submitted", what="resting")
    ib.disconnect()
    await until(lambda: 1 not in sim.connected_client_ids, what="disconnect seen")
    again = await connect(1)
    assert sorted(f.execution.execId for f in again.fills()) == sorted(exec_ids)
    assert all(f.commissionReport.commission > 0 for f in again.fills())
    assert [t.order.orderId for t in again.openTrades()] == [resting.order.orderId]
    completed = await again.reqCompletedOrdersAsync(apiOnly=False)
    assert sorted(t.order.permId for t in completed) == sorted(t.order.permId for t in trades)
    assert all(t.orderStatus.status == "Filled" for t in completed)


async def test_execution_filter_selects_by_client_side_and_symbol(
    sim: SimGateway, connect: Connect
) -> None:
    first = await connect(1)
    second = await connect(2)
    (aapl,) = await first.qualifyContractsAsync(Contract(conId=AAPL, exchange="SMART"))
    await filled(first, aapl, "BUY", 1)
    await filled(second, aapl, "SELL", 2)
    assert len(await first.reqExecutionsAsync()) == 2
    only_second = await first.reqExecutionsAsync(ExecutionFilter(clientId=2))
    assert [f.execution.shares for f in only_second] == [2]
    buys = await first.reqExecutionsAsync(ExecutionFilter(side="BUY"))
    assert [f.execution.side for f in buys] == ["BOT"]
    assert await first.reqExecutionsAsync(ExecutionFilter(symbol="MSFT")) == []
    assert len(await first.reqExecutionsAsync(ExecutionFilter(acctCode=ACCOUNT))) == 2
    assert await first.reqExecutionsAsync(ExecutionFilter(time="20991231 00:00:00")) == []


@pytest.mark.parametrize("sim_config", [SimConfig(accounts=("DU0000001", "DU0000002"))])
async def test_two_accounts_keep_separate_positions(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    assert ib.managedAccounts() == ["DU0000001", "DU0000002"]
    for account, qty in (("DU0000001", 10), ("DU0000002", 20)):
        trade = ib.placeOrder(aapl, MarketOrder("BUY", qty, account=account))
        await until(lambda t=trade: t.orderStatus.status == "Filled", what="fill")
    await until(lambda: len(ib.positions()) == 2, what="two positions")
    assert sorted((p.account, p.position) for p in ib.positions()) == [("DU0000001", 10), ("DU0000002", 20)]


@pytest.mark.parametrize("sim_config", [SimConfig(accounts=("DU0000001", "DU0000002"))])
async def test_order_without_account_needs_one_when_several_are_managed(ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 1))
    await until(lambda: trade.orderStatus.status == "Cancelled", what="rejection")
    assert trade.log[-1].errorCode == 436
