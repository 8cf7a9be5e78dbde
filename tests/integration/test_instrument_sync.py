"""instrument-sync against the sim gateway over its socket, a real PostgreSQL and, for events, real Kafka."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ibkr_sim.config import SimConfig
from ibkr_sim.server import SimGateway
from ibkr_sim.universe import SimContract as SimInstrument
from tests.integration.topic_reading import records_on_partition
from workers.adapters.avro import AvroCodec
from workers.adapters.ibkr.contract_lookup import IbkrContractLookup
from workers.adapters.ibkr.pacing import PacingLimiter
from workers.adapters.ibkr.tws_connection import TwsConnection
from workers.adapters.kafka.instrument_events import InstrumentEventEncoder
from workers.adapters.kafka.publishing import OutboxRelay
from workers.adapters.kafka.records import INSTRUMENT_UPDATED
from workers.adapters.postgres._query import fetch_all, fetch_one
from workers.adapters.postgres.instruments import InstrumentMapper
from workers.adapters.postgres.pool import Pool
from workers.adapters.postgres.universe import TopicOutbox, UniverseStore
from workers.domain.contracts import AmbiguousContract, ContractDetail, ContractSpec, UnknownContract
from workers.domain.instrument_ids import InvalidInstrumentId
from workers.domain.instruments import Instrument
from workers.domain.universe import entries_from_document
from workers.ports.instruments import ContractLookup, InstrumentChange, InstrumentRow
from workers.service_layer.contract_resolution import resolve_on_demand
from workers.service_layer.instrument_sync import InstrumentSync
from workers.service_layer.sync_records import PassSummary

pytestmark = pytest.mark.integration

AAPL, META, SHOP_NYSE, SHOP_TSE = 265598, 107113386, 90000041, 90000042
ES_Z6, ES_H7, ES_M7, ES_U7 = 90100001, 90100002, 90100003, 90100004

MIXED: list[dict[str, Any]] = [
    {"instrument_id": "STK:AAPL:USD"},
    {"instrument_id": "STK:META:USD"},
    {"instrument_id": "STK:SHOP:TSE:CAD"},
    {"instrument_id": "FUT:ES", "exchange": "CME", "currency": "USD", "months": 2},
    {"instrument_id": "OPT:SPY:20261218:600:C"},
    {"instrument_id": "OPT:SPY:20270115", "strikes": {"min": 590, "max": 600}, "rights": ["P"]},
    {"instrument_id": "CASH:EUR.USD"},
]
MIXED_IDS = {"STK:AAPL:USD", "STK:META:USD", "STK:SHOP:TSE:CAD", "FUT:ES:202612", "FUT:ES:202703",
             "OPT:SPY:20261218:600:C", "OPT:SPY:20270115:590:P", "OPT:SPY:20270115:600:P", "CASH:EUR.USD"}


@dataclass
class Clock:
    today: date = date(2026, 11, 2)

    def __call__(self) -> date:
        return self.today


@dataclass
class World:
    """The sim, a migrated schema, and an instrument-sync wired to both (pacing off)."""

    sim: SimGateway
    pool: Pool
    gateway: TwsConnection
    sync: InstrumentSync
    store: UniverseStore
    mapper: InstrumentMapper
    clock: Clock
    codec: AvroCodec
    topic: str
    summaries: list[PassSummary] = field(default_factory=list)

    async def load(self, items: list[dict[str, Any]]) -> None:
        await self.store.replace(entries_from_document(items))

    async def sync_pass(self) -> PassSummary:
        summary = await self.sync.run_pass()
        self.summaries.append(summary)
        return summary

    async def row(self, instrument_id: str) -> InstrumentRow:
        row = await self.mapper.get(instrument_id)
        assert row is not None, f"{instrument_id} is not in the mapper"
        return row

    async def rows(self) -> dict[str, InstrumentRow]:
        async with self.pool.connection() as conn:
            ids = [r["instrument_id"] for r in await fetch_all(conn, "SELECT instrument_id FROM instruments")]
        return {i: await self.row(i) for i in ids}

    async def instrument(self, instrument_id: str) -> Instrument:
        return (await self.row(instrument_id)).instrument

    async def instruments(self) -> dict[str, Instrument]:
        return {i: row.instrument for i, row in (await self.rows()).items()}

    async def row_versions(self) -> dict[str, str]:
        """Each row's xmin: it changes with any write to the row, even one that changes no value."""
        async with self.pool.connection() as conn:
            records = await fetch_all(conn, "SELECT instrument_id, xmin::text AS v FROM instruments")
        return {r["instrument_id"]: r["v"] for r in records}

    async def events(self) -> list[tuple[str, dict[str, Any]]]:
        """Every instruments.updated record written to the outbox, decoded, in order."""
        async with self.pool.connection() as conn:
            records = await fetch_all(conn, "SELECT key, payload FROM outbox WHERE topic = %s ORDER BY id",
                                      (self.topic,))
        return [(r["key"], self.codec.decode(bytes(r["payload"]), INSTRUMENT_UPDATED)) for r in records]


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(pacing=False)


