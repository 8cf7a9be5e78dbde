"""The instrument id convention: parsing, formatting, round trips, and the spec an id names."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.domain.contracts import ContractSpec
from workers.domain.instrument_ids import (
    CashId,
    FutureId,
    InstrumentId,
    InvalidInstrumentId,
    OptionId,
    StockId,
    format_instrument_id,
    is_instrument_id,
    parse_instrument_id,
    spec_for_instrument_id,
)

# -- strategies ----------------------------------------------------------------------------------------

_SYMBOL_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789./&-"
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

symbols = st.builds(
    lambda first, words: first + " ".join(words),
    st.sampled_from(_ALNUM),
    st.lists(st.text(_SYMBOL_CHARS, min_size=1, max_size=5), max_size=3),
).map(lambda s: s.strip()).filter(lambda s: "  " not in s)
exchanges = st.builds(lambda a, b: a + b, st.sampled_from(_UPPER), st.text(_ALNUM + ".", max_size=7))
currencies = st.text(_UPPER, min_size=3, max_size=3)
days = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))
expiries = days.map(lambda d: d.strftime("%Y%m%d"))
months = st.one_of(days.map(lambda d: d.strftime("%Y%m")), expiries)
strikes = st.decimals(min_value=Decimal("0.001"), max_value=Decimal("100000"), places=3,
                      allow_nan=False, allow_infinity=False).map(lambda d: d.normalize())

instrument_ids: st.SearchStrategy[InstrumentId] = st.one_of(
    st.builds(StockId, symbols, currencies, st.one_of(st.just(""), exchanges)),
    st.builds(FutureId, symbols, months, st.one_of(st.just(""), exchanges)),
    st.builds(OptionId, symbols, expiries, strikes, st.sampled_from(["C", "P"])),
    st.builds(CashId, currencies, currencies),
)


@given(instrument_ids)
def test_every_id_parses_back_to_its_parts(parsed: InstrumentId) -> None:
    text = format_instrument_id(parsed)
    assert parse_instrument_id(text) == parsed
    assert format_instrument_id(parse_instrument_id(text)) == text
    assert is_instrument_id(text)


@given(st.text(max_size=40))
def test_any_text_either_parses_to_its_own_spelling_or_is_refused(text: str) -> None:
    try:
        parsed = parse_instrument_id(text)
    except InvalidInstrumentId as exc:
        assert exc.reason
        return
    assert format_instrument_id(parsed) == text


# -- the documented examples --------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "parsed"), [
    ("STK:AAPL:USD", StockId("AAPL", "USD")),
    ("STK:AAPL:NASDAQ:USD", StockId("AAPL", "USD", "NASDAQ")),
    ("STK:BRK B:USD", StockId("BRK B", "USD")),
    ("STK:SHOP:TSE:CAD", StockId("SHOP", "CAD", "TSE")),
    ("FUT:ES:202612", FutureId("ES", "202612")),
    ("FUT:ES:CME:202612", FutureId("ES", "202612", "CME")),
    ("FUT:VX:20261118", FutureId("VX", "20261118")),
    ("OPT:SPY:20261218:600:C", OptionId("SPY", "20261218", Decimal(600), "C")),
    ("OPT:SPY:20261218:582.5:P", OptionId("SPY", "20261218", Decimal("582.5"), "P")),
    ("CASH:EUR.USD", CashId("EUR", "USD")),
])
def test_documented_ids_parse(text: str, parsed: InstrumentId) -> None:
    assert parse_instrument_id(text) == parsed
    assert format_instrument_id(parsed) == text


@pytest.mark.parametrize(("text", "reason"), [
    ("AAPL", "unknown security type"),
    ("STK:AAPL", "a stock id is"),
    ("STK:aapl:USD", "bad symbol"),
    ("STK:AAPL:usd", "bad currency"),
    ("STK:AAPL :USD", "bad symbol"),
    ("STK:AAPL:NASDAQ:US:USD", "a stock id is"),
    ("FUT:ES:202613", "bad contract month"),
    ("FUT:ES:2026", "bad contract month"),
    ("OPT:SPY:20261218:600.0:C", "bad strike"),
    ("OPT:SPY:20261218:0600:C", "bad strike"),
    ("OPT:SPY:20261218:0:C", "must be positive"),
    ("OPT:SPY:20261218:600:CALL", "bad right"),
    ("OPT:SPY:20261231:600", "an option id is"),
    ("OPT:SPY:20260231:600:C", "bad expiry"),
    ("CASH:EURUSD", "CASH:BASE.QUOTE"),
    ("", "unknown security type"),
])
def test_malformed_ids_are_refused_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidInstrumentId, match=reason):
        parse_instrument_id(text)
    assert not is_instrument_id(text)


def test_one_option_has_exactly_one_id() -> None:
    # 600, 600.0 and 6E+2 are one strike: only the shortest spelling is an id.
    for spelling in ("600", "600.0", "6E+2"):
        option = OptionId("SPY", "20261218", Decimal(spelling), "C")
        assert format_instrument_id(option) == "OPT:SPY:20261218:600:C"


def test_a_part_that_would_not_parse_back_cannot_be_formatted() -> None:
    with pytest.raises(InvalidInstrumentId):
        format_instrument_id(StockId("AAPL:X", "USD"))


# -- the spec an id names -----------------------------------------------------------------------------


def test_ids_name_the_contract_spec_to_ask_ibkr() -> None:
    assert spec_for_instrument_id("STK:AAPL:NASDAQ:USD") == ContractSpec(
        sec_type="STK", symbol="AAPL", exchange="SMART", primary_exchange="NASDAQ", currency="USD")
    assert spec_for_instrument_id("FUT:ES:CME:202612") == ContractSpec(
        sec_type="FUT", symbol="ES", exchange="CME", last_trade_date="202612")
    assert spec_for_instrument_id("OPT:SPY:20261218:600:C") == ContractSpec(
        sec_type="OPT", symbol="SPY", exchange="SMART", last_trade_date="20261218", strike=Decimal(600),
        right="C")
    assert spec_for_instrument_id("CASH:EUR.USD") == ContractSpec(
        sec_type="CASH", symbol="EUR", exchange="IDEALPRO", currency="USD")
