"""gzip batches are decompressed with a bound: a small bomb is refused quickly, ordinary batches pass."""

from __future__ import annotations

import gzip
import time

import pytest

from workers.adapters.kafka.compression import DecompressionLimitExceeded, bounded_gzip_decode


def test_an_ordinary_payload_and_several_members_decompress_as_gzip_does() -> None:
    payload = b"order " * 10_000
    assert bounded_gzip_decode(gzip.compress(payload)) == payload
    assert bounded_gzip_decode(gzip.compress(b"one ") + gzip.compress(b"two")) == b"one two"
    assert bounded_gzip_decode(gzip.compress(b"x" * 1000), limit=1000) == b"x" * 1000


def test_a_batch_expanding_beyond_the_limit_is_refused_without_inflating_it() -> None:
    bomb = gzip.compress(bytes(64 * 1024 * 1024), compresslevel=9)  # 64 MiB of zeros in about 64 KiB
    assert len(bomb) < 100 * 1024
    started = time.perf_counter()
    with pytest.raises(DecompressionLimitExceeded, match="beyond 1048576 bytes"):
        bounded_gzip_decode(bomb, limit=1024 * 1024)
    assert time.perf_counter() - started < 0.5


def test_a_truncated_batch_is_a_corrupt_record() -> None:
    with pytest.raises(Exception, match="ends early"):
        bounded_gzip_decode(gzip.compress(b"abc" * 1000)[:20])