@pytest.fixture
def pool_size() -> int:
    return 12  # the sync's workers, its committer and a read ahead


@pytest.fixture
async def world(sim: SimGateway, pool: Pool, kafka_topics: Any) -> AsyncIterator[World]:
    host, port = sim.address
    gateway = TwsConnection(host, port, 11, limiter=PacingLimiter(1000.0), connect_timeout=5, readonly=True)
    await gateway.connect()
    codec = AvroCodec()
    topic = kafka_topics.instruments_updated
    store, mapper, clock = UniverseStore(pool), InstrumentMapper(pool), Clock()
    sync = InstrumentSync(store=store, mapper=mapper, lookup=IbkrContractLookup(gateway, timeout=5),
                          events=InstrumentEventEncoder(codec, topic), today=clock, concurrency=4)
    try:
        yield World(sim, pool, gateway, sync, store, mapper, clock, codec, topic)
    finally:
        await gateway.close()


@dataclass
class Topic:
    """The instruments.updated topic of a test on the real broker, fed by the instrument-sync relay."""

    name: str
    bootstrap: str
    relay: OutboxRelay
    codec: AvroCodec

    async def publish(self) -> None:
        while await self.relay.publish_pending():
            pass

    async def records(self) -> list[tuple[str, dict[str, Any]]]:
        """Every record on the topic, decoded, in order (one partition)."""
        return [(record.key.decode(), self.codec.decode(record.value, INSTRUMENT_UPDATED))
                for record in await records_on_partition(self.bootstrap, self.name)]


@pytest.fixture
async def kafka(world: World, kafka_bootstrap: str) -> AsyncIterator[Topic]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(world.topic, 1, 1, topic_configs={"cleanup.policy": "compact"})])
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        yield Topic(world.topic, kafka_bootstrap, OutboxRelay(TopicOutbox(world.pool, world.topic), producer),
                    world.codec)
    finally:
        await producer.stop()
        with contextlib.suppress(Exception):
            await admin.delete_topics([world.topic])
        await admin.close()


# -- the first pass and the next ---------------------------------------------------------------------------


async def test_first_sync_of_a_mixed_universe_maps_and_announces_every_instrument(world: World,
                                                                                   kafka: Topic) -> None:
    await world.load(MIXED)
    summary = await world.sync_pass()
    await kafka.publish()

    assert summary.ok, summary.describe()
    assert (summary.entries_done, summary.created, summary.updated, summary.deactivated) == (7, 9, 0, 0)
    rows = await world.instruments()
    assert set(rows) == MIXED_IDS
    aapl = rows["STK:AAPL:USD"]
    assert (aapl.con_id, aapl.symbol, aapl.sec_type, aapl.exchange, aapl.primary_exchange, aapl.currency) == (
        AAPL, "AAPL", "STK", "SMART", "NASDAQ", "USD")
    assert (aapl.local_symbol, aapl.trading_class, aapl.multiplier, str(aapl.min_tick), aapl.long_name) == (
        "AAPL", "NMS", None, "0.01", "APPLE INC")
    assert (aapl.last_trade_date, aapl.active) == (None, True)
    es = rows["FUT:ES:202612"]
    assert (es.con_id, es.local_symbol, es.exchange, es.multiplier, str(es.min_tick), es.last_trade_date) == (
        ES_Z6, "ESZ6", "CME", 50, "0.25", "20261218")
    assert rows["FUT:ES:202703"].con_id == ES_H7
    call = rows["OPT:SPY:20261218:600:C"]
    assert (call.con_id, call.strike, call.option_right, call.multiplier, call.local_symbol) == (
        90200005, 600, "C", 100, "SPY   261218C00600000")
    assert (rows["OPT:SPY:20270115:590:P"].strike, rows["OPT:SPY:20270115:590:P"].option_right) == (590, "P")
    fx = rows["CASH:EUR.USD"]
    assert (fx.con_id, fx.exchange, fx.currency, fx.local_symbol, str(fx.min_tick)) == (
        12087792, "IDEALPRO", "USD", "EUR.USD", "0.00005")
    assert rows["STK:SHOP:TSE:CAD"].con_id == SHOP_TSE

    published = await kafka.records()
    assert sorted(key for key, _ in published) == sorted(MIXED_IDS)
    assert all(record["change"] == "CREATED" and record["instrument_id"] == key for key, record in published)
    by_key = dict(published)
    assert (by_key["FUT:ES:202612"]["con_id"], by_key["FUT:ES:202612"]["last_trade_date"]) == (
        ES_Z6, date(2026, 12, 18))


