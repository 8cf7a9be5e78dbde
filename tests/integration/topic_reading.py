"""Reading a test topic back: every record of one partition, from the beginning to the current end."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def records_on_partition(bootstrap: str, topic: str, partition: int = 0, **security: Any) -> list[Any]:
    """Every record of ``topic``'s ``partition`` (aiokafka ``ConsumerRecord``s), in offset order.

    ``security``: aiokafka security keywords, for a broker that is not plaintext.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False, **security)
    await consumer.start()
    try:
        assigned = TopicPartition(topic, partition)
        consumer.assign([assigned])
        await consumer.seek_to_beginning(assigned)
        end = (await consumer.end_offsets([assigned]))[assigned]
        records: list[Any] = []
        while await consumer.position(assigned) < end:
            records.extend((await consumer.getmany(assigned, timeout_ms=1000)).get(assigned, []))
        return records
    finally:
        await consumer.stop()
