"""The instrument service layer over in-memory ports: the cache, on-demand resolution, a sync pass."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from datetime import date
from decimal import Decimal

import pytest

from tests.unit.instrument_fakes import T0, FakeLookup, FakeMapper, FakeUniverseStore
from workers.domain.contracts import ContractDetail, ContractSpec, ResolutionError, UnknownContract
from workers.domain.instruments import INSTRUMENT_FIELDS, Instrument
from workers.domain.universe import entries_from_document
from workers.ports.instruments import InstrumentChange, InstrumentRow, InstrumentUpsert
from workers.ports.outbox import OutboxMessage
from workers.service_layer.contract_resolution import instrument_from_detail, resolve_on_demand
from workers.service_layer.instrument_cache import InstrumentCache
from workers.service_layer.instrument_sync import InstrumentSync

TODAY = date(2026, 11, 2)
AAPL = Instrument(instrument_id="STK:AAPL:USD", con_id=265598, symbol="AAPL", sec_type="STK", exchange="SMART",
                  currency="USD", min_tick=Decimal("0.01"), primary_exchange="NASDAQ")
ES = Instrument(instrument_id="FUT:ES:202612", con_id=90100001, symbol="ES", sec_type="FUT", exchange="CME",
                currency="USD", min_tick=Decimal("0.25"), multiplier=Decimal(50), last_trade_date="20261218")
AAPL_DETAIL = ContractDetail(con_id=265598, symbol="AAPL", sec_type="STK", exchange="SMART", currency="USD",
                             min_tick=Decimal("0.01"), primary_exchange="NASDAQ", local_symbol="AAPL",
                             trading_class="NMS", long_name="APPLE INC")
ES_H7 = ContractDetail(con_id=90100002, symbol="ES", sec_type="FUT", exchange="CME", currency="USD",
                       min_tick=Decimal("0.25"), local_symbol="ESH7", trading_class="ES", multiplier=Decimal(50),
                       last_trade_date="20270319", contract_month="202703")
SPY_PUT = ContractDetail(con_id=90200009, symbol="SPY", sec_type="OPT", exchange="SMART", currency="USD",
                         min_tick=Decimal("0.01"), multiplier=Decimal(100), last_trade_date="20270115",
                         strike=Decimal(590), right="P")


def announce(outcome: InstrumentUpsert) -> OutboxMessage:
    """An outbox message naming the change, so a test reads back what was announced."""
    text = f"{outcome.change.value}:{','.join(outcome.changed_fields)}"
    return OutboxMessage(topic="instruments.updated", key=outcome.row.instrument.instrument_id,
                         payload=text.encode())


# -- the domain instrument ----------------------------------------------------------------------------


@pytest.mark.parametrize("tick", [Decimal(0), Decimal("-0.01")])
def test_an_instrument_without_a_positive_minimum_tick_is_refused(tick: Decimal) -> None:
    with pytest.raises(ValueError, match="min_tick must be > 0"):
        replace(AAPL, min_tick=tick)


def test_changed_fields_are_the_fields_that_differ_in_reporting_order() -> None:
    renamed = replace(ES, long_name="E-mini", symbol="MES", min_tick=Decimal("0.5"))

    assert renamed.changed_fields(ES) == ("symbol", "min_tick", "long_name")
    assert ES.changed_fields(ES) == ()


def test_the_compared_fields_are_every_field_but_the_key() -> None:
    names = {f.name for f in dataclasses.fields(Instrument)}

    assert set(INSTRUMENT_FIELDS) == names - {"instrument_id"}
    assert len(INSTRUMENT_FIELDS) == len(names) - 1


# -- the cache ----------------------------------------------------------------------------------------


async def test_a_cached_instrument_is_served_without_reading_the_mapper_again() -> None:
    mapper = FakeMapper()
    mapper.put(AAPL)
    cache = InstrumentCache(mapper)

    first, second = await cache.get(AAPL.instrument_id), await cache.get(AAPL.instrument_id)

    assert first == second == AAPL
    assert (mapper.reads, cache.misses, cache.hits) == (1, 1, 1)
    assert await cache.instrument_id_for(AAPL.con_id) == AAPL.instrument_id
    assert mapper.reads == 1


async def test_an_unknown_instrument_is_not_cached() -> None:
    mapper = FakeMapper()
    cache = InstrumentCache(mapper)

    assert await cache.get(AAPL.instrument_id) is None
    mapper.put(AAPL)

    assert await cache.get(AAPL.instrument_id) == AAPL
    assert (mapper.reads, cache.misses, cache.hits) == (2, 2, 0)


async def test_an_invalidated_instrument_is_read_again_with_its_new_fields() -> None:
    mapper = FakeMapper()
    mapper.put(ES)
    cache = InstrumentCache(mapper)
    await cache.get(ES.instrument_id)
    mapper.put(replace(ES, min_tick=Decimal("0.5")))

    stale = await cache.get(ES.instrument_id)
    cache.invalidate(ES.instrument_id)
    fresh = await cache.get(ES.instrument_id)

    assert stale is not None and stale.min_tick == Decimal("0.25")
    assert fresh is not None and fresh.min_tick == Decimal("0.5")
    assert mapper.reads == 2


async def test_a_con_id_is_read_through_once_and_forgotten_with_its_instrument() -> None:
    mapper = FakeMapper()
    mapper.put(ES)
    cache = InstrumentCache(mapper)

    assert await cache.instrument_id_for(ES.con_id) == ES.instrument_id
    assert await cache.instrument_id_for(ES.con_id) == ES.instrument_id
    assert await cache.instrument_id_for(1) is None
    reads = mapper.reads
    await cache.get(ES.instrument_id)
    cache.invalidate(ES.instrument_id)
    await cache.instrument_id_for(ES.con_id)

    assert reads == 2
    assert mapper.reads == reads + 2


async def test_the_resolver_maps_an_id_the_mapper_does_not_know() -> None:
    asked: list[str] = []

    async def resolver(instrument_id: str) -> InstrumentRow | None:
        asked.append(instrument_id)
        return InstrumentRow(AAPL, created_at=T0, updated_at=T0) if instrument_id == AAPL.instrument_id else None

    cache = InstrumentCache(FakeMapper(), resolver=resolver)

    assert await cache.get("STK:AAPL:USD") == AAPL
    assert await cache.get("STK:AAPL:USD") == AAPL
    assert await cache.get("STK:NOPE:USD") is None
    assert asked == ["STK:AAPL:USD", "STK:NOPE:USD"]


# -- resolution on demand -----------------------------------------------------------------------------


async def test_a_known_id_is_returned_unchanged_without_asking_ibkr() -> None:
    mapper, lookup = FakeMapper(), FakeLookup([AAPL_DETAIL])
    mapper.put(replace(AAPL, active=False))

    outcome = await resolve_on_demand(AAPL.instrument_id, lookup, mapper, today=TODAY)

    assert outcome.change is InstrumentChange.UNCHANGED
    assert outcome.row.instrument.active is False
    assert lookup.asked == []


async def test_an_unknown_id_in_the_convention_is_resolved_through_ibkr_and_mapped() -> None:
    mapper, lookup = FakeMapper(), FakeLookup([ES_H7, replace(ES_H7, con_id=7, last_trade_date="20270618",
                                                             contract_month="202706")])

    outcome = await resolve_on_demand("FUT:ES:202703", lookup, mapper, today=TODAY)

    assert outcome.change is InstrumentChange.CREATED
    stored = mapper.rows["FUT:ES:202703"].instrument
    assert (stored.con_id, stored.local_symbol, stored.min_tick, stored.multiplier) == (
        ES_H7.con_id, "ESH7", Decimal("0.25"), Decimal(50))
    assert (stored.strike, stored.option_right, stored.active) == (None, None, True)
    assert [(s.sec_type, s.symbol, s.last_trade_date) for s in lookup.asked] == [("FUT", "ES", "202703")]


async def test_an_expired_contract_is_not_mapped_on_demand() -> None:
    mapper = FakeMapper()

    with pytest.raises(UnknownContract, match="expired"):
        await resolve_on_demand("FUT:ES:202703", FakeLookup([ES_H7]), mapper, today=date(2027, 3, 20))

    assert mapper.rows == {}


async def test_resolution_with_a_store_writes_the_instrument_with_its_announcement() -> None:
    mapper = FakeMapper()
    store = FakeUniverseStore(mapper)

    outcome = await resolve_on_demand("STK:AAPL:USD", FakeLookup([AAPL_DETAIL]), mapper, today=TODAY,
                                      store=store, events=announce)

    assert outcome.change is InstrumentChange.CREATED
    assert mapper.rows["STK:AAPL:USD"].instrument.long_name == "APPLE INC"
    assert [(m.key, m.payload) for m in store.outbox] == [("STK:AAPL:USD", b"CREATED:")]


def test_an_option_keeps_its_strike_and_right_and_a_stock_has_neither() -> None:
    spec = ContractSpec(sec_type="OPT", symbol="SPY")

    put = instrument_from_detail("OPT:SPY:20270115:590:P", SPY_PUT, spec)
    stock = instrument_from_detail("STK:AAPL:USD", replace(AAPL_DETAIL, strike=None, right="C"), spec)

    assert (put.strike, put.option_right, put.multiplier) == (Decimal(590), "P", Decimal(100))
    assert (stock.strike, stock.option_right) == (None, None)


def test_a_contract_without_a_minimum_tick_is_a_resolution_error() -> None:
    spec = ContractSpec(sec_type="STK", symbol="AAPL")

    with pytest.raises(ResolutionError, match="no minimum tick"):
        instrument_from_detail("STK:AAPL:USD", replace(AAPL_DETAIL, min_tick=Decimal(0)), spec)


# -- a sync pass --------------------------------------------------------------------------------------


def a_sync(store: FakeUniverseStore, lookup: FakeLookup) -> InstrumentSync:
    return InstrumentSync(store=store, mapper=store.mapper, lookup=lookup, events=announce,
                          today=lambda: TODAY, concurrency=2)


async def test_a_pass_maps_the_universe_and_a_second_pass_changes_nothing() -> None:
    store, lookup = FakeUniverseStore(FakeMapper()), FakeLookup([AAPL_DETAIL, ES_H7])
    store.load(entries_from_document([{"instrument_id": "STK:AAPL:USD"}, {"instrument_id": "FUT:ES:202703"}]))
    sync = a_sync(store, lookup)

    first = await sync.run_pass()
    announced = [(m.key, m.payload) for m in store.outbox]
    second = await sync.run_pass()

    assert (first.ok, first.created, first.entries_done) == (True, 2, 2)
    assert sorted(announced) == [("FUT:ES:202703", b"CREATED:"), ("STK:AAPL:USD", b"CREATED:")]
    assert (second.ok, second.created, second.updated, second.entries_unchanged) == (True, 0, 0, 2)
    assert len(store.outbox) == 2
    assert sync.counters.passes_completed == 2


async def test_a_contract_ibkr_renamed_is_an_update_of_the_same_instrument() -> None:
    store, lookup = FakeUniverseStore(FakeMapper()), FakeLookup([AAPL_DETAIL])
    store.load(entries_from_document([{"instrument_id": "STK:AAPL:USD"}]))
    sync = a_sync(store, lookup)
    await sync.run_pass()
    lookup.details = [replace(AAPL_DETAIL, symbol="APPL", local_symbol="APPL")]
    lookup.asked.clear()

    summary = await sync.run_pass()

    assert summary.updated == 1
    assert [s.con_id for s in lookup.asked] == [AAPL_DETAIL.con_id]
    stored = store.mapper.rows["STK:AAPL:USD"].instrument
    assert (stored.con_id, stored.symbol, stored.local_symbol) == (AAPL_DETAIL.con_id, "APPL", "APPL")
    assert store.outbox[-1].payload == b"UPDATED:symbol,local_symbol"


async def test_an_entry_ibkr_does_not_know_fails_with_its_reason_and_the_others_are_mapped() -> None:
    store, lookup = FakeUniverseStore(FakeMapper()), FakeLookup([AAPL_DETAIL])
    store.load(entries_from_document([{"instrument_id": "STK:AAPL:USD"}, {"instrument_id": "STK:NOPE:USD"}]))

    summary = await a_sync(store, lookup).run_pass()

    assert (summary.ok, summary.entries_failed, summary.created) == (False, 1, 1)
    assert [f.instrument_id for f in summary.failures] == ["STK:NOPE:USD"]
    assert set(store.mapper.rows) == {"STK:AAPL:USD"}
