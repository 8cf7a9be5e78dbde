"""Contract lookup through reqContractDetails / qualifyContracts, and universe changes at runtime."""

from __future__ import annotations

import pytest
from ib_insync import IB, Contract, Forex, Future, Option, Stock

from ibkr_sim.server import SimGateway
from ibkr_sim.universe import SimContract
from tests.sim.helpers import AAPL, Errors

pytestmark = pytest.mark.integration


async def test_stock_qualifies_with_ib_fields(ib: IB) -> None:
    (aapl,) = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    assert aapl.conId == AAPL
    assert aapl.primaryExchange == "NASDAQ"
    assert aapl.exchange == "SMART"
    assert aapl.localSymbol == "AAPL"
    details = await ib.reqContractDetailsAsync(Contract(conId=AAPL))
    assert len(details) == 1
    assert details[0].minTick == 0.01
    assert details[0].longName == "APPLE INC"
    assert "NASDAQ" in details[0].validExchanges.split(",")


async def test_future_qualifies_by_contract_month(ib: IB) -> None:
    (es,) = await ib.qualifyContractsAsync(Future("ES", "202703", "CME"))
    assert es.localSymbol == "ESH7"
    assert es.lastTradeDateOrContractMonth == "20270319"
    assert es.multiplier == "50"
    details = await ib.reqContractDetailsAsync(Contract(conId=es.conId))
    assert details[0].minTick == 0.25
    assert details[0].contractMonth == "202703"


async def test_option_qualifies_by_expiry_strike_right(ib: IB) -> None:
    (call,) = await ib.qualifyContractsAsync(Option("SPY", "20261218", 600, "C", "SMART"))
    assert call.localSymbol == "SPY   261218C00600000"
    assert call.multiplier == "100"
    chain = await ib.reqContractDetailsAsync(Option("SPY", "20270115", exchange="SMART", right="P"))
    assert len(chain) == 5
    assert {d.contract.strike for d in chain} == {580.0, 590.0, 600.0, 610.0, 620.0}


async def test_forex_pair_qualifies_on_idealpro(ib: IB) -> None:
    (eurusd,) = await ib.qualifyContractsAsync(Forex("EURUSD"))
    assert eurusd.conId == 12087792
    assert eurusd.exchange == "IDEALPRO"
    assert eurusd.localSymbol == "EUR.USD"


async def test_unknown_symbol_gets_error_200(ib: IB) -> None:
    errors = Errors(ib)
    assert await ib.qualifyContractsAsync(Stock("NOSUCH", "SMART", "USD")) == []
    assert 200 in errors.codes()
    assert "No security definition has been found" in errors.seen[0][2]


async def test_symbol_on_two_primary_exchanges_is_ambiguous(ib: IB) -> None:
    details = await ib.reqContractDetailsAsync(Stock("SHOP", "SMART"))
    assert sorted(d.contract.primaryExchange for d in details) == ["NYSE", "TSE"]
    assert await ib.qualifyContractsAsync(Stock("SHOP", "SMART")) == []
    (toronto,) = await ib.qualifyContractsAsync(Stock("SHOP", "SMART", "CAD"))
    assert toronto.primaryExchange == "TSE"
    (new_york,) = await ib.qualifyContractsAsync(Stock("SHOP", "SMART", primaryExchange="NYSE"))
    assert new_york.currency == "USD"


async def test_named_exchange_must_list_the_contract(ib: IB) -> None:
    assert await ib.qualifyContractsAsync(Stock("AAPL", "ISLAND", "USD"))
    assert await ib.qualifyContractsAsync(Stock("AAPL", "TSE", "USD")) == []


async def test_renamed_symbol_keeps_con_id(sim: SimGateway, ib: IB) -> None:
    sim.universe.rename(AAPL, "APPL2")
    (renamed,) = await ib.qualifyContractsAsync(Stock("APPL2", "SMART", "USD"))
    assert renamed.conId == AAPL
    assert await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD")) == []
    details = await ib.reqContractDetailsAsync(Contract(conId=AAPL))
    assert details[0].contract.symbol == "APPL2"


async def test_delisted_instrument_is_no_longer_found(sim: SimGateway, ib: IB) -> None:
    sim.universe.delist(AAPL)
    assert await ib.reqContractDetailsAsync(Contract(conId=AAPL)) == []
    sim.universe.relist(AAPL)
    assert len(await ib.reqContractDetailsAsync(Contract(conId=AAPL))) == 1


async def test_added_instrument_is_found(sim: SimGateway, ib: IB) -> None:
    sim.universe.add(SimContract(
        con_id=99000001, symbol="ZZZT", sec_type="STK", exchange="SMART", currency="USD",
        primary_exchange="NYSE", long_name="MADE UP TEST CORP", ref_price=12.34,
    ))
    (made_up,) = await ib.qualifyContractsAsync(Stock("ZZZT", "SMART", "USD"))
    assert made_up.conId == 99000001
