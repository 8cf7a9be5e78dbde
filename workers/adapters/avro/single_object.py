"""Avro single-object encoding: ``C3 01``, the writer schema's 8-byte fingerprint, then the body."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workers.adapters.avro.body import read_body, write_body
from workers.adapters.avro.catalog import SchemaCatalog, SchemaVersion
from workers.adapters.avro.errors import DecodeError, DecodeFailure, EncodeError

MAGIC = b"\xc3\x01"
HEADER_SIZE = len(MAGIC) + 8


def pinned_or_current(catalog: SchemaCatalog, record: str, writer: SchemaVersion | None) -> SchemaVersion:
    """The version to write ``record`` with: ``writer`` if given (of that same record), else the current."""
    if writer is None:
        return catalog.current(record)
    if writer.fullname != catalog.resolve(record):
        raise EncodeError(f"writer schema is {writer.fullname}, not {record}")
    return writer


def as_view(data: bytes | bytearray | memoryview | None) -> memoryview:
    """``data`` as a memoryview; a missing value (a Kafka tombstone) is a :class:`DecodeError`."""
    if data is None:
        raise DecodeError(DecodeFailure.TRUNCATED, "no value (a tombstone?)")
    return memoryview(data)


class AvroCodec:
    """Encode and decode event records in single-object encoding, resolving writers via the catalog."""

    def __init__(self, catalog: SchemaCatalog | None = None) -> None:
        self.catalog = catalog if catalog is not None else SchemaCatalog()

    def encode(self, record: str, value: Mapping[str, Any], *, writer: SchemaVersion | None = None) -> bytes:
        """``value`` as a ``record`` (fullname or short name) written with its current schema.

        ``writer`` pins an older version, as a producer that has not been upgraded yet would write.
        Raises :class:`EncodeError` when the value does not fit the schema.
        """
        version = pinned_or_current(self.catalog, record, writer)
        return MAGIC + version.fingerprint + write_body(version, value)

    def decode(self, data: bytes | bytearray | memoryview | None, expected: str) -> dict[str, Any]:
        """The record in ``data``, read with the current schema of ``expected``; raises DecodeError."""
        reader = self.catalog.current(expected)
        view = as_view(data)
        if len(view) < HEADER_SIZE:
            kind = DecodeFailure.TRUNCATED if MAGIC.startswith(bytes(view[:2])) else DecodeFailure.GARBAGE
            raise DecodeError(kind, f"{len(view)} bytes is shorter than the single-object header")
        if view[:2] != MAGIC:
            raise DecodeError(
                DecodeFailure.GARBAGE, f"not single-object encoded (starts {bytes(view[:2]).hex()})"
            )
        return self._decode_body(bytes(view[2:HEADER_SIZE]), view[HEADER_SIZE:], reader)

    def _decode_body(
        self, fingerprint: bytes, body: bytes | memoryview, reader: SchemaVersion
    ) -> dict[str, Any]:
        writer = self.catalog.by_fingerprint(fingerprint)
        if writer is None:
            raise DecodeError(
                DecodeFailure.UNKNOWN_SCHEMA, f"no known schema has fingerprint {fingerprint.hex()}"
            )
        if writer.fullname != reader.fullname:
            raise DecodeError(
                DecodeFailure.WRONG_RECORD,
                f"expected {reader.fullname}, got {writer.fullname} ({writer.label})",
            )
        return read_body(body, writer, reader)

    async def serialize(self, topic: str, record: str, value: Mapping[str, Any]) -> bytes:
        """:meth:`encode` in the shape of :class:`EventCodec` (the topic plays no part here)."""
        return self.encode(record, value)

    async def deserialize(self, topic: str, data: bytes | None, expected: str) -> dict[str, Any]:
        """:meth:`decode` in the shape of :class:`EventCodec`."""
        return self.decode(data, expected)

    @staticmethod
    def is_single_object(data: bytes | bytearray | memoryview) -> bool:
        """True when ``data`` starts with the single-object marker."""
        return bytes(data[:2]) == MAGIC
