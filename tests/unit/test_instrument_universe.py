"""Universe entries (file format, kinds, storage form) and how IBKR answers are narrowed to contracts."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.adapters.universe_file import MAX_UNIVERSE_FILE_BYTES, parse_universe, read_universe_file
from workers.domain.contracts import (
    AmbiguousContract,
    ContractDetail,
    ContractSpec,
    UnknownContract,
    choose_one,
    is_expired,
)
from workers.domain.universe import (
    FutureMonthsEntry,
    OptionChainEntry,
    SingleEntry,
    UniverseError,
    entries_from_document,
    entry_from_dict,
    entry_from_item,
    entry_to_dict,
    spec_hash,
)

SHOP_NYSE = ContractDetail(con_id=41, symbol="SHOP", sec_type="STK", exchange="SMART", currency="USD",
                           min_tick=Decimal("0.01"), primary_exchange="NYSE", trading_class="SHOP")
SHOP_TSE = replace(SHOP_NYSE, con_id=42, currency="CAD", primary_exchange="TSE")


def es(con_id: int, expiry: str) -> ContractDetail:
    return ContractDetail(con_id=con_id, symbol="ES", sec_type="FUT", exchange="CME", currency="USD",
                          min_tick=Decimal("0.25"), multiplier=Decimal(50), trading_class="ES",
                          last_trade_date=expiry, contract_month=expiry[:6])


def spy(con_id: int, strike: int, right: str, expiry: str = "20261218") -> ContractDetail:
    return ContractDetail(con_id=con_id, symbol="SPY", sec_type="OPT", exchange="SMART", currency="USD",
                          min_tick=Decimal("0.01"), multiplier=Decimal(100), trading_class="SPY",
                          last_trade_date=expiry, strike=Decimal(strike), right=right)


# -- the file format -----------------------------------------------------------------------------------


def test_an_id_in_the_convention_is_a_complete_entry() -> None:
    entry = entry_from_item({"instrument_id": "STK:AAPL:NASDAQ:USD"})
    assert entry == SingleEntry("STK:AAPL:NASDAQ:USD", ContractSpec(
        sec_type="STK", symbol="AAPL", exchange="SMART", primary_exchange="NASDAQ", currency="USD"))


def test_fields_may_add_to_an_id_but_not_contradict_it() -> None:
    entry = entry_from_item({"instrument_id": "STK:AAPL:USD", "primaryExchange": "NASDAQ",
                             "exchange": "ISLAND"})
    assert entry.spec.primary_exchange == "NASDAQ"
    assert entry.spec.exchange == "ISLAND"
    with pytest.raises(UniverseError, match="currency 'EUR' contradicts the id"):
        entry_from_item({"instrument_id": "STK:AAPL:USD", "currency": "EUR"})


def test_any_other_id_needs_the_spec_written_out() -> None:
    entry = entry_from_item({"id": "apple", "sec_type": "stk", "symbol": "aapl", "currency": "USD"})
    assert entry == SingleEntry("apple", ContractSpec(sec_type="STK", symbol="AAPL", exchange="SMART",
                                                      currency="USD"))
    with pytest.raises(UniverseError, match="secType and symbol are needed"):
        entry_from_item({"instrument_id": "apple"})


def test_futures_root_with_months_is_a_rolling_family() -> None:
    entry = entry_from_item({"instrument_id": "FUT:ES", "exchange": "CME", "currency": "USD", "months": 2})
    assert entry == FutureMonthsEntry("FUT:ES", ContractSpec(sec_type="FUT", symbol="ES", exchange="CME",
                                                             currency="USD"), 2)
    assert entry.owns("FUT:ES:202612") and entry.owns("FUT:ES:20261218")
    assert not any(entry.owns(other) for other in ("FUT:ES:CME:202612", "FUT:ESX:202612", "FUT:ES"))
    with pytest.raises(UniverseError, match="FUT:<root>"):
        entry_from_item({"instrument_id": "ES front months", "months": 2})
    with pytest.raises(UniverseError, match="months must be"):
        entry_from_item({"instrument_id": "FUT:ES", "months": 0})


def test_option_root_with_strikes_and_rights_is_a_chain() -> None:
    text = """
instruments:
  - instrument_id: OPT:SPY:20261218
    strikes: {min: 582.5, max: 600}
    rights: [CALL]
