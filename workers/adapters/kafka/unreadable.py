"""Record batches the client cannot read, handed to the consume loop in place instead of raised.

aiokafka reads a fetched partition batch by batch. A batch it cannot read (a gzip batch expanding beyond
:data:`~.compression.MAX_DECOMPRESSED_BYTES`, a CRC mismatch, a payload its codec refuses) makes the fetch
raise, every time, at the same offset: the records behind it would wait forever. Worse, the raise drops the
records already drained from other partitions in that call (their positions moved on).

:func:`read_unreadable_batches_in_place` makes the client yield an :class:`UnreadableBatch` instead: a
record standing for the whole batch, in its place in the partition, after every record before it and with
nothing after it in that fetch. The batch's extent comes from its header, which is never compressed
(``baseOffset`` and ``lastOffsetDelta`` of the v2 record batch). The consume loop retries it a bounded
number of times and then dead-letters it (its bytes cannot be read, so the dead letter carries its offsets
and the error) and goes on past its last offset; no readable record is skipped.

A batch whose header itself cannot be parsed has no known end: that error still comes out of the fetch
(retried with back-off, health DEGRADED).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka.consumer import fetcher
from aiokafka.structs import ConsumerRecord

from workers.adapters.kafka.compression import DecompressionLimitExceeded
from workers.adapters.kafka.failures import describe


@dataclass(eq=False)
class UnreadableBatch(ConsumerRecord):  # type: ignore[misc]  # aiokafka is untyped
    """A record batch that cannot be read: ``offset`` is its first offset not read, ``last_offset`` its last.

    It has no key and no value; ``error`` says why it cannot be read, ``stage`` where (``decompress`` for a
    batch expanding beyond the bound, ``read`` for anything else).
    """

    last_offset: int = -1
    error: str = ""
    stage: str = "read"

    @property
    def reason(self) -> str:
        """The dead letter's ``error.reason``: where the batch is and why its records are not on the DLQ."""
        return (f"record batch of {self.topic} partition {self.partition} at offsets {self.offset} to "
                f"{self.last_offset} cannot be read ({self.error}); its records' bytes are not available")


def next_offset(record: ConsumerRecord) -> int:
    """The offset after ``record`` (after the whole batch for an :class:`UnreadableBatch`)."""
    return record.last_offset + 1 if isinstance(record, UnreadableBatch) else int(record.offset) + 1


class _BatchesSeen:
    """A fetched partition's record set that remembers the batch being read (its header parsed)."""

    def __init__(self, records: Any) -> None:
        self.records = records
        self.current: Any = None

    def has_next(self) -> bool:
        return bool(self.records.has_next())

    def next_batch(self) -> Any:
        self.current = None  # a header that cannot be parsed leaves no batch to blame
        self.current = self.records.next_batch()
        return self.current

    def size_in_bytes(self) -> int:
        return int(self.records.size_in_bytes())


class _PartitionRecordsInPlace(fetcher.PartitionRecords):  # type: ignore[misc]  # aiokafka is untyped
    """aiokafka's partition records, with an unreadable batch yielded in place (see the module's doc)."""

    def _unpack_records(self) -> Iterator[Any]:
        state: Any = self  # aiokafka's attributes, untyped
        seen = _BatchesSeen(state._records)
        state._records = seen
        try:
            yield from super()._unpack_records()
        except Exception as exc:
            batch = seen.current
            if batch is None:
                raise
            # The batch's records before the failure (if any) were yielded; it stands for the rest.
            position = int(state.next_fetch_offset)
            first = max(position, int(getattr(batch, "base_offset", position)))
            last = max(first, int(batch.next_offset) - 1)
            state.next_fetch_offset = last + 1
            yield UnreadableBatch(
                topic=state._tp.topic, partition=state._tp.partition, offset=first, timestamp=None,
                timestamp_type=None, key=None, value=None, checksum=None, serialized_key_size=-1,
                serialized_value_size=-1, headers=(), last_offset=last, error=describe(exc),
                stage="decompress" if isinstance(exc, DecompressionLimitExceeded) else "read")


def read_unreadable_batches_in_place() -> None:
    """Make every consumer of this process yield :class:`UnreadableBatch` for a batch it cannot read.

    Idempotent. A consumer reading an unreadable batch otherwise raises on every fetch at its offset.
    """
    if fetcher.PartitionRecords is not _PartitionRecordsInPlace:
        fetcher.PartitionRecords = _PartitionRecordsInPlace
