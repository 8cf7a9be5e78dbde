"""The workers' codec for the configured wire format: single-object encoding, or — with
``SCHEMA_REGISTRY_URL`` — the Confluent framing with schemas registered in the registry.

The workers encode synchronously (an outbox record is encoded inside the transaction that writes it), so
the registry's ids are fetched once at start (:meth:`RegistryFramedCodec.prepare`), one per record and
its topic (subject ``<topic>-value``). Decoding reads both framings; an id the codec has not seen is
fetched by :meth:`RegistryFramedCodec.decode_async`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from workers.adapters.avro.body import read_body, write_body
from workers.adapters.avro.catalog import SchemaCatalog, SchemaVersion
from workers.adapters.avro.confluent import RegistryCodec
from workers.adapters.avro.errors import DecodeError, DecodeFailure, EncodeError
from workers.adapters.avro.registry_client import SchemaRegistryClient
from workers.adapters.avro.single_object import AvroCodec, as_view, pinned_or_current

_HEADER = struct.Struct(">bI")


class RegistryFramedCodec(AvroCodec):
    """An :class:`AvroCodec` that writes the Confluent framing with ids registered at start."""

    def __init__(self, registry: RegistryCodec, record_topics: Mapping[str, str]) -> None:
        super().__init__(registry.catalog)
        self.registry = registry
        self.record_topics = {registry.catalog.resolve(record): topic for record, topic in record_topics.items()}
        self._ids: dict[str, int] = {}
        self._writers: dict[int, SchemaVersion] = {}

    async def prepare(self) -> None:
        """Register every record under its topic's subject (see :meth:`RegistryCodec.register_record`)."""
        for record, topic in self.record_topics.items():
            registered = await self.registry.register_record(topic, record)
            for version, schema_id in registered:
                self._writers[schema_id] = version
            self._ids[record] = registered[-1][1]  # the current version, registered last

    def encode(self, record: str, value: Mapping[str, Any], *, writer: SchemaVersion | None = None) -> bytes:
        version = pinned_or_current(self.catalog, record, writer)
        schema_id = self._ids.get(version.fullname)
        if schema_id is None or self._writers.get(schema_id) is not version:
            raise EncodeError(f"no registry id prepared for {version.fullname} ({version.label})")
        return _HEADER.pack(0, schema_id) + write_body(version, value)

    def decode(self, data: bytes | bytearray | memoryview | None, expected: str) -> dict[str, Any]:
        """Both framings; a registry id not seen yet is a :class:`DecodeError` here (see decode_async)."""
        view = as_view(data)
        if self.is_single_object(view) or len(view) < _HEADER.size or view[0] != 0:
            return super().decode(view, expected)
        _, schema_id = _HEADER.unpack(view[:_HEADER.size])
        writer = self._writers.get(schema_id)
        if writer is None:
            raise DecodeError(DecodeFailure.UNKNOWN_SCHEMA, f"registry id {schema_id} not fetched yet")
        reader = self.catalog.current(expected)
        if writer.fullname != reader.fullname:
            raise DecodeError(DecodeFailure.WRONG_RECORD, f"expected {reader.fullname}, got {writer.fullname}")
        return read_body(view[_HEADER.size:], writer, reader)

    async def decode_async(self, data: bytes | bytearray | memoryview | None, expected: str) -> dict[str, Any]:
        """Like :meth:`decode`, fetching an unknown registry id from the registry."""
        return await self.registry.decode(data, expected)


async def codec_for(schema_registry_url: str | None, record_topics: Mapping[str, str],
                    catalog: SchemaCatalog | None = None) -> AvroCodec:
    """The codec the settings ask for: single-object without a registry URL, Confluent framing with one."""
    if not schema_registry_url:
        return AvroCodec(catalog)
    codec = RegistryFramedCodec(RegistryCodec(SchemaRegistryClient(schema_registry_url), catalog), record_topics)
    await codec.prepare()
    return codec


async def decode_any(codec: AvroCodec, data: bytes, expected: str) -> dict[str, Any]:
    """Decode with whichever codec the worker runs (fetching unknown registry ids where there is one)."""
    if isinstance(codec, RegistryFramedCodec):
        return await codec.decode_async(data, expected)
    return codec.decode(data, expected)