async def test_second_pass_with_nothing_changed_writes_nothing_and_emits_nothing(world: World,
                                                                                  kafka: Topic) -> None:
    await world.load(MIXED)
    await world.sync_pass()
    await kafka.publish()
    before_rows, before_versions = await world.rows(), await world.row_versions()
    published_before = len(await kafka.records())

    summary = await world.sync_pass()
    await kafka.publish()

    assert summary.ok, summary.describe()
    assert (summary.created, summary.updated, summary.deactivated, summary.entries_unchanged) == (0, 0, 0, 7)
    assert await world.rows() == before_rows
    assert await world.row_versions() == before_versions
    assert len(await world.events()) == published_before == len(MIXED_IDS)
    assert len(await kafka.records()) == published_before


async def test_symbol_change_at_ibkr_updates_the_same_row_and_emits_updated(world: World,
                                                                            kafka: Topic) -> None:
    await world.load(MIXED)
    await world.sync_pass()
    await kafka.publish()
    published_before = len(await kafka.records())

    world.sim.universe.rename(META, "MVRS")
    summary = await world.sync_pass()
    await kafka.publish()

    assert (summary.created, summary.updated, summary.deactivated) == (0, 1, 0)
    meta = await world.instrument("STK:META:USD")
    assert (meta.con_id, meta.symbol, meta.local_symbol, meta.active) == (META, "MVRS", "MVRS", True)
    published = await kafka.records()
    assert len(published) == published_before + 1
    key, record = published[-1]
    assert (key, record["change"], record["symbol"], record["con_id"]) == (
        "STK:META:USD", "UPDATED", "MVRS", META)
    assert set(record["changed_fields"]) == {"symbol", "local_symbol"}


# -- what IBKR no longer lists -------------------------------------------------------------------------------


async def test_expired_future_and_delisted_stock_become_inactive_never_deleted(world: World) -> None:
    await world.load([{"instrument_id": "STK:AAPL:USD"},
                      {"instrument_id": "FUT:ES", "exchange": "CME", "months": 2}])
    await world.sync_pass()

    world.sim.universe.delist(AAPL)
    world.clock.today = date(2026, 12, 19)  # the day after ESZ6's last trading day
    summary = await world.sync_pass()

    assert summary.ok, summary.describe()
    rows = await world.instruments()
    assert set(rows) == {"STK:AAPL:USD", "FUT:ES:202612", "FUT:ES:202703", "FUT:ES:202706"}
    assert not rows["STK:AAPL:USD"].active
    assert not rows["FUT:ES:202612"].active
    assert rows["FUT:ES:202703"].active and rows["FUT:ES:202706"].active
    changes = [(key, record["change"]) for key, record in (await world.events())[3:]]
    assert sorted(changes) == [("FUT:ES:202612", "DEACTIVATED"), ("FUT:ES:202706", "CREATED"),
                               ("STK:AAPL:USD", "DEACTIVATED")]

    third = await world.sync_pass()
    assert (third.created, third.updated, third.deactivated, third.entries_failed) == (0, 0, 0, 0)


async def test_contracts_that_expired_before_they_were_ever_mapped_are_skipped_not_failed(world: World) -> None:
    world.clock.today = date(2026, 12, 19)
    await world.load([{"instrument_id": "OPT:SPY:20261218:600:C"},
                      {"instrument_id": "OPT:SPY:20261218", "strikes": {"min": 590, "max": 610}}])
    summary = await world.sync_pass()
    assert summary.ok, summary.describe()
    assert (summary.entries_done, summary.created) == (2, 0)
    assert await world.instruments() == {}


