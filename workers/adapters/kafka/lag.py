"""Consumer lag: how many records of the assigned partitions the group has not committed yet.

Measured from the broker, not from the consumer's in-memory position: the high-water mark (the last
stable offset under ``read_committed``) minus the group's committed offset. A record fetched but still
being handled counts as lag until its offset is committed, which is what "work not done yet" means here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any, Protocol

from aiokafka import TopicPartition


class OffsetReader(Protocol):
    """The part of ``AIOKafkaConsumer`` (with a ``group_id``) that lag needs."""

    def assignment(self) -> Any: ...

    async def end_offsets(self, partitions: list[TopicPartition]) -> Any: ...

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> Any: ...

    async def committed(self, partition: TopicPartition) -> Any: ...


async def partition_lags(consumer: OffsetReader,
                         partitions: Iterable[TopicPartition] | None = None) -> dict[TopicPartition, int]:
    """Per-partition lag: end offset minus committed offset (never negative).

    ``partitions`` defaults to the consumer's current assignment. A partition the group never committed
    is read from its beginning (``auto_offset_reset="earliest"``), so its lag is everything retained.
    Raises what aiokafka raises when the broker cannot be asked. While the consumer is fetching, the
    answer can take up to its ``fetch_max_wait_ms`` (the broker answers the pending fetch first).
    """
    tps = sorted(partitions if partitions is not None else consumer.assignment())
    if not tps:
        return {}
    # Concurrently: while the consumer long-polls a fetch, each request can wait up to fetch_max_wait_ms.
    ends, *committed = await asyncio.gather(consumer.end_offsets(tps),
                                            *(consumer.committed(tp) for tp in tps))
    uncommitted = [tp for tp, offset in zip(tps, committed, strict=True) if offset is None]
    starts: dict[TopicPartition, int] = (
        await consumer.beginning_offsets(uncommitted) if uncommitted else {}
    )
    lags: dict[TopicPartition, int] = {}
    for tp, offset in zip(tps, committed, strict=True):
        done = starts[tp] if offset is None else int(offset)
        lags[tp] = max(0, int(ends[tp]) - done)
    return lags


async def consumer_lag(consumer: OffsetReader,
                       partitions: Iterable[TopicPartition] | None = None) -> int | None:
    """Total lag over ``partitions`` (default: the assignment); None when nothing is assigned."""
    lags = await partition_lags(consumer, partitions)
    return sum(lags.values()) if lags else None
