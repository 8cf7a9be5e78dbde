"""The instrument mapper against a real PostgreSQL: upserts that say what changed."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors

from workers.adapters.postgres.errors import ConIdConflict, UnknownInstrument
from workers.adapters.postgres.instruments import InstrumentMapper
from workers.adapters.postgres.pool import Pool
from workers.domain.instruments import Instrument
from workers.ports.instruments import InstrumentChange

pytestmark = pytest.mark.integration

AAPL = Instrument(
    instrument_id="AAPL",
    con_id=265598,
    symbol="AAPL",
    sec_type="STK",
    exchange="SMART",
    primary_exchange="NASDAQ",
    currency="USD",
    local_symbol="AAPL",
    trading_class="NMS",
    min_tick=Decimal("0.01"),
    long_name="APPLE INC",
)
ES = Instrument(
    instrument_id="ESH5",
    con_id=551601561,
    symbol="ES",
    sec_type="FUT",
    exchange="CME",
    currency="USD",
    local_symbol="ESH5",
    trading_class="ES",
    multiplier=Decimal("50"),
    min_tick=Decimal("0.25"),
    last_trade_date="20250321",
    long_name="E-mini S&P 500",
)


@pytest.fixture
def mapper(pool: Pool) -> InstrumentMapper:
    return InstrumentMapper(pool)


async def test_upsert_reports_created_then_unchanged_then_updated_fields(mapper: InstrumentMapper) -> None:
    created = await mapper.upsert(ES)
    unchanged = await mapper.upsert(ES)
    updated = await mapper.upsert(replace(ES, min_tick=Decimal("0.5"), long_name="E-mini S&P 500 Index"))

    assert (created.change, created.changed_fields) == (InstrumentChange.CREATED, ())
    assert (unchanged.change, unchanged.changed_fields) == (InstrumentChange.UNCHANGED, ())
    assert unchanged.row == created.row
    assert updated.change is InstrumentChange.UPDATED
    assert set(updated.changed_fields) == {"min_tick", "long_name"}
    assert updated.row.instrument == replace(ES, min_tick=Decimal("0.5"), long_name="E-mini S&P 500 Index")
    assert updated.row.updated_at >= created.row.updated_at
    assert updated.row.created_at == created.row.created_at
    assert await mapper.get("ESH5") == updated.row


async def test_stored_instrument_keeps_every_contract_field(mapper: InstrumentMapper) -> None:
    await mapper.upsert(ES)

    row = await mapper.get(ES.instrument_id)

    assert row is not None
    assert row.instrument == ES


async def test_instrument_is_found_by_con_id(mapper: InstrumentMapper) -> None:
    await mapper.upsert(AAPL)
    await mapper.upsert(ES)

    by_con_id = await mapper.get_by_con_id(265598)

    assert by_con_id is not None
    assert by_con_id.instrument.instrument_id == "AAPL"
    assert await mapper.get_by_con_id(1) is None
    assert await mapper.get("MSFT") is None


async def test_a_con_id_belongs_to_one_instrument(mapper: InstrumentMapper) -> None:
    await mapper.upsert(AAPL)
    await mapper.upsert(ES)

    with pytest.raises(ConIdConflict):
        await mapper.upsert(replace(AAPL, instrument_id="AAPL.US"))
    with pytest.raises(ConIdConflict):
        await mapper.upsert(replace(ES, con_id=AAPL.con_id))

    assert await mapper.get("AAPL.US") is None
    es = await mapper.get("ESH5")
    assert es is not None
    assert es.instrument.con_id == ES.con_id


async def test_deactivation_is_reported_once_and_reactivation_is_an_update(mapper: InstrumentMapper) -> None:
    await mapper.upsert(AAPL)
    await mapper.upsert(ES)

    deactivated = await mapper.deactivate("ESH5")
    again = await mapper.deactivate("ESH5")
    active = [row.instrument.instrument_id for row in await mapper.active()]
    reactivated = await mapper.upsert(ES)

    assert (deactivated.change, deactivated.changed_fields) == (InstrumentChange.DEACTIVATED, ("active",))
    assert deactivated.row.instrument.active is False
    assert again.change is InstrumentChange.UNCHANGED
    assert active == ["AAPL"]
    assert (reactivated.change, reactivated.changed_fields) == (InstrumentChange.UPDATED, ("active",))


async def test_deactivating_an_unknown_instrument_raises(mapper: InstrumentMapper) -> None:
    with pytest.raises(UnknownInstrument):
        await mapper.deactivate("NOPE")

    assert await mapper.active() == []


async def test_racing_creations_of_one_instrument_create_it_once(mapper: InstrumentMapper) -> None:
    outcomes = await asyncio.gather(*(mapper.upsert(AAPL) for _ in range(3)))

    changes = sorted(outcome.change for outcome in outcomes)
    assert changes == [InstrumentChange.CREATED, InstrumentChange.UNCHANGED, InstrumentChange.UNCHANGED]


async def test_unknown_security_type_is_refused(mapper: InstrumentMapper, database_url: str) -> None:
    with pytest.raises(errors.CheckViolation, match="instruments_sec_type_known"):
        await mapper.upsert(replace(AAPL, sec_type="SPACESHIP"))

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        with pytest.raises(errors.CheckViolation, match="instruments_min_tick_positive"):
            await conn.execute(
                "INSERT INTO instruments (instrument_id, con_id, symbol, sec_type, exchange, currency,"
                " min_tick) VALUES ('X', 1, 'X', 'STK', 'SMART', 'USD', 0)"
            )
    assert await mapper.get("AAPL") is None
