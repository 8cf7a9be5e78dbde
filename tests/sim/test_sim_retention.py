"""The sim keeps its working orders and its last finished ones, not every order of a long run."""

from __future__ import annotations

import pytest
from ib_insync import IB, Contract, MarketOrder

from ibkr_sim import SimConfig, broker
from ibkr_sim.server import SimGateway
from tests.sim.helpers import AAPL, ACCOUNT, until

ORDERS = 120


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(pacing=False)


@pytest.fixture(autouse=True)
def small_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep 40 finished orders, forget 10 at a time: the bound is reached within a test's few orders."""
    monkeypatch.setattr(broker, "FINISHED_KEPT", 40)
    monkeypatch.setattr(broker, "FORGET_AT_ONCE", 10)
    monkeypatch.setattr(broker, "REQUESTS_KEPT", 40)


async def buy_one_at_a_time(ib: IB, aapl: Contract, count: int) -> None:
    trades = [ib.placeOrder(aapl, MarketOrder("BUY", 1, orderRef=f"ref-{n}")) for n in range(count)]
    await until(lambda: all(t.orderStatus.status == "Filled" for t in trades) and len(ib.fills()) == count,
                timeout=10, what="every order filled")


async def test_the_oldest_finished_orders_are_forgotten_and_their_fills_stay_booked(
        sim: SimGateway, ib: IB, aapl: Contract) -> None:
    await buy_one_at_a_time(ib, aapl, ORDERS)

    kept = {order.perm_id for order in sim.orders()}
    assert 40 <= len(kept) <= 50
    assert {e.order.perm_id for e in sim.executions()} == kept
    assert len(sim.orders_seen) <= 50
    newest = max(ib.trades(), key=lambda t: t.order.orderId)
    oldest = min(ib.trades(), key=lambda t: t.order.orderId)
    assert newest.order.permId in kept and oldest.order.permId not in kept
    assert sim.place_count(newest.order.orderRef) == 1
    assert sim.place_count(oldest.order.orderRef) == 0  # forgotten with its order
    position = sim.position(ACCOUNT, AAPL)
    assert position is not None and position.quantity == ORDERS  # forgotten orders' fills are still booked
    replay = await ib.reqExecutionsAsync()  # IBKR answers with what it still holds
    assert {fill.execution.permId for fill in replay} == kept
    completed = await ib.reqCompletedOrdersAsync(apiOnly=True)
    assert {trade.order.permId for trade in completed} == kept


async def test_a_correction_after_orders_were_forgotten_rebooks_the_forgotten_fills_too(
        sim: SimGateway, ib: IB, aapl: Contract) -> None:
    await buy_one_at_a_time(ib, aapl, ORDERS)
    before = sim.position(ACCOUNT, AAPL)
    assert before is not None
    avg_cost = before.avg_cost
    last = sim.executions()[-1]

    sim.correct_execution(last.exec_id, price=last.price + 12.0)

    after = sim.position(ACCOUNT, AAPL)
    assert after is not None and after.quantity == ORDERS
    assert after.avg_cost == pytest.approx(avg_cost + 12.0 / ORDERS)
