"""Records through a real broker: what one consumer group reads, another reads too, byte for byte."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import astuple
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from workers.adapters.kafka.connection import kafka_client_kwargs
from workers.adapters.kafka.topics import ensure_topics
from workers.settings import TopicNames, load_settings

pytestmark = pytest.mark.integration

TIMEOUT_S = 30.0


@pytest.fixture
async def topics(
    kafka_bootstrap: str, kafka_topics: TopicNames, kafka_admin: Any
) -> AsyncIterator[TopicNames]:
    """This test's topics, created with ensure_topics (3 partitions) and deleted afterwards."""
    await ensure_topics(kafka_bootstrap, kafka_topics, partitions=3, replication_factor=1)
    yield kafka_topics
    await kafka_admin.delete_topics(list(astuple(kafka_topics)))


def client_kwargs(bootstrap: str) -> dict[str, Any]:
    settings = load_settings(kafka_bootstrap_servers=bootstrap)
    return {"bootstrap_servers": settings.kafka_bootstrap_servers, **kafka_client_kwargs(settings)}


async def consume(bootstrap: str, topic: str, group: str, count: int) -> list[ConsumerRecord[bytes, bytes]]:
    """Read ``count`` records of ``topic`` from the start as consumer group ``group``, then commit."""
    consumer = AIOKafkaConsumer(
        topic,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **client_kwargs(bootstrap),
    )
    await consumer.start()
    try:
        records: list[ConsumerRecord[bytes, bytes]] = []
        async with asyncio.timeout(TIMEOUT_S):
            while len(records) < count:
                batches = await consumer.getmany(timeout_ms=500)
                for batch in batches.values():
                    records.extend(batch)
        await consumer.commit()
        return records
    finally:
        await consumer.stop()


def wire(record: ConsumerRecord[bytes, bytes]) -> tuple[Any, ...]:
    """What a record carries: where it is, and its key, value and headers exactly as read."""
    return (record.topic, record.partition, record.offset, record.key, record.value, tuple(record.headers))


async def test_record_reaches_a_second_group_byte_identical(kafka_bootstrap: str, topics: TopicNames) -> None:
    topic = topics.orders_requested_dlq
    key = b"0b8a2f4e-6c3d-4a7e-9f10-5d2c1b0a9e88"
    # Not UTF-8, with the single-object marker and every byte value: nothing may decode or re-encode it.
    value = b"\xc3\x01" + os.urandom(8) + bytes(range(256))
    headers = [
        ("error.reason", "décimal invalide: 1e400".encode()),
        ("error.stage", b"decode"),
        ("source.topic", topics.orders_requested.encode()),
        ("source.partition", b"2"),
        ("source.offset", b"41"),
        ("binary", b"\x00\xff\x00"),
        ("error.stage", b"repeated header names keep their order"),
    ]
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **client_kwargs(kafka_bootstrap))
    await producer.start()
    try:
        metadata = await producer.send_and_wait(topic, value=value, key=key, headers=headers)
    finally:
        await producer.stop()

    first = await consume(kafka_bootstrap, topic, f"test-a-{uuid.uuid4().hex}", 1)
    second = await consume(kafka_bootstrap, topic, f"test-b-{uuid.uuid4().hex}", 1)

    assert len(first) == len(second) == 1
    assert wire(first[0]) == wire(second[0])
    record = second[0]
    assert (record.partition, record.offset) == (metadata.partition, metadata.offset)
    assert record.key == key
    assert record.value == value
    assert list(record.headers) == headers


async def test_records_of_one_key_stay_in_order_on_one_partition(
    kafka_bootstrap: str, topics: TopicNames
) -> None:
    topic = topics.orders_status
    keys = [f"order-{n}".encode() for n in range(3)]
    sent = [(keys[n % 3], f"{n:04d}".encode()) for n in range(30)]
    producer = AIOKafkaProducer(acks="all", enable_idempotence=True, **client_kwargs(kafka_bootstrap))
    await producer.start()
    try:
        for key, value in sent:
            await producer.send(topic, value=value, key=key)
        await producer.flush()
    finally:
        await producer.stop()

    first = await consume(kafka_bootstrap, topic, f"test-a-{uuid.uuid4().hex}", len(sent))
    second = await consume(kafka_bootstrap, topic, f"test-b-{uuid.uuid4().hex}", len(sent))

    assert len(first) == len(second) == len(sent)
    for key in keys:
        in_first = [r for r in first if r.key == key]
        in_second = [r for r in second if r.key == key]
        assert [r.value for r in in_first] == [v for k, v in sent if k == key]
        assert [wire(r) for r in in_first] == [wire(r) for r in in_second]
        assert len({r.partition for r in in_first}) == 1


async def test_committed_group_does_not_read_again(kafka_bootstrap: str, topics: TopicNames) -> None:
    topic = topics.workers_health
    group = f"test-{uuid.uuid4().hex}"
    producer = AIOKafkaProducer(acks="all", **client_kwargs(kafka_bootstrap))
    await producer.start()
    try:
        await producer.send_and_wait(topic, value=b"beat-1", key=b"order-consumer:a")
    finally:
        await producer.stop()

    read = await consume(kafka_bootstrap, topic, group, 1)

    consumer = AIOKafkaConsumer(topic, group_id=group, **client_kwargs(kafka_bootstrap))
    await consumer.start()
    try:
        partition = TopicPartition(topic, read[0].partition)
        committed = await consumer.committed(partition)
    finally:
        await consumer.stop()
    assert [r.value for r in read] == [b"beat-1"]
    assert committed == read[0].offset + 1
