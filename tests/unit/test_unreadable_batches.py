"""A fetched batch the client cannot read stands in its place as one record; nothing readable is lost.

These tests feed aiokafka's own record parsing with hand-built v2 record batches (the bytes a broker
returns); the consume loop's handling of such a batch over a real broker is in
tests/integration/test_consume_loop.py.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka.consumer import fetcher
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from workers.adapters.kafka.compression import bound_gzip
from workers.adapters.kafka.unreadable import UnreadableBatch, next_offset, read_unreadable_batches_in_place

GZIP = 1
HEADER = 61  # bytes of a v2 record batch's header; the records (compressed or not) follow
TP = TopicPartition("orders.requested", 2)


def batch(base_offset: int, values: list[bytes], compression: int = 0) -> bytes:
    """A v2 record batch holding ``values`` at ``base_offset``, ``base_offset + 1``, …"""
    builder = DefaultRecordBatchBuilder(2, compression, 0, -1, -1, -1, 64 * 1024 * 1024)
    for delta, value in enumerate(values):
        builder.append(delta, timestamp=1_700_000_000_000, key=b"k", value=value, headers=[])
    data = builder.build()
    struct.pack_into(">q", data, 0, base_offset)  # the broker's part; outside the CRC
    return bytes(data)


def corrupted(data: bytes) -> bytes:
    """``data`` with one bit of its first record flipped (its CRC no longer matches)."""
    flipped = bytearray(data)
    flipped[HEADER + 4] ^= 0x01
    return bytes(flipped)


@pytest.fixture(autouse=True)
def in_place() -> Iterator[None]:
    read_unreadable_batches_in_place()
    yield
    bound_gzip()


def read(data: bytes, fetch_offset: int) -> tuple[list[Any], int]:
    """The records aiokafka yields for a fetch response of ``data`` at ``fetch_offset``, and where it goes on."""
    records = fetcher.PartitionRecords(TP, MemoryRecords(data), None, fetch_offset, None, None, True,
                                       fetcher.READ_UNCOMMITTED)
    return list(records), records.next_fetch_offset


def test_a_batch_with_a_bad_crc_stands_after_the_records_before_it_and_ends_the_fetch() -> None:
    data = batch(10, [b"a", b"b"]) + corrupted(batch(12, [b"c", b"d", b"e"])) + batch(15, [b"f"])

    records, goes_on_at = read(data, 10)

    assert [r.value for r in records[:2]] == [b"a", b"b"]
    unreadable = records[2]
    assert isinstance(unreadable, UnreadableBatch) and len(records) == 3
    assert (unreadable.topic, unreadable.partition) == ("orders.requested", 2)
    assert (unreadable.offset, unreadable.last_offset) == (12, 14)
    assert unreadable.stage == "read" and "Invalid CRC" in unreadable.error
    assert unreadable.key is None and unreadable.value is None
    assert goes_on_at == 15 == next_offset(unreadable)
    assert unreadable.reason.startswith("record batch of orders.requested partition 2 at offsets 12 to 14 "
                                        "cannot be read (CorruptRecordException: ")


def test_a_fetch_starting_inside_an_unreadable_batch_names_only_the_offsets_not_read() -> None:
    [unreadable], goes_on_at = read(corrupted(batch(20, [b"a", b"b", b"c", b"d"])), 22)

    assert (unreadable.offset, unreadable.last_offset, goes_on_at) == (22, 23, 24)


def test_a_gzip_batch_beyond_the_bound_is_unreadable_at_stage_decompress() -> None:
    bound_gzip(limit=64 * 1024)
    data = batch(0, [b"ok"]) + batch(1, [bytes(40_000), bytes(40_000)], compression=GZIP) + batch(3, [b"x"])

    records, goes_on_at = read(data, 0)

    assert [r.value for r in records[:1]] == [b"ok"]
    unreadable = records[1]
    assert isinstance(unreadable, UnreadableBatch) and len(records) == 2
    assert (unreadable.offset, unreadable.last_offset, unreadable.stage) == (1, 2, "decompress")
    assert "expands beyond 65536 bytes" in unreadable.reason
    assert goes_on_at == 3


def test_readable_batches_compressed_or_not_are_read_as_before() -> None:
    data = batch(0, [b"a"]) + batch(1, [b"b" * 1000, b"c"], compression=GZIP)

    records, goes_on_at = read(data, 0)

    assert [(r.offset, r.value) for r in records] == [(0, b"a"), (1, b"b" * 1000), (2, b"c")]
    assert not any(isinstance(r, UnreadableBatch) for r in records)
    assert goes_on_at == 3
