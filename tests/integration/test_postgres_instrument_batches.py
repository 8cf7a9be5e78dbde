"""Group commits of instrument-sync entries against a real PostgreSQL: one transaction for many entries,
each entry all or nothing, a bad entry left out without taking the others down."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest

from workers.adapters.postgres._query import fetch_all
from workers.adapters.postgres.instruments import (
    InstrumentMapper,
    InstrumentRace,
    apply_planned,
    lock_instruments,
    write_instruments,
)
from workers.adapters.postgres.pool import Pool
from workers.adapters.postgres.universe import UniverseStore
from workers.domain.instruments import Instrument
from workers.domain.universe import entries_from_document
from workers.ports.instruments import Deactivate, EntryWrites, InstrumentChange, InstrumentUpsert
from workers.ports.outbox import OutboxMessage

pytestmark = pytest.mark.integration

TOPIC = "instruments.updated"


def stock(symbol: str, con_id: int) -> Instrument:
    return Instrument(instrument_id=f"STK:{symbol}:USD", con_id=con_id, symbol=symbol, sec_type="STK",
                      exchange="SMART", currency="USD", min_tick=Decimal("0.01"), primary_exchange="NYSE",
                      long_name=f"{symbol} INC")


def event(outcome: InstrumentUpsert) -> OutboxMessage:
    """An outbox record that names the change, so tests can read back what was announced."""
    text = f"{outcome.change.value}:{','.join(outcome.changed_fields)}"
    return OutboxMessage(topic=TOPIC, key=outcome.row.instrument.instrument_id, payload=text.encode())


@pytest.fixture
async def store(pool: Pool) -> UniverseStore:
    store = UniverseStore(pool)
    symbols = ("AAPL", "MSFT", "IBM", "ORCL", "INTC")
    await store.replace(entries_from_document([{"instrument_id": f"STK:{s}:USD"} for s in symbols]))
    return store


async def open_pass(store: UniverseStore) -> int:
    return (await store.open_pass(5, timedelta(hours=1))).pass_id


def entry(instrument: Instrument | Deactivate, *more: Instrument | Deactivate) -> EntryWrites:
    return EntryWrites((instrument.instrument_id, spec_hash_of(instrument.instrument_id)), (instrument, *more))


_HASHES: dict[str, str] = {}


def spec_hash_of(instrument_id: str) -> str:
    return _HASHES[instrument_id]


@pytest.fixture(autouse=True)
async def hashes(store: UniverseStore) -> None:
    _HASHES.clear()
    _HASHES.update({row.instrument_id: row.spec_hash for row in await store.entries()})


async def announced(pool: Pool) -> list[tuple[str, str]]:
    async with pool.connection() as conn:
        records = await fetch_all(conn, "SELECT key, payload FROM outbox WHERE topic = %s ORDER BY id", (TOPIC,))
    return [(r["key"], bytes(r["payload"]).decode()) for r in records]


async def synced(pool: Pool, pass_id: int) -> set[str]:
    async with pool.connection() as conn:
        records = await fetch_all(conn, "SELECT instrument_id FROM instrument_universe WHERE synced_pass = %s "
                                        "AND last_error IS NULL", (pass_id,))
    return {r["instrument_id"] for r in records}


async def test_one_batch_writes_every_entry_with_its_events_and_marks(pool: Pool, store: UniverseStore) -> None:
    mapper = InstrumentMapper(pool)
    await mapper.upsert(stock("IBM", 3))
    pass_id = await open_pass(store)
    ibm_unchanged = EntryWrites(("STK:IBM:USD", spec_hash_of("STK:IBM:USD")), ())

    results = await store.commit_entries(
        pass_id, [entry(stock("AAPL", 1)), ibm_unchanged, entry(replace(stock("MSFT", 2)))], event)

    assert [r.error for r in results] == [None, None, None]
    assert [[o.change for o in r.outcomes] for r in results] == [
        [InstrumentChange.CREATED], [], [InstrumentChange.CREATED]]
    assert await announced(pool) == [("STK:AAPL:USD", "CREATED:"), ("STK:MSFT:USD", "CREATED:")]
    assert await synced(pool, pass_id) == {"STK:AAPL:USD", "STK:IBM:USD", "STK:MSFT:USD"}
    row = await mapper.get("STK:MSFT:USD")
    assert row is not None and (row.instrument.con_id, row.instrument.symbol) == (2, "MSFT")


async def test_an_entry_whose_con_id_another_instrument_holds_is_left_out_the_rest_commit(
        pool: Pool, store: UniverseStore) -> None:
    mapper = InstrumentMapper(pool)
    await mapper.upsert(stock("IBM", 3))
    pass_id = await open_pass(store)

    results = await store.commit_entries(
        pass_id, [entry(stock("AAPL", 1)), entry(stock("MSFT", 3)), entry(stock("ORCL", 4))], event)

    assert results[0].error is None and results[2].error is None
    assert results[1].error is not None and "con_id 3" in results[1].error
    assert results[1].outcomes == []
    assert await mapper.get("STK:MSFT:USD") is None
    assert [key for key, _ in await announced(pool)] == ["STK:AAPL:USD", "STK:ORCL:USD"]
    assert await synced(pool, pass_id) == {"STK:AAPL:USD", "STK:ORCL:USD"}


async def test_two_entries_of_one_batch_claiming_one_con_id_the_second_fails(
        pool: Pool, store: UniverseStore) -> None:
    pass_id = await open_pass(store)

    results = await store.commit_entries(pass_id, [entry(stock("AAPL", 7)), entry(stock("MSFT", 7))], event)

    assert results[0].error is None
    assert results[1].error is not None and "con_id 7" in results[1].error
    assert [key for key, _ in await announced(pool)] == ["STK:AAPL:USD"]


async def test_a_value_postgresql_refuses_fails_only_its_entry(pool: Pool, store: UniverseStore) -> None:
    pass_id = await open_pass(store)
    bad = replace(stock("MSFT", 2), sec_type="SPACESHIP")  # violates instruments_sec_type_known

    results = await store.commit_entries(
        pass_id, [entry(stock("AAPL", 1)), entry(bad), entry(stock("ORCL", 4))], event)

    assert results[0].error is None and results[2].error is None
    assert results[1].error is not None and "instruments_sec_type_known" in results[1].error
    assert [key for key, _ in await announced(pool)] == ["STK:AAPL:USD", "STK:ORCL:USD"]
    assert await synced(pool, pass_id) == {"STK:AAPL:USD", "STK:ORCL:USD"}


async def test_an_entry_with_several_writes_is_all_or_nothing(pool: Pool, store: UniverseStore) -> None:
    mapper = InstrumentMapper(pool)
    await mapper.upsert(stock("IBM", 3))
    pass_id = await open_pass(store)
    # One entry writes two instruments; the second's conId is IBM's: neither is written.
    family = EntryWrites(("STK:AAPL:USD", spec_hash_of("STK:AAPL:USD")),
                         (stock("AAPL", 1), replace(stock("AAPL", 3), instrument_id="STK:AAPL2:USD")))

    (result,) = await store.commit_entries(pass_id, [family], event)

    assert result.error is not None and "con_id 3" in result.error
    assert await mapper.get("STK:AAPL:USD") is None
    assert await announced(pool) == []
    assert await synced(pool, pass_id) == set()


async def test_an_instrument_two_entries_write_is_written_in_batch_order(pool: Pool, store: UniverseStore) -> None:
    mapper = InstrumentMapper(pool)
    pass_id = await open_pass(store)
    renamed = replace(stock("AAPL", 1), symbol="APPL", long_name="APPLE RENAMED")
    second = EntryWrites(("STK:MSFT:USD", spec_hash_of("STK:MSFT:USD")), (renamed,))

    results = await store.commit_entries(pass_id, [entry(stock("AAPL", 1)), second], event)

    assert [[o.change for o in r.outcomes] for r in results] == [[InstrumentChange.CREATED],
                                                                  [InstrumentChange.UPDATED]]
    assert set(results[1].outcomes[0].changed_fields) == {"symbol", "long_name"}
    row = await mapper.get("STK:AAPL:USD")
    assert row is not None and row.instrument.symbol == "APPL"
    assert await announced(pool) == [("STK:AAPL:USD", "CREATED:"), ("STK:AAPL:USD", "UPDATED:symbol,long_name")]


async def test_deactivations_in_a_batch_and_an_unknown_one_failing_alone(pool: Pool, store: UniverseStore) -> None:
    mapper = InstrumentMapper(pool)
    await mapper.upsert(stock("IBM", 3))
    pass_id = await open_pass(store)
    unknown = EntryWrites(("STK:ORCL:USD", spec_hash_of("STK:ORCL:USD")), (Deactivate("STK:ORCL:USD"),))

    results = await store.commit_entries(pass_id, [entry(Deactivate("STK:IBM:USD")), unknown], event)

    assert [o.change for o in results[0].outcomes] == [InstrumentChange.DEACTIVATED]
    assert results[1].error is not None and "not in the mapper" in results[1].error
    row = await mapper.get("STK:IBM:USD")
    assert row is not None and row.instrument.active is False
    assert await announced(pool) == [("STK:IBM:USD", "DEACTIVATED:active")]


async def test_an_insert_that_loses_a_race_is_detected_and_the_retry_sees_the_other_row(pool: Pool) -> None:
    mapper = InstrumentMapper(pool)
    aapl = stock("AAPL", 1)
    async with pool.connection() as conn:
        async with conn.transaction():
            locked = await lock_instruments(conn, [aapl])  # nothing to lock: AAPL is new
            planned = locked.plan([aapl])
            # Another transaction maps AAPL between this one's lock read and its insert.
            other = await mapper.upsert(replace(aapl, long_name="FIRST"))
            with pytest.raises(InstrumentRace) as raced:
                await apply_planned(conn, planned)
        assert raced.value.instrument_ids == ["STK:AAPL:USD"]
        async with conn.transaction():
            (retried,) = await write_instruments(conn, [aapl])

    assert other.change is InstrumentChange.CREATED
    assert (retried.change, retried.changed_fields) == (InstrumentChange.UPDATED, ("long_name",))
