"""The IBKR adapter against the sim over its TCP socket: queries never wait forever."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from ib_insync import Trade
from ib_insync.objects import Fill

from ibkr_sim import SimConfig, SimGateway
from workers.adapters.ibkr.pacing import PacingLimiter
from workers.adapters.ibkr.tws_connection import TwsConnection
from workers.domain.instruments import Instrument
from workers.domain.orders import NewOrder, Order, OrderRequested, OrderState, OrderType, Side, TimeInForce
from workers.ports.ibkr import IbCommission, IbError, IbExecution, IbOrderTerms, IbReport

AAPL = Instrument(instrument_id="STK:AAPL:USD", con_id=265598, symbol="AAPL", sec_type="STK", exchange="SMART",
                  currency="USD", min_tick=Decimal("0.01"))


def an_order(ref: str, limit_price: Decimal | None = None, quantity: int = 1) -> Order:
    """An order of ``quantity`` shares of AAPL whose ``orderRef`` is ``ref``: a market order, or a limit order."""
    request = OrderRequested(
        order_id=ref, account="DU0000001", instrument_id=AAPL.instrument_id, side=Side.BUY, quantity=Decimal(quantity),
        order_type=OrderType.LIMIT if limit_price is not None else OrderType.MARKET, limit_price=limit_price,
        stop_price=None, time_in_force=TimeInForce.DAY, outside_rth=False, created_at=datetime.now(UTC))
    return Order.recorded(NewOrder(request, OrderState.ACCEPTED), owner_client_id=22)

pytestmark = pytest.mark.integration


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(pacing=False)


async def test_queries_ibkr_does_not_answer_give_up_after_the_request_timeout(sim: SimGateway) -> None:
    host, port = sim.address
    gateway = TwsConnection(host, port, 21, limiter=PacingLimiter(1000.0), connect_timeout=5, request_timeout=0.3)
    await gateway.connect()
    try:
        assert await gateway.order_statuses() == {}  # answered while the sim answers
        sim.freeze()  # IBKR takes the requests and answers none (as when it drops them over its limit)
        for query in (gateway.order_statuses, gateway.executions, gateway.positions):
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await query()
            assert time.monotonic() - started < 2.0
        sim.unfreeze()
    finally:
        await gateway.close()


async def test_done_trades_are_forgotten_and_ibkr_still_answers_for_them(sim: SimGateway) -> None:
    host, port = sim.address
    gateway = TwsConnection(host, port, 22, limiter=PacingLimiter(1000.0), connect_timeout=5)
    await gateway.connect()
    try:
        refs = [f"ref-{n}" for n in range(5)]
        for ref in refs:
            await gateway.place(AAPL, an_order(ref), gateway.ib.client.getReqId())
        await eventually(lambda: all(t.isDone() for t in gateway.ib.trades())
                         and len(gateway.ib.fills()) == len(refs))
        await gateway.place(AAPL, an_order("resting", limit_price=Decimal(1)), gateway.ib.client.getReqId())
        await eventually(lambda: any(t.order.orderRef == "resting" and t.order.permId
                                     for t in gateway.ib.openTrades()))

        assert gateway.prune_done(older_than=3600) == 0  # recent: kept
        assert gateway.prune_done(older_than=0) == len(refs)

        left = gateway.ib.wrapper.trades.values()
        assert [t.order.orderRef for t in left] == ["resting"]  # an open order is never forgotten
        assert gateway.ib.wrapper.fills == {}
        statuses = await gateway.order_statuses()  # IBKR still knows them all
        assert set(refs) <= set(statuses) and statuses[refs[0]].ib_status == "Filled"
        assert {e.order_ref for e in await gateway.executions()} == set(refs)
    finally:
        await gateway.close()


def live_objects(kind: type) -> int:
    """How many objects of ``kind`` the collector tracks, garbage in cycles not yet collected included."""
    return sum(isinstance(o, kind) for o in gc.get_objects())


async def test_pruning_frees_ib_insyncs_record_of_a_few_hundred_settled_orders(sim: SimGateway) -> None:
    host, port = sim.address
    gateway = TwsConnection(host, port, 24, limiter=PacingLimiter(1000.0), connect_timeout=5)
    await gateway.connect()
    stop = asyncio.Event()
    gc.collect()
    trades_before, fills_before = live_objects(Trade), live_objects(Fill)
    gc.disable()  # what is freed must be freed at once, not by a collection of the cycles
    try:
        wrapper = gateway.ib.wrapper
        for n in range(300):
            await gateway.place(AAPL, an_order(f"many-{n}", quantity=1), gateway.ib.client.getReqId())
        await eventually(lambda: all(t.isDone() for t in wrapper.trades.values()) and len(wrapper.fills) == 300
                         and all(f.commissionReport.execId for f in wrapper.fills.values()))
        held = [weakref.ref(trade) for trade in wrapper.trades.values()]
        assert live_objects(Trade) - trades_before >= 300

        pruning = asyncio.create_task(gateway.run_pruning(stop, every=0.1, older_than=0.2))
        await eventually(lambda: not wrapper.trades)

        assert wrapper.fills == {} and wrapper.permId2Trade == {}
        # ib_insync's own events keep the last trade and fill they reported: a few, not hundreds.
        assert sum(ref() is not None for ref in held) <= 3
        assert live_objects(Trade) - trades_before <= 3
        assert live_objects(Fill) - fills_before <= 3
        stop.set()
        await pruning
    finally:
        gc.enable()
        stop.set()
        await gateway.close()


async def test_a_done_order_is_kept_until_its_commission_arrives(sim: SimGateway) -> None:
    host, port = sim.address
    gateway = TwsConnection(host, port, 25, limiter=PacingLimiter(1000.0), connect_timeout=5)
    await gateway.connect()
    try:
        wrapper = gateway.ib.wrapper
        await gateway.place(AAPL, an_order("late-commission", quantity=1), gateway.ib.client.getReqId())
        await eventually(lambda: len(wrapper.fills) == 1
                         and all(f.commissionReport.execId for f in wrapper.fills.values()))
        (trade,) = wrapper.trades.values()
        trade.fills[0].commissionReport.execId = ""  # as if IBKR had not sent the commission yet

        assert gateway.prune_done(older_than=0) == 0  # ib_insync reports a commission only for a held trade
        assert gateway.prune_done(older_than=0, unsettled_after=0) == 1  # not forever
        assert wrapper.trades == {} and wrapper.fills == {}
    finally:
        await gateway.close()


async def test_a_correction_of_a_forgotten_order_is_still_reported_with_its_commission(sim: SimGateway) -> None:
    host, port = sim.address
    gateway = TwsConnection(host, port, 26, limiter=PacingLimiter(1000.0), connect_timeout=5)
    reports: list[IbReport] = []

    async def listener(batch: Sequence[IbReport]) -> None:
        reports.extend(batch)

    gateway.listen(listener)
    await gateway.connect()
    try:
        await gateway.place(AAPL, an_order("corrected-later", quantity=3), gateway.ib.client.getReqId())
        await eventually(lambda: any(isinstance(r, IbCommission) for r in reports))
        (execution,) = [r for r in reports if isinstance(r, IbExecution)]
        assert gateway.prune_done(older_than=0) == 1
        reports.clear()

        assert execution.price != Decimal("250.5")
        corrected = sim.correct_execution(execution.exec_id, price=250.5)

        await eventually(lambda: any(isinstance(r, IbCommission) for r in reports))
        (correction,) = [r for r in reports if isinstance(r, IbExecution)]
        assert correction.exec_id == corrected and correction.order_ref == "corrected-later"
        assert correction.price == Decimal("250.5")
        assert [r.exec_id for r in reports if isinstance(r, IbCommission)] == [corrected]
        assert gateway.ib.wrapper.trades == {}  # reported without bringing the trade back
    finally:
        await gateway.close()


async def test_reconciliation_queries_leave_no_trades_or_settled_fills_behind(sim: SimGateway) -> None:
    host, port = sim.address
    gateway = TwsConnection(host, port, 27, limiter=PacingLimiter(1000.0), connect_timeout=5)
    await gateway.connect()
    try:
        wrapper = gateway.ib.wrapper
        refs = [f"day-{n}" for n in range(50)]
        for ref in refs:
            await gateway.place(AAPL, an_order(ref, quantity=1), gateway.ib.client.getReqId())
        await eventually(lambda: len(wrapper.fills) == len(refs)
                         and all(f.commissionReport.execId for f in wrapper.fills.values()))
        assert gateway.prune_done(older_than=0) == len(refs)

        statuses = await gateway.order_statuses()  # as after a reconnection: the day's orders, all at once
        executions = await gateway.executions()

        assert {ref: statuses[ref].ib_status for ref in refs} == dict.fromkeys(refs, "Filled")
        assert {e.order_ref for e in executions} == set(refs)
        assert wrapper.trades == {}  # the completed orders were never filed as ib_insync trades
        assert len(wrapper.fills) == len(refs)  # the replayed executions, with their commissions
        gateway.prune_done(older_than=0)
        assert wrapper.fills == {}
    finally:
        await gateway.close()


@pytest.mark.parametrize("linger", [0.0, 0.5])
async def test_reports_arriving_within_the_linger_are_delivered_in_one_batch(sim: SimGateway, linger: float) -> None:
    host, port = sim.address
    gateway = TwsConnection(host, port, 23, limiter=PacingLimiter(1000.0), connect_timeout=5, report_linger=linger)
    batches: list[list[IbReport]] = []

    async def listener(reports: Sequence[IbReport]) -> None:
        batches.append(list(reports))

    gateway.listen(listener)
    await gateway.connect()
    try:
        for ref in ("first", "second"):  # the second placed 0.1 s after the first one's reports came
            await gateway.place(AAPL, an_order(ref), gateway.ib.client.getReqId())
            await asyncio.sleep(0.1)
        await eventually(lambda: {r.order_ref for b in batches for r in b if isinstance(r, IbExecution)}
                         == {"first", "second"})
    finally:
        await gateway.close()

    batch_of = {r.order_ref: n for n, b in enumerate(batches) for r in b if isinstance(r, IbExecution)}
    if linger:
        assert batch_of["first"] == batch_of["second"]  # both within half a second of the first report
    else:
        assert batch_of["first"] < batch_of["second"]


async def test_an_order_whose_modification_ibkr_refuses_is_still_followed_as_working(sim: SimGateway) -> None:
    host, port = sim.address
    gateway = TwsConnection(host, port, 22, limiter=PacingLimiter(1000.0), connect_timeout=5)
    reports: list[IbReport] = []

    async def listener(batch: list[IbReport]) -> None:
        reports.extend(batch)

    gateway.listen(listener)
    await gateway.connect()
    try:
        resting = an_order("resting", limit_price=Decimal(1))
        ib_order_id = gateway.ib.client.getReqId()
        await gateway.place(AAPL, resting, ib_order_id)
        await eventually(lambda: any(t.order.orderRef == "resting" and t.orderStatus.status == "Submitted"
                                     for t in gateway.ib.trades()))
        [trade] = [t for t in gateway.ib.trades() if t.order.orderRef == "resting"]
        await gateway.modify(AAPL, replace(resting, limit_price=Decimal("1.01")), ib_order_id)
        await eventually(lambda: any(isinstance(r, IbOrderTerms) and r.terms.limit_price == Decimal("1.01")
                                     for r in reports))

        # IBKR refuses a next modification: its error arrives as it comes off the socket (the sim would also
        # send the order's status again, which hides what ib_insync does with the error alone).
        gateway.ib.wrapper.error(ib_order_id, 201, "Order rejected - reason: not now", "")
        await eventually(lambda: any(isinstance(r, IbError) and r.code == 201 for r in reports))

        assert trade.orderStatus.status == "Submitted"  # not ib_insync's "Cancelled": the order works on
        assert not trade.isDone()
        assert gateway.prune_done(older_than=0) == 0
        sim.set_price(AAPL.con_id, 1.0)  # the limit becomes marketable: IBKR's fill still reaches the trade
        await eventually(lambda: trade.orderStatus.status == "Filled")
    finally:
        await gateway.close()
