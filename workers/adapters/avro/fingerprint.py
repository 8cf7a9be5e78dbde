"""CRC-64-AVRO, the Rabin fingerprint the Avro specification uses to identify a schema."""

from __future__ import annotations

EMPTY = 0xC15D213AA4D7A795
"""The fingerprint of empty input, and the polynomial the table is built from (per the spec)."""


def _table() -> tuple[int, ...]:
    entries = []
    for byte in range(256):
        fp = byte
        for _ in range(8):
            # -(fp & 1) is all ones when the low bit is set: xor in the polynomial only then.
            fp = (fp >> 1) ^ (EMPTY & -(fp & 1))
        entries.append(fp)
    return tuple(entries)


_TABLE = _table()


def crc64_avro(data: bytes) -> int:
    """The CRC-64-AVRO fingerprint of ``data`` as an unsigned 64-bit integer."""
    fp = EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def as_signed(fingerprint: int) -> int:
    """The same 64 bits read as a Java ``long`` (how the spec's test vectors print fingerprints)."""
    return fingerprint - (1 << 64) if fingerprint >= 1 << 63 else fingerprint


def schema_fingerprint(canonical_form: str) -> bytes:
    """The 8 bytes single-object encoding puts after ``C3 01``: CRC-64-AVRO of the PCF, little-endian."""
    return crc64_avro(canonical_form.encode("utf-8")).to_bytes(8, "little")
