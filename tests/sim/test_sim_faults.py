"""Pacing enforcement and every fault the sim can inject, seen from ib_insync."""

from __future__ import annotations

import asyncio
import time

import pytest
from ib_insync import IB, Contract, LimitOrder, MarketOrder

from ibkr_sim.config import SimConfig
from ibkr_sim.server import SimGateway
from tests.sim.helpers import AAPL, Connect, Errors, until

pytestmark = pytest.mark.integration


async def burst_of_time_requests(ib: IB, count: int) -> list[int]:
    answers: list[int] = []
    ib.wrapper.currentTime = answers.append  # type: ignore[method-assign]
    ib.client.MaxRequests = 0  # switch off ib_insync's own throttle to provoke the sim
    for _ in range(count):
        ib.client.reqCurrentTime()
    return answers


async def test_more_than_50_messages_a_second_get_error_100(sim: SimGateway, ib: IB) -> None:
    errors = Errors(ib)
    answers = await burst_of_time_requests(ib, 80)
    await until(lambda: len(answers) + len(errors.codes(-1)) >= 80, what="all answered")
    violations = errors.codes(-1).count(100)
    assert violations >= 30  # 50 a second at most, the connect sequence included
    assert len(answers) + violations == 80
    assert sim.pacing_violations == violations
    assert "Max rate of messages per second has been exceeded" in errors.seen[-1][2]
    await asyncio.sleep(1.0)
    del ib.wrapper.currentTime  # back to ib_insync's own handler
    assert await asyncio.wait_for(ib.reqCurrentTimeAsync(), 1)  # the window has passed: served again


@pytest.mark.parametrize("sim_config", [SimConfig(pacing=False)])
async def test_pacing_off_serves_every_message(sim: SimGateway, ib: IB) -> None:
    answers = await burst_of_time_requests(ib, 120)
    await until(lambda: len(answers) == 120, what="all answered")
    assert sim.pacing_violations == 0


@pytest.mark.parametrize("sim_config", [SimConfig(pacing_disconnect_after=3)])
async def test_repeated_violations_can_disconnect(sim: SimGateway, ib: IB) -> None:
    await burst_of_time_requests(ib, 80)
    await until(lambda: not ib.isConnected(), what="disconnect")
    assert sim.pacing_violations >= 3


async def test_drop_connections_then_reconnect(sim: SimGateway, connect: Connect) -> None:
    ib = await connect(1)
    (aapl,) = await ib.qualifyContractsAsync(Contract(conId=AAPL, exchange="SMART"))
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 1, 200.00))
    await until(lambda: trade.orderStatus.status == "Submitted", what="submitted")
    assert sim.drop_connections() == 1
    await until(lambda: not ib.isConnected(), what="drop")
    again = await connect(1)
    assert [t.order.permId for t in again.openTrades()] == [trade.order.permId]


async def test_refuse_connections_for_a_while(sim: SimGateway, connect: Connect) -> None:
    ib = await connect(1)
    sim.refuse_connections(0.3)
    await until(lambda: not ib.isConnected(), what="drop")
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(*sim.address)
    await until(lambda: sim.listening, what="listening again")
    assert (await connect(2)).isConnected()


async def test_delay_responses(sim: SimGateway, ib: IB) -> None:
    sim.delay_responses(200)
    started = time.monotonic()
    await ib.reqCurrentTimeAsync()
    assert time.monotonic() - started >= 0.2
    sim.delay_responses(0)
    started = time.monotonic()
    await ib.reqCurrentTimeAsync()
    assert time.monotonic() - started < 0.1


async def test_reject_next_order(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    errors = Errors(ib)
    sim.reject_next_order(201, "Order rejected - reason:Simulated margin check")
    rejected = ib.placeOrder(aapl, MarketOrder("BUY", 1))
    await until(lambda: rejected.orderStatus.status == "Inactive", what="inactive")
    assert errors.seen[0] == (rejected.order.orderId, 201, "Order rejected - reason:Simulated margin check")
    accepted = ib.placeOrder(aapl, MarketOrder("BUY", 1))
    await until(lambda: accepted.orderStatus.status == "Filled", what="next order fills")


async def test_reject_next_order_with_another_code(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    errors = Errors(ib)
    sim.reject_next_order(10197, "No market data during competing live session")
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 1))
    await until(lambda: trade.orderStatus.status == "Cancelled", what="cancelled")
    assert errors.codes(trade.order.orderId) == [10197]


async def test_hold_and_release_fills(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    sim.hold_fills()
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 5))
    await until(lambda: trade.orderStatus.status == "Submitted", what="submitted")
    await asyncio.sleep(0.05)
    assert trade.fills == []
    sim.release_fills()
    await until(lambda: trade.orderStatus.status == "Filled", what="filled")


@pytest.mark.parametrize("code", [1100, 1101, 1102, 2104, 2106, 2158, 10197])
async def test_system_messages_reach_every_client(sim: SimGateway, connect: Connect, code: int) -> None:
    clients = [await connect(1), await connect(2)]
    seen = [Errors(ib) for ib in clients]
    sim.send_system_message(code)
    for errors in seen:
        await until(lambda e=errors: code in e.codes(-1), what=f"message {code}")


async def test_correct_an_execution(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 100))
    await until(lambda: trade.orderStatus.status == "Filled", what="filled")
    original = trade.fills[0].execution.execId
    corrected = sim.correct_execution(original, price=231.50)
    assert corrected == original[:-2] + "02"
    await until(lambda: corrected in {f.execution.execId for f in ib.fills()}, what="correction")
    fill = next(f for f in ib.fills() if f.execution.execId == corrected)
    assert fill.execution.price == 231.50
    await until(lambda: ib.positions()[0].avgCost == pytest.approx(231.51), what="avg cost corrected")
    replay = await ib.reqExecutionsAsync()
    assert [f.execution.execId for f in replay] == [corrected]


async def test_lower_next_valid_id_after_restart(sim: SimGateway, connect: Connect) -> None:
    ib = await connect(1)
    (aapl,) = await ib.qualifyContractsAsync(Contract(conId=AAPL, exchange="SMART"))
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 1))
    await until(lambda: trade.orderStatus.status == "Filled", what="filled")
    used = trade.order.orderId
    ib.disconnect()
    await until(lambda: 1 not in sim.connected_client_ids, what="disconnect seen")
    sim.lower_next_valid_id(1)
    again = await connect(1)
    reused = again.client.getReqId()
    assert reused < used
    errors = Errors(again)
    again.client.placeOrder(used, aapl, MarketOrder("BUY", 1))
    await until(lambda: errors.seen, what="duplicate refused")
    assert errors.codes(used) == [104]


async def test_freeze_stops_answering_until_unfrozen(sim: SimGateway, ib: IB) -> None:
    sim.freeze()
    pending = asyncio.ensure_future(ib.reqCurrentTimeAsync())
    await asyncio.sleep(0.2)
    assert not pending.done()
    assert ib.isConnected()
    sim.unfreeze()
    assert await asyncio.wait_for(pending, 1)
