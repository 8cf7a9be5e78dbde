"""Prices seen by clients: market data, scripted paths and the background random walk."""

from __future__ import annotations

import pytest
from ib_insync import IB, Contract, LimitOrder

from ibkr_sim.config import SimConfig
from ibkr_sim.server import SimGateway
from tests.sim.helpers import AAPL, until

pytestmark = pytest.mark.integration


async def test_snapshot_quotes_come_from_the_price_process(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    sim.set_price(AAPL, 230.00)
    (ticker,) = await ib.reqTickersAsync(aapl)
    assert (ticker.bid, ticker.ask, ticker.last) == (229.99, 230.01, 230.00)


async def test_streaming_quotes_follow_price_changes(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    ticker = ib.reqMktData(aapl)
    await until(lambda: ticker.last == 231.40, what="first quote")
    sim.set_price(AAPL, 228.00)
    await until(lambda: ticker.last == 228.00, what="new last")
    ib.cancelMktData(aapl)
    sim.set_price(AAPL, 227.00)
    assert ticker.last == 228.00


async def test_scripted_path_fills_a_resting_order_step_by_step(sim: SimGateway, ib: IB, aapl: Contract) -> None:
    trade = ib.placeOrder(aapl, LimitOrder("BUY", 10, 229.50))
    await until(lambda: trade.orderStatus.status == "Submitted", what="resting")
    sim.script_prices(AAPL, [230.00, 229.00])
    sim.step_prices([AAPL])
    assert sim.price(AAPL) == 230.00
    assert trade.orderStatus.status == "Submitted"
    sim.step_prices([AAPL])
    await until(lambda: trade.orderStatus.status == "Filled", what="filled")
    assert trade.fills[0].execution.price == 229.00


@pytest.mark.parametrize("sim_config", [SimConfig(tick_interval=0.01, seed=3)])
async def test_background_walk_moves_prices_on_the_grid(sim: SimGateway) -> None:
    start = sim.price(AAPL)
    await until(lambda: sim.price(AAPL) != start, what="a price move")
    assert round(sim.price(AAPL) * 100) == pytest.approx(sim.price(AAPL) * 100)


async def test_same_seed_gives_the_same_market_order_prices() -> None:
    paths = []
    for _ in range(2):
        sim = SimGateway(SimConfig(seed=11))
        sim.step_prices([AAPL])
        paths.append([sim.price(AAPL)] + [(sim.step_prices([AAPL]), sim.price(AAPL))[1] for _ in range(20)])
    assert paths[0] == paths[1]
