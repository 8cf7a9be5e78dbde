"""``instruments.updated`` records, and the translation between IBKR's contract details and ours."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from ib_insync import Contract, ContractDetails

from workers.adapters.avro import AvroCodec
from workers.adapters.ibkr.contract_lookup import contract_for_spec, detail_from
from workers.adapters.kafka.instrument_events import InstrumentEventEncoder, last_trade_day
from workers.adapters.kafka.records import INSTRUMENT_UPDATED
from workers.domain.contracts import ContractSpec
from workers.domain.instruments import Instrument
from workers.ports.instruments import InstrumentChange, InstrumentRow, InstrumentUpsert

NOW = datetime(2026, 11, 2, 14, 30, tzinfo=UTC)
ES_ROW = InstrumentRow(Instrument(
    instrument_id="FUT:ES:202612", con_id=90100001, symbol="ES", sec_type="FUT", exchange="CME",
    primary_exchange="", currency="USD", local_symbol="ESZ6", trading_class="ES", multiplier=Decimal(50),
    min_tick=Decimal("0.25"), last_trade_date="20261218", long_name="E-mini S&P 500", active=True,
), created_at=NOW, updated_at=NOW)
AAPL_ROW = InstrumentRow(Instrument(
    instrument_id="STK:AAPL:USD", con_id=265598, symbol="AAPL", sec_type="STK", exchange="SMART",
    primary_exchange="NASDAQ", currency="USD", local_symbol="AAPL", trading_class="NMS", multiplier=None,
    min_tick=Decimal("0.01"), last_trade_date=None, long_name="", active=False,
), created_at=NOW, updated_at=NOW)


def test_an_update_is_announced_with_its_changed_fields() -> None:
    codec = AvroCodec()
    message = InstrumentEventEncoder(codec, "instruments.updated")(
        InstrumentUpsert(InstrumentChange.UPDATED, ("symbol", "local_symbol"), ES_ROW))
    assert (message.topic, message.key) == ("instruments.updated", "FUT:ES:202612")
    record = codec.decode(message.payload, INSTRUMENT_UPDATED)
    assert record["change"] == "UPDATED"
    assert record["changed_fields"] == ["symbol", "local_symbol"]
    assert record["multiplier"] == Decimal("50.00000000")
    assert record["min_tick"] == Decimal("0.25000000")
    assert record["last_trade_date"] == date(2026, 12, 18)
    assert record["updated_at"] == NOW
    assert record["long_name"] == "E-mini S&P 500"


def test_a_stock_is_announced_with_multiplier_one_and_no_expiry() -> None:
    codec = AvroCodec()
    message = InstrumentEventEncoder(codec, "t")(
        InstrumentUpsert(InstrumentChange.DEACTIVATED, ("active",), AAPL_ROW))
    record = codec.decode(message.payload, INSTRUMENT_UPDATED)
    assert (record["change"], record["active"]) == ("DEACTIVATED", False)
    assert record["multiplier"] == Decimal(1)
    assert record["last_trade_date"] is None
    assert record["long_name"] is None


def test_nothing_is_announced_for_an_unchanged_instrument() -> None:
    with pytest.raises(ValueError, match="unchanged"):
        InstrumentEventEncoder(AvroCodec(), "t")(InstrumentUpsert(InstrumentChange.UNCHANGED, (), ES_ROW))


@pytest.mark.parametrize(("text", "day"), [
    ("20261218", date(2026, 12, 18)), ("20261218 08:30 US/Central", date(2026, 12, 18)),
    ("202612", None), ("", None), (None, None), ("20261399", None),
])
def test_last_trade_day_reads_ibkr_dates(text: str | None, day: date | None) -> None:
    assert last_trade_day(text) == day


def test_ibkr_details_become_our_contract_detail() -> None:
    details = ContractDetails(
        contract=Contract(secType="OPT", conId=90200005, symbol="SPY",
                          lastTradeDateOrContractMonth="20261218", strike=600.0, right="C",
                          multiplier="100", exchange="SMART", currency="USD",
                          localSymbol="SPY   261218C00600000", tradingClass="SPY"),
        minTick=0.01, longName="SPDR S&P 500 ETF TRUST", contractMonth="202612",
    )
    detail = detail_from(details)
    assert (detail.con_id, detail.strike, detail.right, detail.multiplier) == (
        90200005, Decimal(600), "C", Decimal(100))
    assert (detail.min_tick, detail.last_trade_date, detail.month) == (Decimal("0.01"), "20261218", "202612")
    stock = detail_from(ContractDetails(contract=Contract(secType="STK", conId=1, symbol="X", strike=0.0,
                                                          multiplier=""), minTick=0.01))
    assert (stock.strike, stock.right, stock.multiplier, stock.last_trade_date) == (None, None, None, None)


def test_a_spec_becomes_the_request_contract() -> None:
    contract = contract_for_spec(ContractSpec(sec_type="OPT", symbol="SPY", exchange="SMART",
                                              last_trade_date="20261218", strike=Decimal("582.5"), right="P",
                                              multiplier=Decimal("100")))
    assert (contract.secType, contract.symbol, contract.lastTradeDateOrContractMonth) == (
        "OPT", "SPY", "20261218")
    assert (contract.strike, contract.right, contract.multiplier, contract.exchange) == (
        582.5, "P", "100", "SMART")
    assert contract_for_spec(ContractSpec(sec_type="", con_id=265598, exchange="SMART")).conId == 265598
