"""The fill relay's recovery over a real broker and PostgreSQL: fills on the topic are never sent again."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import psycopg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.conftest import noted_topic
from tests.integration.test_postgres_fills import a_fill, order_id  # noqa: F401  (a fixture)
from tests.integration.topic_reading import records_on_partition
from workers.adapters.avro import AvroCodec
from workers.adapters.kafka.publishing import FillRelay, fill_ids_on_topic
from workers.adapters.kafka.records import FILL_EXECUTED, fill_record
from workers.adapters.postgres.fills import FillStore
from workers.adapters.postgres.pool import Pool

pytestmark = pytest.mark.integration


async def new_topic(bootstrap: str, partitions: int) -> str:
    name = noted_topic(f"fills.recovery.{uuid.uuid4().hex[:10]}")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


async def test_every_fill_on_the_topic_is_found_by_a_fresh_reader_each_time(
        kafka_bootstrap: str, pool: Pool, order_id: str) -> None:  # noqa: F811
    topic = await new_topic(kafka_bootstrap, 3)
    codec = AvroCodec()
    fills = FillStore(pool)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for n in range(9):  # over all three partitions
            fill = a_fill(order_id, fill_id=f"0000e0d5.{uuid.uuid4().hex[:8]}.01.01")
            await fills.insert(fill)
            row = await fills.get(fill.fill_id)
            assert row is not None
            await producer.send_and_wait(topic, codec.encode(FILL_EXECUTED, fill_record(row)), key=f"k{n}".encode())
    finally:
        await producer.stop()
    on_topic = {row.fill_id for row in await fills.for_order(order_id)}
    since = datetime.now(UTC) - timedelta(minutes=5)

    # A new reader every time, as a worker starting after a crash has: each must see all of them.
    for _ in range(5):
        assert await fill_ids_on_topic(topic, since, codec, {"bootstrap_servers": kafka_bootstrap}) == on_topic


async def test_recovery_marks_the_pending_fills_found_on_the_topic_and_only_those(
        kafka_bootstrap: str, pool: Pool, order_id: str) -> None:  # noqa: F811
    topic = await new_topic(kafka_bootstrap, 2)
    codec = AvroCodec()
    fills = FillStore(pool)
    published, pending = (a_fill(order_id, fill_id=f"0000e0d5.{uuid.uuid4().hex[:8]}.01.01") for _ in range(2))
    for fill in (published, pending):
        await fills.insert(fill)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        # Kafka acknowledged it, then the worker died before marking it published.
        row = await fills.get(published.fill_id)
        assert row is not None
        await producer.send_and_wait(topic, codec.encode(FILL_EXECUTED, fill_record(row)), key=b"k")
        relay = FillRelay(fills, producer, codec, topic)
        marked = await relay.recover({"bootstrap_servers": kafka_bootstrap})
    finally:
        await producer.stop()

    assert marked == 1
    assert {r.fill_id for r in await fills.unpublished(100)} >= {pending.fill_id}
    assert published.fill_id not in {r.fill_id for r in await fills.unpublished(100)}


async def test_recovery_from_a_topic_that_does_not_exist_marks_nothing(
        kafka_bootstrap: str, pool: Pool, order_id: str) -> None:  # noqa: F811
    fills = FillStore(pool)
    fill = a_fill(order_id, fill_id=f"0000e0d5.{uuid.uuid4().hex[:8]}.01.01")
    await fills.insert(fill)
    since = datetime.now(UTC) - timedelta(minutes=5)

    missing = noted_topic(f"no.such.topic.{uuid.uuid4().hex[:8]}")
    found = await fill_ids_on_topic(missing, since, AvroCodec(), {"bootstrap_servers": kafka_bootstrap})

    assert found == set()
    assert fill.fill_id in {r.fill_id for r in await fills.unpublished(100)}
    # Looking for it did not create it (the dev broker creates a topic a metadata request names, shortly after).
    await asyncio.sleep(2)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert missing not in await admin.list_topics()
    finally:
        await admin.close()


class MarkFailsOnce(FillStore):
    """The real store, but PostgreSQL refuses the first mark (after Kafka acknowledged the records)."""

    failed = False

    async def mark_many_published(self, fill_ids: list[str]) -> int:
        if not self.failed:
            self.failed = True
            raise psycopg.OperationalError("the connection broke before the mark")
        return await super().mark_many_published(fill_ids)


async def test_a_fill_acknowledged_but_not_marked_is_not_published_again_by_the_next_pass(
        kafka_bootstrap: str, pool: Pool, order_id: str) -> None:  # noqa: F811
    topic = await new_topic(kafka_bootstrap, 1)
    codec = AvroCodec()
    fills = MarkFailsOnce(pool)
    fill = a_fill(order_id, fill_id=f"0000e0d5.{uuid.uuid4().hex[:8]}.01.01", commission=Decimal("1.00"),
                  commission_currency="USD")
    await fills.insert(fill)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        relay = FillRelay(fills, producer, codec, topic)
        await relay.recover({"bootstrap_servers": kafka_bootstrap})  # as the worker does on start
        with pytest.raises(psycopg.OperationalError):
            await relay.publish_pending()
        assert fills.failed and fill.fill_id in {r.fill_id for r in await fills.unpublished(100)}

        await relay.publish_pending()  # the relay's next pass, once PostgreSQL answers again
    finally:
        await producer.stop()

    records = await records_on_partition(kafka_bootstrap, topic)
    on_topic = [codec.decode(r.value, FILL_EXECUTED)["fill_id"] for r in records]
    assert on_topic.count(fill.fill_id) == 1
    assert fill.fill_id not in {r.fill_id for r in await fills.unpublished(100)}


async def test_a_failed_pass_with_nowhere_to_read_back_publishes_nothing_more(
        kafka_bootstrap: str, pool: Pool, order_id: str) -> None:  # noqa: F811
    topic = await new_topic(kafka_bootstrap, 1)
    fills = MarkFailsOnce(pool)
    await fills.insert(a_fill(order_id, fill_id=f"0000e0d5.{uuid.uuid4().hex[:8]}.01.01",
                              commission=Decimal("1.00"), commission_currency="USD"))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        relay = FillRelay(fills, producer, AvroCodec(), topic)  # recover() never called
        with pytest.raises(psycopg.OperationalError):
            await relay.publish_pending()
        with pytest.raises(RuntimeError, match="recover"):
            await relay.publish_pending()
    finally:
        await producer.stop()

    assert len(await records_on_partition(kafka_bootstrap, topic)) == 1
