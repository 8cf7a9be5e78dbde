"""A group-less Kafka reader over every partition of some topics, its positions fixed when it returns."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer

from workers.adapters.kafka.connection import start_kafka_client
from workers.client.errors import TopicMissing

ASSIGNMENT_TIMEOUT = 15.0


async def open_reader(bootstrap_servers: str, names: Sequence[str], *, from_beginning: bool = False,
                      **kafka_kwargs: Any) -> AIOKafkaConsumer:
    """A started consumer of every partition of ``names``, positioned at their end (or beginning).

    The positions are resolved before this returns, so a record produced afterwards is always read, and
    nothing older is (unless ``from_beginning``). No consumer group: nothing is committed. Raises
    :class:`TopicMissing` when a topic does not exist (asking only for the list of topics, so a broker
    with ``auto.create.topics.enable`` creates nothing).
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest" if from_beginning else "latest",
                                isolation_level="read_committed", **kafka_kwargs)
    try:
        await start_kafka_client(consumer, bootstrap_servers, kafka_kwargs)
        existing = await consumer.topics()
        missing = [name for name in names if name not in existing]
        if missing:
            raise TopicMissing(f"Kafka topic {', '.join(missing)} does not exist: run `ibkr-workers topics`")
        consumer.subscribe(list(names))
        async with asyncio.timeout(ASSIGNMENT_TIMEOUT):
            # aiokafka assigns every partition on its next metadata answer; it offers no event to await.
            while {tp.topic for tp in consumer.assignment()} != set(names):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        if from_beginning:
            await consumer.seek_to_beginning()
        else:
            await consumer.seek_to_end()
        for partition in consumer.assignment():
            await consumer.position(partition)
    except BaseException:
        with contextlib.suppress(Exception):
            await consumer.stop()
        raise
    return consumer