async def test_future_months_roll_forward_as_new_months_list(world: World) -> None:
    await world.load([{"instrument_id": "FUT:ES", "exchange": "CME", "months": 4}])
    await world.sync_pass()
    assert {i for i, r in (await world.instruments()).items() if r.active} == {
        "FUT:ES:202612", "FUT:ES:202703", "FUT:ES:202706", "FUT:ES:202709"}

    world.sim.universe.add(SimInstrument(
        con_id=90100005, symbol="ES", sec_type="FUT", exchange="CME", currency="USD", local_symbol="ESZ7",
        trading_class="ES", multiplier="50", min_tick=0.25, last_trade_date="20271217",
        long_name="E-mini S&P 500", valid_exchanges=("CME",)))
    world.clock.today = date(2026, 12, 21)
    summary = await world.sync_pass()

    assert (summary.created, summary.deactivated) == (1, 1)
    rows = await world.instruments()
    assert {i for i, r in rows.items() if r.active} == {
        "FUT:ES:202703", "FUT:ES:202706", "FUT:ES:202709", "FUT:ES:202712"}
    assert (rows["FUT:ES:202712"].con_id, rows["FUT:ES:202712"].local_symbol) == (90100005, "ESZ7")
    assert not rows["FUT:ES:202612"].active


async def test_unknown_symbol_is_reported_and_not_inserted(world: World) -> None:
    await world.load([{"instrument_id": "STK:NOPE:USD"}, {"instrument_id": "STK:AAPL:USD"}])
    summary = await world.sync_pass()

    assert not summary.ok
    assert (summary.entries_done, summary.entries_failed, summary.created) == (2, 1, 1)
    (failure,) = summary.failures
    assert failure.instrument_id == "STK:NOPE:USD"
    assert "no security definition (error 200)" in failure.error
    assert set(await world.instruments()) == {"STK:AAPL:USD"}
    assert "STK:NOPE:USD" in summary.describe()
    (unknown,) = [r for r in await world.store.entries() if r.instrument_id == "STK:NOPE:USD"]
    assert unknown.last_error == failure.error


async def test_ambiguous_symbol_is_resolved_by_primary_exchange_and_reported_when_not(world: World) -> None:
    await world.load([
        {"instrument_id": "SHOP", "secType": "STK", "symbol": "SHOP"},
        {"instrument_id": "SHOP.US", "secType": "STK", "symbol": "SHOP", "primaryExchange": "NYSE"},
        {"instrument_id": "STK:SHOP:TSE:CAD"},
    ])
    summary = await world.sync_pass()

    rows = await world.instruments()
    assert (rows["SHOP.US"].con_id, rows["SHOP.US"].currency) == (SHOP_NYSE, "USD")
    assert (rows["STK:SHOP:TSE:CAD"].con_id, rows["STK:SHOP:TSE:CAD"].currency) == (SHOP_TSE, "CAD")
    assert "SHOP" not in rows
    (failure,) = summary.failures
    assert failure.instrument_id == "SHOP"
    assert "ambiguous, 2 contracts match" in failure.error
    assert f"conId {SHOP_NYSE}" in failure.error and f"conId {SHOP_TSE}" in failure.error


async def test_an_entry_changed_by_the_operator_is_resolved_again_from_its_spec(world: World) -> None:
    await world.load([{"instrument_id": "SHOP", "secType": "STK", "symbol": "SHOP", "currency": "USD"}])
    await world.sync_pass()
    assert (await world.instrument("SHOP")).con_id == SHOP_NYSE

    await world.load([{"instrument_id": "SHOP", "secType": "STK", "symbol": "SHOP", "currency": "CAD"}])
    summary = await world.sync_pass()

    assert summary.updated == 1
    shop = await world.instrument("SHOP")
    assert (shop.con_id, shop.primary_exchange, shop.currency) == (SHOP_TSE, "TSE", "CAD")
    _, record = (await world.events())[-1]
    assert {"con_id", "currency", "primary_exchange"} <= set(record["changed_fields"])


