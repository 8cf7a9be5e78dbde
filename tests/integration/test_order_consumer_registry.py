"""With SCHEMA_REGISTRY_URL the order-consumer writes the Confluent framing, schemas registered per topic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.fake_registry import FakeRegistry
from tests.integration.harness import Harness, order
from workers.adapters.avro import RegistryCodec, SchemaRegistryClient
from workers.adapters.avro.wire import RegistryFramedCodec
from workers.adapters.kafka.records import (
    FILL_EXECUTED,
    ORDER_REQUESTED,
    ORDER_STATUS_CHANGED,
    POSITION_UPDATED,
    WORKER_HEALTH,
)
from workers.settings import TopicNames

pytestmark = pytest.mark.integration


@pytest.fixture
async def registry() -> AsyncIterator[tuple[FakeRegistry, str]]:
    """A schema registry in the test (an HTTP server on a free port) and its URL."""
    fake = FakeRegistry()
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    try:
        yield fake, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()


async def reading_harness(url: str, kafka_bootstrap: str, database_url: str, topics: TopicNames, *,
                          reads_requests: bool) -> Harness:
    """A harness reading the topics with a codec of its own that knows both framings; with
    ``reads_requests`` it registers the orders.requested schema itself, before anyone writes one."""
    harness = Harness(kafka_bootstrap, database_url, topics)
    schemas = {ORDER_STATUS_CHANGED: topics.orders_status, FILL_EXECUTED: topics.fills_executed,
               POSITION_UPDATED: topics.positions_updated, WORKER_HEALTH: topics.workers_health}
    if reads_requests:
        schemas[ORDER_REQUESTED] = topics.orders_requested
    reader = RegistryFramedCodec(RegistryCodec(SchemaRegistryClient(url)), schemas)
    await reader.prepare()
    harness.codec = reader
    return harness


async def test_events_are_confluent_framed_and_registered_under_topic_subjects(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames,
        registry: tuple[FakeRegistry, str]) -> None:
    fake, url = registry
    harness = await reading_harness(url, kafka_bootstrap, database_url, kafka_topics, reads_requests=True)
    try:
        await harness.start(True, schema_registry_url=url)
        request = order()
        await harness.send(request)  # Confluent framed as well: the worker reads both framings
        await harness.wait_status(request.order_id, "FILLED")
        await harness.wait_for(lambda: len(harness.observed.fills[request.order_id]) == 1, what="the fill")
        assert f"{kafka_topics.orders_status}-value" in fake.subjects
        assert f"{kafka_topics.fills_executed}-value" in fake.subjects
        assert f"{kafka_topics.workers_health}-value" in fake.subjects
        status_id = fake.subjects[f"{kafka_topics.orders_status}-value"][0]
        raw = await harness.raw_records(kafka_topics.orders_status)
        assert raw and all(value[0] == 0 and int.from_bytes(value[1:5], "big") == status_id for value in raw)
    finally:
        await harness.stop()


async def test_the_order_client_from_settings_writes_the_confluent_framing(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames,
        registry: tuple[FakeRegistry, str]) -> None:
    from decimal import Decimal

    from workers.client import OrderClient

    fake, url = registry
    # The client registers orders.requested: the reader must not have done it first.
    harness = await reading_harness(url, kafka_bootstrap, database_url, kafka_topics, reads_requests=False)
    try:
        await harness.start(True, schema_registry_url=url)
        settings = harness.settings(schema_registry_url=url)
        async with OrderClient.from_settings(settings) as client:
            order_id = await client.submit(account="DU0000001", instrument_id="STK:AAPL:USD", side="BUY",
                                           quantity=Decimal(2), order_type="MARKET")
            final = await client.wait_for_final(order_id, timeout=30)
        assert final.status == "FILLED"
        assert f"{kafka_topics.orders_requested}-value" in fake.subjects
        raw = await harness.raw_records(kafka_topics.orders_requested)
        assert raw and all(value[0] == 0 for value in raw)
    finally:
        await harness.stop()
