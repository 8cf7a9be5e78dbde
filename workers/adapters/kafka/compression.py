"""Compressed record batches: gzip decompression bounded, so a small batch cannot expand without limit.

aiokafka inflates a gzip batch whole: a 256 KiB batch of zeros becomes about 256 MiB in memory. The
consumers use :func:`bounded_gzip_decode` instead (installed by :func:`bound_gzip`), which stops at
``limit`` bytes and raises a Kafka error the consume loop reports (health DEGRADED) instead of the worker
running out of memory.
"""

from __future__ import annotations

import importlib
import zlib

from aiokafka.errors import CorruptRecordException

# Far above any batch a producer of ours makes (a record batch holds at most a few MiB uncompressed).
MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024
_CHUNK = 1024 * 1024
# aiokafka's modules that call gzip_decode (their own name for it, bound at import).
_GZIP_USERS = ("aiokafka.codec", "aiokafka.record.default_records", "aiokafka.record.legacy_records",
               "aiokafka.record._crecords.default_records", "aiokafka.record._crecords.legacy_records")


class DecompressionLimitExceeded(CorruptRecordException):  # type: ignore[misc]  # aiokafka is untyped
    """A compressed batch expands beyond the limit."""


def bounded_gzip_decode(payload: bytes | bytearray | memoryview, limit: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """``payload`` (one or more gzip members) decompressed; raises when it would exceed ``limit`` bytes."""
    out = bytearray()
    data = bytes(payload)
    while data:
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
        chunk = inflater.decompress(data, limit - len(out) + 1)
        out += chunk
        while inflater.unconsumed_tail and len(out) <= limit:
            out += inflater.decompress(inflater.unconsumed_tail, min(_CHUNK, limit - len(out) + 1))
        if len(out) > limit:
            raise DecompressionLimitExceeded(f"a gzip batch expands beyond {limit} bytes")
        if not inflater.eof:
            raise CorruptRecordException("a gzip batch ends early")
        data = inflater.unused_data
    return bytes(out)


def bound_gzip(limit: int = MAX_DECOMPRESSED_BYTES) -> None:
    """Make aiokafka decompress gzip batches with :func:`bounded_gzip_decode` (idempotent)."""

    def decode(payload: bytes | bytearray | memoryview) -> bytes:
        return bounded_gzip_decode(payload, limit)

    for name in _GZIP_USERS:
        try:
            module = importlib.import_module(name)
        except ImportError:  # the C records are optional in aiokafka
            continue
        if hasattr(module, "gzip_decode"):
            setattr(module, "gzip_decode", decode)  # noqa: B010  # the modules' own bound name
