"""A whole order-consumer over real Kafka, real PostgreSQL and the sim gateway, for integration tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ibkr_sim.config import SimConfig
from ibkr_sim.server import SimGateway
from workers.adapters.avro import AvroCodec
from workers.adapters.kafka.records import (
    FILL_EXECUTED,
    ORDER_CANCEL_REQUESTED,
    ORDER_MODIFY_REQUESTED,
    ORDER_REQUESTED,
    ORDER_STATUS_CHANGED,
    POSITION_UPDATED,
    WORKER_HEALTH,
    cancel_record,
    modify_record,
    order_requested_record,
)
from workers.adapters.postgres.instruments import InstrumentMapper
from workers.adapters.postgres.migrate import migrate
from workers.adapters.postgres.pool import close_pool, open_pool
from workers.bootstrap import build_order_consumer
from workers.domain.instruments import Instrument
from workers.domain.modifications import OrderModifyRequested
from workers.domain.orders import OrderCancelRequested, OrderRequested, OrderType, Side, TimeInForce
from workers.runtime.order_consumer import OrderConsumerApp
from workers.settings import Settings, TopicNames

ACCOUNT = "DU0000001"
AAPL = Instrument(instrument_id="STK:AAPL:USD", con_id=265598, symbol="AAPL", sec_type="STK",
                        exchange="SMART", primary_exchange="NASDAQ", currency="USD", local_symbol="AAPL",
                        trading_class="NMS", multiplier=None, min_tick=Decimal("0.01"),
                        last_trade_date=None, long_name="APPLE INC", active=True)
ES = Instrument(instrument_id="FUT:ES:202612", con_id=90100001, symbol="ES", sec_type="FUT",
                      exchange="CME", primary_exchange="", currency="USD", local_symbol="ESZ6",
                      trading_class="ES", multiplier=Decimal(50), min_tick=Decimal("0.25"),
                      last_trade_date="20261218", long_name="E-mini S&P 500", active=True)
EURUSD = Instrument(instrument_id="CASH:EUR.USD", con_id=12087792, symbol="EUR", sec_type="CASH",
                          exchange="IDEALPRO", primary_exchange="", currency="USD", local_symbol="EUR.USD",
                          trading_class="EUR.USD", multiplier=None, min_tick=Decimal("0.00005"),
                          last_trade_date=None, long_name="European Monetary Union Euro", active=True)
SPY_CALL = Instrument(instrument_id="OPT:SPY:20261218:600:C", con_id=90200005, symbol="SPY",
                            sec_type="OPT", exchange="SMART", primary_exchange="", currency="USD",
                            local_symbol="SPY   261218C00600000", trading_class="SPY",
                            multiplier=Decimal(100), min_tick=Decimal("0.01"), last_trade_date="20261218",
                            long_name="SPDR S&P 500 ETF TRUST", active=True)
INSTRUMENTS = (AAPL, ES, EURUSD, SPY_CALL)


def order(instrument_id: str = AAPL.instrument_id, *, side: Side = Side.BUY, quantity: str = "10",
          order_type: OrderType = OrderType.MARKET, limit: str | None = None, stop: str | None = None,
          tif: TimeInForce = TimeInForce.DAY, account: str = ACCOUNT, order_id: str | None = None,
          outside_rth: bool = False) -> OrderRequested:
    return OrderRequested(
        order_id=order_id or str(uuid.uuid4()), account=account, instrument_id=instrument_id, side=side,
        quantity=Decimal(quantity), order_type=order_type,
        limit_price=Decimal(limit) if limit is not None else None,
        stop_price=Decimal(stop) if stop is not None else None,
        time_in_force=tif, outside_rth=outside_rth, created_at=datetime.now(UTC), source="tests",
    )


@dataclass
class Observed:
    """What the order-consumer published, decoded, by order id."""

    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    fills: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    positions: list[dict[str, Any]] = field(default_factory=list)
    dead_letters: list[Any] = field(default_factory=list)
    health: list[dict[str, Any]] = field(default_factory=list)

    def last_status(self, order_id: str) -> str | None:
        seen = self.statuses.get(order_id)
        return seen[-1]["status"] if seen else None


class Harness:
    """The sim, the topics, a migrated schema with instruments, an order-consumer, and a topic watcher."""

    def __init__(self, bootstrap: str, database_url: str, topics: TopicNames,
                 security: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        # aiokafka security keywords for the harness's own clients (the worker's come from its settings).
        self.security = security or {}
        self.database_url = database_url
        self.topics = topics
        self.codec = AvroCodec()
        self.sim = SimGateway(SimConfig(pacing=False))
        self.observed = Observed()
        self.app: OrderConsumerApp | None = None
        self._app_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self.producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **self.security)
        self.sim_port = 0

    async def start(self, in_process: bool = True, **settings: Any) -> None:
        _, self.sim_port = await self.sim.start("127.0.0.1", 0)
        await self._create_topics()
        await migrate(self.database_url)
        pool = await open_pool(self.database_url)
        try:
            mapper = InstrumentMapper(pool)
            for instrument in INSTRUMENTS:
                await mapper.upsert(instrument)
        finally:
            await close_pool(pool)
        await self.producer.start()
        self._watch_task = asyncio.create_task(self._watch())
        if in_process:
            await self.start_consumer(**settings)

    def settings(self, **overrides: Any) -> Settings:
        topic_fields = {f"topic_{name}": getattr(self.topics, name) for name in self.topics.__dataclass_fields__}
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": self.bootstrap, "database_url": self.database_url,
            "ibkr_port": self.sim_port, "ibkr_client_id": 7, "ibkr_accounts": ACCOUNT,
            "kafka_consumer_group": f"oc-{uuid.uuid4().hex[:8]}", "ibkr_pacing_per_second": 1000,
            "ibkr_connect_timeout": 5, "health_port": 0, "admin_port": 0, "health_interval": 1, **topic_fields,
            # Orders here wait only for the machine: a slow one must not make them stale.
            "max_order_age": 600,
        }
        values.update(overrides)
        return Settings(**values)

    async def start_consumer(self, **overrides: Any) -> None:
        # With a schema registry the worker builds its own codec from the settings, as in production.
        codec = None if overrides.get("schema_registry_url") else self.codec
        self.app = await build_order_consumer(self.settings(**overrides), codec=codec)
        self._app_task = asyncio.create_task(self.app.run())

    async def stop_consumer(self) -> None:
        if self.app is not None and self._app_task is not None:
            self.app.stop.set()
            await asyncio.wait_for(self._app_task, 15)
            self.app = None
            self._app_task = None

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.stop_consumer()
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch_task
        await self.producer.stop()
        await self.sim.stop()
        await self._delete_topics()

    async def _create_topics(self) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self.security)
        await admin.start()
        try:
            names = [getattr(self.topics, n) for n in self.topics.__dataclass_fields__]
            await admin.create_topics([NewTopic(name, 3, 1) for name in names])
        finally:
            await admin.close()

    async def _delete_topics(self) -> None:
        # The shared dev broker would otherwise collect thousands of test partitions.
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, **self.security)
        await admin.start()
        try:
            with contextlib.suppress(Exception):
                await admin.delete_topics([getattr(self.topics, n) for n in self.topics.__dataclass_fields__])
        finally:
            await admin.close()

    async def _watch(self) -> None:
        consumer = AIOKafkaConsumer(
            self.topics.orders_status, self.topics.fills_executed, self.topics.positions_updated,
            self.topics.orders_requested_dlq, self.topics.workers_health, bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest", metadata_max_age_ms=1000, **self.security,
        )
        await consumer.start()
        try:
            async for record in consumer:
                if record.topic == self.topics.orders_status:
                    value = self.codec.decode(record.value, ORDER_STATUS_CHANGED)
                    self.observed.statuses[value["order_id"]].append(value)
                elif record.topic == self.topics.fills_executed:
                    value = self.codec.decode(record.value, FILL_EXECUTED)
                    self.observed.fills[value["order_id"]].append(value)
                elif record.topic == self.topics.positions_updated:
                    self.observed.positions.append(self.codec.decode(record.value, POSITION_UPDATED))
                elif record.topic == self.topics.workers_health:
                    self.observed.health.append(self.codec.decode(record.value, WORKER_HEALTH))
                else:
                    self.observed.dead_letters.append(record)
        finally:
            await consumer.stop()

    async def raw_records(self, topic: str) -> list[bytes]:
        """Every value on ``topic`` so far, as bytes."""
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=self.bootstrap, group_id=None,
                                    auto_offset_reset="earliest", enable_auto_commit=False, **self.security)
        await consumer.start()
        try:
            batches = await consumer.getmany(timeout_ms=2000)
            return [record.value for records in batches.values() for record in records]
        finally:
            await consumer.stop()

    async def send(self, request: OrderRequested) -> None:
        payload = self.codec.encode(ORDER_REQUESTED, order_requested_record(request))
        await self.producer.send_and_wait(self.topics.orders_requested, payload, key=request.order_id.encode())

    async def send_raw(self, key: bytes, value: bytes, topic: str | None = None) -> None:
        await self.producer.send_and_wait(topic or self.topics.orders_requested, value, key=key)

    async def cancel(self, order_id: str, account: str = ACCOUNT, reason: str = "tests") -> None:
        cancel = OrderCancelRequested(order_id=order_id, account=account, requested_at=datetime.now(UTC),
                                      reason=reason)
        payload = self.codec.encode(ORDER_CANCEL_REQUESTED, cancel_record(cancel))
        await self.producer.send_and_wait(self.topics.orders_cancel_requested, payload, key=order_id.encode())

    async def modify(self, order_id: str, *, account: str = ACCOUNT, modify_id: str | None = None,
                     quantity: str | None = None, limit: str | None = None, stop: str | None = None,
                     tif: TimeInForce | None = None, trail: str | None = None,
                     trail_percent: str | None = None) -> OrderModifyRequested:
        request = OrderModifyRequested(
            modify_id=modify_id or str(uuid.uuid4()), order_id=order_id, account=account,
            requested_at=datetime.now(UTC), quantity=Decimal(quantity) if quantity is not None else None,
            limit_price=Decimal(limit) if limit is not None else None,
            stop_price=Decimal(stop) if stop is not None else None, time_in_force=tif, source="tests",
            trailing_amount=Decimal(trail) if trail is not None else None,
            trailing_percent=Decimal(trail_percent) if trail_percent is not None else None)
        await self.send_modify(request)
        return request

    async def send_modify(self, request: OrderModifyRequested) -> None:
        payload = self.codec.encode(ORDER_MODIFY_REQUESTED, modify_record(request))
        await self.producer.send_and_wait(self.topics.orders_modify_requested, payload,
                                          key=request.order_id.encode())

    def modification_statuses(self, order_id: str, modify_id: str) -> list[dict[str, Any]]:
        return [s for s in self.observed.statuses.get(order_id, []) if s["modify_id"] == modify_id]

    async def wait_modification(self, order_id: str, modify_id: str, timeout: float = 20.0) -> dict[str, Any]:
        """The status record that settles ``modify_id``."""
        await self.wait_for(lambda: bool(self.modification_statuses(order_id, modify_id)), timeout,
                            f"the outcome of modification {modify_id} (saw {self.status_trail(order_id)})")
        return self.modification_statuses(order_id, modify_id)[0]

    async def wait_for(self, condition: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or condition}")
            await asyncio.sleep(0.05)

    async def wait_status(self, order_id: str, status: str, timeout: float = 20.0) -> dict[str, Any]:
        await self.wait_for(lambda: any(s["status"] == status for s in self.observed.statuses.get(order_id, [])),
                            timeout, f"{order_id} to be {status} (saw {self.status_trail(order_id)})")
        return next(s for s in self.observed.statuses[order_id] if s["status"] == status)

    def status_trail(self, order_id: str) -> list[str]:
        return [s["status"] for s in self.observed.statuses.get(order_id, [])]


@contextlib.asynccontextmanager
async def running_harness(bootstrap: str, database_url: str, topics: TopicNames, in_process: bool = True,
                          security: dict[str, Any] | None = None, **settings: Any) -> AsyncIterator[Harness]:
    harness = Harness(bootstrap, database_url, topics, security)
    try:
        await harness.start(in_process, **settings)
        yield harness
    finally:
        await harness.stop()
