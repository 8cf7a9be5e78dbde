"""Market data over the real socket: what ib_insync's reqMktData, reqMarketDataType and cancelMktData get."""

from __future__ import annotations

import asyncio
import math

import pytest
from ib_insync import IB, Contract, Stock

from ibkr_sim.control import ControlServer, control_call
from ibkr_sim.server import SimGateway
from tests.sim.helpers import AAPL, MSFT, Connect, until

pytestmark = pytest.mark.integration


def _errors(ib: IB) -> list[tuple[int, int]]:
    """(reqId, code) of every error and warning ``ib`` receives from now on."""
    seen: list[tuple[int, int]] = []
    ib.errorEvent += lambda req_id, code, message, contract: seen.append((req_id, code))
    return seen


def _req_id(ib: IB, contract: Contract) -> int:
    ticker = ib.ticker(contract)
    assert ticker is not None
    return int(ib.wrapper.ticker2ReqId["mktData"][ticker])


async def _msft(ib: IB) -> Contract:
    (contract,) = await ib.qualifyContractsAsync(Stock("MSFT", "SMART", "USD"))
    return contract


async def test_streaming_quote_has_bid_ask_last_close_and_refreshes(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    sim.set_price(AAPL, 230.00)
    ticker = ib.reqMktData(aapl)
    await until(lambda: ticker.close > 0, what="first quote")
    assert (ticker.bid, ticker.ask, ticker.last, ticker.lastSize) == (229.99, 230.01, 230.00, 100)
    assert ticker.close == sim.instrument(AAPL).ref_price
    assert ticker.marketDataType == 1
    sim.set_price(AAPL, 231.50)
    await until(lambda: ticker.last == 231.50, what="refreshed quote")
    assert (ticker.bid, ticker.ask) == (231.49, 231.51)


async def test_delayed_type_without_subscription_gives_delayed_ticks_and_warning_10167(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    sim.config.market_data_subscribed = False
    errors = _errors(ib)
    ib.reqMarketDataType(3)
    ticker = ib.reqMktData(aapl)
    await until(lambda: ticker.close > 0, what="delayed quote")
    assert ticker.marketDataType == 3
    assert {t.tickType for t in ticker.ticks} >= {66, 67, 68, 75}
    assert not {t.tickType for t in ticker.ticks} & {1, 2, 4, 9}
    assert (_req_id(ib, aapl), 10167) in errors
    sim.set_price(AAPL, 225.00)
    await until(lambda: ticker.last == 225.00, what="delayed update")


async def test_contract_with_a_subscription_gets_live_data_even_when_delayed_is_asked(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    sim.config.unsubscribed_con_ids = frozenset({MSFT})
    ib.reqMarketDataType(3)
    ticker = ib.reqMktData(aapl)
    await until(lambda: ticker.close > 0, what="quote")
    assert ticker.marketDataType == 1
    assert {t.tickType for t in ticker.ticks} >= {1, 2, 4, 9}


async def test_live_request_without_subscription_is_refused_with_354(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    sim.config.unsubscribed_con_ids = frozenset({AAPL})
    errors = _errors(ib)
    ticker = ib.reqMktData(aapl)
    req_id = _req_id(ib, aapl)
    await until(lambda: (req_id, 354) in errors, what="error 354")
    await asyncio.sleep(0.05)
    assert math.isnan(ticker.last) and math.isnan(ticker.bid)
    assert sim.market_data_lines_in_use() == 0


async def test_unknown_contract_is_refused_with_200(sim: SimGateway, ib: IB) -> None:
    errors = _errors(ib)
    ib.reqMktData(Contract(conId=999_999_999, exchange="SMART"))
    await until(lambda: any(code == 200 for _, code in errors), what="error 200")


async def test_lines_are_bounded_across_connections_and_freed_by_cancel(
    sim: SimGateway, connect: Connect, ib: IB, aapl: Contract
) -> None:
    sim.config.market_data_lines = 2
    other = await connect(2)
    msft = await _msft(other)
    errors = _errors(ib)
    ib.reqMktData(aapl)
    other.reqMktData(msft)
    await until(lambda: sim.market_data_lines_in_use() == 2, what="two lines")
    third = ib.reqMktData(await _msft(ib))
    await until(lambda: any(code == 101 for _, code in errors), what="error 101")
    assert math.isnan(third.last)
    other.cancelMktData(msft)
    await until(lambda: sim.market_data_lines_in_use() == 1, what="line freed")
    ib.cancelMktData(third.contract)
    again = ib.reqMktData(third.contract)
    await until(lambda: again.last > 0, what="quote once a line is free")


async def test_snapshot_ends_with_tick_snapshot_end_and_holds_no_line(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    sim.config.market_data_lines = 0
    sim.set_price(AAPL, 230.00)
    ticker = ib.reqMktData(aapl, snapshot=True)
    await until(lambda: ticker.last == 230.00, what="snapshot quote")
    (same,) = await asyncio.wait_for(ib.reqTickersAsync(aapl), 2)
    assert (same.bid, same.ask, same.close) == (229.99, 230.01, sim.instrument(AAPL).ref_price)
    assert sim.market_data_lines_in_use() == 0


async def test_frozen_data_outside_trading_hours_is_sent_once(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    sim.set_regular_trading_hours(False)
    sim.set_price(AAPL, 230.00)
    ib.reqMarketDataType(2)
    ticker = ib.reqMktData(aapl)
    await until(lambda: ticker.last == 230.00, what="frozen quote")
    assert ticker.marketDataType == 2
    sim.set_price(AAPL, 240.00)
    await asyncio.sleep(0.1)
    assert ticker.last == 230.00


async def test_cancelling_an_unknown_request_gets_error_300(sim: SimGateway, ib: IB) -> None:
    errors = _errors(ib)
    ib.client.cancelMktData(4242)
    await until(lambda: (4242, 300) in errors, what="error 300")


async def test_market_data_requests_count_in_pacing(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    sim.config.max_messages_per_second = 5
    ib.client.MaxRequests = 0  # ib_insync's own throttle would hide the violation
    errors = _errors(ib)
    for _ in range(8):
        ib.reqMktData(aapl, snapshot=True)
    await until(lambda: any(code == 100 for _, code in errors), what="pacing violation")


async def test_control_port_changes_subscriptions_and_lines(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    control = ControlServer(sim)
    host, port = await control.start()
    try:
        await control_call(host, port, "set_market_data", subscribed=False, lines=1)
        errors = _errors(ib)
        ticker = ib.reqMktData(aapl)
        req_id = _req_id(ib, aapl)
        await until(lambda: (req_id, 354) in errors, what="error 354")
        await control_call(host, port, "set_market_data", subscribed=True)
        ib.cancelMktData(aapl)
        ticker = ib.reqMktData(aapl)
        await until(lambda: ticker.last > 0, what="live quote")
        assert await control_call(host, port, "market_data_lines_in_use") == 1
    finally:
        await control.stop()