class GatewayDropsAfter:
    """A lookup whose gateway drops every connection once ``requests`` requests were sent."""

    def __init__(self, requests: int, lookup: ContractLookup, sim: SimGateway) -> None:
        self.left = requests
        self.inner = lookup
        self.sim = sim

    async def lookup(self, spec: ContractSpec) -> list[ContractDetail]:
        self.left -= 1
        if self.left == 0:
            # Before the request: whatever is in flight then, and this request, meets a closed connection.
            self.sim.drop_connections()
        return await self.inner.lookup(spec)


# -- interruptions -------------------------------------------------------------------------------------------


async def test_a_lost_connection_interrupts_the_pass_and_the_next_run_resumes_it(world: World) -> None:
    stocks = [{"instrument_id": f"STK:{s}:USD"} for s in
              ("AAPL", "MSFT", "AMZN", "GOOGL", "META", "NVDA", "TSLA", "INTC", "AMD", "CSCO", "NFLX", "PEP",
               "ADBE", "COST", "JPM", "V", "JNJ", "WMT", "PG", "XOM")]
    await world.load(stocks)
    lookup = world.sync.lookup
    world.sync.lookup = GatewayDropsAfter(8, lookup, world.sim)
    interrupted = await world.sync_pass()
    assert interrupted.interrupted is not None and not interrupted.ok
    assert 1 <= interrupted.entries_done < len(stocks)

    world.sync.lookup = lookup
    await world.gateway.connect()
    resumed = await world.sync_pass()

    assert resumed.ok, resumed.describe()
    assert (resumed.pass_id, resumed.resumed) == (interrupted.pass_id, True)
    assert resumed.entries_skipped == interrupted.entries_done
    assert resumed.created == len(stocks) - interrupted.created
    assert len(await world.instruments()) == len(stocks)
    assert len(await world.events()) == len(stocks)
    async with world.pool.connection() as conn:
        record = await fetch_one(conn, "SELECT count(*) AS n, max(resumes) AS r, bool_and(finished_at "
                                       "IS NOT NULL) AS finished FROM instrument_sync_passes")
    assert record == {"n": 1, "r": 1, "finished": True}


async def test_stop_during_a_pass_returns_within_the_grace_and_the_pass_stays_resumable(world: World) -> None:
    await world.load([{"instrument_id": f"STK:{s}:USD"} for s in ("AAPL", "MSFT", "AMZN", "IBM")])
    world.sync.stop_grace = 0.3
    world.sim.freeze()  # IBKR stops answering: every lookup hangs
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.1, stop.set)
    async with asyncio.timeout(2):
        stopped = await world.sync.run_pass(stop)
    assert stopped.interrupted == "stopping"
    assert stopped.entries_done == 0

    world.sim.unfreeze()
    resumed = await world.sync_pass()
    assert resumed.ok, resumed.describe()
    assert (resumed.pass_id, resumed.resumed, resumed.created) == (stopped.pass_id, True, 4)


# -- on demand ----------------------------------------------------------------------------------------------


async def test_an_id_in_the_convention_can_be_resolved_on_demand(world: World) -> None:
    lookup = IbkrContractLookup(world.gateway, timeout=5)
    outcome = await resolve_on_demand("FUT:ES:202703", lookup, world.mapper, today=world.clock.today,
                                      store=world.store, events=world.sync.events)
    assert outcome.change is InstrumentChange.CREATED
    assert (outcome.row.instrument.con_id, outcome.row.instrument.local_symbol) == (ES_H7, "ESH7")
    assert [key for key, _ in await world.events()] == ["FUT:ES:202703"]

    again = await resolve_on_demand("FUT:ES:202703", lookup, world.mapper)
    assert again.change is InstrumentChange.UNCHANGED
    with pytest.raises(UnknownContract):
        await resolve_on_demand("STK:NOPE:USD", lookup, world.mapper)
    world.sim.universe.add(SimInstrument(con_id=90000043, symbol="SHOP", sec_type="STK", exchange="SMART",
                                         currency="USD", primary_exchange="BATS", local_symbol="SHOP"))
    with pytest.raises(AmbiguousContract):
        await resolve_on_demand("STK:SHOP:USD", lookup, world.mapper)
    with pytest.raises(InvalidInstrumentId):
        await resolve_on_demand("ES MARCH", lookup, world.mapper)
    assert set(await world.instruments()) == {"FUT:ES:202703"}
