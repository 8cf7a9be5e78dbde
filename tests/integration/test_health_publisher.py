"""WorkerHealth on a real Kafka broker: at once on a status change, periodically, and STOPPING at the end;
consumer lag measured against a real topic."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from workers.adapters.avro import AvroCodec
from workers.adapters.kafka.health_publisher import (
    HealthPublisher,
    ProbeSet,
    database_reachable,
    health_record,
    kafka_reachable,
    one_line,
)
from workers.adapters.kafka.lag import consumer_lag, partition_lags
from workers.adapters.kafka.records import WORKER_HEALTH
from workers.adapters.postgres.pool import build_pool, close_pool, open_pool
from workers.domain.health import HealthFacts, HealthMonitor, HealthStatus, HealthThresholds
from workers.metrics import Metrics
from workers.settings import TopicNames

pytestmark = pytest.mark.integration

ALL_UP = HealthFacts(ibkr_connected=True, kafka_connected=True, database_connected=True)
KEY = "order-consumer:test-7"


@dataclass
class Reading:
    """One WorkerHealth record as read back from the topic."""

    key: str
    record: dict[str, Any]
    partition: int


class FactsBox:
    """Facts a test changes at will; the publisher samples them."""

    def __init__(self, facts: HealthFacts = ALL_UP) -> None:
        self.facts = facts
        self.samples = 0

    async def __call__(self) -> HealthFacts:
        self.samples += 1
        return self.facts


@pytest.fixture
async def health_topic(kafka_topics: TopicNames, kafka_admin: Any) -> AsyncIterator[str]:
    name = kafka_topics.workers_health
    await kafka_admin.create_topics([NewTopic(name, 1, 1)])
    yield name
    with contextlib.suppress(Exception):
        await kafka_admin.delete_topics([name])


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    started = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=0)
    await started.start()
    yield started
    await started.stop()


@pytest.fixture
async def reader(kafka_bootstrap: str, health_topic: str) -> AsyncIterator[AIOKafkaConsumer]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    consumer.assign([TopicPartition(health_topic, 0)])
    await consumer.seek_to_beginning()
    yield consumer
    await consumer.stop()


async def read(consumer: AIOKafkaConsumer, count: int, within: float = 10.0) -> list[Reading]:
    """The next ``count`` records, decoded; fails when they do not arrive within ``within`` seconds."""
    codec = AvroCodec()
    found: list[Reading] = []
    deadline = time.monotonic() + within
    while len(found) < count:
        left = deadline - time.monotonic()
        assert left > 0, f"only {len(found)} of {count} health records arrived: {found}"
        batches = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
        for records in batches.values():
            for record in records:
                found.append(Reading(record.key.decode(), codec.decode(record.value, WORKER_HEALTH),
                                     record.partition))
    return found


def publisher_for(producer: AIOKafkaProducer, topic: str, facts: FactsBox, monitor: HealthMonitor,
                  **options: Any) -> HealthPublisher:
    settings: dict[str, Any] = {"interval": 60.0, "sample_interval": 0.05}
    settings.update(options)
    return HealthPublisher(producer, AvroCodec(), topic, worker="order-consumer", instance_id="test-7",
                           version="9.9.9", monitor=monitor, facts=facts, **settings)


async def stop_and_wait(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    await asyncio.wait_for(task, 10.0)


# -- emission ---------------------------------------------------------------------------------------------


async def test_a_status_change_is_published_at_once(producer: AIOKafkaProducer, health_topic: str,
                                                    reader: AIOKafkaConsumer) -> None:
    monitor = HealthMonitor()
    facts = FactsBox(replace(ALL_UP, consumer_lag=3, orders_in_flight=2))
    publisher = publisher_for(producer, health_topic, facts, monitor)  # periodic: once a minute
    stop = asyncio.Event()
    task = asyncio.create_task(publisher.run(stop))
    try:
        [starting] = await read(reader, 1)
        monitor.mark_started()
        publisher.notify()
        began = time.monotonic()
        [healthy] = await read(reader, 1)
        took_healthy = time.monotonic() - began
        facts.facts = replace(facts.facts, paused=True, last_error="RuntimeError: database\nunavailable")
        began = time.monotonic()
        [degraded] = await read(reader, 1)
        took_degraded = time.monotonic() - began
    finally:
        await stop_and_wait(stop, task)
    [stopping] = await read(reader, 1)

    assert [r.record["status"] for r in (starting, healthy, degraded, stopping)] == [
        "STARTING", "HEALTHY", "DEGRADED", "STOPPING"]
    assert took_healthy < 2.0
    assert took_degraded < 2.0
    assert {r.key for r in (starting, healthy, degraded, stopping)} == {KEY}
    record = degraded.record
    assert record["worker"] == "order-consumer"
    assert record["instance_id"] == "test-7"
    assert record["ibkr_connected"] is True
    assert record["kafka_connected"] is True
    assert record["database_connected"] is True
    assert record["consumer_lag"] == 3
    assert record["orders_in_flight"] == 2
    assert record["last_error"] == "RuntimeError: database unavailable"
    assert record["version"] == "9.9.9"
    assert record["ibkr_rtt_ms"] is None
    assert isinstance(record["emitted_at"], datetime)
    assert abs((datetime.now(UTC) - record["emitted_at"]).total_seconds()) < 30
    assert healthy.record["last_error"] is None
    assert publisher.published == 4
    assert publisher.last_published_status is HealthStatus.STOPPING


async def test_health_is_published_every_interval_while_nothing_changes(
        producer: AIOKafkaProducer, health_topic: str, reader: AIOKafkaConsumer) -> None:
    monitor = HealthMonitor()
    monitor.mark_started()
    facts = FactsBox()
    publisher = publisher_for(producer, health_topic, facts, monitor, interval=0.3, sample_interval=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(publisher.run(stop))
    began = time.monotonic()
    try:
        readings = await read(reader, 4)
        elapsed = time.monotonic() - began
    finally:
        await stop_and_wait(stop, task)

    assert [r.record["status"] for r in readings] == ["HEALTHY"] * 4
    # Four reports need three intervals; sampling every 50 ms must not publish every sample.
    assert elapsed >= 0.85
    assert facts.samples > publisher.published
    stamps = [r.record["emitted_at"] for r in readings]
    assert stamps == sorted(stamps)


async def test_a_failed_send_is_retried_until_the_change_is_published(health_topic: str,
                                                                      producer: AIOKafkaProducer,
                                                                      reader: AIOKafkaConsumer) -> None:
    class Flaky:
        def __init__(self) -> None:
            self.failures_left = 2

        async def send_and_wait(self, topic: str, value: bytes | None = None,
                                key: bytes | None = None) -> Any:
            if self.failures_left:
                self.failures_left -= 1
                raise ConnectionError("broker away")
            return await producer.send_and_wait(topic, value=value, key=key)

    monitor = HealthMonitor()
    publisher = HealthPublisher(Flaky(), AvroCodec(), health_topic, worker="order-consumer",
                                instance_id="test-7", version="9.9.9", monitor=monitor, facts=FactsBox(),
                                interval=60.0)
    assert (await publisher.check()).status is HealthStatus.STARTING
    assert publisher.published == 0
    await publisher.check()
    assert publisher.published == 0
    await publisher.check()
    [reading] = await read(reader, 1)
    assert reading.record["status"] == "STARTING"
    assert publisher.published == 1


async def test_publish_stopping_goes_out_once(producer: AIOKafkaProducer, health_topic: str,
                                              reader: AIOKafkaConsumer) -> None:
    monitor = HealthMonitor()
    publisher = publisher_for(producer, health_topic, FactsBox(), monitor)
    await publisher.check()
    first = await publisher.publish_stopping()
    again = await publisher.publish_stopping()
    readings = await read(reader, 2)
    assert first.status is HealthStatus.STOPPING
    assert again is first
    assert [r.record["status"] for r in readings] == ["STARTING", "STOPPING"]
    assert publisher.published == 2


async def test_the_publisher_feeds_the_metrics(producer: AIOKafkaProducer, health_topic: str,
                                               reader: AIOKafkaConsumer) -> None:
    metrics = Metrics()
    monitor = HealthMonitor()
    facts = FactsBox(replace(ALL_UP, consumer_lag=12, orders_in_flight=4))
    publisher = publisher_for(producer, health_topic, facts, monitor, metrics=metrics)
    await publisher.check()
    monitor.mark_started()
    await publisher.check()
    await read(reader, 2)
    value = metrics.registry.get_sample_value
    assert value("ibkr_workers_consumer_lag") == 12
    assert value("ibkr_workers_orders_in_flight") == 4
    assert value("ibkr_workers_health_status", {"status": "HEALTHY"}) == 1
    assert value("ibkr_workers_health_status_transitions_total", {"from": "STARTING", "to": "HEALTHY"}) == 1


def test_health_record_fits_the_schema() -> None:
    monitor = HealthMonitor(HealthThresholds())
    assessment = monitor.observe(replace(ALL_UP, ibkr_rtt_ms=1.25, last_error="x" * 2000))
    record = health_record("instrument-sync", "host-1", "0.1.0", assessment, datetime.now(UTC))
    decoded = AvroCodec().decode(AvroCodec().encode(WORKER_HEALTH, record), WORKER_HEALTH)
    assert decoded["worker"] == "instrument-sync"
    assert decoded["status"] == "STARTING"
    assert decoded["ibkr_rtt_ms"] == 1.25
    assert len(decoded["last_error"]) == 500
    assert one_line(None) is None


# -- probes -----------------------------------------------------------------------------------------------


async def test_probe_set_reads_failing_and_slow_probes_as_down() -> None:
    async def slow() -> bool:
        await asyncio.sleep(5)
        return True

    def no_database() -> bool:
        raise RuntimeError("pool closed")

    def no_ledger() -> int:
        raise RuntimeError("no ledger")

    async def lag() -> int | None:
        return 42

    probes = ProbeSet(ibkr_connected=lambda: True, kafka_connected=slow, database_connected=no_database,
                      consumer_lag=lag, orders_in_flight=no_ledger, last_error=lambda: "boom\ntwo",
                      paused=lambda: True, timeout=0.1)
    began = time.monotonic()
    facts = await probes.collect()
    assert time.monotonic() - began < 1.0
    assert facts == HealthFacts(ibkr_connected=True, kafka_connected=False, database_connected=False,
                                consumer_lag=42, orders_in_flight=0, last_error="boom two", paused=True)


async def test_kafka_reachable_asks_a_broker_for_its_brokers_only(producer: AIOKafkaProducer) -> None:
    asked: list[Any] = []
    client = producer.client
    real_send = client.send

    async def recording_send(node_id: Any, request: Any, **kwargs: Any) -> Any:
        asked.append(request)
        return await real_send(node_id, request, **kwargs)

    client.send = recording_send  # type: ignore[method-assign]
    try:
        assert await kafka_reachable(producer)
    finally:
        client.send = real_send  # type: ignore[method-assign]
    # No topic asked for: the answer does not grow with the cluster's topics.
    assert [type(r).__name__ for r in asked] == ["MetadataRequest"]
    assert asked[0]._topics == []

    class NoBroker:
        def get_random_node(self) -> None:
            return None

    class BrokerGone:
        def get_random_node(self) -> int:
            return 1

        async def send(self, node_id: int, request: Any) -> Any:
            raise ConnectionError("no broker")

    class Silent(BrokerGone):
        async def send(self, node_id: int, request: Any) -> Any:
            await asyncio.sleep(10)

    assert not await kafka_reachable(NoBroker())
    assert not await kafka_reachable(BrokerGone())
    assert not await kafka_reachable(Silent(), within=0.05)


async def test_database_reachable_runs_select_1(database_url: str) -> None:
    pool = await open_pool(database_url, max_size=1)
    try:
        assert await database_reachable(pool)
    finally:
        await close_pool(pool)
    nowhere = build_pool("postgresql://nobody@127.0.0.1:1/none", wait_seconds=0.2)
    await nowhere.open(wait=False)
    try:
        began = time.monotonic()
        assert not await database_reachable(nowhere, within=0.3)
        assert time.monotonic() - began < 2.0
    finally:
        await nowhere.close(timeout=0.1)


# -- consumer lag -----------------------------------------------------------------------------------------


@pytest.fixture
async def lag_topic(kafka_topics: TopicNames, kafka_admin: Any, producer: AIOKafkaProducer
                    ) -> AsyncIterator[str]:
    name = kafka_topics.orders_requested
    await kafka_admin.create_topics([NewTopic(name, 2, 1)])
    for i in range(5):
        await producer.send_and_wait(name, value=b"x", key=f"{i}".encode(), partition=0)
    for i in range(3):
        await producer.send_and_wait(name, value=b"y", key=f"{i}".encode(), partition=1)
    yield name
    with contextlib.suppress(Exception):
        await kafka_admin.delete_topics([name])


async def test_consumer_lag_counts_produced_but_uncommitted_records(kafka_bootstrap: str,
                                                                     lag_topic: str,
                                                                     kafka_topics: TopicNames) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False,
                                group_id=f"lag-test-{kafka_topics.orders_requested}",
                                auto_offset_reset="earliest", isolation_level="read_committed",
                                fetch_max_wait_ms=50)  # a lag request waits behind a pending fetch
    await consumer.start()
    p0, p1 = TopicPartition(lag_topic, 0), TopicPartition(lag_topic, 1)
    try:
        assert await consumer_lag(consumer) is None  # nothing assigned yet
        consumer.assign([p0, p1])
        assert await consumer_lag(consumer) == 8  # never committed: everything is lag
        fetched = await consumer.getmany(timeout_ms=2000)
        assert sum(len(records) for records in fetched.values()) > 0
        assert await consumer_lag(consumer) == 8  # fetched is not done: only commits count
        await consumer.commit({p0: 2})
        assert await partition_lags(consumer) == {p0: 3, p1: 3}
        await consumer.commit({p0: 5, p1: 3})
        assert await consumer_lag(consumer) == 0
        assert await consumer_lag(consumer, [p1]) == 0
    finally:
        await consumer.stop()