"""
    (entry,) = parse_universe(text)
    assert isinstance(entry, OptionChainEntry)
    assert (entry.strike_min, entry.strike_max, entry.rights) == (Decimal("582.5"), Decimal(600), ("C",))
    assert entry.spec.last_trade_date == "20261218"
    assert entry.owns("OPT:SPY:20261218:582.5:C")
    assert not entry.owns("OPT:SPY:20261218:582.50:C") and not entry.owns("OPT:SPY:20270115:600:C")


def test_yaml_tickers_that_look_like_booleans_stay_text() -> None:
    (entry,) = parse_universe("- {instrument_id: on-semi, secType: STK, symbol: ON, currency: USD}")
    assert entry.spec.symbol == "ON"


@pytest.mark.parametrize(("document", "message"), [
    ({"instruments": [{"instrument_id": "STK:AAPL:USD"}, {"instrument_id": "STK:AAPL:USD"}]}, "listed twice"),
    ([{"instrument_id": "STK:AAPL:USD", "colour": "red"}], "unknown field 'colour'"),
    ([{"symbol": "AAPL"}], "instrument_id is missing"),
    (["STK:AAPL:USD"], "must be a mapping"),
    ({"universe": []}, "a universe file is a list"),
    ([{"instrument_id": "FUT:ES", "months": 2, "rights": ["C"]}], "conflict"),
    ([{"instrument_id": "OPT:SPY:20261218", "strikes": {"min": 600, "max": 500}}], "above"),
    ([{"instrument_id": "X", "secType": "OPT", "symbol": "SPY", "right": "Q"}], "right must be C or P"),
])
def test_invalid_universe_documents_are_refused_whole(document: Any, message: str) -> None:
    with pytest.raises(UniverseError, match=message):
        entries_from_document(document)


def test_invalid_yaml_is_refused_with_one_line() -> None:
    with pytest.raises(UniverseError, match="not valid YAML") as caught:
        parse_universe("instruments: [unclosed")
    assert "\n" not in str(caught.value)


# -- the stored form -------------------------------------------------------------------------------------

entries = st.one_of(
    st.sampled_from(["STK:AAPL:USD", "STK:SHOP:TSE:CAD", "FUT:ES:CME:202612", "OPT:SPY:20261218:600:C",
                     "CASH:EUR.USD"]).map(lambda i: entry_from_item({"instrument_id": i})),
    st.builds(lambda n, tc: entry_from_item({"instrument_id": "FUT:ES", "months": n, "tradingClass": tc}),
              st.integers(1, 12), st.sampled_from(["", "ES"])),
    st.builds(lambda lo, hi, rights: entry_from_item({"instrument_id": "OPT:SPY:20261218", "rights": rights,
                                                      "strikes": {"min": lo, "max": lo + hi}}),
              st.integers(1, 500), st.integers(0, 100), st.sampled_from([["C"], ["P"], ["C", "P"]])),
)


@given(entries)
def test_stored_entries_read_back_equal(entry: Any) -> None:
    assert entry_from_dict(entry.instrument_id, entry_to_dict(entry)) == entry
    assert spec_hash(entry_from_dict(entry.instrument_id, entry_to_dict(entry))) == spec_hash(entry)


def test_the_fingerprint_changes_exactly_when_the_entry_does() -> None:
    a = entry_from_item({"instrument_id": "FUT:ES", "months": 2})
    assert spec_hash(a) == spec_hash(entry_from_item({"instrument_id": "FUT:ES", "months": 2}))
    assert spec_hash(a) != spec_hash(entry_from_item({"instrument_id": "FUT:ES", "months": 3}))


# -- narrowing IBKR's answers ----------------------------------------------------------------------------


def test_ambiguous_answer_is_resolved_by_primary_exchange_or_currency() -> None:
    answer = [SHOP_NYSE, SHOP_TSE]
    assert choose_one(ContractSpec(sec_type="STK", symbol="SHOP", primary_exchange="TSE"), answer) == SHOP_TSE
    assert choose_one(ContractSpec(sec_type="STK", symbol="SHOP", currency="USD"), answer) == SHOP_NYSE


def test_ambiguous_answer_is_reported_never_guessed() -> None:
    with pytest.raises(AmbiguousContract, match="2 contracts match") as caught:
        choose_one(ContractSpec(sec_type="STK", symbol="SHOP"), [SHOP_NYSE, SHOP_TSE])
    assert {c.con_id for c in caught.value.candidates} == {41, 42}


def test_the_same_contract_listed_twice_is_not_ambiguous() -> None:
    spec = ContractSpec(sec_type="STK", symbol="SHOP", currency="CAD")
    assert choose_one(spec, [SHOP_TSE, SHOP_TSE]) == SHOP_TSE


def test_no_answer_or_no_agreeing_answer_is_unknown() -> None:
    with pytest.raises(UnknownContract, match="error 200"):
        choose_one(ContractSpec(sec_type="STK", symbol="NOPE"), [])
    with pytest.raises(UnknownContract, match="no contract IBKR answered agrees"):
        choose_one(ContractSpec(sec_type="STK", symbol="SHOP", primary_exchange="LSE"), [SHOP_NYSE])


def test_future_months_keep_the_next_unexpired_ones_rolling_forward() -> None:
    entry = entry_from_item({"instrument_id": "FUT:ES", "exchange": "CME", "months": 2})
    answer = [es(4, "20270917"), es(1, "20261218"), es(3, "20270618"), es(2, "20270319")]
    assert [d.con_id for d in entry.select(answer, date(2026, 11, 1))] == [1, 2]
    assert [d.con_id for d in entry.select(answer, date(2026, 12, 18))] == [1, 2]  # its last trading day
    assert [d.con_id for d in entry.select(answer, date(2026, 12, 19))] == [2, 3]
    assert isinstance(entry, FutureMonthsEntry)
    assert entry.member_id(answer[1]) == "FUT:ES:202612"


def test_an_option_chain_keeps_its_strike_range_and_rights() -> None:
    entry = entry_from_item({"instrument_id": "OPT:SPY:20261218", "strikes": {"min": 590, "max": 610},
                             "rights": ["P"]})
    answer = [spy(n, strike, right) for n, (strike, right) in enumerate(
        [(580, "P"), (590, "C"), (590, "P"), (600, "P"), (610, "P"), (620, "P")])]
    assert [(d.strike, d.right) for d in entry.select(answer, date(2026, 1, 1))] == [
        (Decimal(590), "P"), (Decimal(600), "P"), (Decimal(610), "P")]
    assert isinstance(entry, OptionChainEntry)
    assert entry.member_id(answer[3]) == "OPT:SPY:20261218:600:P"


def test_expiry_counts_from_the_day_after_the_last_trading_day() -> None:
    assert not is_expired("20261218", date(2026, 12, 18))
    assert is_expired("20261218", date(2026, 12, 19))
    assert is_expired("20261218 08:30 US/Central", date(2026, 12, 19))
    assert not is_expired("202612", date(2026, 12, 31))
    assert is_expired("202612", date(2027, 1, 1))
    assert not is_expired(None, date(2030, 1, 1))


@pytest.mark.parametrize(("item", "message"), [
    ({"instrument_id": "STK:AAPL\x00"}, "entry #1: instrument_id contains the control character U+0000 at position 8"),
    ({"instrument_id": "X" * 129}, "entry #1: instrument_id is 129 characters long, more than 128"),
    ({"instrument_id": "STK:AAPL", "exchange": "SMART\x1b[2J"},
     "entry STK:AAPL: exchange contains the control character U+001B at position 5"),
    ({"instrument_id": "STK:AAPL", "localSymbol": "A" * 500},
     "entry STK:AAPL: localSymbol is 500 characters long, more than 128"),
])
def test_universe_text_with_control_characters_or_too_long_is_refused_naming_the_field(
        item: dict[str, Any], message: str) -> None:
    with pytest.raises(UniverseError) as refused:
        parse_universe(json.dumps([item]), json_only=True)
    assert str(refused.value) == message


def test_a_universe_error_never_repeats_a_huge_value() -> None:
    with pytest.raises(UniverseError) as refused:
        parse_universe(json.dumps([{"instrument_id": "STK:AAPL", "multiplier": "9" * 100_000}]), json_only=True)
    assert len(str(refused.value)) < 200


def test_a_universe_file_too_large_or_not_utf8_is_refused_before_parsing(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * (MAX_UNIVERSE_FILE_BYTES + 1))
    with pytest.raises(UniverseError, match=f"more than {MAX_UNIVERSE_FILE_BYTES}"):
        read_universe_file(huge)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"- instrument_id: STK:\xe9")
    with pytest.raises(UniverseError, match="not UTF-8 text"):
        read_universe_file(latin)
