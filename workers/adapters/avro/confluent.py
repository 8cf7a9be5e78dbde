"""The Confluent wire format: byte ``00``, a 4-byte big-endian registry schema id, then the body."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

from workers.adapters.avro.body import read_body, write_body
from workers.adapters.avro.catalog import SchemaCatalog, SchemaVersion
from workers.adapters.avro.errors import DecodeError, DecodeFailure, SchemaNotFoundError
from workers.adapters.avro.registry_client import SchemaRegistryClient
from workers.adapters.avro.single_object import AvroCodec, as_view, pinned_or_current
from workers.logs import get_logger

MAGIC = b"\x00"
HEADER_SIZE = 5
_ID = struct.Struct(">I")

COMPATIBILITY = "BACKWARD"
"""The rule the workers give their subjects: a new version must read what the previous one wrote."""
# Rules that already refuse what BACKWARD refuses: a subject an operator gave one of these keeps it.
AT_LEAST_BACKWARD = frozenset({"BACKWARD", "BACKWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE"})

log = get_logger(__name__)


def subject_for(topic: str) -> str:
    """The registry subject of a topic's values (Confluent's TopicNameStrategy)."""
    return f"{topic}-value"


class RegistryCodec:
    """Encode with schemas registered in a Confluent Schema Registry; decode by registry id.

    Ids are cached both ways in memory: a schema is registered once per subject, and an id is
    fetched once. Decoding also accepts single-object encoded input, so consumers keep working while
    producers switch from one framing to the other.
    A registry that cannot be reached raises :class:`RegistryError` (retry later), never
    :class:`DecodeError`: the message itself may be fine.
    """

    def __init__(self, registry: SchemaRegistryClient, catalog: SchemaCatalog | None = None) -> None:
        self.registry = registry
        self.single_object = AvroCodec(catalog)
        self.catalog = self.single_object.catalog
        self._ids: dict[tuple[str, bytes], int] = {}
        self._writers: dict[int, SchemaVersion] = {}

    async def schema_id(self, topic: str, version: SchemaVersion) -> int:
        """The registry id of ``version`` under the topic's subject, registering it on first use.

        The first use of a subject registers the record's whole history (see :meth:`register_record`).
        """
        subject = subject_for(topic)
        cached = self._ids.get((subject, version.fingerprint))
        if cached is not None:
            return cached
        if not any(known == subject for known, _ in self._ids):
            await self.register_record(topic, version.fullname)
            cached = self._ids.get((subject, version.fingerprint))
            if cached is not None:
                return cached
        # A version pinned by the caller that the subject did not get with its history.
        # Two concurrent first encodes may both register: the registry answers both with the same id.
        return self._remember(subject, version, await self.registry.register(subject, version.schema_text))

    async def register_record(self, topic: str, record: str) -> list[tuple[SchemaVersion, int]]:
        """Register ``record`` under the topic's subject with the BACKWARD rule; its versions and their ids.

        A new subject gets every version in ``schemas/``, history oldest first, then the current one, so the
        registry checks each against the one before, as it would have had they been registered as they were
        written. A subject that already holds versions gets the current one only: an old version registered
        after newer ones would become the subject's latest.
        Raises :class:`SchemaIncompatibleError` (naming the subject) when the registry refuses one.
        """
        subject = subject_for(topic)
        new_subject = not await self.registry.versions(subject)
        rule = await self.registry.compatibility(subject)
        if rule not in AT_LEAST_BACKWARD:
            await self.registry.set_compatibility(subject, COMPATIBILITY)
            log.info("schema registry subject rule set", subject=subject, compatibility=COMPATIBILITY,
                     previous=rule or "none")
        current = self.catalog.current(record)
        versions = [*self.catalog.history(record), current] if new_subject else [current]
        registered = []
        for version in versions:
            schema_id = await self.registry.register(subject, version.schema_text)
            registered.append((version, self._remember(subject, version, schema_id)))
        return registered

    def _remember(self, subject: str, version: SchemaVersion, schema_id: int) -> int:
        self._ids[(subject, version.fingerprint)] = schema_id
        self._writers.setdefault(schema_id, version)
        return schema_id

    async def encode(
        self, record: str, value: Mapping[str, Any], *, topic: str, writer: SchemaVersion | None = None
    ) -> bytes:
        """``value`` as a ``record`` in the Confluent framing, its schema registered for ``topic``."""
        version = pinned_or_current(self.catalog, record, writer)
        body = write_body(version, value)
        return MAGIC + _ID.pack(await self.schema_id(topic, version)) + body

    async def decode(self, data: bytes | bytearray | memoryview | None, expected: str) -> dict[str, Any]:
        """The record in ``data``, read with the current schema of ``expected``; raises DecodeError."""
        reader = self.catalog.current(expected)
        view = as_view(data)
        if AvroCodec.is_single_object(view):
            return self.single_object.decode(view, expected)
        if len(view) < HEADER_SIZE:
            kind = DecodeFailure.TRUNCATED if MAGIC.startswith(bytes(view[:1])) else DecodeFailure.GARBAGE
            raise DecodeError(kind, f"{len(view)} bytes is shorter than the Confluent header")
        if view[:1] != MAGIC:
            raise DecodeError(DecodeFailure.GARBAGE, f"not Confluent framed (starts {bytes(view[:1]).hex()})")
        (schema_id,) = _ID.unpack(view[1:HEADER_SIZE])
        writer = await self._writer(schema_id)
        if writer.fullname != reader.fullname:
            raise DecodeError(
                DecodeFailure.WRONG_RECORD,
                f"expected {reader.fullname}, got {writer.fullname} (id {schema_id})",
            )
        return read_body(view[HEADER_SIZE:], writer, reader)

    async def _writer(self, schema_id: int) -> SchemaVersion:
        cached = self._writers.get(schema_id)
        if cached is not None:
            return cached
        try:
            text = await self.registry.schema(schema_id)
        except SchemaNotFoundError as error:
            raise DecodeError(
                DecodeFailure.UNKNOWN_SCHEMA, f"registry has no schema id {schema_id}"
            ) from error
        try:
            version = SchemaVersion.from_json(json.loads(text), f"registry id {schema_id}")
        except Exception as error:  # the text comes from outside: any failure means "cannot read with it"
            raise DecodeError(
                DecodeFailure.UNKNOWN_SCHEMA,
                f"registry schema id {schema_id} is not a usable record: {error}",
            ) from error
        self._writers[schema_id] = version
        return version

    async def serialize(self, topic: str, record: str, value: Mapping[str, Any]) -> bytes:
        """:meth:`encode` in the shape of :class:`EventCodec`."""
        return await self.encode(record, value, topic=topic)

    async def deserialize(self, topic: str, data: bytes | None, expected: str) -> dict[str, Any]:
        """:meth:`decode` in the shape of :class:`EventCodec` (the id alone names the schema)."""
        return await self.decode(data, expected)

    async def aclose(self) -> None:
        """Close the registry client."""
        await self.registry.aclose()
