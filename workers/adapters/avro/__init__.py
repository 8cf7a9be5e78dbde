"""Avro codec for the event schemas: single-object encoding, or the Confluent framing with a registry."""

from workers.adapters.avro.canonical import parsing_canonical_form, self_contained
from workers.adapters.avro.catalog import DEFAULT_SCHEMA_DIR, SchemaCatalog, SchemaVersion
from workers.adapters.avro.confluent import RegistryCodec, subject_for
from workers.adapters.avro.errors import (
    DecodeError,
    DecodeFailure,
    EncodeError,
    RegistryError,
    SchemaError,
    SchemaIncompatibleError,
    SchemaNotFoundError,
    UnknownRecordError,
)
from workers.adapters.avro.event_codec import EventCodec
from workers.adapters.avro.fingerprint import crc64_avro, schema_fingerprint
from workers.adapters.avro.registry_client import SchemaRegistryClient
from workers.adapters.avro.single_object import AvroCodec

__all__ = [
    "DEFAULT_SCHEMA_DIR",
    "AvroCodec",
    "DecodeError",
    "DecodeFailure",
    "EncodeError",
    "EventCodec",
    "RegistryCodec",
    "RegistryError",
    "SchemaCatalog",
    "SchemaError",
    "SchemaIncompatibleError",
    "SchemaNotFoundError",
    "SchemaRegistryClient",
    "SchemaVersion",
    "UnknownRecordError",
    "crc64_avro",
    "parsing_canonical_form",
    "schema_fingerprint",
    "self_contained",
    "subject_for",
]
