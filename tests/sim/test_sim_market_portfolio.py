"""Price process, commissions and portfolio bookkeeping (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ibkr_sim.market import PriceProcess, conforms, on_grid, tick_decimals
from ibkr_sim.portfolio import DEFAULT_COMMISSIONS, Portfolio
from ibkr_sim.universe import SimContract

STOCK = SimContract(con_id=1, symbol="AAA", sec_type="STK", exchange="SMART", currency="USD", ref_price=50.0)
FUTURE = SimContract(
    con_id=2, symbol="ES", sec_type="FUT", exchange="CME", currency="USD", multiplier="50", min_tick=0.25,
    ref_price=6000.0,
)
FX = SimContract(
    con_id=3, symbol="EUR", sec_type="CASH", exchange="IDEALPRO", currency="USD", min_tick=0.00005,
    ref_price=1.08512,
)


def test_same_seed_same_path_and_independent_of_other_instruments() -> None:
    first = PriceProcess(seed=7)
    second = PriceProcess(seed=7)
    path_a = [first.step(STOCK) for _ in range(50)]
    for _ in range(20):
        second.step(FUTURE)
    path_b = [second.step(STOCK) for _ in range(50)]
    assert path_a == path_b
    assert path_a != [PriceProcess(seed=8).step(STOCK) for _ in range(50)]


@given(st.integers(0, 2**32), st.sampled_from([STOCK, FUTURE, FX]))
def test_prices_stay_on_the_tick_grid_and_positive(seed: int, inst: SimContract) -> None:
    process = PriceProcess(seed=seed)
    for _ in range(30):
        price = process.step(inst)
        assert price > 0
        assert conforms(price, inst.min_tick)


def test_reference_price_is_rounded_to_the_grid() -> None:
    assert PriceProcess().price(FX) == 1.0851
    assert tick_decimals(0.00005) == 5
    assert on_grid(6000.13, 0.25) == 6000.25


def test_scripted_path_then_random_walk() -> None:
    process = PriceProcess()
    process.script(STOCK, [51.0, 52.005, 49.5])
    assert [process.step(STOCK) for _ in range(3)] == [51.0, 52.0, 49.5]
    assert not process.has_script(STOCK)
    assert process.step(STOCK) != 0
    assert process.set_price(STOCK, 10.004) == 10.0


def test_stock_commission_per_share_with_minimum_and_cap() -> None:
    rate = DEFAULT_COMMISSIONS["STK"]
    assert rate.for_order(100, 5_000) == 1.0
    assert rate.for_order(1_000, 50_000) == 5.0
    assert rate.for_order(1_000, 100) == 1.0  # capped at 1 % of value
    assert DEFAULT_COMMISSIONS["FUT"].for_order(3, 900_000) == 2.55


def test_buy_sell_sequence_average_cost_and_realized_pnl() -> None:
    book = Portfolio(["DU0000001"], initial_cash=100_000.0)
    book.apply_fill("DU0000001", STOCK, 1, 100, price=50.0, commission=1.0)
    book.apply_fill("DU0000001", STOCK, 1, 100, price=52.0, commission=1.0)
    pos = book.account("DU0000001").positions[1]
    assert pos.quantity == 200
    assert pos.avg_cost == pytest.approx((5000 + 1 + 5200 + 1) / 200)
    _, realized = book.apply_fill("DU0000001", STOCK, -1, 50, price=55.0, commission=1.0)
    assert realized == pytest.approx((55.0 - 51.01) * 50 - 1.0)
    assert pos.avg_cost == pytest.approx(51.01)
    _, realized = book.apply_fill("DU0000001", STOCK, -1, 200, price=50.0, commission=2.0)  # flips short
    assert pos.quantity == -50
    assert pos.avg_cost == pytest.approx(50.0 + 0.5 / 50)  # the opening quarter of the commission
    assert realized == pytest.approx((50.0 - 51.01) * 150 - 1.5)
    cash = book.account("DU0000001").cash["USD"]
    assert cash == pytest.approx(100_000 - 5001 - 5201 + 2749 + 9998)


def test_futures_cash_moves_by_variation_and_commissions() -> None:
    book = Portfolio(["DU0000001"], initial_cash=0.0)
    book.apply_fill("DU0000001", FUTURE, 1, 2, price=6000.0, commission=1.7)
    values = dict((tag, value) for tag, value, cur in book.values("DU0000001", lambda i: 6010.0) if cur == "USD")
    assert float(values["NetLiquidation"]) == pytest.approx(-1.7 + 10 * 50 * 2)
    book.apply_fill("DU0000001", FUTURE, -1, 2, price=6010.0, commission=1.7)
    assert book.account("DU0000001").cash["USD"] == pytest.approx(1000 - 3.4)
    assert book.account("DU0000001").realized_pnl == pytest.approx(1000 - 3.4)
