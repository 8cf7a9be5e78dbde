"""The Avro binary body both framings share: write with the writer schema, read with schema resolution."""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import fastavro

from workers.adapters.avro.catalog import SchemaVersion
from workers.adapters.avro.decimals import DecimalOutOfRange, read_decimals
from workers.adapters.avro.errors import DecodeError, DecodeFailure, EncodeError
from workers.adapters.avro.values import prepare_record


def write_body(writer: SchemaVersion, value: Mapping[str, Any]) -> bytes:
    """``value`` as the Avro binary encoding of ``writer`` (no framing); raises :class:`EncodeError`."""
    record = prepare_record(writer.schema, writer.names, value)
    buffer = io.BytesIO()
    try:
        fastavro.schemaless_writer(buffer, writer.parsed, record)
    except Exception as error:  # prepare_record should have caught it; never let fastavro's types out
        raise EncodeError(f"{writer.fullname}: {error}") from error
    return buffer.getvalue()


def read_body(body: bytes | memoryview, writer: SchemaVersion, reader: SchemaVersion) -> dict[str, Any]:
    """Decode ``body`` written with ``writer`` into a record of ``reader``; raises :class:`DecodeError`."""
    stream = io.BytesIO(body)
    # Read with decimals as raw bytes (see workers.adapters.avro.decimals), converted below.
    resolve_to = None if reader.fingerprint == writer.fingerprint else reader.parsed_raw
    try:
        record = fastavro.schemaless_reader(stream, writer.parsed_raw, resolve_to)
    except Exception as error:
        # A varint cut short shows as IndexError, not EOFError: the reader having reached the end of
        # the input is what tells truncation apart from a malformed body.
        if isinstance(error, EOFError) or (isinstance(error, IndexError) and stream.tell() >= len(body)):
            raise DecodeError(
                DecodeFailure.TRUNCATED, f"{writer.fullname}: body ends early ({error})"
            ) from error
        # fastavro reports bad input as IndexError, UnicodeDecodeError, OverflowError, ValueError,
        # SchemaResolutionError...: all of them mean these bytes are not this record.
        raise DecodeError(
            DecodeFailure.MALFORMED_BODY,
            f"{writer.fullname} ({writer.label}): {type(error).__name__}: {error}",
        ) from error
    left = len(body) - stream.tell()
    if left:
        raise DecodeError(DecodeFailure.TRAILING_BYTES, f"{writer.fullname}: {left} bytes after the record")
    if not isinstance(record, dict):
        raise DecodeError(DecodeFailure.MALFORMED_BODY, f"{writer.fullname}: body is not a record")
    try:
        return dict(read_decimals(reader.schema, reader.names, record))
    except DecimalOutOfRange as error:
        raise DecodeError(DecodeFailure.MALFORMED_BODY, f"{reader.fullname}{error}") from None
